//! What the replication loop orders for given maps: undergoal, overgoal,
//! stale and ahead copies, marked disks, maintenance, leases, limits,
//! pending deletes, orphans, rebalancing; and the health counts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::plan::*;
use super::state::{CopyInfo, Disk, Lease, Server, SoftState, LOST_AFTER};
use crate::fsm::ChunkId;

fn server(id: u64, used_gib: u64) -> Server {
    Server {
        id,
        address: format!("cs{id}:9422"),
        labels: Vec::new(),
        disks: vec![Disk {
            path: "/d".into(),
            total: 100 << 30,
            used: used_gib << 30,
            chunks: 0,
            marked: false,
            damaged: false,
        }],
        maintenance: false,
        load: 0,
        last_seen: Instant::now(),
        reported: true,
    }
}

/// A state with servers 1..=n, `used` GiB of 100 each (all 10 by default).
fn state(used: &[u64]) -> SoftState {
    let mut st = SoftState::default();
    for (i, u) in used.iter().enumerate() {
        let s = server(i as u64 + 1, *u);
        st.servers.insert(s.id, s);
    }
    st
}

fn put(st: &mut SoftState, chunk: u64, server: u64, version: u32, marked: bool) {
    st.set_copy(ChunkId(chunk), server, CopyInfo { version, marked });
}

fn chunk(id: u64, version: u32, goal: u8) -> ChunkView {
    ChunkView {
        id: ChunkId(id),
        version,
        goal,
        fresh: false,
    }
}

/// The ids held or pending deletion at the start of a sweep.
fn accounted(inp: &Input) -> std::collections::HashSet<ChunkId> {
    inp.held
        .iter()
        .chain(inp.pending_deletes)
        .copied()
        .collect()
}

/// The orders of one pass over the whole table.
fn plan(chunks: &[ChunkView], inp: &Input) -> Vec<Action> {
    let mut sweep = Sweep::new(inp.inflight, inp.limits, inp.state, inp.now, accounted(inp));
    sweep.chunks(chunks, inp.state, inp.inflight, inp.now);
    sweep.finish(inp).0
}

fn run(st: &SoftState, chunks: &[ChunkView], pending: &[ChunkId]) -> Vec<Action> {
    run_with(st, chunks, pending, &InFlight::default(), Limits::default())
}

fn run_with(
    st: &SoftState,
    chunks: &[ChunkView],
    pending: &[ChunkId],
    inflight: &InFlight,
    limits: Limits,
) -> Vec<Action> {
    plan(
        chunks,
        &Input {
            pending_deletes: pending,
            next_chunk: ChunkId(1000),
            held: &[ChunkId(11)],
            state: st,
            inflight,
            limits,
            now: Instant::now(),
        },
    )
}

fn replications(a: &[Action]) -> Vec<(u64, u64, Vec<u64>)> {
    a.iter()
        .filter_map(|x| match x {
            Action::Replicate {
                chunk,
                target,
                sources,
                ..
            } => Some((chunk.0, *target, sources.clone())),
            _ => None,
        })
        .collect()
}

fn deletes(a: &[Action]) -> Vec<(u64, u64, u32)> {
    let mut v: Vec<_> = a
        .iter()
        .filter_map(|x| match x {
            Action::Delete {
                chunk,
                server,
                version,
            } => Some((chunk.0, *server, *version)),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

#[test]
fn undergoal_replicates_to_the_emptiest_other_server() {
    let mut st = state(&[10, 50, 20]);
    put(&mut st, 1, 1, 3, false);
    let a = run(&st, &[chunk(1, 3, 2)], &[]);
    assert_eq!(replications(&a), vec![(1, 3, vec![1])]);
    assert!(deletes(&a).is_empty());
    let h = health(&[chunk(1, 3, 2)], &st, Instant::now());
    assert_eq!((h.undergoal, h.missing, h.overgoal), (1, 0, 0));
}

#[test]
fn overgoal_deletes_from_the_fullest() {
    let mut st = state(&[10, 50, 20]);
    for s in 1..=3 {
        put(&mut st, 1, s, 3, false);
    }
    let a = run(&st, &[chunk(1, 3, 2)], &[]);
    assert!(replications(&a).is_empty());
    assert_eq!(deletes(&a), vec![(1, 2, 3)]);
    let h = health(&[chunk(1, 3, 2)], &st, Instant::now());
    assert_eq!(h.overgoal, 1);
}

#[test]
fn stale_copies_are_deleted_and_do_not_count() {
    let mut st = state(&[10, 10, 10]);
    put(&mut st, 1, 1, 5, false);
    put(&mut st, 1, 2, 4, false);
    let a = run(&st, &[chunk(1, 5, 2)], &[]);
    assert_eq!(deletes(&a), vec![(1, 2, 4)]);
    // Server 2 still holds an (old) copy: the new one goes to server 3.
    assert_eq!(replications(&a), vec![(1, 3, vec![1])]);
    let h = health(&[chunk(1, 5, 2)], &st, Instant::now());
    assert_eq!((h.stale, h.undergoal), (1, 1));
}

#[test]
fn uncommitted_bumps_are_set_back() {
    let mut st = state(&[10, 10]);
    put(&mut st, 1, 1, 6, false);
    put(&mut st, 1, 2, 5, false);
    let a = run(&st, &[chunk(1, 5, 2)], &[]);
    assert_eq!(
        a,
        vec![Action::SetVersion {
            chunk: ChunkId(1),
            server: 1,
            from: 6,
            to: 5
        }]
    );
}

#[test]
fn marked_disks_are_drained_then_emptied() {
    let mut st = state(&[10, 10, 10]);
    put(&mut st, 1, 1, 1, true);
    put(&mut st, 1, 2, 1, false);
    let c = [chunk(1, 1, 2)];
    // The marked copy counts as a source but not toward the goal.
    let a = run(&st, &c, &[]);
    assert_eq!(replications(&a), vec![(1, 3, vec![2, 1])]);
    assert!(deletes(&a).is_empty(), "not deleted before the move");
    put(&mut st, 1, 3, 1, false);
    let a = run(&st, &c, &[]);
    assert_eq!(deletes(&a), vec![(1, 1, 1)]);
    assert!(replications(&a).is_empty());
}

#[test]
fn maintenance_copies_count_while_away_lost_ones_do_not() {
    let mut st = state(&[10, 10, 10]);
    put(&mut st, 1, 1, 1, false);
    put(&mut st, 1, 2, 1, false);
    let away = Instant::now() - LOST_AFTER - Duration::from_secs(5);
    if let Some(s) = st.servers.get_mut(&2) {
        s.maintenance = true;
        s.last_seen = away;
    }
    let c = [chunk(1, 1, 2)];
    assert!(
        run(&st, &c, &[]).is_empty(),
        "no re-replication for a reboot"
    );
    if let Some(s) = st.servers.get_mut(&2) {
        s.maintenance = false;
    }
    let a = run(&st, &c, &[]);
    assert_eq!(replications(&a), vec![(1, 3, vec![1])]);
}

#[test]
fn leased_busy_and_replicating_chunks_are_left_alone() {
    let mut st = state(&[10, 10, 10]);
    for id in 1..=3 {
        put(&mut st, id, 1, 1, false);
        put(&mut st, id, 2, 0, false);
    }
    st.leases.insert(
        ChunkId(1),
        Lease {
            session: 1,
            version: 1,
            chain: vec![1],
            expires: Instant::now() + Duration::from_secs(60),
            create: false,
        },
    );
    st.busy.insert(ChunkId(2));
    let mut inflight = InFlight::default();
    inflight.chunks.insert(ChunkId(3));
    let c = [chunk(1, 1, 2), chunk(2, 1, 2), chunk(3, 1, 2)];
    assert!(run_with(&st, &c, &[], &inflight, Limits::default()).is_empty());
    // An expired lease does not protect.
    if let Some(l) = st.leases.get_mut(&ChunkId(1)) {
        l.expires = Instant::now() - Duration::from_secs(1);
    }
    let a = run_with(&st, &c, &[], &inflight, Limits::default());
    assert_eq!(deletes(&a), vec![(1, 2, 0)]);
    assert_eq!(replications(&a), vec![(1, 3, vec![1])]);
}

#[test]
fn replications_stay_within_limits() {
    let mut st = state(&[10, 10, 10, 10]);
    let mut chunks = Vec::new();
    for id in 1..=20 {
        put(&mut st, id, 1 + id % 2, 1, false);
        chunks.push(chunk(id, 1, 3));
    }
    let a = run(&st, &chunks, &[]);
    let r = replications(&a);
    let mut per: BTreeMap<u64, usize> = BTreeMap::new();
    for (_, t, s) in &r {
        *per.entry(*t).or_default() += 1;
        *per.entry(s[0]).or_default() += 1;
    }
    assert!(!r.is_empty());
    assert!(r.len() <= 8);
    assert!(per.values().all(|&n| n <= 2), "{per:?}");
    let mut busy = InFlight {
        total: 8,
        ..InFlight::default()
    };
    busy.per_server.insert(1, 2);
    assert!(replications(&run_with(&st, &chunks, &[], &busy, Limits::default())).is_empty());
}

#[test]
fn missing_and_fresh_chunks() {
    let st = state(&[10]);
    let mut fresh = chunk(2, 1, 1);
    fresh.fresh = true;
    let c = [chunk(1, 1, 1), fresh];
    assert!(run(&st, &c, &[]).is_empty());
    let h = health(&c, &st, Instant::now());
    assert_eq!(
        (h.chunks, h.missing),
        (2, 1),
        "a fresh chunk is not missing"
    );
}

#[test]
fn pending_deletes_and_orphans() {
    let mut st = state(&[10, 10]);
    put(&mut st, 7, 1, 2, false);
    put(&mut st, 7, 2, 1, false);
    put(&mut st, 9, 2, 1, false); // in no table: an orphan
    put(&mut st, 11, 1, 1, false); // held by a session: written before it is named
    put(&mut st, 5000, 1, 1, false); // above next_chunk: not judged
    let a = run(&st, &[], &[ChunkId(7), ChunkId(8)]);
    assert_eq!(deletes(&a), vec![(7, 1, 2), (7, 2, 1), (9, 2, 1)]);
    assert!(a.contains(&Action::DeletesDone(vec![ChunkId(8)])));
    // An id handed out lately: its commit may not be in the list yet.
    st.note_new_id(ChunkId(9), Instant::now());
    let a = run(&st, &[], &[ChunkId(7), ChunkId(8)]);
    assert_eq!(deletes(&a), vec![(7, 1, 2), (7, 2, 1)]);
}

#[test]
fn rebalances_only_when_idle_and_uneven() {
    let mut st = state(&[90, 10, 50]);
    put(&mut st, 1, 1, 1, false);
    put(&mut st, 2, 1, 1, false);
    put(&mut st, 2, 2, 1, false);
    let c = [chunk(1, 1, 1), chunk(2, 1, 2)];
    let a = run(&st, &c, &[]);
    assert_eq!(
        replications(&a),
        vec![(1, 2, vec![1])],
        "fullest to emptiest"
    );
    // Busy with a replication: no rebalancing.
    let inflight = InFlight {
        total: 1,
        ..InFlight::default()
    };
    assert!(run_with(&st, &c, &[], &inflight, Limits::default()).is_empty());
    // Even enough: nothing.
    let even = state(&[50, 45, 48]);
    assert!(run(&even, &c, &[]).is_empty());
}

/// The loop sweeps the table a part at a time; whatever the parts, the
/// orders and the health are those of one pass over the whole table.
#[test]
fn a_sweep_in_parts_orders_what_one_pass_does() {
    let mut st = state(&[10, 40, 20, 70, 30]);
    if let Some(s) = st.servers.get_mut(&4) {
        s.maintenance = true;
    }
    let mut chunks = Vec::new();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for id in 1..=300u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let version = 2 + (x % 3) as u32;
        for server in 1..=5u64 {
            match (x >> (server * 4)) % 5 {
                0 => put(&mut st, id, server, version, false),
                1 => put(&mut st, id, server, version - 1, false),
                2 => put(&mut st, id, server, version, true),
                _ => {}
            }
        }
        // Every 17th id is missing from the table: its copies are orphans
        // (34 is held by a session: not one).
        if id % 17 != 0 {
            chunks.push(chunk(id, version, 1 + (x >> 40) as u8 % 3));
        }
    }
    // Past the table's last id; 2000 is past the id counter too.
    for id in [400, 401, 2000] {
        put(&mut st, id, 1, 1, false);
    }
    let orphans: Vec<u64> = st
        .copies
        .keys()
        .map(|c| c.0)
        .filter(|&id| (id % 17 == 0 && id != 34) || id == 400 || id == 401)
        .collect();
    assert!(orphans.len() > 10, "{orphans:?}");
    let limits = Limits {
        quick: 10_000,
        ..Limits::default()
    };
    let now = Instant::now();
    let inflight = InFlight::default();
    let inp = Input {
        pending_deletes: &[],
        next_chunk: ChunkId(1000),
        held: &[ChunkId(34)],
        state: &st,
        inflight: &inflight,
        limits,
        now,
    };
    let whole = plan(&chunks, &inp);
    let h = health(&chunks, &st, now);
    assert!(h.undergoal > 0 && h.overgoal > 0 && h.stale > 0, "{h:?}");
    assert!(deletes(&whole).len() > 100 && !replications(&whole).is_empty());
    for id in [34, 2000] {
        assert!(st.copies.contains_key(&ChunkId(id)));
        assert!(!deletes(&whole).iter().any(|d| d.0 == id), "{id} deleted");
    }
    for &id in &orphans {
        let want: Vec<_> = st
            .alive_holders(ChunkId(id), now)
            .into_iter()
            .map(|(server, c)| (id, server, c.version))
            .collect();
        let got: Vec<_> = deletes(&whole).into_iter().filter(|d| d.0 == id).collect();
        assert_eq!(got, want, "the copies of orphan {id}");
    }
    for part in [1, 7, 64, 299, 300, 1000] {
        let mut sweep = Sweep::new(&inflight, limits, &st, now, accounted(&inp));
        for p in chunks.chunks(part) {
            sweep.chunks(p, &st, &inflight, now);
        }
        assert_eq!(sweep.finish(&inp), (whole.clone(), h), "parts of {part}");
    }
}

/// Copies of chunks pending deletion are no orphans and take no room among
/// the strays a sweep keeps: an orphan past thousands of them is found.
#[test]
fn an_orphan_past_many_pending_deletes_is_found() {
    let mut st = state(&[10, 10]);
    let pending: Vec<ChunkId> = (1..=5000).map(ChunkId).collect();
    for id in 1..=5000 {
        put(&mut st, id, 1, 1, false);
    }
    put(&mut st, 6000, 2, 1, false);
    let limits = Limits {
        quick: 20_000,
        ..Limits::default()
    };
    let inflight = InFlight::default();
    let inp = Input {
        pending_deletes: &pending,
        next_chunk: ChunkId(10_000),
        held: &[],
        state: &st,
        inflight: &inflight,
        limits,
        now: Instant::now(),
    };
    let a = plan(&[], &inp);
    let orphan: Vec<_> = deletes(&a).into_iter().filter(|d| d.0 > 5000).collect();
    assert_eq!(orphan, vec![(6000, 2, 1)]);
    assert_eq!(deletes(&a).len(), 5001, "each pending copy, and the orphan");
}
