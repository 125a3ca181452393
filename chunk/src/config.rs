//! mfschunkserver settings: defaults < `mfschunkserver.cfg` < `MFS_*` env <
//! flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::hdd::parse_size;

/// MooseFS key names accepted as they are, mapped to ours.
pub const ALIASES: &[(&str, &str)] = &[
    ("bind_host", "csserv_listen_host"),
    ("hdd_leave_space", "hdd_leave_space_default"),
];

/// Every setting of mfschunkserver. Each can be given in the config file
/// (`KEY = VALUE`, key case-insensitive), as `MFS_KEY` in the environment, or
/// (for the common ones) as a flag.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ChunkConfig {
    /// MASTER_HOST: the masters, as a comma list `host[:port],...` (every
    /// master, or one name that resolves to all of them). Default
    /// `127.0.0.1`.
    #[serde(deserialize_with = "any_string")]
    pub master_host: String,
    /// MASTER_PORT: the masters' port, for MASTER_HOST entries without one.
    /// Default 9421.
    pub master_port: u16,
    /// DATA_PATH: where the chunkserver keeps its own state (the id the
    /// master gave it). Default `/var/lib/mfs`.
    pub data_path: PathBuf,
    /// HDD_CONF_FILENAME: the disk list. Default: `mfshdd.cfg` beside the
    /// config file, else `/etc/mfs/mfshdd.cfg`.
    #[serde(deserialize_with = "any_string")]
    pub hdd_conf_filename: String,
    /// CSSERV_LISTEN_HOST: address the data service listens on (`*` = all).
    /// Default `0.0.0.0`.
    #[serde(deserialize_with = "any_string")]
    pub csserv_listen_host: String,
    /// CSSERV_LISTEN_PORT: port of the data service. Default 9422.
    pub csserv_listen_port: u16,
    /// ADVERTISE: `host:port` clients and peers reach the data service at,
    /// told to the master. Default: listen host:port, or 127.0.0.1:port
    /// when listening on every interface.
    #[serde(deserialize_with = "any_string")]
    pub advertise: String,
    /// LABELS: comma list of labels (racks, disk kinds) for placement.
    #[serde(deserialize_with = "any_string")]
    pub labels: String,
    /// HTTP_LISTEN: `host:port` of Prometheus `/metrics`; empty disables it.
    /// Default `0.0.0.0:9427`.
    #[serde(deserialize_with = "any_string")]
    pub http_listen: String,
    /// HDD_FSYNC_BEFORE_CLOSE: fsync chunk data when a chunk file is closed
    /// (and folders on version changes). Default off: data is fsynced on
    /// the client's Sync only.
    #[serde(deserialize_with = "mfs_common::config::flexible_bool")]
    pub hdd_fsync_before_close: bool,
    /// HDD_DIRECT_WRITES: write whole pages of chunk data (64 KiB or more at
    /// a time) with `O_DIRECT`, past the page cache (falls back to buffered
    /// writes where the file system refuses it). Default on.
    #[serde(deserialize_with = "mfs_common::config::flexible_bool")]
    pub hdd_direct_writes: bool,
    /// HDD_SPARE_FILES: empty chunk files kept ready on each disk that takes
    /// new chunks, made ahead in the background (and kept from deleted
    /// chunks, up to twice as many), so that a new chunk is a rename and
    /// not a new inode. 0: none. Default 4096.
    pub hdd_spare_files: usize,
    /// HDD_TEST_FREQ: seconds between two chunks checked by the background
    /// scrub (round robin); 0 disables it. Default 10.
    pub hdd_test_freq: u64,
    /// HDD_LEAVE_SPACE_DEFAULT: space kept free on every disk (`256MiB`,
    /// `4GiB`, bytes): below it a disk takes no new chunks and writes get
    /// ENOSPC. Default `256MiB`.
    #[serde(deserialize_with = "any_string")]
    pub hdd_leave_space_default: String,
    /// MAINTENANCE: tell the master this server is in maintenance (its
    /// copies are not re-replicated while it is away). Default off.
    #[serde(deserialize_with = "mfs_common::config::flexible_bool")]
    pub maintenance: bool,
    /// OPEN_FILES: chunk files kept open (the hot-chunk cache). Default 1000.
    pub open_files: usize,
    /// SCHED_BATCH: run under Linux's SCHED_BATCH CPU policy (a thread this
    /// server wakes does not preempt the one that woke it: fewer context
    /// switches where chunkservers, masters and clients share cores).
    /// Default on.
    #[serde(deserialize_with = "mfs_common::config::flexible_bool")]
    pub sched_batch: bool,
    /// CLUSTER_SECRET: the masters' cluster secret, shown when registering
    /// and asked of the masters' chunk orders (create, delete, set version,
    /// truncate, replicate, duplicate). Empty (the default): none.
    #[serde(deserialize_with = "any_string")]
    pub cluster_secret: String,
    /// TLS_CERT_FILE / TLS_KEY_FILE: PEM certificate (chain) and private key
    /// to serve gRPC over TLS with (both or neither; default: plain).
    #[serde(deserialize_with = "any_string")]
    pub tls_cert_file: String,
    #[serde(deserialize_with = "any_string")]
    pub tls_key_file: String,
    /// TLS_CA_FILE: PEM CA certificate(s); when set, every master,
    /// chunkserver and metalogger is dialed with TLS and must show a
    /// certificate it signed for the address dialed. Default: plain.
    #[serde(deserialize_with = "any_string")]
    pub tls_ca_file: String,
    /// LOG_LEVEL: default log filter when RUST_LOG is unset. Default `info`.
    #[serde(deserialize_with = "any_string")]
    pub log_level: String,
}

impl Default for ChunkConfig {
    fn default() -> Self {
        ChunkConfig {
            master_host: "127.0.0.1".into(),
            master_port: 9421,
            data_path: PathBuf::from("/var/lib/mfs"),
            hdd_conf_filename: String::new(),
            csserv_listen_host: "0.0.0.0".into(),
            csserv_listen_port: 9422,
            advertise: String::new(),
            labels: String::new(),
            http_listen: "0.0.0.0:9427".into(),
            hdd_fsync_before_close: false,
            hdd_direct_writes: true,
            hdd_spare_files: crate::spare::DEFAULT_SPARES,
            hdd_test_freq: 10,
            hdd_leave_space_default: "256MiB".into(),
            maintenance: false,
            open_files: 1000,
            sched_batch: true,
            cluster_secret: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            tls_ca_file: String::new(),
            log_level: "info".into(),
        }
    }
}

/// Accepts a string, or a number/bool the `KEY = VALUE` reader took for one
/// (e.g. `LABELS = 1`).
fn any_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum S {
        Text(String),
        Int(i64),
        Float(f64),
        Bool(bool),
    }
    Ok(match S::deserialize(d)? {
        S::Text(s) => s,
        S::Int(i) => i.to_string(),
        S::Float(f) => f.to_string(),
        S::Bool(b) => b.to_string(),
    })
}

/// The checked form of the settings that need parsing.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Data service address.
    pub listen: SocketAddr,
    /// What the master is told.
    pub advertise: String,
    /// `/metrics` address.
    pub http_listen: Option<SocketAddr>,
    /// Master entries as `host:port`.
    pub masters: Vec<String>,
    /// The disk list file.
    pub hdd_file: PathBuf,
    /// Labels.
    pub labels: Vec<String>,
    /// Reserve per disk, bytes.
    pub reserve: u64,
}

impl ChunkConfig {
    /// Checks the settings; `config_file` is the config file used (for the
    /// default HDD_CONF_FILENAME). The error names the key.
    pub fn resolve(&self, config_file: Option<&Path>) -> Result<Resolved, String> {
        let host = match self.csserv_listen_host.trim() {
            "*" | "" => "0.0.0.0",
            h => h,
        };
        let listen: SocketAddr = format!("{host}:{}", self.csserv_listen_port)
            .parse()
            .map_err(|e| {
                format!(
                    "CSSERV_LISTEN_HOST/CSSERV_LISTEN_PORT `{host}:{}`: {e} (expected an IP address and a port)",
                    self.csserv_listen_port
                )
            })?;
        let advertise = if !self.advertise.trim().is_empty() {
            let a = self.advertise.trim().to_string();
            if !a.contains(':') {
                return Err(format!("ADVERTISE `{a}`: expected host:port"));
            }
            a
        } else if listen.ip().is_unspecified() {
            format!("127.0.0.1:{}", listen.port())
        } else {
            listen.to_string()
        };
        let http_listen = if self.http_listen.trim().is_empty() {
            None
        } else {
            Some(self.http_listen.trim().parse().map_err(|e| {
                format!(
                    "HTTP_LISTEN `{}`: {e} (expected host:port, or empty to disable)",
                    self.http_listen
                )
            })?)
        };
        let masters = parse_masters(&self.master_host, self.master_port)?;
        let hdd_file = if !self.hdd_conf_filename.trim().is_empty() {
            PathBuf::from(self.hdd_conf_filename.trim())
        } else {
            match config_file.and_then(|c| c.parent()) {
                Some(dir) if dir.join("mfshdd.cfg").exists() => dir.join("mfshdd.cfg"),
                _ => PathBuf::from("/etc/mfs/mfshdd.cfg"),
            }
        };
        let reserve = parse_size(&self.hdd_leave_space_default)
            .map_err(|e| format!("HDD_LEAVE_SPACE_DEFAULT: {e}"))?;
        let labels = self
            .labels
            .split(',')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        if self.open_files == 0 {
            return Err("OPEN_FILES must be at least 1".into());
        }
        Ok(Resolved {
            listen,
            advertise,
            http_listen,
            masters,
            hdd_file,
            labels,
            reserve,
        })
    }
}

/// Parses MASTER_HOST (`h1:p1,h2,...`) into `host:port` entries, adding
/// `port` where an entry has none.
pub fn parse_masters(list: &str, port: u16) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for e in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let entry = if let Some(rest) = e.strip_prefix('[') {
            // [v6]:port or [v6]
            match rest.split_once(']') {
                Some((h, "")) => format!("[{h}]:{port}"),
                Some((_, p)) if p.starts_with(':') => e.to_string(),
                _ => {
                    return Err(format!(
                        "MASTER_HOST entry `{e}`: bad IPv6 form, expected [addr]:port"
                    ))
                }
            }
        } else {
            match e.rsplit_once(':') {
                None => format!("{e}:{port}"),
                Some((h, p)) => {
                    if h.is_empty() || p.parse::<u16>().is_err() {
                        return Err(format!(
                            "MASTER_HOST entry `{e}`: expected host or host:port"
                        ));
                    }
                    e.to_string()
                }
            }
        };
        out.push(entry);
    }
    if out.is_empty() {
        return Err("MASTER_HOST is empty: give the masters as host[:port],...".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Default)]
    struct NoFlags {}

    #[test]
    fn defaults_resolve() {
        let r = ChunkConfig::default().resolve(None).unwrap();
        assert_eq!(r.advertise, "127.0.0.1:9422");
        assert_eq!(r.masters, vec!["127.0.0.1:9421"]);
        assert_eq!(r.reserve, 256 << 20);
        assert_eq!(r.hdd_file, PathBuf::from("/etc/mfs/mfshdd.cfg"));
        assert!(r.http_listen.is_some());
    }

    #[test]
    fn master_list_gets_default_ports() {
        let m = parse_masters("a:1, b ,[::1]:5,[::2]", 9421).unwrap();
        assert_eq!(m, vec!["a:1", "b:9421", "[::1]:5", "[::2]:9421"]);
        assert!(parse_masters("a:notaport", 1).is_err());
        assert!(parse_masters(" , ", 1).is_err());
    }

    #[test]
    fn file_with_moosefs_keys() {
        let d = tempfile::tempdir().unwrap();
        let hdd = d.path().join("mfshdd.cfg");
        std::fs::write(&hdd, "").unwrap();
        let cfg = d.path().join("mfschunkserver.cfg");
        std::fs::write(
            &cfg,
            "MASTER_HOST = m1:9521,m2\nMASTER_PORT = 9600\nCSSERV_LISTEN_HOST = 127.0.0.1\nCSSERV_LISTEN_PORT = 9999\nHTTP_LISTEN = \"\"\nHDD_LEAVE_SPACE_DEFAULT = 1GiB\nLABELS = ssd,rack1\nHDD_FSYNC_BEFORE_CLOSE = 1\nHDD_SPARE_FILES = 100\n",
        )
        .unwrap();
        let c: ChunkConfig =
            mfs_common::config::load(Some(&cfg), true, ALIASES, &NoFlags {}).unwrap();
        let r = c.resolve(Some(&cfg)).unwrap();
        assert_eq!(r.masters, vec!["m1:9521", "m2:9600"]);
        assert_eq!(r.advertise, "127.0.0.1:9999");
        assert!(r.http_listen.is_none());
        assert_eq!(r.reserve, 1 << 30);
        assert_eq!(r.labels, vec!["ssd", "rack1"]);
        assert_eq!(r.hdd_file, hdd, "mfshdd.cfg beside the config file");
        assert!(c.hdd_fsync_before_close);
        assert_eq!(c.hdd_spare_files, 100);
        assert_eq!(ChunkConfig::default().hdd_spare_files, 4096);
    }

    #[test]
    fn bad_values_name_the_key() {
        let c = ChunkConfig {
            hdd_leave_space_default: "lots".into(),
            ..Default::default()
        };
        assert!(c
            .resolve(None)
            .unwrap_err()
            .contains("HDD_LEAVE_SPACE_DEFAULT"));
        let c = ChunkConfig {
            http_listen: "nope".into(),
            ..Default::default()
        };
        assert!(c.resolve(None).unwrap_err().contains("HTTP_LISTEN"));
    }
}
