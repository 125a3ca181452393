//! The data-path calls of clients, on the leader: where to read a chunk,
//! the write lease (allocation, version bump, chain), the end of a write,
//! and the chunkservers' part of a truncation.

use std::time::Instant;

use futures::future::join_all;

use super::orders::OrderError;
use super::placement;
use super::state::{CopyInfo, Lease, LEASE_TIME};
use super::{ChunkError, ChunkManager, GRACE};
use crate::fsm::{
    Attr, ChunkId, ChunkInfo, ChunkVersion, Cred, Errno, Inode, Op, Reply, Request, SessionId,
    Timespec, CHUNK_SIZE, MAX_CHUNK_INDEX,
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

/// Removes a chunk or slot from the busy sets when the call ends, however
/// it ends (a client that hangs up drops the call's future).
struct Claim<'a> {
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

fn stale_or_retry(mgr: &ChunkManager, what: &str, id: ChunkId) -> ChunkError {
    // The namespace before the soft state, never both at once.
    let committed = mgr.node.shared.ns().chunk(id).map(|c| c.version.0);
    let st = mgr.state();
    if st.may_learn_more(Instant::now(), GRACE) {
        tracing::debug!(chunk = %id, "{what}: no copy known yet; the client retries");
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

    fn claim_chunk(&self, id: ChunkId) -> Result<Claim<'_>, ChunkError> {
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
    fn addresses(&self, ids: &[u64]) -> Vec<(u64, String)> {
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
    fn replay_write(&self, rid: ReqId, reply: Reply) -> Result<Location, ChunkError> {
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
            let made = st.made_by_writes(id, version.0, now);
            let (chain, create) = match fresh {
                // A new chunk no write has ended on: the chain its writes
                // make it on, or (none known) a new one.
                Some((true, goal)) if known.is_empty() => {
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
            if st.lease(id, now).is_none_or(|l| l.session == rid.session.0) {
                st.leases.insert(
                    id,
                    Lease {
                        session: rid.session.0,
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
    /// `meta.proto`), in the safe order of the version protocol.
    pub async fn write_chunk(
        &self,
        rid: ReqId,
        cred: Cred,
        inode: Inode,
        index: u32,
        renew: bool,
    ) -> Result<Location, ChunkError> {
        self.node.linearize().await?;
        let slot = {
            let ns = self.node.shared.ns();
            if let Some(r) = ns.cached_reply(rid.session, rid.seq).cloned() {
                drop(ns);
                return self.replay_write(rid, r);
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
                let (nv, chain) = self.new_version(id, v, info.goal, info.fresh).await?;
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
        let req = Request {
            session: rid.session,
            seq: rid.seq,
            acked: rid.acked,
            time: clock(),
            op,
        };
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
        Ok(self.grant(session, (id, version), chain, length, create))
    }

    /// Records the lease of `session` on chunk `id` (committed at
    /// `version`, written through `chain`, made by the writes with
    /// `create`) and the answer to give.
    fn grant(
        &self,
        session: u64,
        (id, version): (ChunkId, u32),
        chain: Vec<u64>,
        length: u64,
        create: bool,
    ) -> Location {
        self.state().leases.insert(
            id,
            Lease {
                session,
                version,
                chain: chain.clone(),
                expires: Instant::now() + LEASE_TIME,
                create,
            },
        );
        Location {
            id,
            version,
            length,
            servers: self.addresses(&chain),
            lease_secs: LEASE_TIME.as_secs() as u32,
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
        let req = Request {
            session: rid.session,
            seq: rid.seq,
            acked: rid.acked,
            time: clock(),
            op: Op::WriteNewChunk {
                cred,
                inode,
                index,
                chunk: id,
                version: ChunkVersion(version),
            },
        };
        let session = req.session.0;
        let reply = self.node.write(req).await?;
        let Reply::Chunk { length, .. } = reply else {
            return Err(reply.errno().unwrap_or(Errno::EIO).into());
        };
        Ok(self.grant(session, (id, version), chain, length, true))
    }

    /// `goal` servers chosen by placement for new copies (none of `avoid`):
    /// ENOSPC when none can take one; EAGAIN when none is known yet in a
    /// new leader's grace period, so the client asks again.
    fn targets(
        &self,
        st: &super::state::SoftState,
        goal: u8,
        avoid: &[u64],
    ) -> Result<Vec<u64>, ChunkError> {
        let now = Instant::now();
        let t = placement::choose(&st.servers, now, usize::from(goal.max(1)), avoid);
        if !t.is_empty() {
            return Ok(t);
        }
        if st.in_grace(now, GRACE) {
            // A new leader: the chunkservers are still registering.
            return Err(Errno::EAGAIN.into());
        }
        tracing::warn!("no chunkserver can take a new chunk (none alive with free space)");
        Err(Errno::ENOSPC.into())
    }

    /// Creates chunk `id` at `version` on `goal` servers chosen by
    /// placement (none of `avoid`); the servers that made it (ENOSPC when
    /// none could; EAGAIN when none is known yet in a new leader's grace
    /// period, so the client asks again).
    async fn create_copies(
        &self,
        id: ChunkId,
        version: u32,
        goal: u8,
        avoid: &[u64],
    ) -> Result<Vec<u64>, ChunkError> {
        let targets = {
            let st = self.state();
            self.targets(&st, goal, avoid)?
        };
        self.order_copies(
            &targets,
            (id, version),
            "create",
            Errno::ENOSPC,
            |a| async move { self.orders.create(&a, id, version).await },
        )
        .await
    }

    /// Copy-on-write: slot `index` of `inode` names `old`, which snapshots
    /// share. Before a write or a cut changes it, the file gets its own
    /// duplicate: a reserved id, made from `old` on every server holding a
    /// valid copy, then committed in the slot (`old` loses a reference).
    /// Duplicates left by a failure are orphans the replication loop
    /// deletes. The new chunk and its table entry.
    async fn copy_on_write(
        &self,
        inode: Inode,
        index: u32,
        old: ChunkId,
        info: &ChunkInfo,
    ) -> Result<(ChunkId, ChunkInfo), ChunkError> {
        let _old = self.claim_chunk(old)?;
        let v = info.version.0;
        let holders = self.state().holders_at(old, v, Instant::now());
        if holders.is_empty() {
            return Err(stale_or_retry(self, "copy-on-write", old));
        }
        let new = self.new_chunk_id().await?;
        let _new = self.claim_chunk(new)?;
        let nv = 1;
        self.order_copies(
            &holders,
            (new, nv),
            "duplicate",
            Errno::EAGAIN,
            |a| async move { self.orders.duplicate(&a, old, v, new, nv).await },
        )
        .await?;
        let op = Op::CowChunk {
            inode,
            index,
            old,
            new,
            version: ChunkVersion(nv),
        };
        if let Some(e) = self.internal(op).await?.errno() {
            return Err(e.into());
        }
        tracing::debug!(chunk = %old, new = %new, inode = inode.0, index, "copy-on-write");
        let info = self
            .node
            .shared
            .ns()
            .chunk(new)
            .cloned()
            .ok_or(Errno::EAGAIN)?;
        Ok((new, info))
    }

    /// Gives chunk `id` (committed at version `v`) a new version on its live
    /// copies, or creates it on `goal` servers when it has none and no write
    /// has ended on it. Not committed yet: the caller commits. The new
    /// version and the servers that took it.
    async fn new_version(
        &self,
        id: ChunkId,
        v: u32,
        goal: u8,
        fresh: bool,
    ) -> Result<(u32, Vec<u64>), ChunkError> {
        let now = Instant::now();
        let (valid, made, all) = {
            let st = self.state();
            let all: Vec<u64> = st
                .copies
                .get(&id)
                .map(|h| h.keys().copied().collect())
                .unwrap_or_default();
            let valid = st.holders_at(id, v, now);
            let made = if fresh && valid.is_empty() {
                st.made_by_writes(id, v, now)
            } else {
                Vec::new()
            };
            if fresh && valid.is_empty() && made.is_empty() && st.reports_pending(now, GRACE) {
                // Writes under an earlier leader's lease may have made it:
                // the reports tell soon.
                return Err(Errno::EAGAIN.into());
            }
            (valid, made, all)
        };
        let nv = v + 1;
        let set_version = |a: String| async move { self.orders.set_version(&a, id, v, nv).await };
        if !made.is_empty() {
            // A new chunk the writes of a lease may have made on its chain
            // without the leader hearing of it yet: the copies there take
            // the new version. A server that lacks it remembers the new
            // version, so a write of the old lease still in flight cannot
            // make it there afterwards.
            let (ok, missing) = self
                .run_orders(&made, (id, nv), "set version", set_version)
                .await;
            if !ok.is_empty() {
                return Ok((nv, ok));
            }
            if missing == 0 {
                // None answered: they may hold what was written.
                return Err(Errno::EAGAIN.into());
            }
            // A server of the chain lacks the chunk, so no write went
            // through the whole chain: nothing acknowledged is lost by
            // making it anew below (a server that did not answer and holds
            // a piece has a stale copy, deleted later).
        }
        if valid.is_empty() {
            if !fresh {
                return Err(stale_or_retry(self, "WriteChunk", id));
            }
            // A new chunk whose copies are gone (or were never made)
            // before any write ended: made again (a hole until then).
            return Ok((nv, self.create_copies(id, nv, goal, &all).await?));
        }
        let ok = self
            .order_copies(&valid, (id, nv), "set version", Errno::EAGAIN, set_version)
            .await?;
        Ok((nv, ok))
    }

    /// Runs `order` on each of `servers` at once (given the address) and
    /// records copy `id` at version `nv` on those that took it: their ids,
    /// or `none` when no server did.
    async fn order_copies<F, Fut>(
        &self,
        servers: &[u64],
        (id, nv): (ChunkId, u32),
        what: &'static str,
        none: Errno,
        order: F,
    ) -> Result<Vec<u64>, ChunkError>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<(), OrderError>>,
    {
        let (ok, _) = self.run_orders(servers, (id, nv), what, order).await;
        if ok.is_empty() {
            return Err(none.into());
        }
        Ok(ok)
    }

    /// Runs `order` on each of `servers` at once and records copy `id` at
    /// version `nv` on those that took it: their ids, and how many servers
    /// answered that they lack the chunk.
    async fn run_orders<F, Fut>(
        &self,
        servers: &[u64],
        (id, nv): (ChunkId, u32),
        what: &'static str,
        order: F,
    ) -> (Vec<u64>, usize)
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<(), OrderError>>,
    {
        let calls = self.addresses(servers).into_iter().map(|(s, a)| {
            let call = order(a);
            async move { (s, call.await) }
        });
        let started = std::time::Instant::now();
        let results = join_all(calls).await;
        metrics::histogram!("mfs_chunk_order_seconds", "order" => what)
            .record(started.elapsed().as_secs_f64());
        let missing = results
            .iter()
            .filter(|(_, r)| matches!(r, Err(OrderError::NotFound { .. })))
            .count();
        (self.took(id, nv, results, what), missing)
    }

    /// Records the copies that took version `nv`; their server ids.
    fn took(
        &self,
        id: ChunkId,
        nv: u32,
        results: Vec<(u64, Result<(), OrderError>)>,
        what: &str,
    ) -> Vec<u64> {
        let mut st = self.state();
        let mut ok = Vec::new();
        for (s, r) in results {
            match r {
                Ok(()) => {
                    let marked = st
                        .copies
                        .get(&id)
                        .and_then(|h| h.get(&s))
                        .is_some_and(|c| c.marked);
                    st.set_copy(
                        id,
                        s,
                        CopyInfo {
                            version: nv,
                            marked,
                        },
                    );
                    ok.push(s);
                }
                Err(e) => tracing::warn!(chunk = %id, "{what}: {e}"),
            }
        }
        ok
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
        if created {
            // The client's writes made the chunk on its lease's chain.
            self.state().made_on_chain(chunk, rid.session.0);
        }
        let op = match (mtime, change) {
            (_, Some(c)) => Op::WriteChunkEndWith {
                cred: c.cred,
                inode,
                index,
                chunk,
                length,
                mtime,
                mode: c.mode,
                atime: c.atime,
            },
            (None, None) => Op::WriteChunkEnd {
                inode,
                index,
                chunk,
                length,
            },
            (Some(mtime), None) => Op::WriteChunkEndAt {
                inode,
                index,
                chunk,
                length,
                mtime,
            },
        };
        let req = Request {
            session: rid.session,
            seq: rid.seq,
            acked: rid.acked,
            time: clock(),
            op,
        };
        let reply = self.node.write(req).await;
        {
            let mut st = self.state();
            if st
                .leases
                .get(&chunk)
                .is_some_and(|l| l.session == rid.session.0)
            {
                st.leases.remove(&chunk);
            }
        }
        match reply? {
            Reply::Attr(a) => Ok(a),
            other => Err(other.errno().unwrap_or(Errno::EIO).into()),
        }
    }

    /// Before a SetAttr that shrinks a file to `size` not on a chunk
    /// boundary: the tail chunk's copies are cut there (zeros after) with a
    /// new version, committed. Nothing to do for a retried request, a size
    /// that does not shrink, a boundary, or a hole.
    pub async fn prepare_truncate(
        &self,
        rid: ReqId,
        cred: &Cred,
        inode: Inode,
        size: u64,
    ) -> Result<(), ChunkError> {
        if size.is_multiple_of(CHUNK_SIZE) {
            return Ok(());
        }
        self.node.linearize().await?;
        let index = u32::try_from(size / CHUNK_SIZE).map_err(|_| Errno::EFBIG)?;
        let (id, info) = {
            let ns = self.node.shared.ns();
            if ns.cached_reply(rid.session, rid.seq).is_some() {
                return Ok(());
            }
            let Ok(attr) = ns.getattr(inode) else {
                return Ok(()); // SetAttr answers ENOENT
            };
            if size >= attr.size || ns.may_truncate(cred, inode).is_err() {
                return Ok(()); // growing, or SetAttr answers the error
            }
            let Ok(Some(id)) = ns.chunk_slot(inode, index) else {
                return Ok(());
            };
            let Some(info) = ns.chunk(id).cloned() else {
                return Ok(());
            };
            (id, info)
        };
        let (id, info) = if info.refcount > 1 {
            self.copy_on_write(inode, index, id, &info).await?
        } else {
            (id, info)
        };
        // A write lease being granted finishes within a few seconds: wait
        // for it rather than fail the truncate.
        let mut tries = 0;
        let _busy = loop {
            match self.claim_chunk(id) {
                Ok(c) => break c,
                Err(e) if tries >= 50 => return Err(e),
                Err(_) => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        };
        // The version may have moved while waiting.
        let v = match self.node.shared.ns().chunk(id) {
            Some(c) => c.version.0,
            None => return Ok(()),
        };
        let (valid, made) = {
            let st = self.state();
            let now = Instant::now();
            let valid = st.holders_at(id, v, now);
            let made = if valid.is_empty() && info.fresh {
                st.made_by_writes(id, v, now)
            } else {
                Vec::new()
            };
            (valid, made)
        };
        let nv = v + 1;
        let length = size % CHUNK_SIZE;
        let cut = |a: String| async move { self.orders.truncate(&a, id, v, nv, length).await };
        if !made.is_empty() {
            // A new chunk a lease's writes are making: cut where they made
            // it. A server that lacks it had nothing written (and now keeps
            // an older write from making it); none holding it: a hole still.
            let (ok, missing) = self.run_orders(&made, (id, nv), "truncate", cut).await;
            if ok.is_empty() {
                return if missing > 0 {
                    Ok(())
                } else {
                    Err(Errno::EAGAIN.into())
                };
            }
        } else if valid.is_empty() {
            if info.fresh {
                return Ok(());
            }
            return Err(stale_or_retry(self, "truncate", id));
        } else {
            self.order_copies(&valid, (id, nv), "truncate", Errno::EAGAIN, cut)
                .await?;
        }
        let op = Op::SetChunkVersion {
            chunk: id,
            version: ChunkVersion(nv),
        };
        if let Reply::Err(e) = self.internal(op).await? {
            return Err(e.into());
        }
        // A writer's lease named the old version: it asks again.
        self.state().leases.remove(&id);
        Ok(())
    }
}
