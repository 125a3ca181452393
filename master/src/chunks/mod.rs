//! The leader's side of the data path: chunkservers, copies, leases, and
//! the loop that keeps every chunk at its goal.
//!
//! All of it is soft state (DESIGN.md: chunk locations stay out of Raft): a
//! new leader starts empty and learns the chunkservers and their copies from
//! their registrations and reports; the chunk table itself (ids, versions,
//! goals) is in the namespace, changed only through Raft.
//!
//! Files: `state` (registry of chunkservers, copy map, leases), `placement`
//! (which servers take new copies), `plan` (what the replication loop
//! orders, as plain functions over plain data), `orders` (gRPC orders to
//! chunkservers), `datapath` (ReadChunk, WriteChunk, WriteChunkEnd: the
//! calls and their leases), `copies` (making copies and bumping their
//! versions for those calls, the truncation of a tail chunk), `duties` (the
//! replication loop).
//!
//! The version protocol, in the safe order: to give a writer a chunk, its
//! live copies take version `v + 1` on the chunkservers first, then `v + 1`
//! is committed through Raft, then the writer gets the copies that took it.
//! So a copy above the committed version was never written by a client
//! (the plan sets it back), and a copy below it missed a write (stale: never
//! served, deleted). A new chunk is the exception: committed at version 1
//! with no copy, it is made on the chain by the writer's first write
//! (`Lease.create`; see `datapath::write_new_chunk`).

mod copies;
pub mod datapath;
pub mod duties;
mod holders;
mod ids;
pub mod orders;
pub mod placement;
pub mod plan;
pub mod state;

#[cfg(test)]
mod plan_tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::fsm::{self, Errno};
use crate::raft::{MasterNode, NodeError};
pub use datapath::Location;
use plan::{ChunkView, Health, InFlight};
use state::{Beat, CopyInfo, Registration, Server, ServerState, SoftState};

/// After becoming leader, how long to wait for the chunkservers' reports
/// before a chunk without copies counts as missing and the loop acts.
pub const GRACE: Duration = Duration::from_secs(5);

/// Why a data-path call failed.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// A POSIX error for the client (EAGAIN: retry).
    #[error("{0}")]
    Errno(Errno),
    #[error(transparent)]
    Node(#[from] NodeError),
}

impl From<Errno> for ChunkError {
    fn from(e: Errno) -> Self {
        ChunkError::Errno(e)
    }
}

/// The leader's chunk management: soft state, orders, and the Raft node to
/// commit through.
pub struct ChunkManager {
    pub node: Arc<MasterNode>,
    state: Mutex<SoftState>,
    pub orders: orders::Orders,
    inflight: Mutex<InFlight>,
    /// Chunk ids reserved for this leader to hand out.
    ids: ids::ChunkIds,
}

impl ChunkManager {
    pub fn new(node: Arc<MasterNode>) -> Arc<ChunkManager> {
        let secret = node.ident.secret().clone();
        Arc::new(ChunkManager {
            node,
            state: Mutex::new(SoftState::default()),
            orders: orders::Orders::new(secret),
            inflight: Mutex::new(InFlight::default()),
            ids: ids::ChunkIds::default(),
        })
    }

    /// The soft state (a poisoned lock is recovered: every change under it
    /// is a few map updates that leave it consistent).
    pub fn state(&self) -> MutexGuard<'_, SoftState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn inflight(&self) -> MutexGuard<'_, InFlight> {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The soft state, made the current leadership's (leader only).
    fn leader_state(&self) -> Result<MutexGuard<'_, SoftState>, ChunkError> {
        self.node.ensure_leader()?;
        let term = self.node.term();
        let mut st = self.state();
        if st.enter_term(term, Instant::now()) {
            *self.inflight() = InFlight::default();
        }
        Ok(st)
    }

    /// A chunkserver registers; its id. Leader only.
    pub fn register(&self, r: Registration) -> Result<u64, ChunkError> {
        let id = self.leader_state()?.register(r, Instant::now());
        Ok(id)
    }

    /// One batch of a full chunk report; false: unknown server.
    pub fn report(
        &self,
        id: u64,
        first: bool,
        last: bool,
        copies: Vec<(fsm::ChunkId, CopyInfo)>,
    ) -> Result<bool, ChunkError> {
        Ok(self
            .leader_state()?
            .report(id, first, last, copies, Instant::now()))
    }

    /// A heartbeat; false: unknown server.
    pub fn heartbeat(&self, id: u64, beat: Beat) -> Result<bool, ChunkError> {
        Ok(self.leader_state()?.heartbeat(id, beat, Instant::now()))
    }

    /// Every known chunkserver with its state.
    pub fn servers(&self) -> Vec<(Server, ServerState)> {
        let st = self.state();
        let now = Instant::now();
        st.servers
            .values()
            .map(|s| (s.clone(), s.state(now)))
            .collect()
    }

    /// How many copies the leader knows on each server, counted a part of
    /// the copy map at a time with the master's other tasks run between
    /// parts (a count of the whole map would hold the chunk state for as
    /// long as the orphan scan did: 244 ms for a million chunks).
    pub async fn copies_per_server(&self) -> HashMap<u64, u64> {
        use std::ops::Bound::{Excluded, Unbounded};
        let mut counts = HashMap::new();
        let mut after = None;
        loop {
            {
                let st = self.state();
                let from = after.map_or(Unbounded, Excluded);
                let mut seen = 0;
                for (&id, h) in st.copies.range((from, Unbounded)).take(duties::SWEEP_PART) {
                    for server in h.keys() {
                        *counts.entry(*server).or_default() += 1;
                    }
                    after = Some(id);
                    seen += 1;
                }
                if seen < duties::SWEEP_PART {
                    return counts;
                }
            }
            tokio::task::yield_now().await;
        }
    }

    /// Up to `n` chunks of the table after `after` (from the start with
    /// `None`), in id order, `after` moved to the last of them; `None` past
    /// the end: the replication loop and the health count
    /// read the table a part at a time, so the namespace is never held for
    /// a copy of all of it.
    fn chunk_part(&self, after: &mut Option<fsm::ChunkId>, n: usize) -> Option<Vec<ChunkView>> {
        let ns = self.node.shared.ns();
        let part: Vec<ChunkView> = ns
            .chunk_table(*after)
            .take(n)
            .map(|(id, c)| ChunkView {
                id,
                version: c.version.0,
                goal: c.goal,
                fresh: c.fresh,
            })
            .collect();
        *after = Some(part.last()?.id);
        Some(part)
    }

    /// The id counter and the ids sessions hold (sorted), read before a
    /// sweep: an id at or above the counter, or held, may have copies the
    /// table does not name yet.
    fn chunk_ids_out(&self) -> (fsm::ChunkId, Vec<fsm::ChunkId>) {
        let ns = self.node.shared.ns();
        let mut held: Vec<fsm::ChunkId> = ns.held_chunk_ids().collect();
        held.sort_unstable();
        (ns.next_chunk_id(), held)
    }

    /// The chunks waiting for their copies to be deleted.
    fn pending_deletes(&self) -> Vec<fsm::ChunkId> {
        self.node.shared.ns().pending_chunk_deletes().to_vec()
    }

    /// Chunk health now, counted a part of the table at a time with the
    /// master's other tasks run between parts (as the replication loop
    /// sweeps it): a monitor asking every few seconds never holds the
    /// leader for a whole pass.
    pub async fn health(&self) -> Health {
        let now = Instant::now();
        let mut h = Health::default();
        let mut after = None;
        while let Some(part) = self.chunk_part(&mut after, duties::SWEEP_PART) {
            h += plan::health(&part, &self.state(), now);
            tokio::task::yield_now().await;
        }
        h
    }
}
