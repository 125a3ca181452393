//! The data of files made here: their first write leases and length
//! commits go through the write-back queue (see the parent module).
//!
//! A lease of an empty slot of such a file comes from chunk ids the
//! session holds (`HoldChunks`: each with a chain and a token), so the
//! data goes out with no call to the master; the queue then names the
//! chunk (`attach`) before the length commit. With none at hand, the lease
//! is asked in the batch that carries the file's create. A write that
//! fails on a held chunk's chain has the chunk named first, then renews its
//! lease with the master as any other.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use mfs_proto::v1::{batch_op, AttachChunkOp, BatchOp, ChunkLocation, Credentials};
use mfs_proto::v1::{Timespec, WriteChunkEndRequest, WriteChunkRequest};

use super::WriteBack;
use crate::io::{QueuedLease, WriteQueue};
use crate::master::MasterClient;

/// Chunk ids asked for at a time, and the count below which more are.
const HOLD: u32 = 256;
const REFILL_AT: usize = 64;
/// A held id is used within this long of its grant (the leader keeps its
/// chain for 5 minutes, the token lasts 15), else given back.
const USE_WITHIN: Duration = Duration::from_secs(180);
/// After a refused HoldChunks (an older master, too many held), leases are
/// asked in the queue for this long.
const OFF_FOR: Duration = Duration::from_secs(60);

/// Chunk ids the session holds, by goal.
#[derive(Debug, Default)]
pub(super) struct Held {
    session: u64,
    ready: HashMap<u32, VecDeque<(Instant, ChunkLocation)>>,
    /// Goals a refill is on its way for.
    asking: Vec<u32>,
    /// Ids not used in time, to give back at the next HoldChunks.
    stale: Vec<u64>,
    off_until: Option<Instant>,
    /// Held ids written and not named in the queue yet: (inode, slot) →
    /// (chunk id, the writer's credentials).
    unattached: HashMap<(u64, u32), (u64, Credentials)>,
}

impl Held {
    /// A held id for a chunk of `goal` copies, if one is at hand; whether
    /// more should be asked for.
    fn take(&mut self, session: u64, goal: u32) -> (Option<ChunkLocation>, bool) {
        let now = Instant::now();
        if self.session != session {
            // Ids of an earlier session are no one's now.
            self.ready.clear();
            self.stale.clear();
            self.unattached.clear();
            self.session = session;
        }
        let q = self.ready.entry(goal).or_default();
        while q
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > USE_WITHIN)
        {
            if let Some((_, l)) = q.pop_front() {
                self.stale.push(l.chunk_id);
            }
        }
        let loc = q.pop_front().map(|(_, l)| l);
        let low = q.len() < REFILL_AT
            && !self.asking.contains(&goal)
            && self.off_until.is_none_or(|t| now >= t);
        if low {
            self.asking.push(goal);
        }
        (loc, low)
    }
}

/// The mount's write-back queue as the I/O layer's (`FileIo::queue_with`).
pub(crate) struct IoQueue {
    pub(crate) wb: std::sync::Weak<WriteBack>,
    pub(crate) master: MasterClient,
}

impl WriteQueue for IoQueue {
    fn commit(
        &self,
        req: &WriteChunkEndRequest,
        loc: &ChunkLocation,
        ctime: Option<Timespec>,
    ) -> bool {
        self.wb
            .upgrade()
            .is_some_and(|wb| wb.queue_commit(&self.master, req, loc, ctime))
    }

    fn attrs_sent(&self, inode: u64) {
        if let Some(wb) = self.wb.upgrade() {
            wb.unknown(inode);
        }
    }

    fn lease(&self, req: &WriteChunkRequest) -> Option<QueuedLease<'_>> {
        WriteBack::queue_lease(&self.wb.upgrade()?, &self.master, req)
    }
}

impl WriteBack {
    /// Queues the length commit `req` (of the writes under lease `loc`;
    /// `ctime` the kernel's, if it gave one) when its file was made here, in a directory the mount holds (nobody
    /// else sees the file before the queue is sent); false: send it now. A
    /// held chunk the writes made is named in the queue first either way
    /// (a commit sent now waits for the queue). Checked and queued under
    /// the lock a recall takes, so a recall's return comes after it.
    ///
    /// A commit queued carries the kernel's ctime or the mount's time, so the file's attributes
    /// after it are known here (and where its first chunk is): a lookup,
    /// stat or read open of it needs no call (see `WriteBack::open_here`).
    /// One sent now, or with a mode or atime on it, makes them the
    /// master's again.
    pub(crate) fn queue_commit(
        &self,
        master: &MasterClient,
        req: &WriteChunkEndRequest,
        loc: &ChunkLocation,
        ctime: Option<Timespec>,
    ) -> bool {
        if !self.enabled {
            return false;
        }
        let sid = master.session_id();
        let mut st = self.lock();
        let key = (req.inode, req.index);
        if st
            .held
            .unattached
            .get(&key)
            .is_some_and(|(c, _)| *c == req.chunk_id)
        {
            if let Some((chunk_id, cred)) = st.held.unattached.remove(&key) {
                master.queue_op(attach_op(key, chunk_id, cred));
            }
        }
        let private = self.live()
            && st
                .made
                .get(&req.inode)
                .is_some_and(|m| st.still_held(m, sid));
        let mut req = req.clone();
        if let Some(m) = st.made.get_mut(&req.inode) {
            // Kept changes (mode, atime) take the mount's time too on a
            // master that says so.
            let timed = req.mode.is_none() && req.atime.is_none() || master.queues_attributes();
            if private && timed {
                let now = ctime.unwrap_or_else(super::now_ts);
                req.time = Some(now);
                m.committed(&req, loc, now);
            } else {
                m.known = false;
            }
        }
        if private {
            master.queue_op(BatchOp {
                op: Some(batch_op::Op::WriteEnd(req)),
            });
        }
        private
    }

    /// The lease `req` through the queue: for a slot of a file made here,
    /// in a directory the mount holds, not leased before (empty, as the
    /// file was made empty), a held chunk id when one is at hand, else the
    /// lease asked in the queue; for a renewal of a held chunk's lease, its
    /// naming in the queue first (then ask the master). `None`: ask the
    /// master.
    pub(crate) fn queue_lease<'m>(
        self: &std::sync::Arc<Self>,
        master: &'m MasterClient,
        req: &WriteChunkRequest,
    ) -> Option<QueuedLease<'m>> {
        if !self.enabled {
            return None;
        }
        let sid = master.session_id();
        let key = (req.inode, req.index);
        let mut st = self.lock();
        if req.renew {
            let (chunk_id, cred) = st.held.unattached.remove(&key)?;
            let op = attach_op(key, chunk_id, cred);
            return Some(QueuedLease::First(master.queue_op_answered(op)));
        }
        // Whichever way this lease is got, the slot holds a chunk after it:
        // it is marked here first, so that a later lease (after a commit
        // dropped this one) never takes a held id for it (one asked with
        // WriteChunk while the recall stream was down is in the slot; a
        // held id written there would be refused and its data lost).
        let m = st.made.get_mut(&req.inode)?;
        if m.leased.contains(&req.index) {
            return None;
        }
        m.leased.push(req.index);
        let m = st.made.get(&req.inode)?;
        if !self.live() || !st.still_held(m, sid) {
            return None;
        }
        let goal = st.dirs.get(&m.parent).map_or(1, |d| d.attr.goal);
        let (loc, low) = st.held.take(sid, goal);
        if low {
            let stale = std::mem::take(&mut st.held.stale);
            let (wb, m) = (std::sync::Arc::downgrade(self), master.clone());
            self.rt.spawn(async move {
                if let Some(wb) = wb.upgrade() {
                    wb.hold_more(&m, sid, goal, stale).await;
                }
            });
        }
        if let Some(loc) = loc {
            let cred = req.cred.clone().unwrap_or_default();
            st.held.unattached.insert(key, (loc.chunk_id, cred));
            return Some(QueuedLease::Held(loc));
        }
        Some(QueuedLease::Asked(master.queue_op_answered(BatchOp {
            op: Some(batch_op::Op::Write(req.clone())),
        })))
    }

    /// Asks for more chunk ids of `goal` for session `sid`, giving back
    /// `stale`.
    async fn hold_more(&self, master: &MasterClient, sid: u64, goal: u32, stale: Vec<u64>) {
        let r = master.hold_chunks(HOLD, goal, stale).await;
        let mut st = self.lock();
        st.held.asking.retain(|&g| g != goal);
        match r {
            Ok(chunks) if st.held.session == sid && master.session_id() == sid => {
                let now = Instant::now();
                let q = st.held.ready.entry(goal).or_default();
                q.extend(chunks.into_iter().map(|c| (now, c)));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "no chunk ids held: the first leases of files made here go in the queue");
                st.held.off_until = Some(Instant::now() + OFF_FOR);
            }
        }
    }
}

/// The queue's naming of held chunk `chunk_id` in slot `key` (inode, index).
fn attach_op(key: (u64, u32), chunk_id: u64, cred: Credentials) -> BatchOp {
    BatchOp {
        op: Some(batch_op::Op::Attach(AttachChunkOp {
            cred: Some(cred),
            inode: key.0,
            index: key.1,
            chunk_id,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Made;
    use mfs_proto::v1::{Attr, ChunkLocation, Timespec, WriteChunkEndRequest};

    fn ts(sec: i64, nsec: u32) -> Option<Timespec> {
        Some(Timespec { sec, nsec })
    }

    #[test]
    fn a_queued_commit_gives_the_attributes_the_master_will_set() {
        let made = ts(100, 1);
        let mut m = Made {
            ticket: 1,
            parent: 1,
            grant: 1,
            attr: Attr {
                inode: 9,
                size: 0,
                atime: made,
                mtime: made,
                ctime: made,
                ..Default::default()
            },
            known: true,
            leased: vec![0],
            first: None,
        };
        let lease = |id| ChunkLocation {
            chunk_id: id,
            version: 1,
            create: true,
            file_length: 0,
            ..Default::default()
        };
        // The kernel's mtime rides on the first commit.
        let first = WriteChunkEndRequest {
            inode: 9,
            index: 0,
            chunk_id: 7,
            file_length: 5000,
            mtime: ts(101, 2),
            ..Default::default()
        };
        m.committed(&first, &lease(7), Timespec { sec: 102, nsec: 3 });
        let a = m.attr;
        assert_eq!((a.size, a.blocks_bytes), (5000, 5120));
        assert_eq!((a.atime, a.mtime, a.ctime), (made, ts(101, 2), ts(102, 3)));
        let f = m.first.clone().expect("first chunk known");
        assert_eq!((f.chunk_id, f.file_length, f.create), (7, 5000, false));
        // A later commit of another chunk without a kernel mtime: the
        // mount's time for both; the first chunk's reads see the length.
        let second = WriteChunkEndRequest {
            index: 1,
            chunk_id: 8,
            file_length: 70 << 20,
            ..first.clone()
        };
        let second = WriteChunkEndRequest {
            mtime: None,
            ..second
        };
        m.committed(&second, &lease(8), Timespec { sec: 104, nsec: 0 });
        assert_eq!((m.attr.mtime, m.attr.ctime), (ts(104, 0), ts(104, 0)));
        let f = m.first.clone().expect("first chunk known");
        assert_eq!((f.chunk_id, f.file_length), (7, 70 << 20));
        // A shorter length never shrinks the file (the master keeps the
        // larger).
        let short = WriteChunkEndRequest {
            file_length: 10,
            ..first
        };
        m.committed(&short, &lease(7), Timespec { sec: 105, nsec: 0 });
        assert_eq!(m.attr.size, 70 << 20);
        assert_eq!(m.first.as_ref().map(|f| f.file_length), Some(70 << 20));
        // Changes kept for a commit (tar's chmod and utime) are the file's
        // after it.
        let kept = WriteChunkEndRequest {
            mode: Some(0o640),
            atime: ts(90, 5),
            ..short
        };
        m.committed(&kept, &lease(7), Timespec { sec: 106, nsec: 0 });
        let a = m.attr;
        assert_eq!((a.mode, a.atime, a.ctime), (0o640, ts(90, 5), ts(106, 0)));
    }
}
