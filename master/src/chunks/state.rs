//! The leader's soft state: the chunkservers it knows, where the copies of
//! each chunk are (and at which version), write leases, and the chunks an
//! operation is working on. Never in Raft: a new leader starts empty and
//! learns it again from the chunkservers' registrations and reports.
//!
//! Plain data behind one mutex (held only for short, synchronous steps).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::fsm::{ChunkId, Inode};

/// Without a heartbeat for this long a chunkserver counts as lost (unless in
/// maintenance): its copies no longer count.
pub const LOST_AFTER: Duration = Duration::from_secs(30);
/// A write lease not used (WriteChunk, WriteChunkEnd) for this long expires.
pub const LEASE_TIME: Duration = Duration::from_secs(60);
/// How long the leader keeps the chain of a chunk id a session holds
/// (`HoldChunks`) as that session's lease; the client uses it for less.
pub const HOLD_TIME: Duration = Duration::from_secs(300);
/// Entries of one unfinished full report kept at most (a chunkserver that
/// sends more is told to start again).
const MAX_REPORT: usize = 50_000_000;

/// One disk of a chunkserver, as its last heartbeat said.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Disk {
    pub path: String,
    pub total: u64,
    pub used: u64,
    pub chunks: u64,
    /// Marked for removal (`*` in mfshdd.cfg): drained.
    pub marked: bool,
    pub damaged: bool,
}

/// A chunkserver this leader knows.
#[derive(Clone, Debug)]
pub struct Server {
    pub id: u64,
    /// Where its ChunkService listens ("host:port").
    pub address: String,
    pub labels: Vec<String>,
    pub disks: Vec<Disk>,
    pub maintenance: bool,
    /// Operations in progress there, as it reported.
    pub load: u32,
    pub last_seen: Instant,
    /// Its first full report since registering has arrived.
    pub reported: bool,
}

/// How the leader sees a chunkserver now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerState {
    Ok,
    /// Put in maintenance by an operator: its copies count even while it is
    /// away, nothing new goes there.
    Maintenance,
    /// No heartbeat for `LOST_AFTER`: its copies do not count.
    Lost,
}

impl ServerState {
    /// The name `mfscli info` shows.
    pub fn name(self) -> &'static str {
        match self {
            ServerState::Ok => "ok",
            ServerState::Maintenance => "maintenance",
            ServerState::Lost => "lost",
        }
    }
}

impl Server {
    pub fn state(&self, now: Instant) -> ServerState {
        if self.maintenance {
            ServerState::Maintenance
        } else if self.is_alive(now) {
            ServerState::Ok
        } else {
            ServerState::Lost
        }
    }

    /// Heard from within `LOST_AFTER`.
    pub fn is_alive(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_seen) <= LOST_AFTER
    }
}

/// One copy of a chunk on one chunkserver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyInfo {
    pub version: u32,
    /// On a disk marked for removal.
    pub marked: bool,
}

/// A session's write lease on a chunk.
#[derive(Clone, Debug)]
pub struct Lease {
    pub session: u64,
    pub version: u32,
    /// Server ids of the chain, in write order.
    pub chain: Vec<u64>,
    pub expires: Instant,
    /// A new chunk the chain may not hold yet: the writer's writes make it
    /// there (`ChunkLocation.create`), so the chain's servers may hold
    /// copies the leader has not heard of.
    pub create: bool,
}

/// What a chunkserver says when it registers.
#[derive(Clone, Debug, Default)]
pub struct Registration {
    pub address: String,
    pub previous_id: u64,
    pub labels: Vec<String>,
    pub disks: Vec<Disk>,
    pub maintenance: bool,
}

/// A heartbeat's content.
#[derive(Clone, Debug, Default)]
pub struct Beat {
    pub disks: Vec<Disk>,
    pub load: u32,
    pub maintenance: bool,
    pub added: Vec<(ChunkId, CopyInfo)>,
    pub removed: Vec<(ChunkId, CopyInfo)>,
}

pub use super::holders::Holders;

/// The whole soft state.
#[derive(Debug, Default)]
pub struct SoftState {
    pub servers: BTreeMap<u64, Server>,
    pub copies: BTreeMap<ChunkId, Holders>,
    /// Full reports being received, per server.
    reports: HashMap<u64, Vec<(ChunkId, CopyInfo)>>,
    pub leases: HashMap<ChunkId, Lease>,
    /// Chunks this leadership has changed the version of once, logged
    /// first (see [`SoftState::next_version`]).
    pub versions_claimed: HashSet<ChunkId>,
    /// Chunks an operation (write grant, truncate, replication) is working
    /// on: the replication loop leaves them alone.
    pub busy: HashSet<ChunkId>,
    /// File slots a WriteChunk is working on (one at a time per slot).
    pub busy_slots: HashSet<(Inode, u32)>,
    /// When this master became leader (the start of the grace period).
    pub leader_since: Option<Instant>,
    /// The Raft term this state was learnt in (0: none): what a chunkserver
    /// told an earlier leadership may be stale, what it told this one is not.
    pub term: u64,
    /// When an order last set the version of a copy (chunk, server): a
    /// heartbeat taken before the order may arrive after its answer.
    ordered: HashMap<(ChunkId, u64), Instant>,
    /// Chunk ids handed out lately (new chunks, duplicates): their copies
    /// may exist before their commit is seen, so they are no orphans yet.
    pub new_ids: HashMap<ChunkId, Instant>,
}

/// How long an id handed out is not taken for an orphan.
/// Versions above a chunk's committed one that a leader may order copies
/// to without logging them first (see [`SoftState::next_version`]): a
/// leadership's first change of a chunk skips them.
pub const VERSIONS_RESERVED: u32 = 16;

pub const NEW_ID_GRACE: Duration = Duration::from_secs(60);

/// How long a copy's version set by an order outranks what heartbeats say
/// of it (a heartbeat is sent every second; one in flight is older).
pub const ORDER_WINS: Duration = Duration::from_secs(5);

impl SoftState {
    /// Forget everything (leadership gained or lost).
    pub fn reset(&mut self, leader_since: Option<Instant>) {
        *self = SoftState {
            leader_since,
            ..SoftState::default()
        };
    }

    /// Starts a new leadership's state unless it is already the one of
    /// `term` (a chunkserver may register before the replication loop
    /// notices the new term: that registration must be kept).
    pub fn enter_term(&mut self, term: u64, now: Instant) -> bool {
        if self.term == term {
            return false;
        }
        self.reset(Some(now));
        self.term = term;
        true
    }

    /// Record a registration; the id the server is known by from now on:
    /// the one of a server already known at that address, else its previous
    /// id when free, else a new one.
    pub fn register(&mut self, r: Registration, now: Instant) -> u64 {
        let by_addr = self
            .servers
            .values()
            .find(|c| c.address == r.address)
            .map(|c| c.id);
        let id = match by_addr {
            Some(id) => id,
            None if r.previous_id != 0 && !self.servers.contains_key(&r.previous_id) => {
                r.previous_id
            }
            None => self.servers.keys().next_back().map_or(1, |k| k + 1),
        };
        self.reports.remove(&id);
        self.servers.insert(
            id,
            Server {
                id,
                address: r.address,
                labels: r.labels,
                disks: r.disks,
                maintenance: r.maintenance,
                load: 0,
                last_seen: now,
                reported: false,
            },
        );
        id
    }

    /// One batch of a full report; false if the server is unknown (or sent
    /// too much: it must register and report again).
    pub fn report(
        &mut self,
        id: u64,
        first: bool,
        last: bool,
        copies: Vec<(ChunkId, CopyInfo)>,
        now: Instant,
    ) -> bool {
        let Some(s) = self.servers.get_mut(&id) else {
            return false;
        };
        s.last_seen = now;
        if first {
            self.reports.insert(id, Vec::new());
        }
        let buf = self.reports.entry(id).or_default();
        if buf.len().saturating_add(copies.len()) > MAX_REPORT {
            self.reports.remove(&id);
            self.servers.remove(&id);
            return false;
        }
        buf.extend(copies);
        if last {
            if let Some(s) = self.servers.get_mut(&id) {
                s.reported = true;
            }
            let full = self.reports.remove(&id).unwrap_or_default();
            self.drop_server_copies(id);
            for (chunk, c) in full {
                self.copies.entry(chunk).or_default().insert(id, c);
            }
        }
        true
    }

    /// A heartbeat; false if the server is unknown.
    /// A server that was lost (its copies forgotten) must register and
    /// report again: false for it too.
    pub fn heartbeat(&mut self, id: u64, b: Beat, now: Instant) -> bool {
        let Some(s) = self.servers.get_mut(&id) else {
            return false;
        };
        if s.state(now) == ServerState::Lost {
            self.servers.remove(&id);
            self.reports.remove(&id);
            self.drop_server_copies(id);
            return false;
        }
        s.disks = b.disks;
        s.load = b.load;
        s.maintenance = b.maintenance;
        s.last_seen = now;
        self.ordered
            .retain(|_, t| now.saturating_duration_since(*t) < ORDER_WINS);
        for (chunk, c) in b.added {
            let current = self.copies.get(&chunk).and_then(|h| h.get(&id));
            let stale = self.ordered.contains_key(&(chunk, id))
                && current.is_some_and(|cur| cur.version != c.version);
            if stale {
                tracing::debug!(chunk = %chunk, server = id, reported = c.version, "a heartbeat older than an order: ignored");
                continue;
            }
            self.copies.entry(chunk).or_default().insert(id, c);
        }
        for (chunk, c) in b.removed {
            self.remove_copy(chunk, id, Some(c.version));
        }
        true
    }

    /// Notes an id handed out for a new chunk or a duplicate.
    pub fn note_new_id(&mut self, id: ChunkId, now: Instant) {
        if self.new_ids.len() >= 1024 {
            self.new_ids
                .retain(|_, t| now.saturating_duration_since(*t) < NEW_ID_GRACE);
        }
        self.new_ids.insert(id, now);
    }

    /// Record a copy an order made or changed (it outranks heartbeats for
    /// `ORDER_WINS`).
    pub fn set_copy(&mut self, chunk: ChunkId, server: u64, c: CopyInfo) {
        self.ordered.insert((chunk, server), Instant::now());
        self.copies.entry(chunk).or_default().insert(server, c);
    }

    /// Record that the copy on `server` has `version` now (an order set it,
    /// or a write made it), keeping whether its disk is marked.
    pub fn set_copy_version(&mut self, chunk: ChunkId, server: u64, version: u32) {
        let marked = self
            .copies
            .get(&chunk)
            .and_then(|h| h.get(&server))
            .is_some_and(|c| c.marked);
        self.set_copy(chunk, server, CopyInfo { version, marked });
    }

    /// Forget a copy; with `version`, only if it is that version (a removal
    /// reported after a newer version was recorded leaves the newer one).
    pub fn remove_copy(&mut self, chunk: ChunkId, server: u64, version: Option<u32>) {
        if let Some(h) = self.copies.get_mut(&chunk) {
            if version.is_none_or(|v| h.get(&server).is_some_and(|c| c.version == v)) {
                h.remove(&server);
            }
            if h.is_empty() {
                self.copies.remove(&chunk);
            }
        }
    }

    fn drop_server_copies(&mut self, id: u64) {
        self.copies.retain(|_, h| {
            h.remove(&id);
            !h.is_empty()
        });
    }

    /// Servers lost for good (not in maintenance) lose their copies, so that
    /// nothing reads or counts them; they report again when they come back.
    pub fn forget_lost_copies(&mut self, now: Instant) {
        let lost: Vec<u64> = self
            .servers
            .values()
            .filter(|s| s.state(now) == ServerState::Lost)
            .map(|s| s.id)
            .collect();
        if lost.is_empty() {
            return;
        }
        self.copies.retain(|_, h| {
            for id in &lost {
                h.remove(id);
            }
            !h.is_empty()
        });
    }

    /// The lease on `chunk` if one is in force.
    pub fn lease(&self, chunk: ChunkId, now: Instant) -> Option<&Lease> {
        self.leases.get(&chunk).filter(|l| l.expires > now)
    }

    /// Drop expired leases.
    pub fn expire_leases(&mut self, now: Instant) {
        self.leases.retain(|_, l| l.expires > now);
    }

    /// Addresses of servers, by id.
    pub fn address(&self, id: u64) -> Option<&str> {
        self.servers.get(&id).map(|s| s.address.as_str())
    }

    /// Servers holding `chunk` at exactly `version`, alive.
    pub fn holders_at(&self, chunk: ChunkId, version: u32, now: Instant) -> Vec<u64> {
        self.live_copies(chunk, now)
            .filter(|&(_, v)| v == version)
            .map(|(id, _)| id)
            .collect()
    }

    /// (server, version) of each copy of `chunk` on a live server.
    fn live_copies(&self, chunk: ChunkId, now: Instant) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.copies
            .get(&chunk)
            .into_iter()
            .flatten()
            .filter(move |(id, _)| self.servers.get(id).is_some_and(|s| s.is_alive(now)))
            .map(|(id, c)| (*id, c.version))
    }

    /// The version a change of `chunk` moves its copies to, and whether it
    /// must be logged as ordered before any order goes out (`Some(v)`:
    /// log `v`, the version itself).
    ///
    /// The version is above `committed` (the chunk's committed version)
    /// and above every copy known, alive or not: a copy a dead leader
    /// moved up without committing it (see [`SoftState::ahead_of`]) that
    /// the change leaves behind must not share its version with the copies
    /// the change moves, or it would pass for one of them without their
    /// writes. Copies never heard of (a server down) are covered by a
    /// rule: a leader orders versions up to `committed` +
    /// [`VERSIONS_RESERVED`] freely, above that only after logging them
    /// (`ordered`: the highest logged). A leadership's first change of a
    /// chunk goes above both, so above anything an earlier leader may
    /// have ordered, and is logged; its later changes stay in the free
    /// range above its own commits, where it knows every copy it moved.
    pub fn next_version(&self, chunk: ChunkId, committed: u32, ordered: u32) -> (u32, Option<u32>) {
        let top = self
            .copies
            .get(&chunk)
            .and_then(|h| h.values().map(|c| c.version).max())
            .unwrap_or(0);
        let floor = committed.max(top);
        let free = committed.saturating_add(VERSIONS_RESERVED);
        if self.versions_claimed.contains(&chunk) && floor < free {
            return (floor + 1, None);
        }
        let nv = floor.max(free).max(ordered).saturating_add(1);
        (nv, Some(nv))
    }

    /// The live copies of `chunk` above `committed`, with their versions:
    /// leaders moved them (one after another, if each died in turn) and
    /// died before committing the version, so (by the version protocol)
    /// they were never written there.
    pub fn ahead_of(&self, chunk: ChunkId, committed: u32, now: Instant) -> Vec<(u64, u32)> {
        self.live_copies(chunk, now)
            .filter(|&(_, v)| v > committed)
            .collect()
    }

    /// Whether `session`'s lease on new chunk `chunk` is live and made no
    /// copy yet (`Lease.create` still set) and no server told of one.
    pub fn unmade(&self, chunk: ChunkId, session: u64) -> bool {
        self.leases
            .get(&chunk)
            .is_some_and(|l| l.session == session && l.create)
            && self.copies.get(&chunk).is_none_or(|h| h.is_empty())
    }

    /// The alive servers of the chain of a lease (of any session, ended or
    /// not) on new chunk `chunk` at `version` whose writes make the copies
    /// (`Lease.create`): they may hold copies not heard of yet.
    pub fn made_by_writes(&self, chunk: ChunkId, version: u32, now: Instant) -> Vec<u64> {
        self.leases
            .get(&chunk)
            .filter(|l| l.create && l.version == version)
            .map(|l| {
                l.chain
                    .iter()
                    .copied()
                    .filter(|id| self.servers.get(id).is_some_and(|s| s.is_alive(now)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The writes of `session` under its lease on `chunk` made the chunk
    /// on the whole chain (WriteChunkEnd says so): its servers are copies
    /// now, and the lease no longer makes any.
    pub fn made_on_chain(&mut self, chunk: ChunkId, session: u64) {
        let Some(l) = self
            .leases
            .get_mut(&chunk)
            .filter(|l| l.create && l.session == session)
        else {
            return;
        };
        l.create = false;
        let (version, chain) = (l.version, l.chain.clone());
        for server in chain {
            self.set_copy_version(chunk, server, version);
        }
    }

    /// Alive servers holding any copy of `chunk`, with its version.
    pub fn alive_holders(&self, chunk: ChunkId, now: Instant) -> Vec<(u64, CopyInfo)> {
        self.copies
            .get(&chunk)
            .map(|h| {
                h.iter()
                    .filter(|(id, _)| self.servers.get(id).is_some_and(|s| s.is_alive(now)))
                    .map(|(id, c)| (*id, *c))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the grace period after becoming leader is still running
    /// (reports may be missing: a chunk without copies is not yet missing).
    pub fn in_grace(&self, now: Instant, grace: Duration) -> bool {
        self.leader_since
            .is_none_or(|t| now.saturating_duration_since(t) < grace)
    }

    /// Whether a chunk with no known copy may still have one the leader has
    /// not heard of: in the grace period, while a live server has not
    /// finished its first report, or while a server in maintenance is away.
    pub fn may_learn_more(&self, now: Instant, grace: Duration) -> bool {
        self.reports_pending(now, grace)
            || self
                .servers
                .values()
                .any(|s| s.maintenance && !s.is_alive(now))
    }

    /// Whether one of the servers at `addresses` is live here and has
    /// finished its full report (so what it holds is known).
    pub fn any_has_reported(&self, addresses: &[String], now: Instant) -> bool {
        self.servers
            .values()
            .any(|s| s.is_alive(now) && s.reported && addresses.contains(&s.address))
    }

    /// Copies may still be reported soon: the grace period of a new
    /// leadership, or a live server whose full report has not come.
    pub fn reports_pending(&self, now: Instant, grace: Duration) -> bool {
        self.in_grace(now, grace)
            || self
                .servers
                .values()
                .any(|s| s.is_alive(now) && !s.reported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(addr: &str, prev: u64) -> Registration {
        Registration {
            address: addr.into(),
            previous_id: prev,
            ..Registration::default()
        }
    }

    fn copy(v: u32) -> CopyInfo {
        CopyInfo {
            version: v,
            marked: false,
        }
    }

    #[test]
    fn a_lease_that_makes_its_chunk_stands_for_copies_until_its_end() {
        let mut s = SoftState::default();
        let now = Instant::now();
        let (a, b) = (
            s.register(reg("a:1", 0), now),
            s.register(reg("b:1", 0), now),
        );
        let lease = |session, create| Lease {
            session,
            version: 1,
            chain: vec![a, b],
            expires: now + LEASE_TIME,
            create,
        };
        s.leases.insert(ChunkId(5), lease(7, true));
        assert_eq!(s.made_by_writes(ChunkId(5), 1, now), vec![a, b]);
        assert!(
            s.made_by_writes(ChunkId(5), 2, now).is_empty(),
            "another version"
        );
        let lost = now + LOST_AFTER + Duration::from_secs(1);
        assert!(
            s.made_by_writes(ChunkId(5), 1, lost).is_empty(),
            "lost servers"
        );
        if let Some(l) = s.leases.get_mut(&ChunkId(5)) {
            l.expires = now;
        }
        let later = now + Duration::from_secs(1);
        assert_eq!(
            s.made_by_writes(ChunkId(5), 1, later),
            vec![a, b],
            "an ended lease's writes may have made copies too"
        );
        assert!(s.holders_at(ChunkId(5), 1, now).is_empty());

        s.made_on_chain(ChunkId(5), 8);
        assert!(s.holders_at(ChunkId(5), 1, now).is_empty(), "not its lease");
        s.made_on_chain(ChunkId(5), 7);
        let mut held = s.holders_at(ChunkId(5), 1, now);
        held.sort();
        assert_eq!(held, vec![a, b], "the chain holds copies now");
        assert!(s.made_by_writes(ChunkId(5), 1, now).is_empty());

        s.leases.insert(ChunkId(6), lease(7, false));
        assert!(
            s.made_by_writes(ChunkId(6), 1, now).is_empty(),
            "an old chunk"
        );
        s.made_on_chain(ChunkId(6), 7);
        assert!(s.holders_at(ChunkId(6), 1, now).is_empty());
    }

    #[test]
    fn a_change_goes_above_every_copy_known() {
        let mut s = SoftState::default();
        let now = Instant::now();
        let (a, b, c) = (
            s.register(reg("a:1", 0), now),
            s.register(reg("b:1", 0), now),
            s.register(reg("c:1", 0), now),
        );
        let id = ChunkId(9);
        let r = VERSIONS_RESERVED;
        // A leadership's first change goes above what others may have
        // ordered unlogged, and is logged.
        assert_eq!(
            s.next_version(id, 4, 0),
            (5 + r, Some(5 + r)),
            "no copy known"
        );
        s.set_copy_version(id, a, 4);
        s.set_copy_version(id, b, 4);
        assert_eq!(s.next_version(id, 4, 0), (5 + r, Some(5 + r)));
        assert!(s.ahead_of(id, 4, now).is_empty());
        // Above a version an earlier leader logged.
        assert_eq!(s.next_version(id, 4, 40), (41, Some(41)));
        // Once this leadership changed it: the next version above its own
        // commit, unlogged, while in the free range.
        s.versions_claimed.insert(id);
        assert_eq!(s.next_version(id, 4, 40), (5, None));
        // A dead leader moved c's copy up and did not commit it.
        s.set_copy_version(id, c, 5);
        assert_eq!(s.next_version(id, 4, 0), (6, None), "not 5: c has it");
        assert_eq!(s.ahead_of(id, 4, now), vec![(c, 5)]);
        // Even when c is lost: its copy may come back.
        let lost = now + LOST_AFTER + Duration::from_secs(1);
        assert!(s.ahead_of(id, 4, lost).is_empty());
        assert_eq!(s.next_version(id, 4, 0), (6, None));
        // Past the free range: logged again.
        s.set_copy_version(id, c, 4 + r);
        assert_eq!(s.next_version(id, 4, 0), (5 + r, Some(5 + r)));
    }

    #[test]
    fn ids_follow_address_then_previous_id() {
        let mut s = SoftState::default();
        let now = Instant::now();
        assert_eq!(s.register(reg("a:1", 0), now), 1);
        assert_eq!(s.register(reg("b:1", 7), now), 7);
        assert_eq!(s.register(reg("c:1", 7), now), 8, "7 is taken");
        assert_eq!(s.register(reg("a:1", 5), now), 1, "same address, same id");
    }

    #[test]
    fn a_full_report_replaces_copies_at_its_end() {
        let mut s = SoftState::default();
        let now = Instant::now();
        let id = s.register(reg("a:1", 0), now);
        s.set_copy(ChunkId(1), id, copy(1));
        assert!(s.report(id, true, false, vec![(ChunkId(2), copy(3))], now));
        assert!(s.copies.contains_key(&ChunkId(1)), "not replaced yet");
        assert!(s.report(id, false, true, vec![(ChunkId(3), copy(1))], now));
        assert!(!s.copies.contains_key(&ChunkId(1)));
        assert_eq!(s.copies[&ChunkId(2)][&id], copy(3));
        assert_eq!(s.copies[&ChunkId(3)][&id], copy(1));
        assert!(!s.report(99, true, true, vec![], now), "unknown server");
    }

    #[test]
    fn heartbeat_removals_match_versions() {
        let mut s = SoftState::default();
        let now = Instant::now();
        let id = s.register(reg("a:1", 0), now);
        let beat = Beat {
            added: vec![(ChunkId(1), copy(2)), (ChunkId(2), copy(1))],
            removed: vec![(ChunkId(1), copy(1)), (ChunkId(2), copy(1))],
            ..Beat::default()
        };
        assert!(s.heartbeat(id, beat, now));
        assert_eq!(s.copies[&ChunkId(1)][&id], copy(2), "new version kept");
        assert!(!s.copies.contains_key(&ChunkId(2)), "created then removed");
        assert!(!s.heartbeat(42, Beat::default(), now));
        // Back after being lost: it must register and report again.
        let later = now + LOST_AFTER + Duration::from_secs(1);
        assert!(!s.heartbeat(id, Beat::default(), later));
        assert!(s.servers.is_empty() && s.copies.is_empty());
    }

    #[test]
    fn a_heartbeat_older_than_an_order_does_not_undo_it() {
        let mut s = SoftState::default();
        let now = Instant::now();
        let id = s.register(reg("a:1", 0), now);
        // Created at 1 (queued for the heartbeat), then bumped to 2 by an
        // order whose answer arrives before that heartbeat.
        s.set_copy(ChunkId(1), id, copy(2));
        let old = Beat {
            added: vec![(ChunkId(1), copy(1))],
            ..Beat::default()
        };
        assert!(s.heartbeat(id, old.clone(), now));
        assert_eq!(
            s.copies[&ChunkId(1)][&id],
            copy(2),
            "the order's version stays"
        );
        // Long after the order, a heartbeat says what the server holds.
        let later = now + ORDER_WINS + Duration::from_secs(1);
        assert!(s.heartbeat(id, old, later));
        assert_eq!(s.copies[&ChunkId(1)][&id], copy(1));
    }

    #[test]
    fn lost_servers_lose_copies_but_maintenance_keeps_them() {
        let mut s = SoftState::default();
        let now = Instant::now();
        let a = s.register(reg("a:1", 0), now);
        let b = s.register(reg("b:1", 0), now);
        s.set_copy(ChunkId(1), a, copy(1));
        s.set_copy(ChunkId(1), b, copy(1));
        if let Some(sb) = s.servers.get_mut(&b) {
            sb.maintenance = true;
        }
        let later = now + LOST_AFTER + Duration::from_secs(1);
        assert_eq!(s.servers[&a].state(later), ServerState::Lost);
        assert_eq!(s.servers[&b].state(later), ServerState::Maintenance);
        s.forget_lost_copies(later);
        assert_eq!(s.copies[&ChunkId(1)].keys().collect::<Vec<_>>(), vec![&b]);
        assert!(s.holders_at(ChunkId(1), 1, later).is_empty(), "b is away");
        assert_eq!(s.holders_at(ChunkId(1), 1, now), vec![b]);
    }
}
