//! The data-path calls of clients, on the leader: where to read a chunk,
//! the write lease (allocation, chain), the end of a write. The orders to
//! chunkservers they need are in `copies`.

use std::time::Instant;

use super::copies::Earlier;
use super::state::{Lease, HOLD_TIME, LEASE_TIME};
use super::{ChunkError, ChunkManager, GRACE};
use crate::fsm::{
    Attr, ChunkId, ChunkVersion, Cred, Errno, Inode, Op, Reply, Request, SessionId, Timespec,
    MAX_CHUNK_INDEX,
};
use crate::raft::node::now as clock;

/// Where a chunk is: what ReadChunk and WriteChunk answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Location {
    /// 0: a hole.
    pub id: ChunkId,
    pub version: u32,
    /// The file's length.
    pub length: u64,
    /// (server id, address): the copies best first, or the write chain.
    pub servers: Vec<(u64, String)>,
    /// Write lease time, seconds (0 for reads).
    pub lease_secs: u32,
    /// ReadChunk: another session holds the write lease now.
    pub written_by_others: bool,
    /// WriteChunk: a new chunk the chain may not hold yet; the writes make
    /// it (`ChunkLocation.create`).
    pub create: bool,
}

/// Attribute changes committed with the end of a write (see
/// `Op::WriteChunkEndWith`).
#[derive(Clone, Debug)]
pub struct EndChange {
    pub cred: Cred,
    pub mode: Option<u32>,
    pub atime: Option<Timespec>,
}

/// Which request of a client a mutating call is.
#[derive(Clone, Copy, Debug)]
pub struct ReqId {
    pub session: SessionId,
    pub seq: u64,
    pub acked: u64,
}

impl ReqId {
    /// The log request of this call doing `op`, at the leader's clock.
    fn request(self, op: Op) -> Request {
        Request {
            session: self.session,
            seq: self.seq,
            acked: self.acked,
            time: clock(),
            op,
        }
    }
}

/// The slot and the chunk id a batch's `write` op claims until the batch
/// is committed (see [`ChunkManager::batch_write_op`]).
pub struct Reserved<'a> {
    _slot: Claim<'a>,
    _chunk: Claim<'a>,
}

/// Removes a chunk or slot from the busy sets when the call ends, however
/// it ends (a client that hangs up drops the call's future).
pub(super) struct Claim<'a> {
    mgr: &'a ChunkManager,
    chunk: Option<ChunkId>,
    slot: Option<(Inode, u32)>,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut st = self.mgr.state();
        if let Some(c) = self.chunk {
            st.busy.remove(&c);
        }
        if let Some(s) = self.slot {
            st.busy_slots.remove(&s);
        }
    }
}

pub(super) fn stale_or_retry(mgr: &ChunkManager, what: &str, id: ChunkId) -> ChunkError {
    // The namespace before the soft state, never both at once.
    let committed = mgr.node.shared.ns().chunk(id).map(|c| c.version.0);
    let st = mgr.state();
    let now = Instant::now();
    // Copies above the committed version (see `ahead_of`): the
    // planner sets them back within its next rounds; WriteChunk takes
    // them on.
    let ahead = committed.is_some_and(|v| !st.ahead_of(id, v, now).is_empty());
    if st.may_learn_more(now, GRACE) || ahead {
        tracing::debug!(chunk = %id, ahead, "{what}: no copy at the committed version yet; the client retries");
        ChunkError::Errno(Errno::EAGAIN)
    } else {
        let copies: Vec<(u64, u32)> = st
            .copies
            .get(&id)
            .map(|h| h.iter().map(|(s, c)| (*s, c.version)).collect())
            .unwrap_or_default();
        tracing::warn!(chunk = %id, ?committed, ?copies, "{what}: no valid copy of the chunk on any chunkserver (copies as (server, version))");
        ChunkError::Errno(Errno::EIO)
    }
}

impl ChunkManager {
    fn claim_slot(&self, inode: Inode, index: u32) -> Result<Claim<'_>, ChunkError> {
        if !self.state().busy_slots.insert((inode, index)) {
            return Err(Errno::EAGAIN.into());
        }
        Ok(Claim {
            mgr: self,
            chunk: None,
            slot: Some((inode, index)),
        })
    }

    pub(super) fn claim_chunk(&self, id: ChunkId) -> Result<Claim<'_>, ChunkError> {
        if !self.state().busy.insert(id) {
            return Err(Errno::EAGAIN.into());
        }
        Ok(Claim {
            mgr: self,
            chunk: Some(id),
            slot: None,
        })
    }

    /// Proposes an internal operation (session 0).
    pub(super) async fn internal(&self, op: Op) -> Result<Reply, ChunkError> {
        let req = Request {
            session: SessionId::NONE,
            seq: 0,
            acked: 0,
            time: clock(),
            op,
        };
        Ok(self.node.write(req).await?)
    }

    /// (id, address) of each server, in the given order.
    pub(super) fn addresses(&self, ids: &[u64]) -> Vec<(u64, String)> {
        let st = self.state();
        ids.iter()
            .filter_map(|id| st.address(*id).map(|a| (*id, a.to_string())))
            .collect()
    }

    /// ReadChunk: the valid copies of chunk `index` of `inode`, least loaded
    /// first; chunk 0 for a hole, a slot past the end, or a chunk no write
    /// has ended on that has no copy. EAGAIN while the leader may still
    /// learn of copies (after a leader change), EIO when there are none.
    pub async fn read_chunk(
        &self,
        session: SessionId,
        inode: Inode,
        index: u32,
    ) -> Result<Location, ChunkError> {
        self.node.linearize().await?;
        let (slot, length, info) = {
            let ns = self.node.shared.ns();
            if !ns.has_session(session) {
                return Err(Errno::UNKNOWN_SESSION.into());
            }
            let slot = ns.chunk_slot(inode, index)?;
            if !ns.session_has_open(session, inode) && !self.node.opened_early(session.0, inode.0) {
                return Err(Errno::EBADF.into());
            }
            let length = ns.getattr(inode)?.size;
            (slot, length, slot.and_then(|id| ns.chunk(id).cloned()))
        };
        let hole = Location {
            length,
            ..Location::default()
        };
        let (Some(id), Some(info)) = (slot, info) else {
            return Ok(hole);
        };
        let now = Instant::now();
        let (mut holders, written_by_others, unheard) = {
            let st = self.state();
            let others = st.lease(id, now).is_some_and(|l| l.session != session.0);
            let mut valid = st.holders_at(id, info.version.0, now);
            // A new chunk a lease's writes are making: its chain, where a
            // server that lacks it had nothing written (read as a hole).
            let unheard = valid.is_empty() && info.fresh;
            if unheard {
                valid = st.made_by_writes(id, info.version.0, now);
            }
            let holders: Vec<(u32, u32, u64)> = valid
                .into_iter()
                .map(|s| {
                    let load = st.servers.get(&s).map_or(0, |x| x.load);
                    (load, rand::random::<u32>(), s)
                })
                .collect();
            (holders, others, unheard)
        };
        if holders.is_empty() {
            if info.fresh {
                return Ok(hole);
            }
            return Err(stale_or_retry(self, "ReadChunk", id));
        }
        holders.sort();
        let ids: Vec<u64> = holders.into_iter().map(|h| h.2).collect();
        Ok(Location {
            id,
            version: info.version.0,
            length,
            servers: self.addresses(&ids),
            lease_secs: 0,
            written_by_others,
            create: unheard,
        })
    }

    /// The answer to a WriteChunk already applied (a retry): its chunk at
    /// its version, with the copies that hold it, and the lease again.
    fn replay_write(&self, session: SessionId, reply: Reply) -> Result<Location, ChunkError> {
        let Reply::Chunk {
            id,
            version,
            length,
        } = reply
        else {
            return Err(reply.errno().unwrap_or(Errno::EIO).into());
        };
        let now = Instant::now();
        let fresh = self.node.shared.ns().chunk(id).map(|c| (c.fresh, c.goal));
        let (chain, create) = {
            let mut st = self.state();
            let known = st.holders_at(id, version.0, now);
            let (chain, create) = match fresh {
                // A new chunk no write has ended on: the chain its writes
                // make it on, or (none known) a new one.
                Some((true, goal)) if known.is_empty() => {
                    let made = st.made_by_writes(id, version.0, now);
                    if made.is_empty() {
                        (self.targets(&st, goal, &[])?, true)
                    } else {
                        (made, true)
                    }
                }
                _ => (known, false),
            };
            if chain.is_empty() {
                drop(st);
                return Err(stale_or_retry(self, "WriteChunk", id));
            }
            if st.lease(id, now).is_none_or(|l| l.session == session.0) {
                st.leases.insert(
                    id,
                    Lease {
                        session: session.0,
                        version: version.0,
                        chain: chain.clone(),
                        expires: now + LEASE_TIME,
                        create,
                    },
                );
            }
            (chain, create)
        };
        Ok(Location {
            id,
            version: version.0,
            length,
            servers: self.addresses(&chain),
            lease_secs: LEASE_TIME.as_secs() as u32,
            written_by_others: false,
            create,
        })
    }

    /// WriteChunk: the write lease on chunk `index` of `inode` (see
    /// `meta.proto`), in the safe order of the version protocol. A renewal
    /// (`renewal`) carries the addresses of the renewed lease's chain
    /// (empty from older clients).
    pub async fn write_chunk(
        &self,
        rid: ReqId,
        cred: Cred,
        inode: Inode,
        index: u32,
        renewal: Option<&[String]>,
    ) -> Result<Location, ChunkError> {
        let renew = renewal.is_some();
        self.node.linearize().await?;
        let slot = {
            let ns = self.node.shared.ns();
            if let Some(r) = ns.cached_reply(rid.session, rid.seq).cloned() {
                drop(ns);
                return self.replay_write(rid.session, r);
            }
            if !ns.has_session(rid.session) {
                return Err(Errno::UNKNOWN_SESSION.into());
            }
            let slot = ns.chunk_slot(inode, index)?;
            if index > MAX_CHUNK_INDEX {
                return Err(Errno::EFBIG.into());
            }
            ns.may_write_data(rid.session, &cred, inode)?;
            slot
        };
        let _slot = self.claim_slot(inode, index)?;
        let Some(id) = slot else {
            return self.write_new_chunk(rid, cred, inode, index).await;
        };
        let info = self
            .node
            .shared
            .ns()
            .chunk(id)
            .cloned()
            .ok_or(Errno::EAGAIN)?;
        let (id, info) = if info.refcount > 1 {
            self.copy_on_write(inode, index, id, &info).await?
        } else {
            (id, info)
        };
        let _busy = self.claim_chunk(id)?;
        let v = info.version.0;
        let now = Instant::now();
        let same_lease = {
            let st = self.state();
            match st.lease(id, now) {
                Some(l) if l.session != rid.session.0 => return Err(Errno::EAGAIN.into()),
                Some(l) if !renew && l.version == v => Some((l.chain.clone(), l.create)),
                _ => None,
            }
        };
        let (version, chain, create) = match same_lease {
            Some((chain, create)) => (v, chain, create),
            None => {
                let earlier = match renewal {
                    Some(chain) => Earlier::Renewal(chain),
                    None if self.node.shared.ns().open_only_by(rid.session, inode) => {
                        Earlier::NoOtherWriter
                    }
                    None => Earlier::Unknown,
                };
                let (nv, chain) = self
                    .new_version(id, v, info.goal, info.fresh, earlier)
                    .await?;
                (nv, chain, false)
            }
        };
        let op = Op::WriteChunk {
            cred,
            inode,
            index,
            chunk: id,
            version: ChunkVersion(version),
        };
        let req = rid.request(op);
        self.commit_lease(req, (id, version), chain, create).await
    }

    /// Commits the lease request `req` (WriteChunk) on chunk `id` at
    /// `version` with `chain` (whose writes make the chunk with `create`);
    /// the lease holds from now.
    async fn commit_lease(
        &self,
        req: Request,
        (id, version): (ChunkId, u32),
        chain: Vec<u64>,
        create: bool,
    ) -> Result<Location, ChunkError> {
        let session = req.session.0;
        let reply = self.node.write(req).await?;
        let Reply::Chunk { length, .. } = reply else {
            return Err(reply.errno().unwrap_or(Errno::EIO).into());
        };
        Ok(self.grant(session, (id, version), chain, length, create, LEASE_TIME))
    }

    /// Records the lease of `session` on chunk `id` for `time` (committed
    /// at `version`, written through `chain`, made by the writes with
    /// `create`) and the answer to give.
    fn grant(
        &self,
        session: u64,
        (id, version): (ChunkId, u32),
        chain: Vec<u64>,
        length: u64,
        create: bool,
        time: std::time::Duration,
    ) -> Location {
        self.state().leases.insert(
            id,
            Lease {
                session,
                version,
                chain: chain.clone(),
                expires: Instant::now() + time,
                create,
            },
        );
        Location {
            id,
            version,
            length,
            servers: self.addresses(&chain),
            lease_secs: time.as_secs() as u32,
            written_by_others: false,
            create,
        }
    }

    /// WriteChunk of an empty slot: a new chunk (a reserved id) at version
    /// 1, its allocation and lease committed in one entry, on a chain of
    /// the file's goal of servers that the client's writes make it on
    /// (`create`): no order to the chunkservers before the answer. Until a
    /// write ends, the chunk is fresh: with no copy made, a hole. Copies
    /// made for a lease whose commit failed are orphans the replication
    /// loop deletes.
    async fn write_new_chunk(
        &self,
        rid: ReqId,
        cred: Cred,
        inode: Inode,
        index: u32,
    ) -> Result<Location, ChunkError> {
        let goal = self.node.shared.ns().getattr(inode)?.goal;
        let chain = {
            let st = self.state();
            self.targets(&st, goal, &[])?
        };
        let id = self.new_chunk_id().await?;
        let _busy = self.claim_chunk(id)?;
        let version = 1;
        let req = rid.request(Op::WriteNewChunk {
            cred,
            inode,
            index,
            chunk: id,
            version: ChunkVersion(version),
        });
        let session = req.session.0;
        let reply = self.node.write(req).await?;
        let Reply::Chunk { length, .. } = reply else {
            return Err(reply.errno().unwrap_or(Errno::EIO).into());
        };
        Ok(self.grant(session, (id, version), chain, length, true, LEASE_TIME))
    }

    /// A new-chunk lease asked in a batch (`BatchOp.write`): the op to
    /// commit in it (WriteNewChunk of a reserved id at version 1) and the
    /// claims on the slot and the chunk, to hold until the batch is
    /// committed; then [`ChunkManager::batch_lease`] gives the lease.
    pub async fn batch_write_op(
        &self,
        cred: Cred,
        inode: Inode,
        index: u32,
    ) -> Result<(Op, Reserved<'_>), ChunkError> {
        let (id, claims) = self.reserve_new_chunk(inode, index).await?;
        let op = Op::WriteNewChunk {
            cred,
            inode,
            index,
            chunk: id,
            version: ChunkVersion(1),
        };
        Ok((op, claims))
    }

    /// A new chunk id (made at version 1) for slot `index` of `inode`,
    /// with the claims on the slot and the id to hold until the entry that
    /// places it commits (a batch's `write`, a truncating open's lease).
    pub async fn reserve_new_chunk(
        &self,
        inode: Inode,
        index: u32,
    ) -> Result<(ChunkId, Reserved<'_>), ChunkError> {
        if index > MAX_CHUNK_INDEX {
            return Err(Errno::EFBIG.into());
        }
        let slot = self.claim_slot(inode, index)?;
        let id = self.new_chunk_id().await?;
        let chunk = self.claim_chunk(id)?;
        Ok((
            id,
            Reserved {
                _slot: slot,
                _chunk: chunk,
            },
        ))
    }

    /// The lease of `session` on the chunk a batch's `write` op placed in
    /// slot `index` of `inode` (also when the batch was a retry answered
    /// from the reply cache): as WriteChunk answers, on a chain of the
    /// chunk's goal that the writes make it on.
    pub fn batch_lease(
        &self,
        session: SessionId,
        inode: Inode,
        index: u32,
    ) -> Result<Location, ChunkError> {
        let reply = {
            let ns = self.node.shared.ns();
            let id = ns.chunk_slot(inode, index)?.ok_or(Errno::EAGAIN)?;
            let version = ns.chunk(id).ok_or(Errno::EAGAIN)?.version;
            let length = ns.getattr(inode)?.size;
            Reply::Chunk {
                id,
                version,
                length,
            }
        };
        self.replay_write(session, reply)
    }

    /// Chains for the `count` ids from `first` that `session` now holds
    /// (`HoldChunks`): a chain of `goal` servers each, kept as a lease of
    /// the session whose writes make the chunk for [`HOLD_TIME`], so that
    /// the end of those writes names the copies (as a WriteChunk lease's).
    pub fn hold(
        &self,
        session: SessionId,
        (first, count): (ChunkId, u32),
        goal: u8,
    ) -> Result<Vec<Location>, ChunkError> {
        (first.0..first.0 + u64::from(count))
            .map(|id| {
                let chain = self.targets(&self.state(), goal, &[])?;
                Ok(self.grant(session.0, (ChunkId(id), 1), chain, 0, true, HOLD_TIME))
            })
            .collect()
    }

    /// WriteChunkEnd: commits the length; the session's lease on the chunk
    /// ends whatever the answer. With `created`, the client's writes made
    /// the chunk on the lease's chain (`ChunkLocation.create`).
    pub async fn write_chunk_end(
        &self,
        rid: ReqId,
        (inode, index): (Inode, u32),
        (chunk, created): (ChunkId, bool),
        (length, mtime): (u64, Option<Timespec>),
        change: Option<EndChange>,
    ) -> Result<Attr, ChunkError> {
        self.node.ensure_leader()?;
        let op = self.end_op(
            rid.session,
            (inode, index),
            (chunk, created),
            (length, mtime, None),
            change,
        );
        let req = rid.request(op);
        let reply = self.node.write(req).await;
        self.end_lease(rid.session, chunk);
        match reply? {
            Reply::Attr(a) => Ok(a),
            other => Err(other.errno().unwrap_or(Errno::EIO).into()),
        }
    }
    /// The op of a write's length commit (WriteChunkEnd, alone or in a
    /// client's batch), proposed next; `created`: the client's writes made
    /// the chunk on its lease's chain; `ctime`: the client's time, for a
    /// commit in a batch that gives one (`WriteChunkEndTimed`, or
    /// `WriteChunkEndWithTimed` with kept changes).
    pub fn end_op(
        &self,
        session: SessionId,
        (inode, index): (Inode, u32),
        (chunk, created): (ChunkId, bool),
        (length, mtime, ctime): (u64, Option<Timespec>, Option<Timespec>),
        change: Option<EndChange>,
    ) -> Op {
        if created {
            self.state().made_on_chain(chunk, session.0);
        }
        let end = end_kind(inode, index, chunk, length, (mtime, ctime), change);
        // A new chunk its lease's writes never made: a hole again, not a
        // chunk with no copy.
        let fresh = self.node.shared.ns().chunk(chunk).is_some_and(|c| c.fresh);
        if !created && fresh && self.state().unmade(chunk, session.0) {
            return Op::WriteChunkEndUnmade { end: Box::new(end) };
        }
        end
    }
}

/// The `WriteChunkEnd` kind that carries what a length commit gives.
fn end_kind(
    inode: Inode,
    index: u32,
    chunk: ChunkId,
    length: u64,
    (mtime, ctime): (Option<Timespec>, Option<Timespec>),
    change: Option<EndChange>,
) -> Op {
    match (mtime, change, ctime) {
        (_, Some(c), Some(ctime)) => Op::WriteChunkEndWithTimed {
            cred: c.cred,
            inode,
            index,
            chunk,
            length,
            mtime,
            mode: c.mode,
            atime: c.atime,
            ctime,
        },
        (_, Some(c), None) => Op::WriteChunkEndWith {
            cred: c.cred,
            inode,
            index,
            chunk,
            length,
            mtime,
            mode: c.mode,
            atime: c.atime,
        },
        (mtime, None, Some(ctime)) => Op::WriteChunkEndTimed {
            inode,
            index,
            chunk,
            length,
            mtime,
            ctime,
        },
        (None, None, None) => Op::WriteChunkEnd {
            inode,
            index,
            chunk,
            length,
        },
        (Some(mtime), None, None) => Op::WriteChunkEndAt {
            inode,
            index,
            chunk,
            length,
            mtime,
        },
    }
}

impl ChunkManager {
    /// After a length commit: `session`'s lease on `chunk` ends.
    pub fn end_lease(&self, session: SessionId, chunk: ChunkId) {
        let mut st = self.state();
        if st
            .leases
            .get(&chunk)
            .is_some_and(|l| l.session == session.0)
        {
            st.leases.remove(&chunk);
        }
    }
}
