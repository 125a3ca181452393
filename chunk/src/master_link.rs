//! The chunkserver's side of `mfs.v1.ChunkRegistry`: find the leading
//! master, register, report every chunk, then heartbeat every second with
//! disk space, load and the changes since the last heartbeat. Any sign that
//! the leader changed or forgot us starts again with Register.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mfs_proto::v1 as pb;
use mfs_proto::v1::chunk_registry_client::ChunkRegistryClient;
use mfs_proto::ClusterSecret;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::store::{Change, Store};

/// Copies per ReportChunks batch.
pub const REPORT_BATCH: usize = 5000;
/// Time between heartbeats.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
const RPC_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest pause between rounds of trying every master: short, so that a
/// chunkserver is back with a new leader soon after it is elected (which
/// the mounts' writes wait for).
const BACKOFF_MAX: Duration = Duration::from_millis(250);
/// Heartbeats timing out in a row before another master is tried. A
/// master that is not there (connection refused or reset, or one that no
/// longer leads) is left at the first failure.
const HEARTBEAT_FAILURES: u32 = 3;

/// What the link needs to know.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// MASTER_HOST entries, `host:port`.
    pub masters: Vec<String>,
    /// Our data service address.
    pub advertise: String,
    /// Our labels.
    pub labels: Vec<String>,
    /// In maintenance.
    pub maintenance: bool,
    /// Where the id the master gave us is kept (survives restarts).
    pub id_file: PathBuf,
    /// Shown to the masters on every call.
    pub secret: ClusterSecret,
}

/// Reads the id saved by an earlier run (0: none).
pub fn load_id(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Saves the id (temp file + rename).
pub fn save_id(path: &Path, id: u64) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{id}\n"))?;
    std::fs::rename(&tmp, path)
}

/// The disks as the master sees them.
pub fn disk_infos(store: &Store) -> Vec<pb::DiskInfo> {
    store
        .disks()
        .iter()
        .map(|d| {
            let sp = d.space().ok();
            metrics::gauge!("mfs_disk_total_bytes", "path" => d.path.display().to_string())
                .set(sp.map(|s| s.total).unwrap_or(0) as f64);
            metrics::gauge!("mfs_disk_used_bytes", "path" => d.path.display().to_string())
                .set(sp.map(|s| s.used).unwrap_or(0) as f64);
            pb::DiskInfo {
                path: d.path.display().to_string(),
                total_bytes: sp.map(|s| s.total).unwrap_or(0),
                used_bytes: sp.map(|s| s.used).unwrap_or(0),
                chunks: if d.is_damaged() { 0 } else { d.chunk_count() },
                marked_for_removal: d.marked,
                damaged: d.is_damaged(),
            }
        })
        .collect()
}

/// A client of the masters' registry; every call carries our secret.
type Registry = ChunkRegistryClient<InterceptedService<Channel, ClusterSecret>>;

/// Why a session with a master ended.
enum End {
    /// Register again, first at this address (a leader hint).
    Redirect(String),
    /// Register again, starting anywhere.
    Again,
}

/// The link to the masters; [`MasterLink::run`] never returns.
pub struct MasterLink {
    cfg: LinkConfig,
    store: Arc<Store>,
    channels: HashMap<String, Channel>,
    id: u64,
    last_state: String,
}

impl MasterLink {
    /// A link for `store`.
    pub fn new(cfg: LinkConfig, store: Arc<Store>) -> Self {
        let id = load_id(&cfg.id_file);
        MasterLink {
            cfg,
            store,
            channels: HashMap::new(),
            id,
            last_state: String::new(),
        }
    }

    /// Logs a state once, not on every retry.
    fn state(&mut self, s: String, warn: bool) {
        if s != self.last_state {
            if warn {
                tracing::warn!("{s}");
            } else {
                tracing::info!("{s}");
            }
            self.last_state = s;
        }
    }

    fn client(&mut self, addr: &str) -> Option<Registry> {
        let ch = match self.channels.get(addr) {
            Some(c) => c.clone(),
            None => {
                let ch = mfs_proto::tls::endpoint(addr).ok()?;
                let ch = mfs_proto::watched(ch, true)
                    .tcp_nodelay(true)
                    .connect_timeout(Duration::from_secs(2))
                    .timeout(RPC_TIMEOUT)
                    .connect_lazy();
                self.channels.insert(addr.to_string(), ch.clone());
                ch
            }
        };
        Some(ChunkRegistryClient::with_interceptor(
            ch,
            self.cfg.secret.clone(),
        ))
    }

    /// The MASTER_HOST entries with names resolved (a name may stand for
    /// every master).
    async fn candidates(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for e in &self.cfg.masters {
            match tokio::net::lookup_host(e.as_str()).await {
                Ok(addrs) => {
                    for a in addrs {
                        let s = a.to_string();
                        if !out.contains(&s) {
                            out.push(s);
                        }
                    }
                }
                Err(_) => {
                    if !out.contains(e) {
                        out.push(e.clone());
                    }
                }
            }
        }
        out
    }

    /// Runs for ever: register, report, heartbeat; again on any break.
    pub async fn run(mut self) {
        let mut hint: Option<String> = None;
        loop {
            let (addr, client) = self.register(hint.take()).await;
            let end = self.session(&addr, client).await;
            if let End::Redirect(l) = end {
                hint = Some(l);
            }
        }
    }

    /// Registers with the leader, trying hints and every master with
    /// backoff until one accepts.
    async fn register(&mut self, mut hint: Option<String>) -> (String, Registry) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let mut queue: Vec<String> = hint.take().into_iter().collect();
            queue.extend(self.candidates().await);
            let mut tried: Vec<String> = Vec::new();
            let mut last_err = String::new();
            while let Some(addr) = (!queue.is_empty()).then(|| queue.remove(0)) {
                if tried.contains(&addr) {
                    continue;
                }
                tried.push(addr.clone());
                let Some(mut client) = self.client(&addr) else {
                    last_err = format!("bad master address `{addr}`");
                    continue;
                };
                let req = pb::RegisterChunkserverRequest {
                    address: self.cfg.advertise.clone(),
                    previous_id: self.id,
                    labels: self.cfg.labels.clone(),
                    disks: disk_infos(&self.store),
                    maintenance: self.cfg.maintenance,
                };
                match client.register(req).await {
                    Ok(r) => {
                        let id = r.into_inner().id;
                        if id != self.id {
                            if let Err(e) = save_id(&self.cfg.id_file, id) {
                                tracing::warn!(
                                    "cannot save chunkserver id to {}: {e}",
                                    self.cfg.id_file.display()
                                );
                            }
                        }
                        self.id = id;
                        self.state(
                            format!("registered with master {addr} as chunkserver {id}"),
                            false,
                        );
                        return (addr, client);
                    }
                    Err(s) if s.code() == Code::PermissionDenied => {
                        last_err = format!("master {addr} refused us: {}", s.message());
                    }
                    Err(s) => match leader_hint(&s) {
                        Some(l) => queue.insert(0, l),
                        None => last_err = format!("{addr}: {}", mfs_proto::status_text(&s)),
                    },
                }
            }
            self.state(
                format!(
                    "cannot register with a leading master (tried {}): {last_err}; retrying",
                    tried.join(", ")
                ),
                true,
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Reports the inventory, then heartbeats until something breaks.
    async fn session(&mut self, addr: &str, mut client: Registry) -> End {
        // The full report covers every change queued so far.
        let _ = self.store.take_changes();
        let inv = self.store.inventory();
        let n = inv.len();
        let batches: Vec<&[crate::store::ChunkInfo]> = if inv.is_empty() {
            vec![&[]]
        } else {
            inv.chunks(REPORT_BATCH).collect()
        };
        let count = batches.len();
        for (i, b) in batches.into_iter().enumerate() {
            let report = pb::ChunkReport {
                id: self.id,
                first: i == 0,
                last: i + 1 == count,
                chunks: b
                    .iter()
                    .map(|c| pb::ChunkCopy {
                        chunk_id: c.id,
                        version: c.version,
                        on_marked_disk: c.marked,
                    })
                    .collect(),
            };
            match client.report_chunks(report).await {
                Ok(r) if r.get_ref().known => {}
                Ok(_) => {
                    self.state(
                        format!(
                            "master {addr} forgot us during the chunk report; registering again"
                        ),
                        true,
                    );
                    return End::Again;
                }
                Err(s) => return self.broken(addr, s),
            }
        }
        tracing::info!("reported {n} chunks to master {addr}");
        let mut failures = 0;
        let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let changes = self.store.take_changes();
            let hb = heartbeat(self.id, &self.store, &changes, self.cfg.maintenance);
            match client.heartbeat(hb).await {
                Ok(r) if r.get_ref().known => {
                    failures = 0;
                    if !self.last_state.starts_with("heartbeats") {
                        self.state(format!("heartbeats to master {addr} flowing"), false);
                    }
                }
                Ok(_) => {
                    self.store.return_changes(changes);
                    self.state(
                        format!("master {addr} does not know us any more; registering again"),
                        true,
                    );
                    return End::Again;
                }
                Err(s) => {
                    self.store.return_changes(changes);
                    failures += 1;
                    if leader_hint(&s).is_some()
                        || s.code() == tonic::Code::Unavailable
                        || failures >= HEARTBEAT_FAILURES
                    {
                        return self.broken(addr, s);
                    }
                }
            }
        }
    }

    fn broken(&mut self, addr: &str, s: Status) -> End {
        match leader_hint(&s) {
            Some(l) => {
                self.state(
                    format!("master {addr} is no longer the leader; following it to {l}"),
                    false,
                );
                End::Redirect(l)
            }
            None => {
                self.state(
                    format!(
                        "lost master {addr}: {}; looking for the leader",
                        mfs_proto::status_text(&s)
                    ),
                    true,
                );
                End::Again
            }
        }
    }
}

/// The heartbeat for the changes taken.
fn heartbeat(
    id: u64,
    store: &Store,
    changes: &BTreeMap<u64, Change>,
    maintenance: bool,
) -> pb::ChunkserverHeartbeat {
    let mut added = Vec::new();
    let mut removed = Vec::new();
    for (&chunk_id, c) in changes {
        match *c {
            Change::Added { version, marked } => added.push(pb::ChunkCopy {
                chunk_id,
                version,
                on_marked_disk: marked,
            }),
            Change::Removed { version } => removed.push(pb::ChunkCopy {
                chunk_id,
                version,
                on_marked_disk: false,
            }),
        }
    }
    metrics::gauge!("mfs_chunk_count").set(store.chunk_count() as f64);
    pb::ChunkserverHeartbeat {
        id,
        disks: disk_infos(store),
        load: store.load(),
        added,
        removed,
        maintenance,
    }
}

/// The leader a status points to (`mfs-leader`), if any.
pub fn leader_hint(s: &Status) -> Option<String> {
    if s.code() != Code::Unavailable {
        return None;
    }
    let l = s
        .metadata()
        .get(mfs_proto::LEADER_KEY)?
        .to_str()
        .ok()?
        .trim();
    (!l.is_empty() && l.contains(':')).then(|| l.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    #[test]
    fn id_survives_a_restart() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("chunkserver.id");
        assert_eq!(load_id(&p), 0);
        save_id(&p, 42).unwrap();
        assert_eq!(load_id(&p), 42);
    }

    #[test]
    fn leader_hint_only_from_unavailable_with_address() {
        let mut s = Status::unavailable("not the leader");
        s.metadata_mut().insert(
            mfs_proto::LEADER_KEY,
            MetadataValue::from_static("10.0.0.2:9421"),
        );
        assert_eq!(leader_hint(&s).as_deref(), Some("10.0.0.2:9421"));
        assert_eq!(leader_hint(&Status::unavailable("election")), None);
        let mut s = Status::internal("x");
        s.metadata_mut()
            .insert(mfs_proto::LEADER_KEY, MetadataValue::from_static("a:1"));
        assert_eq!(leader_hint(&s), None);
    }
}
