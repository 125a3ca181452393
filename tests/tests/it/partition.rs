//! Network partitions: a master cut off the network (its link down in a
//! network namespace of its own, so packets vanish and nothing is refused
//! or reset, as when a machine loses its network or power) while clients
//! work; then joined again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mfs_proto::v1::{OpenMode, OpenRequest, Role, SetGoalRequest};
use mfs_tests::cluster::Cluster;
use mfs_tests::mountpoint::Mount;

use crate::data::pattern;
use crate::util::{
    acknowledged, check_creates, creator_timed, root_cred, skip_without_fuse, step, timed, Slow,
};

/// The clients' and the mount's per-attempt timeout (`ClientOptions`'s
/// default).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest wait between two acknowledgements after `from`, and how many
/// came after it.
fn stall_after(acks: &Mutex<Vec<Instant>>, from: Instant) -> (Duration, usize) {
    let mut at: Vec<Instant> = acks.lock().unwrap_or_else(|e| e.into_inner()).clone();
    at.sort();
    let mut last = from;
    let mut longest = Duration::ZERO;
    let mut after = 0;
    for t in at.into_iter().filter(|t| *t > from) {
        longest = longest.max(t - last);
        last = t;
        after += 1;
    }
    (longest, after)
}

/// Creates and renames files through a mount until `stop`, noting when
/// each create returned in `acks`; any error ends the loop with it.
fn mount_worker(
    dir: std::path::PathBuf,
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Instant>>>,
) -> std::thread::JoinHandle<Result<usize, String>> {
    std::thread::spawn(move || {
        let mut i = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let p = dir.join(format!("m-{i}"));
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&p)
                .map_err(|e| format!("create {}: {e}", p.display()))?;
            let q = dir.join(format!("m-{i}.done"));
            std::fs::rename(&p, &q).map_err(|e| format!("rename {}: {e}", p.display()))?;
            acks.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Instant::now());
            i += 1;
        }
        Ok(i)
    })
}

/// The leader is cut off while two clients and a mount create files: the
/// others elect a new leader, the clients leave the silent one and go on (no
/// call fails), and when the old leader is joined again it follows and
/// catches up; every acknowledged create exists exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_the_network_is_left_behind() {
    partitions(Cut::Network).await;
}

/// The leader is cut off from the other masters but not from its clients
/// (it still answers them, and pings): it must send them on instead of
/// keeping their calls, which it can no longer commit, for their whole
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_other_masters_sends_its_clients_on() {
    partitions(Cut::FromMasters).await;
}

#[derive(Clone, Copy, Debug)]
enum Cut {
    /// Its link down: nothing reaches it.
    Network,
    /// Nothing passes between it and the other masters.
    FromMasters,
}

/// Waits until a master other than `old` says it leads; returns it.
async fn new_leader(c: &Cluster, old: u64) -> u64 {
    let t = Instant::now();
    loop {
        for m in c.masters.iter().filter(|m| m.id != old) {
            if c.status(m.id)
                .await
                .is_some_and(|s| s.role == Role::Leader as i32)
            {
                return m.id;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no master but master{old} leads 30 s after it was cut off"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn partitions(how: Cut) {
    if skip_without_fuse() {
        return;
    }
    step("3 masters, each in a network namespace of its own; 2 creating clients, a mount");
    let c = Cluster::start_in_netlab(3, &[]).await.unwrap();
    let lab = c.netlab.as_ref().expect("started in a netlab");
    let stop = Arc::new(AtomicBool::new(false));
    let acks: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let clients = [c.client("a").await.unwrap(), c.client("b").await.unwrap()];
    let mut tasks = Vec::new();
    for (i, cl) in clients.iter().enumerate() {
        tasks.push(creator_timed(
            cl.clone(),
            format!("c{i}"),
            stop.clone(),
            acks.clone(),
        ));
    }
    let m = Mount::start(&c, "mnt", &[]).unwrap();
    let sub = m.path().join("m");
    std::fs::create_dir(&sub).unwrap();
    let mount_acks: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let worker = mount_worker(sub.clone(), stop.clone(), mount_acks.clone());
    tokio::time::sleep(Duration::from_millis(800)).await;

    for round in 0..2 {
        let old = c.wait_leader(Duration::from_secs(20)).await.unwrap();
        step(&format!(
            "round {round}: cut master{old} (the leader) off: {how:?}"
        ));
        match how {
            Cut::Network => lab.cut(old as usize).unwrap(),
            Cut::FromMasters => lab.cut_from_hosts(old as usize).unwrap(),
        }
        let cut = Instant::now();
        let new = new_leader(&c, old).await;
        eprintln!("new leader master{new} after {:?}", cut.elapsed());
        // The clients and the mount must go on: 20 acknowledgements each
        // after the cut.
        loop {
            let (_, after) = stall_after(&acks, cut);
            let (_, by_mount) = stall_after(&mount_acks, cut);
            if after >= 20 && by_mount >= 20 {
                break;
            }
            assert!(
                cut.elapsed() < Duration::from_secs(60),
                "in the minute after the cut the clients made {after} creates, the mount {by_mount}: they wait for the silent master"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (stall, _) = stall_after(&acks, cut);
        let (by_mount, _) = stall_after(&mount_acks, cut);
        eprintln!(
            "round {round}: longest stall after the cut: clients {stall:?}, mount {by_mount:?}"
        );
        // Not a speed bar: a call kept by the silent or cut-off master runs
        // to the client's whole per-call timeout (10 s) unless pings (a
        // silent master) or the master itself (cut off from a quorum) end
        // it; this tells which happened.
        assert!(
            stall.max(by_mount) < CALL_TIMEOUT - Duration::from_secs(1),
            "a call waited for the client's whole call timeout: clients {stall:?}, mount {by_mount:?}"
        );

        step(&format!(
            "round {round}: join master{old} again: it follows and catches up"
        ));
        lab.heal(old as usize).unwrap();
        let leader_commit = c.status(new).await.map_or(0, |s| s.commit_index);
        let st = c
            .wait_applied(old, leader_commit, Duration::from_secs(30))
            .await
            .unwrap();
        let t = Instant::now();
        loop {
            let st = c.status(old).await.unwrap_or(st.clone());
            if st.role == Role::Follower as i32 {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "master{old} joined again is not a follower: role {} term {}",
                st.role,
                st.term
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    stop.store(true, Ordering::Relaxed);
    let made = tokio::task::spawn_blocking(move || worker.join())
        .await
        .unwrap()
        .unwrap()
        .unwrap_or_else(|e| panic!("the mount's worker failed: {e}"));
    let done = std::fs::read_dir(&sub)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".done"))
        .count();
    assert_eq!(
        done, made,
        "files the mount made and renamed: {made}; found {done}"
    );
    let acked = acknowledged(tasks).await;
    for cl in &clients {
        eprintln!("client stats: {:?}", cl.stats());
    }
    step("every acknowledged create exists exactly once");
    check_creates(&clients[0], &acked, clients.len(), &["m"]).await;
}

/// Reads `path` whole in 1 MiB pieces, each timed into `slow`; the bytes.
fn read_timed(path: &std::path::Path, slow: &Slow) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = timed(slow, || f.read(&mut buf))
            .map_err(|e| format!("read {} at {}: {e}", path.display(), out.len()))?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// A chunkserver holding copies is cut off the network while a mount reads
/// a goal-2 file over and over and writes a goal-3 one (on 3 servers: the
/// cut one is on its chain): no call fails, both files read back right;
/// prints the longest stall of a read and a write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunkserver_cut_off_mid_read_and_write() {
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    if skip_without_fuse() {
        return;
    }
    step("1 master; 3 chunkservers, each in a network namespace of its own; a mount");
    let mut c = Cluster::start_for_chunkserver_cuts(1, 3, &[])
        .await
        .unwrap();
    c.add_chunkservers(3, 1).await.unwrap();
    let m = Mount::start(&c, "mnt", &[]).unwrap();
    let cl = c.client("goal").await.unwrap();
    // a: goal 2, read; b: goal 3, written (so the cut server is on its
    // chain, first or further down, where writes are forwarded).
    let (dir, dir3) = (m.path().join("g2"), m.path().join("g3"));
    for (d, goal) in [(&dir, 2), (&dir3, 3)] {
        std::fs::create_dir(d).unwrap();
        // The mount may have answered the mkdir itself: its fsync sends it.
        std::fs::File::open(d).unwrap().sync_all().unwrap();
        cl.set_goal(SetGoalRequest {
            id: None,
            cred: Some(root_cred()),
            inode: std::fs::metadata(d).unwrap().ino(),
            goal,
            recursive: false,
        })
        .await
        .unwrap();
    }
    const MIB: usize = 1 << 20;
    let a = Arc::new(pattern(7, 96 * MIB));
    {
        let mut f = std::fs::File::create(dir.join("a")).unwrap();
        f.write_all(&a).unwrap();
        f.sync_all().unwrap();
    }
    c.wait_chunks_at_goal(Duration::from_secs(60))
        .await
        .unwrap();
    // The copy a read of a's first chunk goes to first.
    let inode = std::fs::metadata(dir.join("a")).unwrap().ino();
    cl.open(OpenRequest {
        id: None,
        cred: Some(root_cred()),
        inode,
        mode: OpenMode::Read as i32,
        truncate: false,
        lease_first_chunk: false,
    })
    .await
    .unwrap();
    let first = cl.read_chunk(inode, 0).await.unwrap().servers[0]
        .address
        .clone();
    let victim = (1..=3)
        .find(|&n| c.chunkserver(n).unwrap().addr() == first)
        .expect("the first copy is on one of the chunkservers");

    let stop = Arc::new(AtomicBool::new(false));
    let slow_reads: Slow = Arc::default();
    let slow_writes: Slow = Arc::default();
    let passes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reader = {
        let (path, a, stop, slow, passes) = (
            dir.join("a"),
            a.clone(),
            stop.clone(),
            slow_reads.clone(),
            passes.clone(),
        );
        std::thread::spawn(move || -> Result<(), String> {
            while !stop.load(Ordering::Relaxed) {
                let _ = std::fs::write("/proc/sys/vm/drop_caches", "3\n");
                let got = read_timed(&path, &slow)?;
                if got.as_slice() != a.as_slice() {
                    return Err(format!(
                        "{} read back wrong ({} bytes)",
                        path.display(),
                        got.len()
                    ));
                }
                passes.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    step(&format!(
        "cut chunkserver {victim} off while reading a and writing b"
    ));
    let writer = {
        let (path, slow) = (dir3.join("b"), slow_writes.clone());
        std::thread::spawn(move || -> Result<(), String> {
            let mut f = std::fs::File::create(&path).map_err(|e| e.to_string())?;
            for i in 0..64u64 {
                let block = pattern(100 + i, MIB);
                timed(&slow, || f.write_all(&block)).map_err(|e| format!("write MiB {i}: {e}"))?;
            }
            timed(&slow, || f.sync_all()).map_err(|e| format!("fsync: {e}"))
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.netlab.as_ref().unwrap().cut(victim).unwrap();
    let cut = Instant::now();
    let before = passes.load(Ordering::Relaxed);
    while passes.load(Ordering::Relaxed) < before + 3 && !reader.is_finished() {
        assert!(
            cut.elapsed() < Duration::from_secs(180),
            "3 passes over a did not end in 3 minutes after the cut"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    // A stuck call must fail the test, not hang it (the mount is killed as
    // the test unwinds, which frees the threads).
    while !(reader.is_finished() && writer.is_finished()) {
        assert!(
            cut.elapsed() < Duration::from_secs(240),
            "a read or write through the mount is stuck 4 minutes after the cut (reader done: {}, writer done: {})",
            reader.is_finished(),
            writer.is_finished()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = tokio::task::spawn_blocking(move || (reader.join(), writer.join()))
        .await
        .unwrap();
    r.0.unwrap().unwrap_or_else(|e| panic!("reader: {e}"));
    r.1.unwrap().unwrap_or_else(|e| panic!("writer: {e}"));
    let longest = |s: &Slow| {
        s.lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|x| x.1)
            .max()
            .unwrap_or_default()
    };
    let over_1s = |s: &Slow| {
        s.lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|x| x.1 > Duration::from_secs(1))
            .count()
    };
    eprintln!(
        "longest read call {:?}, longest write call {:?}; calls over 1 s: {} reads, {} writes",
        longest(&slow_reads),
        longest(&slow_writes),
        over_1s(&slow_reads),
        over_1s(&slow_writes)
    );
    if longest(&slow_reads).max(longest(&slow_writes)) > Duration::from_secs(5) {
        let warns = |log: String| -> String {
            log.lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        eprintln!(
            "a call over 5 s; the mount's warnings:\n{}",
            warns(m.log_text())
        );
        for n in 1..=3 {
            let log = std::fs::read_to_string(c.chunkserver(n).unwrap().dir.join("log"));
            eprintln!("chunkserver {n}'s:\n{}", warns(log.unwrap_or_default()));
        }
        eprintln!("the master's:\n{}", warns(c.log(1)));
    }
    step("b reads back right; chunkserver joined again");
    let got = std::fs::read(dir3.join("b")).unwrap();
    for i in 0..64u64 {
        let at = i as usize * MIB;
        assert!(
            got[at..at + MIB] == pattern(100 + i, MIB)[..],
            "MiB {i} of b differs"
        );
    }
    assert_eq!(got.len(), 64 * MIB);

    step("a new goal-3 file while the server is still cut off (its heartbeats not yet missed for 30 s)");
    let slow_new: Slow = Arc::default();
    let cdata = pattern(300, 8 * MIB);
    {
        let mut f = std::fs::File::create(dir3.join("c")).unwrap();
        timed(&slow_new, || f.write_all(&cdata)).unwrap();
        timed(&slow_new, || f.sync_all()).unwrap();
    }
    eprintln!("longest call writing c: {:?}", longest(&slow_new));
    assert!(std::fs::read(dir3.join("c")).unwrap() == cdata, "c differs");
    c.netlab.as_ref().unwrap().heal(victim).unwrap();
}
