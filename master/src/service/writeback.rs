//! Write-back creates (and removals, renames), the leader's side (see `fsm::delegations` for the
//! rules): the calls `Delegate`, `ReturnDelegation`, `Batch`, the
//! `Recalls` streams, and the recall a call of another session makes
//! before it touches a delegated directory.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use mfs_proto::v1 as pb;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::access::{Caller, Need};
use super::convert::{location_to_pb, ts_from_pb};
use super::error::{errno_status, errno_status_with, invalid};
use super::meta::{Meta, R};
use crate::chunks::ChunkError;
use crate::fsm::{self, ChunkId, Errno, Inode, MakeAt, Op, Reply, SessionId};
use crate::raft::node::now;
use mfs_proto::ChunkAccess;

/// How long a call waits for the holder to give a directory back before
/// the leader takes it.
pub const RECALL_WAIT: Duration = Duration::from_secs(2);
/// How often a stream says it is alive.
const ALIVE_EVERY: Duration = Duration::from_secs(1);

pub type RecallStream = Pin<Box<dyn Stream<Item = Result<pb::Recall, Status>> + Send + 'static>>;

/// The open `Recalls` streams, per session (the newest of a session wins).
#[derive(Default)]
pub struct Recalls {
    streams: Mutex<HashMap<SessionId, (u64, mpsc::Sender<u64>)>>,
    next: std::sync::atomic::AtomicU64,
}

impl Recalls {
    fn open(&self, sid: SessionId) -> (u64, mpsc::Receiver<u64>) {
        let (tx, rx) = mpsc::channel(1024);
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lock().insert(sid, (id, tx));
        (id, rx)
    }

    fn close(&self, sid: SessionId, id: u64) {
        let mut s = self.lock();
        if s.get(&sid).is_some_and(|(i, _)| *i == id) {
            s.remove(&sid);
        }
    }

    /// Asks `holder` for `dir`; false when it has no stream here.
    fn send(&self, holder: SessionId, dir: Inode) -> bool {
        let tx = self.lock().get(&holder).map(|(_, tx)| tx.clone());
        tx.is_some_and(|tx| tx.try_send(dir.0).is_ok())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, (u64, mpsc::Sender<u64>)>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The directories among `inodes` delegated to a session other than
/// `caller`, with their holders.
fn held_by_others(
    ns: &fsm::Namespace,
    caller: SessionId,
    inodes: &[Inode],
) -> Vec<(Inode, SessionId)> {
    if !ns.has_delegations() {
        return Vec::new();
    }
    let mut v: Vec<(Inode, SessionId)> = inodes
        .iter()
        .filter_map(|&i| ns.delegated_to(i).filter(|&s| s != caller).map(|s| (i, s)))
        .collect();
    v.dedup();
    v
}

impl Meta {
    /// Before a call of `caller` naming `inodes`: every one of them
    /// delegated to another session is recalled, and the call waits until
    /// its holder gave it back (having sent its queue), or takes it after
    /// [`RECALL_WAIT`].
    pub(super) async fn recall_from_others(
        &self,
        caller: SessionId,
        inodes: &[Inode],
    ) -> Result<(), Status> {
        let held = held_by_others(&self.node.shared.ns(), caller, inodes);
        if held.is_empty() {
            return Ok(());
        }
        let start = Instant::now();
        // Made before the recalls go: the holder's queue and return come
        // as applied entries, each of which wakes it.
        let mut changes = self.node.changes();
        metrics::counter!("mfs_recalls_total").increment(held.len() as u64);
        for &(dir, holder) in &held {
            if !self.recalls.send(holder, dir) {
                tracing::debug!(%dir, %holder, "no recall stream from the holder of a delegated directory");
            }
        }
        loop {
            changes.next(Duration::from_millis(20)).await;
            let left = held_by_others(&self.node.shared.ns(), caller, inodes);
            if left.is_empty() {
                return Ok(());
            }
            if start.elapsed() < RECALL_WAIT {
                continue;
            }
            for (dir, holder) in left {
                metrics::counter!("mfs_recalls_taken_total").increment(1);
                tracing::warn!(%dir, %holder, "the holder of a delegated directory did not give it back within {RECALL_WAIT:?}; taking it (creates it answered and did not send are lost)");
                let req = fsm::Request {
                    session: SessionId::NONE,
                    seq: 0,
                    acked: 0,
                    time: now(),
                    op: Op::Undelegate { dir, holder },
                };
                self.node.write(req).await?;
            }
            return Ok(());
        }
    }

    /// `inodes` and every delegated directory: for calls whose effect
    /// reaches below the directories they name (a recursive change, a
    /// snapshot) or changes files a holder answers removals of (extra
    /// attributes), or what creates there may do (quotas).
    pub(super) fn and_every_delegated(&self, mut inodes: Vec<Inode>) -> Vec<Inode> {
        let ns = self.node.shared.ns();
        if ns.has_delegations() {
            inodes.extend(ns.delegated_dirs());
        }
        inodes
    }

    pub(super) async fn delegate(&self, req: Request<pb::DelegateRequest>) -> R<pb::DelegateReply> {
        let (c, r) = self
            .admit_holding(req, Need::Write, |r| vec![Inode(r.dir)])
            .await?;
        if c.rights
            .as_ref()
            .is_some_and(|r| r.mapall.is_some() || r.maproot.is_some())
        {
            // The master would make files with other owners than the
            // mount says.
            return Err(errno_status_with(
                Errno::EBUSY,
                "no delegation to a session whose exports line maps users (maproot, mapall)".into(),
            ));
        }
        let op = Op::Delegate {
            dir: Inode(r.dir),
            inodes: r.inodes,
        };
        let (first_inode, count) = match self.mutate(r.id, op).await? {
            Reply::Delegated { first, count } => {
                metrics::counter!("mfs_delegations_total").increment(1);
                (first, count)
            }
            Reply::Err(e) => return Err(errno_status(e)),
            other => return Err(Status::internal(format!("unexpected reply {other:?}"))),
        };
        let dir = self
            .read(|ns| {
                ns.getattr(Inode(r.dir))
                    .map(|a| super::convert::attr_to_pb(&a, ns))
            })
            .await?;
        Ok(Response::new(pb::DelegateReply {
            first_inode,
            count,
            dir: Some(dir),
        }))
    }

    pub(super) async fn return_delegation(
        &self,
        req: Request<pb::ReturnDelegationRequest>,
    ) -> R<pb::Empty> {
        let (c, r) = self.admit_holding(req, Need::Read, |_| vec![]).await?;
        let op = Op::Undelegate {
            dir: Inode(r.dir),
            holder: c.session,
        };
        super::meta::ok_reply(self.mutate(r.id, op).await?)
    }

    pub(super) async fn batch(&self, req: Request<pb::BatchRequest>) -> R<pb::BatchReply> {
        if req.get_ref().ops.len() > fsm::MAX_BATCH {
            return Err(invalid(format!(
                "Batch: {} ops, at most {} in one call",
                req.get_ref().ops.len(),
                fsm::MAX_BATCH
            )));
        }
        let (c, r) = self
            .admit(req, Need::Write, |r| {
                let mut dirs: Vec<Inode> = Vec::new();
                for o in &r.ops {
                    match &o.op {
                        Some(pb::batch_op::Op::Create(c)) => dirs.push(Inode(c.parent)),
                        Some(pb::batch_op::Op::Mkdir(c)) => dirs.push(Inode(c.parent)),
                        Some(pb::batch_op::Op::Unlink(u)) => dirs.push(Inode(u.parent)),
                        Some(pb::batch_op::Op::Rmdir(u)) => dirs.push(Inode(u.parent)),
                        Some(pb::batch_op::Op::Rename(m)) => {
                            dirs.extend([Inode(m.parent), Inode(m.new_parent)])
                        }
                        Some(pb::batch_op::Op::WriteEnd(w)) => dirs.push(Inode(w.inode)),
                        Some(pb::batch_op::Op::Write(w)) => dirs.push(Inode(w.inode)),
                        Some(pb::batch_op::Op::Attach(a)) => dirs.push(Inode(a.inode)),
                        Some(pb::batch_op::Op::Open(o)) => dirs.push(Inode(o.inode)),
                        Some(pb::batch_op::Op::Setattr(a)) => dirs.push(Inode(a.inode)),
                        Some(pb::batch_op::Op::Release(_)) | None => {}
                    }
                }
                dirs.sort_unstable();
                dirs.dedup();
                dirs
            })
            .await?;
        let n = r.ops.len();
        let mut ops = Vec::with_capacity(n);
        // Chunks whose write leases the batch's length commits end.
        let mut ended = Vec::new();
        // The batch's new-chunk leases: (its place, inode, slot), and the
        // claims on them until the commit.
        let mut asked = Vec::new();
        let mut reserved = Vec::new();
        // Ops answered before the commit (a lease that cannot be asked
        // now): their place and errno.
        let mut early: Vec<(usize, i32)> = Vec::new();
        for (i, o) in r.ops.into_iter().enumerate() {
            ops.push(match o.op {
                Some(pb::batch_op::Op::Create(x)) => made_at(&c, x, false)?,
                Some(pb::batch_op::Op::Mkdir(x)) => made_at(&c, x, true)?,
                Some(pb::batch_op::Op::Release(inode)) => Op::Release {
                    inode: Inode(inode),
                },
                Some(pb::batch_op::Op::Unlink(u)) => super::convert::unlink_op(&c, u),
                Some(pb::batch_op::Op::Rmdir(u)) => super::convert::rmdir_op(&c, u),
                Some(pb::batch_op::Op::Rename(m)) => super::convert::rename_op(&c, m),
                Some(pb::batch_op::Op::WriteEnd(w)) => {
                    let (mtime, change) = super::data::end_args(&c, &w)?;
                    let time = super::meta::given_time(w.time, "Batch: write_end time")?;
                    let chunk = ChunkId(w.chunk_id);
                    ended.push(chunk);
                    self.chunks.end_op(
                        c.session,
                        (Inode(w.inode), w.index),
                        (chunk, w.created),
                        (w.file_length, mtime, time),
                        change,
                    )
                }
                Some(pb::batch_op::Op::Open(o)) => {
                    let mode = super::convert::open_mode(o.mode)?;
                    if o.truncate || mode != crate::fsm::OpenMode::Read {
                        return Err(invalid("Batch: an open for writing (send Open)"));
                    }
                    Op::Open {
                        cred: c.cred(o.cred),
                        inode: Inode(o.inode),
                        mode,
                        truncate: false,
                    }
                }
                Some(pb::batch_op::Op::Write(w)) => {
                    let (inode, index) = (Inode(w.inode), w.index);
                    match self
                        .chunks
                        .batch_write_op(c.cred(w.cred), inode, index)
                        .await
                    {
                        Ok((op, claims)) => {
                            asked.push((i, inode, index));
                            reserved.push(claims);
                            op
                        }
                        Err(ChunkError::Errno(e)) => {
                            early.push((i, e.0));
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Some(pb::batch_op::Op::Attach(a)) => Op::AttachChunk {
                    cred: c.cred(a.cred),
                    inode: Inode(a.inode),
                    index: a.index,
                    chunk: ChunkId(a.chunk_id),
                },
                Some(pb::batch_op::Op::Setattr(a)) => set_attr_at(&c, a)?,
                None => return Err(invalid("Batch: an op without a kind")),
            });
        }
        metrics::counter!("mfs_writeback_ops_total").increment(n as u64);
        let reply = self.mutate(r.id, Op::Batch { ops }).await;
        drop(reserved);
        for chunk in ended {
            self.chunks.end_lease(c.session, chunk);
        }
        let mut errnos = match reply? {
            Reply::Batch(errnos) => errnos,
            Reply::Err(e) => return Err(errno_status(e)),
            other => return Err(Status::internal(format!("unexpected reply {other:?}"))),
        };
        // (A retry answered from the reply cache has every op's errno.)
        if errnos.len() + early.len() == n {
            for (i, e) in early {
                errnos.insert(i, e);
            }
        }
        let mut leases = HashMap::new();
        for (i, inode, index) in asked {
            if errnos.get(i) != Some(&0) {
                continue;
            }
            match self.chunks.batch_lease(c.session, inode, index) {
                Ok(loc) => {
                    leases.insert(i as u32, self.write_location(loc, inode));
                }
                // The chunk is placed; the client asks with WriteChunk.
                Err(ChunkError::Errno(e)) => errnos[i] = e.0,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Response::new(pb::BatchReply { errnos, leases }))
    }

    pub(super) async fn hold_chunks(
        &self,
        req: Request<pb::HoldChunksRequest>,
    ) -> R<pb::HoldChunksReply> {
        let (c, r) = self.admit(req, Need::Write, |_| vec![]).await?;
        if r.count > 1024 || r.give_back.len() > fsm::MAX_HELD_CHUNKS {
            return Err(invalid(format!(
                "HoldChunks: {} ids asked, {} given back (at most 1024 and {})",
                r.count,
                r.give_back.len(),
                fsm::MAX_HELD_CHUNKS
            )));
        }
        let goal = u8::try_from(r.goal)
            .ok()
            .filter(|g| (1..=fsm::MAX_GOAL).contains(g))
            .ok_or_else(|| invalid(format!("HoldChunks: goal {} is not 1..9", r.goal)))?;
        let op = Op::HoldChunks {
            count: r.count,
            give_back: r.give_back.into_iter().map(ChunkId).collect(),
        };
        let first = match self.mutate(r.id, op).await? {
            Reply::Chunk { id, .. } => id,
            Reply::Err(e) => return Err(errno_status(e)),
            other => return Err(Status::internal(format!("unexpected reply {other:?}"))),
        };
        let count = if first.0 == 0 { 0 } else { r.count };
        let chunks = self
            .chunks
            .hold(c.session, (first, count), goal)?
            .into_iter()
            .map(|l| self.with_token(location_to_pb(l), ChunkAccess::Write))
            .collect();
        Ok(Response::new(pb::HoldChunksReply { chunks }))
    }

    pub(super) async fn recall_stream(&self, req: Request<pb::RecallsRequest>) -> R<RecallStream> {
        self.node.ensure_leader()?;
        // The caller is checked as for any call of the session (its
        // registering address, the exports file).
        let (c, _) = self.admit_holding(req, Need::Read, |_| vec![]).await?;
        let sid = c.session;
        if sid == SessionId::NONE || !self.node.shared.ns().has_session(sid) {
            return Err(errno_status_with(
                Errno::EBADF,
                format!("Recalls: no session {sid} (register one first)"),
            ));
        }
        let (id, rx) = self.recalls.open(sid);
        let node = self.node.clone();
        let recalls = self.recalls.clone();
        let guard = Closer { recalls, sid, id };
        let stream = futures::stream::unfold(
            (rx, node, guard, true),
            |(mut rx, node, guard, first)| async move {
                if first {
                    return Some((Ok(pb::Recall { dir: 0 }), (rx, node, guard, false)));
                }
                let dir = tokio::select! {
                    d = rx.recv() => d?,
                    _ = tokio::time::sleep(ALIVE_EVERY) => 0,
                };
                if !node.is_leader() {
                    return None;
                }
                Some((Ok(pb::Recall { dir }), (rx, node, guard, false)))
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Takes a stream out of the table when it ends.
struct Closer {
    recalls: Arc<Recalls>,
    sid: SessionId,
    id: u64,
}

impl Drop for Closer {
    fn drop(&mut self) {
        self.recalls.close(self.sid, self.id);
    }
}

/// A create (or, `dir`, a mkdir) a mount answered, as the namespace's op.
fn set_attr_at(c: &Caller, a: pb::SetAttrAtOp) -> Result<Op, Status> {
    let time = a
        .time
        .as_ref()
        .and_then(ts_from_pb)
        .ok_or_else(|| invalid("Batch: a setattr without a valid time"))?;
    Ok(Op::SetAttrAt {
        cred: c.cred(a.cred),
        inode: Inode(a.inode),
        mode: a.mode,
        uid: a.uid,
        gid: a.gid,
        atime: super::meta::time_set(a.atime_now, a.atime, "Batch: setattr atime")?,
        mtime: super::meta::time_set(a.mtime_now, a.mtime, "Batch: setattr mtime")?,
        time,
    })
}

fn made_at(c: &Caller, x: pb::CreateAtOp, dir: bool) -> Result<Op, Status> {
    let time = x
        .time
        .as_ref()
        .and_then(ts_from_pb)
        .ok_or_else(|| invalid("Batch: a create or mkdir without a valid time"))?;
    let m = MakeAt {
        cred: c.cred(x.cred),
        parent: Inode(x.parent),
        name: x.name,
        mode: x.mode,
        umask: x.umask,
        inode: Inode(x.inode),
        time,
    };
    Ok(if dir { Op::MkdirAt(m) } else { Op::CreateAt(m) })
}
