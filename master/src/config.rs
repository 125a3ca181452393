//! mfsmaster settings: defaults < `mfsmaster.cfg` < `MFS_*` env < flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// MooseFS key names accepted as they are, mapped to ours.
pub const ALIASES: &[(&str, &str)] = &[
    ("matocl_listen_host", "listen_host"),
    ("matocl_listen_port", "listen_port"),
    ("matocs_listen_port", "listen_port"),
    ("matoml_listen_port", "listen_port"),
    ("id", "master_id"),
];

/// Every setting of mfsmaster. Each can be given in the config file
/// (`KEY = VALUE`, key case-insensitive), as `MFS_KEY` in the environment, or
/// (for the common ones) as a flag.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MasterConfig {
    /// This master's id in the Raft group (a positive number, unique in the
    /// cluster, never reused for another machine's data).
    pub master_id: u64,
    /// Address to listen on for gRPC (clients, chunkservers, peers, tools);
    /// `*` means every interface.
    pub listen_host: String,
    /// gRPC port (MooseFS: MATOCL_LISTEN_PORT).
    pub listen_port: u16,
    /// `host:port` other masters and clients reach this master at. Default:
    /// this master's entry in MASTER_PEERS, else LISTEN_HOST:LISTEN_PORT
    /// (with `*` read as 127.0.0.1).
    pub advertise_address: String,
    /// HTTP address for Prometheus `/metrics` and the `/status` page; empty
    /// disables it.
    pub http_listen: String,
    /// Where the Raft log, vote and metadata snapshots live.
    pub data_path: PathBuf,
    /// The masters of the cluster as `ID=host:port` separated by commas,
    /// including this one. Empty: a cluster of this master alone.
    pub master_peers: String,
    /// Seconds without a heartbeat after which a client session is closed.
    pub session_timeout: u64,
    /// Build a metadata snapshot after this many log entries at least.
    pub snapshot_log_entries: u64,
    /// And after this many entries per inode of the namespace at least
    /// (0: SNAPSHOT_LOG_ENTRIES alone decides), so that a big namespace is
    /// not written out over and over (see `raft::snapshots`).
    pub snapshot_entries_per_inode: u64,
    /// Keep this many entries in the log behind the latest snapshot (so a
    /// lagging follower can catch up without a snapshot).
    pub snapshot_keep_entries: u64,
    /// Snapshot files kept on disk.
    pub snapshot_files: usize,
    /// Raft heartbeat interval, milliseconds.
    pub heartbeat_ms: u64,
    /// Election timeout (lower bound), milliseconds; the upper bound is a
    /// third more (`raft::node::election_timeout_max`).
    pub election_timeout_ms: u64,
    /// How reads are made linearizable: `lease` (leader lease, no round trip,
    /// falls back to read-index when the lease is stale) or `read_index`.
    pub read_policy: String,
    /// Shared secret required on Raft traffic between masters (empty: none).
    pub cluster_secret: String,
    /// TLS_CERT_FILE / TLS_KEY_FILE: PEM certificate (chain) and private key
    /// to serve gRPC over TLS with (both or neither; default: plain).
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// TLS_CA_FILE: PEM CA certificate(s); when set, every master,
    /// chunkserver and metalogger is dialed with TLS and must show a
    /// certificate it signed for the address dialed. Default: plain.
    pub tls_ca_file: String,
    /// EXPORTS_FILENAME: the `mfsexports.cfg` saying which clients may
    /// mount which directory with which rights (see README, "Access
    /// control"). Empty (the default): every client may mount everything.
    /// Read at start (a bad line stops the master) and again on SIGHUP.
    pub exports_filename: String,
    /// Default log filter when RUST_LOG is unset.
    pub log_level: String,
    /// Worker threads of the async runtime (0: one per CPU). Default 1: a
    /// request is many short steps handed between tasks, and one thread
    /// hands them on without waking another (3 masters on 2 cores: 16
    /// clients' creates and getattrs both ran faster than with 2). Raise it
    /// on a machine of its own with many cores and many clients reading.
    pub worker_threads: usize,
    /// Run under Linux's SCHED_BATCH CPU policy: a thread this master wakes
    /// (a peer's, a client's, its own log flusher) does not preempt the
    /// one that woke it. Fewer context switches per request where masters,
    /// chunkservers and clients share cores. Default on.
    #[serde(deserialize_with = "mfs_common::config::flexible_bool")]
    pub sched_batch: bool,
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            master_id: 1,
            listen_host: "*".into(),
            listen_port: 9421,
            advertise_address: String::new(),
            http_listen: "0.0.0.0:9425".into(),
            data_path: PathBuf::from("/var/lib/mfs"),
            master_peers: String::new(),
            session_timeout: 60,
            snapshot_log_entries: 20000,
            snapshot_entries_per_inode: 1,
            snapshot_keep_entries: 1000,
            snapshot_files: 3,
            heartbeat_ms: 100,
            election_timeout_ms: 600,
            read_policy: "lease".into(),
            cluster_secret: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            tls_ca_file: String::new(),
            exports_filename: String::new(),
            log_level: "info".into(),
            worker_threads: 1,
            sched_batch: true,
        }
    }
}

/// The checked form of the settings that need parsing.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub listen: SocketAddr,
    pub advertise: String,
    pub http_listen: Option<SocketAddr>,
    /// id → address, including this master.
    pub peers: BTreeMap<u64, String>,
}

impl MasterConfig {
    /// Checks the settings and parses the composite ones; the error names the
    /// key and what is wrong.
    pub fn resolve(&self) -> Result<Resolved, String> {
        if self.master_id == 0 {
            return Err("MASTER_ID must be a positive number".into());
        }
        let host = if self.listen_host == "*" {
            "0.0.0.0"
        } else {
            self.listen_host.as_str()
        };
        let listen: SocketAddr = format!("{host}:{}", self.listen_port)
            .parse()
            .map_err(|e| format!("LISTEN_HOST/LISTEN_PORT `{host}:{}`: {e}", self.listen_port))?;
        let http_listen = if self.http_listen.trim().is_empty() {
            None
        } else {
            Some(self.http_listen.parse().map_err(|e| {
                format!(
                    "HTTP_LISTEN `{}`: {e} (expected host:port)",
                    self.http_listen
                )
            })?)
        };
        let peers = parse_peers(&self.master_peers)?;
        if !peers.is_empty() && !peers.contains_key(&self.master_id) {
            return Err(format!(
                "MASTER_PEERS `{}` does not list this master's id {} (MASTER_ID); list every master including this one",
                self.master_peers, self.master_id
            ));
        }
        let advertise = if !self.advertise_address.is_empty() {
            self.advertise_address.clone()
        } else if let Some(a) = peers.get(&self.master_id) {
            a.clone()
        } else {
            let h = if host == "0.0.0.0" { "127.0.0.1" } else { host };
            format!("{h}:{}", self.listen_port)
        };
        if !matches!(self.read_policy.as_str(), "lease" | "read_index") {
            return Err(format!(
                "READ_POLICY `{}`: expected `lease` or `read_index`",
                self.read_policy
            ));
        }
        if self.session_timeout == 0 {
            return Err("SESSION_TIMEOUT must be at least 1 second".into());
        }
        if self.heartbeat_ms == 0 || self.election_timeout_ms < 3 * self.heartbeat_ms {
            return Err(format!(
                "ELECTION_TIMEOUT_MS ({}) must be at least 3 × HEARTBEAT_MS ({})",
                self.election_timeout_ms, self.heartbeat_ms
            ));
        }
        Ok(Resolved {
            listen,
            advertise,
            http_listen,
            peers,
        })
    }
}

/// Parses `1=host:port,2=host:port`.
pub fn parse_peers(s: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((id, addr)) = part.split_once('=') else {
            return Err(format!(
                "MASTER_PEERS entry `{part}`: expected ID=host:port"
            ));
        };
        let id: u64 = id.trim().parse().map_err(|_| {
            format!(
                "MASTER_PEERS entry `{part}`: `{}` is not a master id",
                id.trim()
            )
        })?;
        let addr = addr.trim();
        if id == 0 || !addr.contains(':') {
            return Err(format!(
                "MASTER_PEERS entry `{part}`: expected ID=host:port with ID > 0"
            ));
        }
        if let Some(prev) = out.insert(id, addr.to_string()) {
            return Err(format!(
                "MASTER_PEERS lists id {id} twice ({prev} and {addr}): ids must be unique"
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_reject_duplicates() {
        let p = parse_peers("1=127.0.0.1:9421, 2=127.0.0.1:9422").unwrap();
        assert_eq!(p.len(), 2);
        assert!(parse_peers("1=a:1,1=b:2").unwrap_err().contains("twice"));
        assert!(parse_peers("x=a:1").is_err());
        assert!(parse_peers("1=nohostport").is_err());
    }

    #[test]
    fn defaults_resolve() {
        let r = MasterConfig::default().resolve().unwrap();
        assert_eq!(r.advertise, "127.0.0.1:9421");
        assert!(r.peers.is_empty());
    }

    #[test]
    fn self_must_be_in_peers() {
        let c = MasterConfig {
            master_id: 3,
            master_peers: "1=a:1,2=b:2".into(),
            ..Default::default()
        };
        assert!(c.resolve().unwrap_err().contains("MASTER_ID"));
    }
}
