//! openraft's state-machine traits over the namespace (`crate::fsm`).
//!
//! The namespace lives in RAM behind a lock shared with the gRPC services
//! (reads) and this adapter (applies). Snapshots are metadata images written
//! to `DATA_PATH/snapshots/` (temp file, fsync, rename); at start the newest
//! readable image is loaded and the log after it is re-applied by openraft.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use parking_lot::{RwLock as NsLock, RwLockReadGuard, RwLockWriteGuard};

use futures::{Stream, StreamExt};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::OptionalSend;

use super::observer::{ApplyObserver, Change, LogPosition};
use super::types::*;
use crate::fsm::{Namespace, Reply};
use crate::store::snapfile;

/// What the image carries besides the namespace: where in the log it stands.
type ImageExtra = (Option<LogId>, StoredMembership);

/// The namespace and its position in the log, shared with the services.
///
/// Taking a metadata image reads the whole namespace under its read lock,
/// for as long as it takes to serialize (tens of milliseconds at 400k
/// inodes). Nothing on the runtime thread waits for it: reads do not queue
/// behind a waiting apply ([`Shared::ns`]), and an apply that finds the
/// lock taken waits on the blocking pool ([`Shared::ns_write`]).
pub struct Shared {
    ns: NsLock<Namespace>,
    applied: RwLock<ImageExtra>,
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl Shared {
    /// Read access to the namespace. It does not wait behind a writer that
    /// waits for another reader (an apply waiting for an image to be
    /// taken), only while a writer holds the lock (an apply, short).
    pub fn ns(&self) -> RwLockReadGuard<'_, Namespace> {
        self.ns.read_recursive()
    }

    /// Write access (an apply, a snapshot installed), from the runtime
    /// thread: when the lock is taken (an image being taken), the wait
    /// happens on the blocking pool, and the runtime thread serves
    /// meanwhile.
    async fn ns_write(self: &Arc<Self>) -> RwLockWriteGuard<'_, Namespace> {
        loop {
            if let Some(g) = self.ns.try_write() {
                return g;
            }
            let shared = Arc::clone(self);
            // The lock is free when this returns; another image may take it
            // again before the next try, which then waits again.
            let _ = tokio::task::spawn_blocking(move || drop(shared.ns.write())).await;
        }
    }

    pub fn applied(&self) -> ImageExtra {
        self.applied
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_applied(&self, v: ImageExtra) {
        *self.applied.write().unwrap_or_else(|p| p.into_inner()) = v;
    }

    /// The image of the current state, stamped with its log position.
    pub fn image(&self) -> Result<(SnapshotMeta, Vec<u8>), io::Error> {
        let started = std::time::Instant::now();
        // `applied` is read under the namespace's lock, so both agree; the
        // lock is let go once a child process has its copy of both.
        let ns = self.ns();
        let (last, membership) = self.applied();
        let extra = codec::encode(&(last, membership.clone())).map_err(other)?;
        let image = super::image_child::image(ns, &extra)?;
        tracing::debug!(
            bytes = image.len(),
            ms = started.elapsed().as_secs_f64() * 1e3,
            "metadata image taken"
        );
        Ok((
            SnapshotMeta {
                last_log_id: last,
                last_membership: membership,
            },
            image,
        ))
    }
}

/// Parses an image into the namespace and its log position.
pub fn parse_image(bytes: &[u8]) -> Result<(Namespace, ImageExtra), String> {
    let (ns, extra) = Namespace::from_image(bytes).map_err(|e| e.to_string())?;
    let extra: ImageExtra = codec::decode(&extra).map_err(|e| format!("image position: {e}"))?;
    Ok((ns, extra))
}

fn snapshot_name(meta: &SnapshotMeta) -> String {
    let (term, index) = meta
        .last_log_id
        .as_ref()
        .map(|l| (l.leader_id.term, l.index))
        .unwrap_or((0, 0));
    format!("snapshot-{index:020}-{term:020}.mfs")
}

pub struct StateMachine {
    pub shared: Arc<Shared>,
    dir: PathBuf,
    keep: usize,
    /// Sees every applied entry (the metalogger's changelog); none on a master.
    observer: Option<Arc<dyn ApplyObserver>>,
}

/// An openraft log id as a plain position.
pub fn position(log_id: &LogId) -> LogPosition {
    LogPosition {
        index: log_id.index,
        term: log_id.leader_id.term,
    }
}

/// The (id, address) of the voters and of the learners of a membership.
fn members(m: &Membership) -> Change<'static> {
    let voters: std::collections::BTreeSet<NodeId> = m.voter_ids().collect();
    let mut v = Vec::new();
    let mut l = Vec::new();
    for (id, n) in m.nodes() {
        if voters.contains(id) {
            v.push((*id, n.addr.clone()));
        } else {
            l.push((*id, n.addr.clone()));
        }
    }
    Change::Membership {
        voters: v,
        learners: l,
    }
}

impl StateMachine {
    /// Opens the state machine of `snap_dir`: loads the newest image that
    /// reads back whole (older ones are tried when the newest is damaged).
    pub fn open(snap_dir: PathBuf, keep: usize) -> Result<Self, String> {
        std::fs::create_dir_all(&snap_dir)
            .map_err(|e| format!("cannot create snapshot dir {}: {e}", snap_dir.display()))?;
        if let Ok(n) = snapfile::remove_tmp(&snap_dir) {
            if n > 0 {
                tracing::info!(
                    files = n,
                    "removed unfinished snapshot files from an earlier crash"
                );
            }
        }
        let mut state = (Namespace::new(), (None, StoredMembership::default()));
        let files = snapfile::list(&snap_dir)
            .map_err(|e| format!("cannot list {}: {e}", snap_dir.display()))?;
        let mut loaded = false;
        for name in files.iter().rev() {
            let path = snap_dir.join(name);
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| parse_image(&b))
            {
                Ok(s) => {
                    tracing::info!(file = %path.display(), last = ?s.1 .0, "loaded metadata image");
                    state = s;
                    loaded = true;
                    break;
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), "damaged metadata image skipped: {e}")
                }
            }
        }
        if !loaded && !files.is_empty() {
            return Err(format!(
                "no readable metadata image in {} ({} damaged); restore the directory from a metalogger",
                snap_dir.display(),
                files.len()
            ));
        }
        Ok(StateMachine {
            shared: Arc::new(Shared {
                ns: NsLock::new(state.0),
                applied: RwLock::new(state.1),
            }),
            dir: snap_dir,
            keep,
            observer: None,
        })
    }

    /// Adds an apply hook (see [`ApplyObserver`]).
    pub fn with_observer(mut self, observer: Arc<dyn ApplyObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    fn save(&self, meta: &SnapshotMeta, image: &[u8]) -> Result<(), io::Error> {
        snapfile::write_atomic(&self.dir, &snapshot_name(meta), image)?;
        snapfile::prune(&self.dir, self.keep)?;
        Ok(())
    }
}

pub struct SnapshotBuilder {
    shared: Arc<Shared>,
    dir: PathBuf,
    keep: usize,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let shared = self.shared.clone();
        let dir = self.dir.clone();
        let keep = self.keep;
        tokio::task::spawn_blocking(move || {
            let (meta, image) = shared.image()?;
            snapfile::write_atomic(&dir, &snapshot_name(&meta), &image)?;
            snapfile::prune(&dir, keep)?;
            tracing::info!(last = ?meta.last_log_id, bytes = image.len(), "metadata snapshot written");
            Ok(Snapshot { meta, snapshot: image })
        })
        .await
        .map_err(other)?
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok(self.shared.applied())
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder, io::Error>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let reply = {
                let mut ns = self.shared.ns_write().await;
                let reply = match &entry.payload {
                    EntryPayload::Blank => Reply::Ok,
                    EntryPayload::Normal(req) => ns.apply(req),
                    EntryPayload::Membership(_) => Reply::Ok,
                };
                // Update the position in place: no copy of the membership
                // for ordinary entries.
                let mut applied = self
                    .shared
                    .applied
                    .write()
                    .unwrap_or_else(|p| p.into_inner());
                applied.0 = Some(entry.log_id);
                if let EntryPayload::Membership(m) = &entry.payload {
                    applied.1 = StoredMembership::new(Some(entry.log_id), m.clone());
                }
                reply
            };
            if let Some(obs) = &self.observer {
                let change = match &entry.payload {
                    EntryPayload::Blank => Change::Blank,
                    EntryPayload::Normal(req) => Change::Request(req),
                    EntryPayload::Membership(m) => members(m),
                };
                obs.applied(position(&entry.log_id), &change)
                    .map_err(other)?;
            }
            if let Some(r) = responder {
                r.send(reply);
            }
        }
        if let Some(obs) = &self.observer {
            obs.batch_done().map_err(other)?;
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            shared: self.shared.clone(),
            dir: self.dir.clone(),
            keep: self.keep,
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let (ns, _) = parse_image(&snapshot)
            .map_err(|e| other(format!("snapshot from leader rejected: {e}")))?;
        self.save(meta, &snapshot)?;
        let mut cur = self.shared.ns_write().await;
        *cur = ns;
        self.shared
            .set_applied((meta.last_log_id, meta.last_membership.clone()));
        drop(cur);
        if let Some(obs) = &self.observer {
            obs.state_replaced(meta.last_log_id.as_ref().map(position), &snapshot)
                .map_err(other)?;
        }
        tracing::info!(last = ?meta.last_log_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let files = snapfile::list(&self.dir)?;
        for name in files.iter().rev() {
            let bytes = std::fs::read(self.dir.join(name))?;
            match parse_image(&bytes) {
                Ok((_, (last, membership))) => {
                    return Ok(Some(Snapshot {
                        meta: SnapshotMeta {
                            last_log_id: last,
                            last_membership: membership,
                        },
                        snapshot: bytes,
                    }))
                }
                Err(e) => {
                    tracing::error!(file = name.as_str(), "damaged metadata image skipped: {e}")
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// While a long read holds the namespace (an image being taken), an
    /// apply waiting for the write lock leaves the runtime's one thread
    /// free: its timers tick and its reads are served; the apply gets the
    /// lock once the read ends.
    #[test]
    fn an_apply_waiting_for_an_image_leaves_the_runtime_thread_free() {
        let dir = tempfile::tempdir().unwrap();
        let shared = StateMachine::open(dir.path().join("snap"), 2)
            .unwrap()
            .shared;
        let hold = Duration::from_millis(400);
        let held = std::sync::Barrier::new(2);
        let start = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| {
                let image = shared.ns();
                held.wait();
                std::thread::sleep(hold);
                drop(image);
            });
            held.wait();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let writer = Arc::clone(&shared);
                let apply = tokio::spawn(async move {
                    drop(writer.ns_write().await);
                    start.elapsed()
                });
                let mut ticks = 0;
                let mut slowest_read = Duration::ZERO;
                while start.elapsed() < hold - Duration::from_millis(100) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    ticks += 1;
                    let t = Instant::now();
                    drop(shared.ns());
                    slowest_read = slowest_read.max(t.elapsed());
                }
                assert!(ticks >= 10, "the runtime thread ticked {ticks} times");
                assert!(
                    slowest_read < Duration::from_millis(50),
                    "a read waited {slowest_read:?} behind the waiting apply"
                );
                let got = apply.await.unwrap();
                assert!(got >= hold, "the apply got the lock after {got:?}");
            });
        });
    }
}
