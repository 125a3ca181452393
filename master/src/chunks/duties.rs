//! The replication loop: on the leader, once a second after the grace
//! period, plan (see `plan`) and give the orders; replications run in the
//! background within the limits, deletes and version fixes in a batch.
//! Also publishes the chunk health and chunkserver gauges.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;

use super::plan::{self, Action, Input, Limits};
use super::state::{CopyInfo, ServerState};
use super::{ChunkManager, GRACE};
use crate::fsm::{ChunkId, Op, Reply, Request, SessionId};
use crate::raft::node::now as clock;

/// Pause between two passes, at least.
const PERIOD: Duration = Duration::from_secs(1);
/// A pass's own work takes at most this share of the master's time: the
/// pause after a pass is this many times the work at least (a million
/// chunks: a pass every 15-20 s here instead of every second).
const PAUSE_PER_WORK: u32 = 50;
/// Chunks swept between two yields to the master's other tasks.
pub(super) const SWEEP_PART: usize = 4096;
/// Ids per ChunksDeleted entry at most.
const DELETES_PER_ENTRY: usize = 10_000;

/// Runs until the master shuts down.
pub async fn run(mgr: Arc<ChunkManager>) {
    let mut led_term: Option<u64> = None;
    let mut linearized = false;
    let mut pause = PERIOD;
    loop {
        tokio::time::sleep(pause).await;
        pause = PERIOD;
        let view = mgr.node.view();
        if view.role == "shutdown" {
            return;
        }
        if !mgr.node.is_leader() {
            if led_term.take().is_some() {
                mgr.state().reset(None);
                *mgr.inflight() = plan::InFlight::default();
            }
            continue;
        }
        if led_term != Some(view.term) {
            // A new leadership: what an earlier one knew may be stale (kept
            // when chunkservers already registered in this term).
            if mgr.state().enter_term(view.term, Instant::now()) {
                *mgr.inflight() = plan::InFlight::default();
            }
            led_term = Some(view.term);
            linearized = false;
        }
        if mgr.state().in_grace(Instant::now(), GRACE) {
            continue;
        }
        if !linearized {
            // Versions committed by an earlier leader must be applied here
            // before copies are judged against them.
            match mgr.node.linearize().await {
                Ok(()) => linearized = true,
                Err(e) => {
                    tracing::debug!("replication loop waits: {e}");
                    continue;
                }
            }
        }
        let work = pass(&mgr).await;
        pause = PERIOD.max(work * PAUSE_PER_WORK);
    }
}

/// One pass: plan, order, publish gauges; returns the time the planning
/// itself took. The chunk table is swept [`SWEEP_PART`] chunks at a time,
/// and the master's other tasks (client calls, Raft) run between two
/// parts: a pass over 150,000 chunks takes about 50 ms here, which must
/// not stall them.
async fn pass(mgr: &Arc<ChunkManager>) -> Duration {
    let now = Instant::now();
    let mut work = Duration::ZERO;
    let mut t = Instant::now();
    {
        let mut st = mgr.state();
        st.expire_leases(now);
        st.forget_lost_copies(now);
    }
    let (next_chunk, held) = mgr.chunk_ids_out();
    let accounted = held.iter().chain(&mgr.pending_deletes()).copied().collect();
    let inflight = mgr.inflight().clone();
    let limits = Limits::default();
    let mut sweep = plan::Sweep::new(&inflight, limits, &mgr.state(), now, accounted);
    work += t.elapsed();
    tokio::task::yield_now().await;
    let mut after = None;
    t = Instant::now();
    while let Some(part) = mgr.chunk_part(&mut after, SWEEP_PART) {
        sweep.chunks(&part, &mgr.state(), &inflight, now);
        work += t.elapsed();
        tokio::task::yield_now().await;
        t = Instant::now();
    }
    if !mgr.node.is_leader() {
        // Deposed between two parts: the next leader plans afresh.
        return work;
    }
    t = Instant::now();
    let actions = {
        let pending = mgr.pending_deletes();
        let st = mgr.state();
        let (actions, h) = sweep.finish(&Input {
            pending_deletes: &pending,
            next_chunk,
            held: &held,
            state: &st,
            inflight: &inflight,
            limits,
            now,
        });
        publish(&h, &st, now);
        actions
    };
    work += t.elapsed();
    metrics::histogram!("mfs_chunk_loop_seconds").record(work.as_secs_f64());
    let mut quick = Vec::new();
    for a in actions {
        match a {
            Action::Replicate {
                chunk,
                version,
                target,
                sources,
            } => start_replication(mgr, chunk, version, target, &sources),
            Action::DeletesDone(ids) => {
                for part in ids.chunks(DELETES_PER_ENTRY) {
                    let req = Request {
                        session: SessionId::NONE,
                        seq: 0,
                        acked: 0,
                        time: clock(),
                        op: Op::ChunksDeleted { ids: part.to_vec() },
                    };
                    match mgr.node.write(req).await {
                        Ok(Reply::Ok) => {
                            tracing::debug!(n = part.len(), "chunk deletions recorded")
                        }
                        Ok(r) => tracing::warn!("recording chunk deletions: {r}"),
                        Err(e) => tracing::warn!("recording chunk deletions: {e}"),
                    }
                }
            }
            other => quick.push(other),
        }
    }
    let calls = quick.into_iter().map(|a| quick_order(mgr, a));
    join_all(calls).await;
    work
}

/// A delete or a version fix; the copy map follows on success.
async fn quick_order(mgr: &ChunkManager, a: Action) {
    let (chunk, server) = match &a {
        Action::Delete { chunk, server, .. } | Action::SetVersion { chunk, server, .. } => {
            (*chunk, *server)
        }
        _ => return,
    };
    let Some(addr) = mgr.state().address(server).map(str::to_string) else {
        return;
    };
    match a {
        Action::Delete { version, .. } => match mgr.orders.delete(&addr, chunk, version).await {
            Ok(()) => {
                tracing::debug!(chunk = %chunk, server = addr.as_str(), "copy deleted");
                mgr.state().remove_copy(chunk, server, Some(version));
            }
            Err(e) => tracing::warn!(chunk = %chunk, "delete: {e}"),
        },
        Action::SetVersion { from, to, .. } => {
            match mgr.orders.set_version(&addr, chunk, from, to).await {
                Ok(()) => mgr.state().set_copy_version(chunk, server, to),
                Err(e) => tracing::warn!(chunk = %chunk, "set version back: {e}"),
            }
        }
        _ => {}
    }
}

/// Starts one replication in the background, counted in flight until done.
fn start_replication(
    mgr: &Arc<ChunkManager>,
    chunk: ChunkId,
    version: u32,
    target: u64,
    sources: &[u64],
) {
    let (Some(addr), srcs) = ({
        let st = mgr.state();
        let srcs: Vec<String> = sources
            .iter()
            .filter_map(|s| st.address(*s).map(str::to_string))
            .collect();
        (st.address(target).map(str::to_string), srcs)
    }) else {
        return;
    };
    let first = sources.first().copied();
    {
        let mut f = mgr.inflight();
        f.total += 1;
        f.chunks.insert(chunk);
        *f.per_server.entry(target).or_default() += 1;
        if let Some(s) = first {
            *f.per_server.entry(s).or_default() += 1;
        }
    }
    let mgr = mgr.clone();
    tokio::spawn(async move {
        let r = mgr.orders.replicate(&addr, chunk, version, srcs).await;
        match r {
            Ok(()) => {
                tracing::info!(chunk = %chunk, target = addr.as_str(), "chunk replicated");
                mgr.state().set_copy(
                    chunk,
                    target,
                    CopyInfo {
                        version,
                        marked: false,
                    },
                );
            }
            Err(e) => tracing::warn!(chunk = %chunk, "replicate: {e}"),
        }
        let mut f = mgr.inflight();
        f.total = f.total.saturating_sub(1);
        f.chunks.remove(&chunk);
        for s in [Some(target), first].into_iter().flatten() {
            if let Some(n) = f.per_server.get_mut(&s) {
                *n = n.saturating_sub(1);
            }
        }
    });
}

fn publish(h: &plan::Health, st: &super::state::SoftState, now: Instant) {
    metrics::gauge!("mfs_chunks").set(h.chunks as f64);
    metrics::gauge!("mfs_chunks_missing").set(h.missing as f64);
    metrics::gauge!("mfs_chunks_undergoal").set(h.undergoal as f64);
    metrics::gauge!("mfs_chunks_overgoal").set(h.overgoal as f64);
    metrics::gauge!("mfs_chunks_stale").set(h.stale as f64);
    for state in [ServerState::Ok, ServerState::Maintenance, ServerState::Lost] {
        let n = st
            .servers
            .values()
            .filter(|s| s.state(now) == state)
            .count();
        metrics::gauge!("mfs_chunkservers", "state" => state.name()).set(n as f64);
    }
}
