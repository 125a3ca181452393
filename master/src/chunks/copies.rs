//! Copies on the chunkservers, on the leader: where new ones go, making
//! them (create, duplicate for copy-on-write), the version bump before a
//! write, and the chunkservers' part of a truncation. Each order runs on
//! every server at once; the copies that took it are recorded.

use std::time::Instant;

use futures::future::join_all;

use super::datapath::{stale_or_retry, ReqId};
use super::orders::OrderError;
use super::placement;
use super::state::SoftState;
use super::{ChunkError, ChunkManager, GRACE};
use crate::fsm::{ChunkId, ChunkInfo, ChunkVersion, Cred, Errno, Inode, Op, Reply, CHUNK_SIZE};

/// What an order to the servers of a lease that makes its chunk (see
/// [`SoftState::made_by_writes`]) found.
enum OnChain {
    /// These took it: they hold the chunk.
    Took(Vec<u64>),
    /// A server lacks the chunk and none took the order: no write went
    /// through the whole chain, so nothing acknowledged is there (a server
    /// that did not answer and holds a piece has a stale copy, deleted
    /// later). A server that lacks it remembers the new version, so a
    /// write of the old lease still in flight cannot make it there after.
    NoneHolds,
    /// None answered: they may hold what was written.
    NoAnswer,
}

/// What a WriteChunk tells of earlier writes to its chunk, for a fresh
/// chunk (no write ended on it) of which the leader knows no copy: were
/// copies made by writes under a lease of an earlier leader, whose servers
/// have not reported yet? Without such news the leader waits for reports
/// (EAGAIN) through its grace period; with leaders replaced every few
/// seconds, a writer waited until they stopped.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Earlier<'a> {
    /// A renewal, with the addresses of the renewed lease's chain.
    Renewal(&'a [String]),
    /// The asker holds no lease on the chunk (so never wrote it) and no
    /// other session has the file open: no write was made.
    NoOtherWriter,
    /// Nothing known.
    Unknown,
}

impl ChunkManager {
    /// `goal` servers chosen by placement for new copies (none of `avoid`):
    /// ENOSPC when none can take one; EAGAIN when none is known yet in a
    /// new leader's grace period, so the client asks again.
    pub(super) fn targets(
        &self,
        st: &SoftState,
        goal: u8,
        avoid: &[u64],
    ) -> Result<Vec<u64>, ChunkError> {
        let now = Instant::now();
        let n = usize::from(goal.max(1));
        // A server that left an order unanswered lately (its machine went
        // silent; heartbeats lose it only after 30 s) is on no new chain
        // while others can take the chunk.
        let quiet: Vec<u64> = st
            .servers
            .keys()
            .copied()
            .filter(|id| {
                st.address(*id)
                    .is_some_and(|a| self.orders.silent_since(a).is_some())
            })
            .collect();
        if !quiet.is_empty() {
            let skip: Vec<u64> = avoid.iter().chain(&quiet).copied().collect();
            let t = placement::choose(&st.servers, now, n, &skip);
            if !t.is_empty() {
                return Ok(t);
            }
        }
        let t = placement::choose(&st.servers, now, n, avoid);
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
    pub(super) async fn create_copies(
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
    pub(super) async fn copy_on_write(
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
    /// version and the servers that took it. `earlier`: what the asker
    /// tells of earlier writes (see [`Earlier`]).
    pub(super) async fn new_version(
        &self,
        id: ChunkId,
        v: u32,
        goal: u8,
        fresh: bool,
        earlier: Earlier<'_>,
    ) -> Result<(u32, Vec<u64>), ChunkError> {
        let now = Instant::now();
        // The namespace before the soft state, never both at once.
        let ordered = self.node.shared.ns().version_ordered(id);
        let ((valid, made), all, nv) = {
            let st = self.state();
            let all: Vec<u64> = st
                .copies
                .get(&id)
                .map(|h| h.keys().copied().collect())
                .unwrap_or_default();
            let found = Self::holders_or_chain(&st, (id, v), fresh, now);
            let none_went_through = match earlier {
                // A write goes through the whole chain or is not
                // acknowledged: a server of the chain that reported
                // without the chunk means none went through.
                Earlier::Renewal(chain) => st.any_has_reported(chain, now),
                Earlier::NoOtherWriter => true,
                Earlier::Unknown => false,
            };
            if fresh
                && found.0.is_empty()
                && found.1.is_empty()
                && !none_went_through
                && st.reports_pending(now, GRACE)
            {
                // Writes under an earlier leader's lease may have made it:
                // the reports tell soon.
                return Err(Errno::EAGAIN.into());
            }
            (found, all, st.next_version(id, v, ordered))
        };
        let nv = self.record_order(id, nv).await?;
        let set_version = |a: String| async move { self.orders.set_version(&a, id, v, nv).await };
        // The copies on the chain of a lease making it take the new version;
        // with none there, it is made anew below.
        match self
            .order_on_chain(&made, (id, nv), "set version", set_version)
            .await
        {
            Some(OnChain::Took(ok)) => return Ok((nv, ok)),
            Some(OnChain::NoAnswer) => return Err(Errno::EAGAIN.into()),
            Some(OnChain::NoneHolds) | None => {}
        }
        if valid.is_empty() {
            if !fresh {
                // Copies former leaders moved above the committed version
                // (see `ahead_of`): they hold version `v`'s content and go
                // on, at the version after the highest of theirs (`nv`).
                let ahead = self.state().ahead_of(id, v, now);
                if !ahead.is_empty() {
                    let servers: Vec<u64> = ahead.iter().map(|&(s, _)| s).collect();
                    let from: std::collections::HashMap<String, u32> = self
                        .addresses(&servers)
                        .into_iter()
                        .filter_map(|(s, a)| ahead.iter().find(|c| c.0 == s).map(|c| (a, c.1)))
                        .collect();
                    let bump = |a: String| {
                        let at = from.get(&a).copied().unwrap_or(v + 1);
                        async move { self.orders.set_version(&a, id, at, nv).await }
                    };
                    tracing::info!(chunk = %id, committed = v, copies = ?ahead, "WriteChunk: copies former leaders moved above the committed version go on from there");
                    let ok = self
                        .order_copies(&servers, (id, nv), "set version", Errno::EAGAIN, bump)
                        .await?;
                    return Ok((nv, ok));
                }
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

    /// Before copies of chunk `id` are ordered to version `nv` (a plan of
    /// [`SoftState::next_version`]): logs `log`, when given, as ordered
    /// (`OrderChunkVersion`). A later leader then gives the chunk a version
    /// above it, even if it never hears of a copy that took `nv` (its
    /// server down or not reported yet), so such a copy can never pass for
    /// one of a later change. Returns `nv`.
    async fn record_order(
        &self,
        id: ChunkId,
        (nv, log): (u32, Option<u32>),
    ) -> Result<u32, ChunkError> {
        let Some(upto) = log else {
            return Ok(nv);
        };
        let op = Op::OrderChunkVersion {
            chunk: id,
            version: ChunkVersion(upto),
        };
        match self.internal(op).await? {
            Reply::Err(e) => Err(e.into()),
            _ => {
                self.state().versions_claimed.insert(id);
                Ok(nv)
            }
        }
    }

    /// The live copies of chunk `id` at `v` and, for a `fresh` chunk with
    /// none, the servers of a lease whose writes make it (empty otherwise).
    fn holders_or_chain(
        st: &SoftState,
        (id, v): (ChunkId, u32),
        fresh: bool,
        now: Instant,
    ) -> (Vec<u64>, Vec<u64>) {
        let valid = st.holders_at(id, v, now);
        let made = if fresh && valid.is_empty() {
            st.made_by_writes(id, v, now)
        } else {
            Vec::new()
        };
        (valid, made)
    }

    /// Runs `order` on `made`, the servers of a lease that makes chunk `id`
    /// (`None` when there are none): see [`OnChain`].
    async fn order_on_chain<F, Fut>(
        &self,
        made: &[u64],
        (id, nv): (ChunkId, u32),
        what: &'static str,
        order: F,
    ) -> Option<OnChain>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<(), OrderError>>,
    {
        if made.is_empty() {
            return None;
        }
        let (ok, missing) = self.run_orders(made, (id, nv), what, order).await;
        Some(if !ok.is_empty() {
            OnChain::Took(ok)
        } else if missing > 0 {
            OnChain::NoneHolds
        } else {
            OnChain::NoAnswer
        })
    }

    /// Runs `order` on each of `servers` at once (given the address) and
    /// records copy `id` at version `nv` on those that took it: their ids,
    /// or `none` when no server did.
    pub(super) async fn order_copies<F, Fut>(
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
    pub(super) async fn run_orders<F, Fut>(
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
    pub(super) fn took(
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
                    st.set_copy_version(id, s, nv);
                    ok.push(s);
                }
                Err(e) => tracing::warn!(chunk = %id, "{what}: {e}"),
            }
        }
        ok
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
        let ordered = self.node.shared.ns().version_ordered(id);
        let ((valid, made), nv) = {
            let st = self.state();
            let found = Self::holders_or_chain(&st, (id, v), info.fresh, Instant::now());
            (found, st.next_version(id, v, ordered))
        };
        let nv = self.record_order(id, nv).await?;
        let length = size % CHUNK_SIZE;
        let cut = |a: String| async move { self.orders.truncate(&a, id, v, nv, length).await };
        // A new chunk a lease's writes are making is cut where they made
        // it; none holding it, it is a hole still.
        match self.order_on_chain(&made, (id, nv), "truncate", cut).await {
            Some(OnChain::Took(_)) => {}
            Some(OnChain::NoneHolds) => return Ok(()),
            Some(OnChain::NoAnswer) => return Err(Errno::EAGAIN.into()),
            None if valid.is_empty() => {
                if info.fresh {
                    return Ok(());
                }
                return Err(stale_or_retry(self, "truncate", id));
            }
            None => {
                self.order_copies(&valid, (id, nv), "truncate", Errno::EAGAIN, cut)
                    .await?;
            }
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
