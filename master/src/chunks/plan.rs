//! What the replication loop orders, decided from plain data: the chunk
//! table (from the namespace), the copies and servers the leader knows, the
//! chunks being worked on. No network here, so every rule is unit-tested.
//!
//! For each chunk, with `V` its committed version and `G` its goal:
//! - copies on lost servers do not count; copies on servers in maintenance
//!   count even while they are away (no re-replication for a reboot);
//! - a copy at `V` is valid; above `V` it is an uncommitted bump (no client
//!   wrote it): valid data, set back to `V`; below `V` it is stale: deleted;
//! - fewer valid copies off marked disks than `G`: replicate from a valid
//!   copy to a server chosen by [`placement::choose`];
//! - enough: copies on marked disks are deleted (they were moved), then
//!   extras beyond `G` on reachable servers, the fullest server first;
//! - chunks under a write lease, busy, or already replicating are left alone.
//!
//! Then chunks waiting for deletion lose their copies (and leave the list
//! once no live server holds one), copies of ids the table no longer knows
//! are deleted, and when nothing else is to do one chunk moves from the
//! fullest server to the emptiest if their usage differs by more than the
//! threshold.

use std::collections::{HashMap, HashSet};
use std::ops::Bound;
use std::time::Instant;

use super::placement::{self, is_target};
use super::state::{ServerState, SoftState, NEW_ID_GRACE};
use crate::fsm::ChunkId;

/// One entry of the chunk table, as the plan needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkView {
    pub id: ChunkId,
    pub version: u32,
    pub goal: u8,
    pub fresh: bool,
}

/// One order the loop should give.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Copy `chunk` at `version` to `target` from the first of `sources`
    /// that answers.
    Replicate {
        chunk: ChunkId,
        version: u32,
        target: u64,
        sources: Vec<u64>,
    },
    /// Delete the copy of `chunk` at `version` on `server`.
    Delete {
        chunk: ChunkId,
        server: u64,
        version: u32,
    },
    /// Set the copy on `server` from version `from` back to `to`.
    SetVersion {
        chunk: ChunkId,
        server: u64,
        from: u32,
        to: u32,
    },
    /// These pending deletes have no copy left on a live server.
    DeletesDone(Vec<ChunkId>),
}

/// How much the loop may start.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Replications in flight per server (as source or target).
    pub per_server: usize,
    /// Replications in flight in all.
    pub total: usize,
    /// Deletes and version fixes per pass.
    pub quick: usize,
    /// Rebalance when usages differ by more than this (0..1).
    pub rebalance_gap: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_server: 2,
            total: 8,
            quick: 256,
            rebalance_gap: 0.1,
        }
    }
}

/// Replications already running.
#[derive(Clone, Debug, Default)]
pub struct InFlight {
    pub per_server: HashMap<u64, usize>,
    pub total: usize,
    pub chunks: HashSet<ChunkId>,
}

/// Chunk health, as `mfscli info` shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Health {
    pub chunks: u64,
    /// No valid copy (and some write ended on it).
    pub missing: u64,
    /// Fewer valid copies than the goal, at least one.
    pub undergoal: u64,
    /// More valid copies than the goal.
    pub overgoal: u64,
    /// Chunks with a stale copy (older version) somewhere.
    pub stale: u64,
}

impl std::ops::AddAssign for Health {
    /// The counts of two parts of the table together.
    fn add_assign(&mut self, o: Health) {
        self.chunks += o.chunks;
        self.missing += o.missing;
        self.undergoal += o.undergoal;
        self.overgoal += o.overgoal;
        self.stale += o.stale;
    }
}

/// One copy, sorted out.
#[derive(Clone, Copy, Debug)]
struct Seen {
    server: u64,
    version: u32,
    /// The server answers now (else: in maintenance and away).
    alive: bool,
}

/// A chunk's copies, sorted out. One is kept for a whole sweep and
/// cleared for each chunk, so a sweep allocates nothing per chunk.
#[derive(Debug, Default)]
struct Sorted {
    /// Valid (at or above the version), off marked disks.
    good: Vec<Seen>,
    /// Valid, on marked disks.
    marked: Vec<Seen>,
    stale: Vec<Seen>,
    /// Every server holding any copy, whatever its state.
    holders: Vec<u64>,
    /// The servers known, in id order, as [`Sorted::judge`] found them:
    /// (id, lost, alive).
    servers: Vec<(u64, bool, bool)>,
}

impl Sorted {
    /// Judges every server once for the chunks that follow (not once for
    /// each copy of each chunk).
    fn judge(&mut self, st: &SoftState, now: Instant) {
        self.servers.clear();
        self.servers.extend(
            st.servers
                .values()
                .map(|s| (s.id, s.state(now) == ServerState::Lost, s.is_alive(now))),
        );
    }

    /// Sorts out the copies of `c`; the servers were judged with `st`.
    fn sort(&mut self, c: &ChunkView, st: &SoftState) {
        self.good.clear();
        self.marked.clear();
        self.stale.clear();
        self.holders.clear();
        let Some(holders) = st.copies.get(&c.id) else {
            return;
        };
        for (&server, copy) in holders {
            self.holders.push(server);
            let Ok(i) = self.servers.binary_search_by_key(&server, |s| s.0) else {
                continue;
            };
            let (_, lost, alive) = self.servers[i];
            if lost {
                continue;
            }
            let seen = Seen {
                server,
                version: copy.version,
                alive,
            };
            if copy.version < c.version {
                self.stale.push(seen);
            } else if copy.marked {
                self.marked.push(seen);
            } else {
                self.good.push(seen);
            }
        }
    }

    /// Adds this chunk to the health counts.
    fn count(&self, c: &ChunkView, h: &mut Health) {
        h.chunks += 1;
        let valid = self.good.len() + self.marked.len();
        let goal = usize::from(c.goal);
        if valid == 0 {
            if !c.fresh {
                h.missing += 1;
            }
        } else if valid < goal {
            h.undergoal += 1;
        } else if valid > goal {
            h.overgoal += 1;
        }
        if !self.stale.is_empty() {
            h.stale += 1;
        }
    }
}

/// Counts of missing, undergoal, overgoal and stale chunks.
pub fn health(chunks: &[ChunkView], st: &SoftState, now: Instant) -> Health {
    let mut h = Health::default();
    let mut s = Sorted::default();
    s.judge(st, now);
    for c in chunks {
        s.sort(c, st);
        s.count(c, &mut h);
    }
    h
}

/// What the end of a sweep needs besides the parts of the table.
pub struct Input<'a> {
    pub pending_deletes: &'a [ChunkId],
    /// Ids at or above it were not handed out when the sweep began.
    pub next_chunk: ChunkId,
    /// Ids sessions hold (sorted): their copies are written before the
    /// namespace names them (`AttachChunk`).
    pub held: &'a [ChunkId],
    pub state: &'a SoftState,
    pub inflight: &'a InFlight,
    pub limits: Limits,
    pub now: Instant,
}

struct Budget {
    per_server: HashMap<u64, usize>,
    total: usize,
    quick: usize,
}

impl Budget {
    fn quick(&mut self) -> bool {
        if self.quick == 0 {
            return false;
        }
        self.quick -= 1;
        true
    }
}

/// One pass over the chunk table, a part at a time: the loop takes the
/// table in parts and lets the master's other tasks run between them, so
/// a big table never holds up the calls of clients for the whole pass.
/// Whatever the parts, the orders and the health are those of one part
/// holding the whole table.
pub struct Sweep {
    limits: Limits,
    budget: Budget,
    out: Vec<Action>,
    all_at_goal: bool,
    health: Health,
    sorted: Sorted,
    /// Copies of ids up to this one were compared with the table.
    scanned_to: Option<ChunkId>,
    /// Ids with copies that the table's parts did not name, in id order
    /// (at most [`STRAYS_MAX`]): orphans unless held, pending deletion,
    /// new or busy ([`Sweep::finish`] judges).
    strays: Vec<ChunkId>,
    /// Ids held or pending deletion when the sweep began: never strays,
    /// so that a million pending deletes leave room for the orphans.
    accounted: HashSet<ChunkId>,
    /// The fullest live server and the emptiest target, when their usages
    /// differ by more than the threshold at the start of the sweep.
    unbalanced: Option<(u64, u64)>,
    /// The first chunk found with a copy at its version on the first of
    /// `unbalanced` and none on the second.
    movable: Option<(ChunkId, u32)>,
}

/// Stray ids a sweep keeps at most: no more orphans than the quick orders
/// of a pass can be deleted anyway; the next passes find the rest.
const STRAYS_MAX: usize = 4096;

impl Sweep {
    /// A sweep starting now, with the servers as `st` has them; `accounted`:
    /// the ids sessions hold and those pending deletion now.
    pub fn new(
        inflight: &InFlight,
        limits: Limits,
        st: &SoftState,
        now: Instant,
        accounted: HashSet<ChunkId>,
    ) -> Sweep {
        Sweep {
            limits,
            budget: Budget {
                per_server: inflight.per_server.clone(),
                total: inflight.total,
                quick: limits.quick,
            },
            out: Vec::new(),
            all_at_goal: true,
            health: Health::default(),
            sorted: Sorted::default(),
            scanned_to: None,
            strays: Vec::new(),
            accounted,
            unbalanced: unbalanced(st, now, limits),
            movable: None,
        }
    }

    /// The next chunks of the table (in id order, after those of the parts
    /// before).
    pub fn chunks(
        &mut self,
        part: &[ChunkView],
        st: &SoftState,
        inflight: &InFlight,
        now: Instant,
    ) {
        self.sorted.judge(st, now);
        for c in part {
            self.sorted.sort(c, st);
            self.sorted.count(c, &mut self.health);
            if skip(c.id, st, inflight, now) {
                continue;
            }
            self.order(c, st, now);
            self.note_movable(c, st);
        }
        if let Some(last) = part.last() {
            self.strays_up_to(Bound::Included(last.id), part, st);
        }
    }

    /// Notes the ids of copies up to `end` that `part` (the table from the
    /// last id scanned on) does not name.
    fn strays_up_to(&mut self, end: Bound<ChunkId>, part: &[ChunkView], st: &SoftState) {
        let start = self.scanned_to.map_or(Bound::Unbounded, Bound::Excluded);
        let empty = match (start, end) {
            (Bound::Excluded(a), Bound::Included(b)) => b <= a,
            (Bound::Excluded(a), Bound::Excluded(b)) => b <= a,
            (Bound::Unbounded, Bound::Excluded(b)) => b == ChunkId(0),
            _ => false,
        };
        if let Bound::Included(b) | Bound::Excluded(b) = end {
            self.scanned_to = Some(self.scanned_to.map_or(b, |a| a.max(b)));
        }
        if empty {
            return;
        }
        let mut named = part.iter().map(|c| c.id).peekable();
        for &id in st.copies.range((start, end)).map(|(id, _)| id) {
            if self.strays.len() >= STRAYS_MAX {
                return;
            }
            while named.next_if(|&n| n < id).is_some() {}
            if named.peek() != Some(&id) && !self.accounted.contains(&id) {
                self.strays.push(id);
            }
        }
    }

    /// Notes `c` as the chunk to move when the servers are unbalanced and
    /// none was found yet.
    fn note_movable(&mut self, c: &ChunkView, st: &SoftState) {
        let Some((src, dst)) = self.unbalanced else {
            return;
        };
        if self.movable.is_none() && can_move(c.id, c.version, src, dst, st) {
            self.movable = Some((c.id, c.version));
        }
    }

    /// What one chunk needs: stale copies deleted, copies ahead set back,
    /// copies made up to the goal, marked and extra copies deleted.
    fn order(&mut self, c: &ChunkView, st: &SoftState, now: Instant) {
        let (s, b, out) = (&self.sorted, &mut self.budget, &mut self.out);
        for x in s.stale.iter().filter(|x| x.alive) {
            if b.quick() {
                out.push(Action::Delete {
                    chunk: c.id,
                    server: x.server,
                    version: x.version,
                });
            }
        }
        let ahead = s.good.iter().chain(&s.marked);
        for x in ahead.filter(|x| x.alive && x.version > c.version) {
            if b.quick() {
                out.push(Action::SetVersion {
                    chunk: c.id,
                    server: x.server,
                    from: x.version,
                    to: c.version,
                });
            }
        }
        let goal = usize::from(c.goal);
        if s.good.len() + s.marked.len() == 0 {
            return;
        }
        if s.good.len() < goal {
            self.all_at_goal = false;
            let need = goal - s.good.len();
            self.replicate(c, need, st, now);
            return;
        }
        for x in s.marked.iter().filter(|x| x.alive) {
            if b.quick() {
                out.push(Action::Delete {
                    chunk: c.id,
                    server: x.server,
                    version: x.version,
                });
            }
        }
        let mut reachable: Vec<&Seen> = s.good.iter().filter(|x| x.alive).collect();
        if reachable.len() > goal {
            let usage = |id: u64| st.servers.get(&id).map_or(0.0, |s| s.usage());
            reachable.sort_by(|x, y| {
                usage(y.server)
                    .total_cmp(&usage(x.server))
                    .then(x.server.cmp(&y.server))
            });
            let extra = reachable.len() - goal;
            for x in reachable.into_iter().take(extra) {
                if b.quick() {
                    out.push(Action::Delete {
                        chunk: c.id,
                        server: x.server,
                        version: x.version,
                    });
                }
            }
        }
    }

    /// Up to `need` new copies of `c`, within the budget.
    fn replicate(&mut self, c: &ChunkView, need: usize, st: &SoftState, now: Instant) {
        let Sweep {
            limits: lim,
            budget: b,
            out,
            sorted: s,
            ..
        } = self;
        let sources: Vec<u64> = s
            .good
            .iter()
            .chain(&s.marked)
            .filter(|x| x.alive && x.version == c.version)
            .map(|x| x.server)
            .collect();
        let Some(&first) = sources.first() else {
            return;
        };
        let targets = placement::choose(&st.servers, now, need, &s.holders);
        for t in targets {
            let busy = |id: u64| b.per_server.get(&id).copied().unwrap_or(0) >= lim.per_server;
            if b.total >= lim.total || busy(t) || busy(first) {
                return;
            }
            *b.per_server.entry(t).or_default() += 1;
            *b.per_server.entry(first).or_default() += 1;
            b.total += 1;
            out.push(Action::Replicate {
                chunk: c.id,
                version: c.version,
                target: t,
                sources: sources.clone(),
            });
        }
    }

    /// Pending deletes, orphans and (when all is well) a rebalancing move,
    /// once every part was seen.
    pub fn finish(mut self, inp: &Input) -> (Vec<Action>, Health) {
        // Copies of ids after the table's last, up to the id counter.
        self.strays_up_to(Bound::Excluded(inp.next_chunk), &[], inp.state);
        deletes(inp, &self.strays, &mut self.budget, &mut self.out);
        let replicating = self
            .out
            .iter()
            .any(|a| matches!(a, Action::Replicate { .. }));
        if self.all_at_goal && !replicating && self.budget.total == 0 {
            self.rebalance(inp);
        }
        (self.out, self.health)
    }

    /// One chunk from the fullest live server to the emptiest, if the
    /// sweep found one that may still move.
    fn rebalance(&mut self, inp: &Input) {
        let (Some((src, dst)), Some((chunk, version))) = (self.unbalanced, self.movable) else {
            return;
        };
        if skip(chunk, inp.state, inp.inflight, inp.now)
            || !can_move(chunk, version, src, dst, inp.state)
        {
            return;
        }
        self.out.push(Action::Replicate {
            chunk,
            version,
            target: dst,
            sources: vec![src],
        });
    }
}

/// Chunks under a write lease, busy, or already replicating are left alone.
fn skip(id: ChunkId, st: &SoftState, inflight: &InFlight, now: Instant) -> bool {
    st.busy.contains(&id) || st.lease(id, now).is_some() || inflight.chunks.contains(&id)
}

/// Pending deletes, and copies of `strays` (ids the table does not name,
/// in id order) that are orphans.
fn deletes(inp: &Input, strays: &[ChunkId], b: &mut Budget, out: &mut Vec<Action>) {
    let (st, now) = (inp.state, inp.now);
    let pending: HashSet<ChunkId> = inp.pending_deletes.iter().copied().collect();
    let mut done = Vec::new();
    for &id in inp.pending_deletes {
        let live = st.alive_holders(id, now);
        if live.is_empty() {
            done.push(id);
            continue;
        }
        for (server, copy) in live {
            if b.quick() {
                out.push(Action::Delete {
                    chunk: id,
                    server,
                    version: copy.version,
                });
            }
        }
    }
    if !done.is_empty() {
        out.push(Action::DeletesDone(done));
    }
    let orphan = |id: ChunkId| {
        // An id handed out lately may have copies before its commit is
        // in the table this sweep read.
        let recent = st
            .new_ids
            .get(&id)
            .is_some_and(|t| now.saturating_duration_since(*t) < NEW_ID_GRACE);
        id < inp.next_chunk
            && inp.held.binary_search(&id).is_err()
            && !pending.contains(&id)
            && !st.busy.contains(&id)
            && !recent
    };
    for &id in strays.iter().filter(|&&id| orphan(id)) {
        for (server, copy) in st.alive_holders(id, now) {
            if b.quick() {
                out.push(Action::Delete {
                    chunk: id,
                    server,
                    version: copy.version,
                });
            }
        }
    }
}

/// The fullest live server and the emptiest target, when their usages
/// differ by more than the threshold.
fn unbalanced(st: &SoftState, now: Instant, limits: Limits) -> Option<(u64, u64)> {
    let live = st
        .servers
        .values()
        .filter(|s| s.is_alive(now) && !s.maintenance);
    let src = live.max_by(|a, b| a.usage().total_cmp(&b.usage()))?;
    let dst = st
        .servers
        .values()
        .filter(|s| s.id != src.id && is_target(s, now))
        .min_by(|a, b| a.usage().total_cmp(&b.usage()))?;
    (src.usage() - dst.usage() > limits.rebalance_gap).then_some((src.id, dst.id))
}

/// Whether chunk `id` at `version` has a valid copy off marked disks on
/// `src` and none on `dst`.
fn can_move(id: ChunkId, version: u32, src: u64, dst: u64, st: &SoftState) -> bool {
    st.copies.get(&id).is_some_and(|h| {
        h.get(&src)
            .is_some_and(|x| x.version == version && !x.marked)
            && !h.contains_key(&dst)
    })
}
