//! mfsmetalogger settings: defaults < `mfsmetalogger.cfg` < `MFS_*` env < flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// MooseFS key names accepted as they are, mapped to ours.
pub const ALIASES: &[(&str, &str)] = &[("advertise", "advertise_address"), ("id", "metalogger_id")];

/// Node ids derived for metaloggers start here (masters are usually 1, 2,
/// 3, ...).
pub const DERIVED_ID_BASE: u64 = 1000;
/// File in DATA_PATH remembering a derived METALOGGER_ID.
pub const ID_FILE: &str = "metalogger.id";

/// Every setting of mfsmetalogger. Each can be given in the config file
/// (`KEY = VALUE`, key case-insensitive), as `MFS_KEY` in the environment, or
/// (for the common ones) as a flag.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetaloggerConfig {
    /// The masters, as a comma-separated list of `host` or `host:port`
    /// (a name resolving to several addresses counts as several masters).
    /// Any one of them will do: the metalogger finds the leader.
    pub master_host: String,
    /// Port of the masters listed without one.
    pub master_port: u16,
    /// Where the changelog (`changelog_ml.N.mfs`), the metadata images
    /// (`metadata_ml.mfs`, `metadata_ml.mfs.back`) and the Raft state
    /// (`raft/`) are kept.
    pub data_path: PathBuf,
    /// Rotated changelog files kept besides the current one
    /// (`changelog_ml.1.mfs` ..= `changelog_ml.BACK_LOGS.mfs`).
    pub back_logs: u32,
    /// Hours between metadata images (`metadata_ml.mfs`); fractions allowed
    /// (0.01 = 36 s).
    pub meta_download_freq: f64,
    /// Rotate the changelog after this many lines (0: not by count).
    pub changelog_rotate_entries: u64,
    /// Rotate the changelog this many hours after the current file was
    /// started, as MooseFS does hourly (0: not by time; fractions allowed).
    pub changelog_rotate_hours: f64,
    /// Seconds between fsyncs of the changelog (lines reach the OS after
    /// every batch of entries anyway; this bounds what a machine crash can
    /// lose, which the metalogger then fetches again from the masters).
    pub changelog_sync_secs: f64,
    /// Its Raft node id: must differ from every master's and every other
    /// metalogger's. 0 (default): derived once from the advertised address,
    /// as 1000 + CRC32(ADVERTISE_ADDRESS) mod 1000000, and remembered in
    /// `DATA_PATH/metalogger.id` so that it never changes afterwards.
    pub metalogger_id: u64,
    /// Address to serve Raft (from the leader) on; `*` means every interface.
    pub listen_host: String,
    /// Port of that service.
    pub listen_port: u16,
    /// `host:port` the masters reach this metalogger at. Default:
    /// LISTEN_HOST:LISTEN_PORT (with `*` read as 127.0.0.1).
    pub advertise_address: String,
    /// HTTP address for Prometheus `/metrics`; empty disables it.
    pub http_listen: String,
    /// The cluster secret of the masters (CLUSTER_SECRET), if they use one.
    pub cluster_secret: String,
    /// Entries between snapshots of its own Raft state (which keep its Raft
    /// log short; the changelog is kept regardless).
    pub snapshot_log_entries: u64,
    /// And at least this many entries per inode of the namespace (0: the
    /// count alone decides), as the masters' key of that name.
    pub snapshot_entries_per_inode: u64,
    /// TLS_CERT_FILE / TLS_KEY_FILE: PEM certificate (chain) and private key
    /// to serve gRPC over TLS with (both or neither; default: plain).
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// TLS_CA_FILE: PEM CA certificate(s); when set, every master,
    /// chunkserver and metalogger is dialed with TLS and must show a
    /// certificate it signed for the address dialed. Default: plain.
    pub tls_ca_file: String,
    /// Default log filter when RUST_LOG is unset.
    pub log_level: String,
}

impl Default for MetaloggerConfig {
    fn default() -> Self {
        MetaloggerConfig {
            master_host: "127.0.0.1".into(),
            master_port: 9421,
            data_path: PathBuf::from("/var/lib/mfs"),
            back_logs: 50,
            meta_download_freq: 24.0,
            changelog_rotate_entries: 0,
            changelog_rotate_hours: 1.0,
            changelog_sync_secs: 1.0,
            metalogger_id: 0,
            listen_host: "*".into(),
            listen_port: 9419,
            advertise_address: String::new(),
            http_listen: "0.0.0.0:9424".into(),
            cluster_secret: String::new(),
            snapshot_log_entries: 20000,
            snapshot_entries_per_inode: 1,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            tls_ca_file: String::new(),
            log_level: "info".into(),
        }
    }
}

/// The checked form of the settings that need parsing.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The masters as `host:port`.
    pub masters: Vec<String>,
    pub listen: SocketAddr,
    pub advertise: String,
    pub http_listen: Option<SocketAddr>,
    pub image_every: Duration,
    pub rotate_after: Option<Duration>,
    pub sync_every: Duration,
}

fn hours(key: &str, h: f64, zero_ok: bool) -> Result<Option<Duration>> {
    if !h.is_finite() || h < 0.0 || (!zero_ok && h == 0.0) {
        return Err(Error::Config(format!(
            "{key} = {h}: expected a positive number of hours{}",
            if zero_ok { " (or 0)" } else { "" }
        )));
    }
    Ok((h > 0.0).then(|| Duration::from_secs_f64(h * 3600.0)))
}

/// `host` or `host:port` with MASTER_PORT added when missing (IPv6
/// literals as `[::1]` or `[::1]:9421`).
fn with_port(item: &str, port: u16) -> String {
    if let Some(rest) = item.strip_prefix('[') {
        if rest.contains("]:") {
            return item.to_string();
        }
        return format!("{item}:{port}");
    }
    match item.matches(':').count() {
        0 => format!("{item}:{port}"),
        1 => item.to_string(),
        _ => format!("[{item}]:{port}"),
    }
}

impl MetaloggerConfig {
    /// Checks the settings and parses the composite ones; the error names the
    /// key and what is wrong.
    pub fn resolve(&self) -> Result<Resolved> {
        let masters: Vec<String> = self
            .master_host
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| with_port(s, self.master_port))
            .collect();
        if masters.is_empty() {
            return Err(Error::Config(
                "MASTER_HOST is empty: list the masters (host or host:port, comma-separated)"
                    .into(),
            ));
        }
        let host = if self.listen_host == "*" {
            "0.0.0.0"
        } else {
            self.listen_host.as_str()
        };
        let listen: SocketAddr = format!("{host}:{}", self.listen_port)
            .parse()
            .map_err(|e| {
                Error::Config(format!(
                    "LISTEN_HOST/LISTEN_PORT `{host}:{}`: {e}",
                    self.listen_port
                ))
            })?;
        let advertise = if !self.advertise_address.is_empty() {
            if !self.advertise_address.contains(':') {
                return Err(Error::Config(format!(
                    "ADVERTISE_ADDRESS `{}`: expected host:port",
                    self.advertise_address
                )));
            }
            self.advertise_address.clone()
        } else {
            let h = if host == "0.0.0.0" { "127.0.0.1" } else { host };
            format!("{h}:{}", self.listen_port)
        };
        let http_listen = if self.http_listen.trim().is_empty() {
            None
        } else {
            Some(self.http_listen.parse().map_err(|e| {
                Error::Config(format!(
                    "HTTP_LISTEN `{}`: {e} (expected host:port, or empty)",
                    self.http_listen
                ))
            })?)
        };
        let image_every = hours("META_DOWNLOAD_FREQ", self.meta_download_freq, false)?
            .unwrap_or(Duration::from_secs(86400));
        let rotate_after = hours("CHANGELOG_ROTATE_HOURS", self.changelog_rotate_hours, true)?;
        if !self.changelog_sync_secs.is_finite() || self.changelog_sync_secs <= 0.0 {
            return Err(Error::Config(format!(
                "CHANGELOG_SYNC_SECS = {}: expected a positive number of seconds",
                self.changelog_sync_secs
            )));
        }
        if self.back_logs == 0 {
            return Err(Error::Config(
                "BACK_LOGS must be at least 1 (rotated changelog files kept)".into(),
            ));
        }
        Ok(Resolved {
            masters,
            listen,
            advertise,
            http_listen,
            image_every,
            rotate_after,
            sync_every: Duration::from_secs_f64(self.changelog_sync_secs),
        })
    }

    /// METALOGGER_ID, or the id derived from `advertise` and remembered in
    /// `DATA_PATH/metalogger.id` (written on first use).
    pub fn node_id(&self, advertise: &str) -> Result<u64> {
        if self.metalogger_id != 0 {
            return Ok(self.metalogger_id);
        }
        let path = self.data_path.join(ID_FILE);
        match std::fs::read_to_string(&path) {
            Ok(s) => s.trim().parse().map_err(|_| {
                Error::Config(format!(
                    "{} holds `{}`, not a node id: fix it or set METALOGGER_ID",
                    path.display(),
                    s.trim()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = derive_id(advertise);
                std::fs::create_dir_all(&self.data_path)
                    .map_err(Error::io("create", &self.data_path))?;
                write_id(&path, id)?;
                tracing::info!(
                    id,
                    "METALOGGER_ID not set: derived {id} from {advertise}, remembered in {}",
                    path.display()
                );
                Ok(id)
            }
            Err(e) => Err(Error::io("read", &path)(e)),
        }
    }
}

/// 1000 + CRC32(address) mod 1000000.
pub fn derive_id(advertise: &str) -> u64 {
    DERIVED_ID_BASE + u64::from(crc32fast::hash(advertise.as_bytes())) % 1_000_000
}

fn write_id(path: &Path, id: u64) -> Result<()> {
    std::fs::write(path, format!("{id}\n")).map_err(Error::io("write", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_resolve() {
        let r = MetaloggerConfig::default().resolve().unwrap();
        assert_eq!(r.masters, vec!["127.0.0.1:9421".to_string()]);
        assert_eq!(r.advertise, "127.0.0.1:9419");
        assert_eq!(r.image_every, Duration::from_secs(86400));
        assert_eq!(r.rotate_after, Some(Duration::from_secs(3600)));
    }

    #[test]
    fn master_list_gets_the_port() {
        let c = MetaloggerConfig {
            master_host: "m1, m2:9500,[::1],::2".into(),
            master_port: 9000,
            ..Default::default()
        };
        assert_eq!(
            c.resolve().unwrap().masters,
            vec!["m1:9000", "m2:9500", "[::1]:9000", "[::2]:9000"]
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let c = MetaloggerConfig {
            meta_download_freq: 0.0,
            ..Default::default()
        };
        assert!(c
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("META_DOWNLOAD_FREQ"));
        let c = MetaloggerConfig {
            back_logs: 0,
            ..Default::default()
        };
        assert!(c.resolve().unwrap_err().to_string().contains("BACK_LOGS"));
        let c = MetaloggerConfig {
            master_host: " , ".into(),
            ..Default::default()
        };
        assert!(c.resolve().unwrap_err().to_string().contains("MASTER_HOST"));
        let c = MetaloggerConfig {
            meta_download_freq: 0.01,
            ..Default::default()
        };
        assert_eq!(c.resolve().unwrap().image_every, Duration::from_secs(36));
    }

    #[test]
    fn derived_id_is_remembered() {
        let tmp = tempfile::tempdir().unwrap();
        let c = MetaloggerConfig {
            data_path: tmp.path().join("ml"),
            ..Default::default()
        };
        let a = c.node_id("10.0.0.1:9419").unwrap();
        assert!(a >= DERIVED_ID_BASE);
        assert_eq!(a, derive_id("10.0.0.1:9419"));
        // Another address later does not change it.
        assert_eq!(c.node_id("10.0.0.2:9419").unwrap(), a);
        let c = MetaloggerConfig {
            metalogger_id: 77,
            ..c
        };
        assert_eq!(c.node_id("x:1").unwrap(), 77);
    }
}
