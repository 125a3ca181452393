//! The masters' Raft group: election, redirects, failover without loss or
//! double application, full restarts, catch-up by snapshot, membership.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mfs_mount::master::MasterClient;
use mfs_proto::v1::meta_service_client::MetaServiceClient;
use mfs_proto::v1::raft_service_client::RaftServiceClient;
use mfs_proto::v1::{GetAttrRequest, MkdirRequest, RaftPayload, ReaddirRequest, RenameRequest};
use mfs_tests::cluster::Cluster;

use crate::util::{acknowledged, check_creates, create_req, creator, list_dir, root_cred, step};

/// 3 masters elect one leader; a follower answers a client call with a
/// redirect to it; the client library follows it; malformed calls change
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_and_redirect() {
    step("start 3 masters");
    let c = Cluster::start(3, &[]).await.unwrap();
    let leader = c.wait_leader(Duration::from_secs(20)).await.unwrap();
    let leader_addr = c.master(leader).unwrap().addr();
    let follower = c.masters.iter().find(|m| m.id != leader).unwrap();

    step("gRPC health answers SERVING");
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{leader_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let h = tonic_health::pb::health_client::HealthClient::new(ch)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "mfs.v1.MetaService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        h.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    step("a call to a follower is redirected");
    let mut raw = MetaServiceClient::connect(format!("http://{}", follower.addr()))
        .await
        .unwrap();
    let err = raw.get_attr(GetAttrRequest { inode: 1 }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    let hint = err
        .metadata()
        .get(mfs_proto::LEADER_KEY)
        .and_then(|v| v.to_str().ok());
    assert_eq!(hint, Some(leader_addr.as_str()));

    step("the client library follows the redirect");
    let cl = MasterClient::connect(&[follower.addr()], Default::default())
        .await
        .unwrap();
    let a = cl.getattr(1).await.unwrap();
    assert_eq!(a.inode, 1);

    step("a mutating call without a request id is refused, nothing applied");
    let mut raw = MetaServiceClient::connect(format!("http://{leader_addr}"))
        .await
        .unwrap();
    let err = raw
        .mkdir(MkdirRequest {
            id: None,
            cred: Some(root_cred()),
            parent: 1,
            name: b"x".to_vec(),
            mode: 0o755,
            umask: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let e = cl.lookup(&root_cred(), 1, b"x").await.unwrap_err();
    assert_eq!(
        e.errno(),
        2,
        "the refused mkdir must not have happened: {e}"
    );

    step("malformed Raft traffic is refused; the follower goes on following");
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", follower.addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut rc = RaftServiceClient::new(ch);
    let err = rc
        .append_entries(RaftPayload { data: vec![0xff] })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let garbage = futures::stream::iter(vec![RaftPayload {
        data: vec![1, 2, 3],
    }]);
    let mut replies = rc.append_stream(garbage).await.unwrap().into_inner();
    let err = replies.message().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("malformed append"), "{err:?}");
    let g = c.client("g").await.unwrap();
    g.create(create_req("after-garbage")).await.unwrap();
    assert_eq!(c.wait_leader(Duration::from_secs(5)).await.unwrap(), leader);

    step("errno travels as mfs-errno");
    let s = c.client("t").await.unwrap();
    let long = "n".repeat(256);
    let e = s.create(create_req(&long)).await.unwrap_err();
    assert_eq!(e.errno(), 36, "{e}");
    let e = s.create(create_req("a/b")).await.unwrap_err();
    assert_eq!(e.errno(), 22, "{e}");
    let e = s.getattr(987654).await.unwrap_err();
    assert_eq!(e.errno(), 2, "{e}");

    step("readdirplus pages: the directory's own attributes on the last one");
    s.create(create_req("second")).await.unwrap();
    let listing = |after: Vec<u8>| ReaddirRequest {
        cred: Some(root_cred()),
        inode: 1,
        after,
        limit: 1,
        plus: true,
    };
    let first = raw.readdir(listing(Vec::new())).await.unwrap().into_inner();
    assert!(first.more && first.dir.is_none(), "{first:?}");
    let (entries, dir) = s.readdir_all(&root_cred(), 1, true, 1).await.unwrap();
    assert!(entries.len() >= 2, "{entries:?}");
    let dir = dir.expect("the last page carries the directory's attributes");
    assert_eq!(dir, s.getattr(1).await.unwrap());
    let (_, none) = s.readdir_all(&root_cred(), 1, false, 1).await.unwrap();
    assert_eq!(none, None, "only with plus");
}

/// kill -9 of the leader during a stream of creates, twice: a new leader
/// within seconds, no call fails, every acknowledged create exists exactly
/// once; then all three restart and agree on the same namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_during_creates_loses_nothing() {
    step("start 3 masters and 2 creating clients");
    let mut c = Cluster::start(3, &[]).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let clients = [c.client("a").await.unwrap(), c.client("b").await.unwrap()];
    let mut tasks = Vec::new();
    for (i, cl) in clients.iter().enumerate() {
        tasks.push(creator(cl.clone(), format!("c{i}"), stop.clone()));
    }
    for round in 0..2 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let leader = c.wait_leader(Duration::from_secs(20)).await.unwrap();
        step(&format!("round {round}: kill -9 leader master{leader}"));
        c.kill(leader).unwrap();
        let t = Instant::now();
        let new = c.wait_leader(Duration::from_secs(20)).await.unwrap();
        eprintln!("new leader master{new} after {:?}", t.elapsed());
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "election took {:?}",
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
        step(&format!("round {round}: restart master{leader}"));
        c.restart(leader).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = acknowledged(tasks).await;
    assert!(
        acked.len() > 20,
        "too few creates went through: {}",
        acked.len()
    );
    for cl in &clients {
        eprintln!("client stats: {:?}", cl.stats());
    }

    step("every acknowledged create exists exactly once");
    let listing = check_creates(&clients[0], &acked, clients.len(), &[]).await;

    step("kill -9 every master, restart all: same namespace");
    let before = listing.clone();
    let ids: Vec<u64> = c.masters.iter().map(|m| m.id).collect();
    for id in &ids {
        c.kill(*id).unwrap();
    }
    for id in &ids {
        c.restart(*id).unwrap();
    }
    c.wait_leader(Duration::from_secs(30)).await.unwrap();
    let cl = c.admin().await.unwrap();
    let after = list_dir(&cl, 1).await.unwrap();
    assert_eq!(before, after);
    for id in &ids {
        let log = c.log(*id);
        assert!(
            !log.contains("corrupt"),
            "master{id} log mentions corruption:\n{log}"
        );
    }
}

/// A master removed, wiped and added again catches up through a snapshot
/// (its log was purged on the leader); a 4th master is added and removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_master_catches_up_by_snapshot_and_membership_changes() {
    let env = [
        ("MFS_SNAPSHOT_LOG_ENTRIES", "100"),
        ("MFS_SNAPSHOT_ENTRIES_PER_INODE", "0"),
        ("MFS_SNAPSHOT_KEEP_ENTRIES", "10"),
    ];
    let mut c = Cluster::start(3, &env).await.unwrap();
    let leader = c.wait_leader(Duration::from_secs(20)).await.unwrap();
    let victim = c
        .masters
        .iter()
        .map(|m| m.id)
        .find(|id| *id != leader)
        .unwrap();
    let admin = c.admin().await.unwrap();
    let cl = c.client("snap").await.unwrap();

    step(&format!("remove master{victim}, kill it, wipe its data"));
    let m = admin.remove_master(victim).await.unwrap();
    assert!(
        !m.voters.contains(&victim) && !m.learners.contains(&victim),
        "{m:?}"
    );
    c.kill(victim).unwrap();
    c.wipe(victim).unwrap();

    step("300 creates and renames while it is away (several snapshots)");
    for i in 0..300 {
        cl.create(create_req(&format!("s{i}"))).await.unwrap();
    }
    for i in 0..50 {
        cl.rename(RenameRequest {
            id: None,
            cred: Some(root_cred()),
            parent: 1,
            name: format!("s{i}").into_bytes(),
            new_parent: 1,
            new_name: format!("r{i}").into_bytes(),
            noreplace: false,
            exchange: false,
        })
        .await
        .unwrap();
    }
    let leader = c.wait_leader(Duration::from_secs(10)).await.unwrap();
    // Snapshots are asked for as the applies go by and built behind them.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let lst = loop {
        let lst = c.status(leader).await.unwrap();
        if lst.snapshot_index > 0 || std::time::Instant::now() > deadline {
            break lst;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(lst.snapshot_index > 0, "leader made no snapshot: {lst:?}");

    step(&format!("start master{victim} empty and add it back"));
    c.restart(victim).unwrap();
    let m = admin
        .add_master(victim, &c.master(victim).unwrap().addr())
        .await
        .unwrap();
    assert!(m.voters.contains(&victim), "{m:?}");
    let target = c.status(leader).await.unwrap().commit_index;
    let st = c
        .wait_applied(victim, target, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(st.snapshot_index > 0, "no snapshot installed: {st:?}");
    assert_eq!(st.inodes, lst.inodes);
    assert!(
        c.log(victim).contains("installing snapshot"),
        "{}",
        c.log(victim)
    );

    step("add a 4th master, then remove it");
    let four = c.add_master_slot().unwrap();
    let peers = c.peers();
    c.spawn(four, &peers).unwrap();
    let m = admin
        .add_master(four, &c.master(four).unwrap().addr())
        .await
        .unwrap();
    assert_eq!(m.voters.len(), 4, "{m:?}");
    let target = c.status(leader).await.unwrap().commit_index;
    c.wait_applied(four, target, Duration::from_secs(30))
        .await
        .unwrap();
    let m = admin.remove_master(four).await.unwrap();
    assert_eq!(m.voters.len(), 3, "{m:?}");
    c.stop(four).unwrap();

    step("the cluster still serves writes");
    cl.create(create_req("after")).await.unwrap();
    let names = list_dir(&cl, 1).await.unwrap();
    assert_eq!(names.len(), 301);
}

/// A request repeated with the same (session, seq) gets the first reply and
/// changes nothing; a session without heartbeats is closed after
/// SESSION_TIMEOUT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_request_applies_once_and_sessions_expire() {
    use mfs_proto::v1::{Empty, RegisterSessionRequest, RequestId};
    let c = Cluster::start(1, &[("MFS_SESSION_TIMEOUT", "2")])
        .await
        .unwrap();
    let addr = format!("http://{}", c.master(1).unwrap().addr());
    let mut raw = MetaServiceClient::connect(addr.clone()).await.unwrap();

    step("register a session by hand (no heartbeats)");
    let s = raw
        .register_session(RegisterSessionRequest {
            info: "raw".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .session;
    let mkdir = |seq: u64| MkdirRequest {
        id: Some(RequestId {
            session: s,
            seq,
            acked: 0,
        }),
        cred: Some(root_cred()),
        parent: 1,
        name: b"once".to_vec(),
        mode: 0o755,
        umask: 0,
    };

    step("the same mkdir twice: one directory, the same reply");
    let a = raw
        .mkdir(mkdir(1))
        .await
        .unwrap()
        .into_inner()
        .attr
        .unwrap();
    let b = raw
        .mkdir(mkdir(1))
        .await
        .unwrap()
        .into_inner()
        .attr
        .unwrap();
    assert_eq!(a, b);
    step("a new seq is a new request: EEXIST");
    let e = raw.mkdir(mkdir(2)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");

    step("the session expires without heartbeats");
    let mut admin = mfs_proto::v1::admin_service_client::AdminServiceClient::connect(addr)
        .await
        .unwrap();
    let has = |info: &mfs_proto::v1::ClusterInfoReply| info.sessions.iter().any(|x| x.id == s);
    assert!(has(&admin
        .cluster_info(Empty {})
        .await
        .unwrap()
        .into_inner()));
    let t = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if !has(&admin.cluster_info(Empty {}).await.unwrap().into_inner()) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "session {s} never expired"
        );
    }
    let e = raw.mkdir(mkdir(3)).await.unwrap_err();
    assert_eq!(
        e.metadata()
            .get(mfs_proto::ERRNO_KEY)
            .and_then(|v| v.to_str().ok()),
        Some("116"),
        "an expired session is ESTALE: {e:?}"
    );
}

/// kill -9 of every master in the middle of a stream of creates: after the
/// restart no log is corrupt and every acknowledged create is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_all_mid_write_keeps_every_acknowledged_create() {
    let mut c = Cluster::start(3, &[]).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let cl = c.client("w").await.unwrap();
    let task = creator(cl.clone(), "k".into(), stop.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    step("kill -9 all three masters while creates run");
    let ids: Vec<u64> = c.masters.iter().map(|m| m.id).collect();
    for id in &ids {
        c.kill(*id).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    step("restart them");
    for id in &ids {
        c.restart(*id).unwrap();
    }
    c.wait_leader(Duration::from_secs(30)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = task.await.unwrap();
    assert!(acked.len() > 10, "{}", acked.len());
    let names: BTreeSet<String> = list_dir(&cl, 1)
        .await
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for n in &acked {
        assert!(names.contains(n), "acknowledged create {n} lost");
    }
    for id in &ids {
        let log = c.log(*id);
        assert!(!log.contains("Error"), "master{id}:\n{log}");
    }
}

/// A leader frozen (SIGSTOP) while the others elect a new one and change
/// the namespace never answers a read from its old state when it wakes up:
/// it answers with the new state or sends the client to the new leader.
/// (Reads on a leader skip openraft's core while its lease holds; this is
/// the case the lease must cover.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_serves_no_stale_read() {
    use mfs_proto::v1::LookupRequest;
    use mfs_proto::v1::Role;

    step("start 3 masters, create `before`");
    let c = Cluster::start(3, &[]).await.unwrap();
    let old = c.wait_leader(Duration::from_secs(20)).await.unwrap();
    let old_addr = c.master(old).unwrap().addr();
    let s = c.client("t").await.unwrap();
    s.create(create_req("before")).await.unwrap();
    let mut raw = MetaServiceClient::connect(format!("http://{old_addr}"))
        .await
        .unwrap();
    let lookup = |name: &str| LookupRequest {
        cred: Some(root_cred()),
        parent: 1,
        name: name.as_bytes().to_vec(),
    };
    raw.lookup(lookup("before")).await.unwrap();

    step(&format!("freeze the leader master{old}"));
    let pid = c.master(old).unwrap().pid().unwrap() as i32;
    // SAFETY: signals to a child process this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let t = Instant::now();
    let new = loop {
        let mut found = None;
        for m in c.masters.iter().filter(|m| m.id != old) {
            if let Some(st) = c.status(m.id).await {
                if st.role == Role::Leader as i32 {
                    found = Some(m.id);
                }
            }
        }
        if let Some(id) = found {
            break id;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no new leader while master{old} is frozen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("new leader master{new} after {:?}", t.elapsed());

    step("create `after` through the new leader, wake the old one, read from it");
    s.create(create_req("after")).await.unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let (mut answered, mut redirected) = (0, 0);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        match raw.lookup(lookup("after")).await {
            Ok(_) => answered += 1,
            Err(st) => {
                let errno = st
                    .metadata()
                    .get("mfs-errno")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                assert_ne!(
                    errno.as_deref(),
                    Some("2"),
                    "master{old} served a stale read after waking: `after` not found ({st:?})"
                );
                redirected += 1;
            }
        }
    }
    eprintln!("old leader: {answered} reads answered, {redirected} refused or redirected");
    assert!(answered + redirected > 0);
}

/// An open the leader answers before its entry commits (and, in a stream
/// of opens, holds a few milliseconds to log with the others) still comes
/// before any write made after the answer: a file unlinked by another session right after it was
/// opened stays readable by the opener until its release, alone and in a
/// burst of opens logged together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_answered_early_comes_before_a_later_unlink() {
    use mfs_proto::v1::{OpenMode, OpenRequest, ReleaseRequest, UnlinkRequest};
    let c = Cluster::start(3, &[]).await.unwrap();
    let a = c.client("opener").await.unwrap();
    let b = c.client("unlinker").await.unwrap();
    let open = |inode: u64| OpenRequest {
        id: None,
        cred: Some(root_cred()),
        inode,
        mode: OpenMode::Read as i32,
        truncate: false,
        lease_first_chunk: false,
    };
    let unlink = |name: &str| UnlinkRequest {
        id: None,
        cred: Some(root_cred()),
        parent: 1,
        name: name.as_bytes().to_vec(),
    };
    let release = |inode: u64| ReleaseRequest {
        id: None,
        inode,
        more: vec![],
    };
    // Trash time 0: an unlinked file that nobody holds open is freed at
    // once, not kept in the trash.
    a.set_trash_time(mfs_proto::v1::SetTrashTimeRequest {
        id: None,
        cred: Some(root_cred()),
        inode: 1,
        trash_time: 0,
        recursive: false,
    })
    .await
    .unwrap();
    let mut files = Vec::new();
    for i in 0..40 {
        let name = format!("held-{i}");
        let attr = a.create(create_req(&name)).await.unwrap();
        a.release(release(attr.inode)).await.unwrap();
        files.push((name, attr.inode));
    }

    // The opener still reaches each file, with no name left.
    let kept = |files: &[(String, u64)]| {
        let a = a.clone();
        let files = files.to_vec();
        async move {
            for (name, inode) in files {
                let attr = a
                    .getattr(inode)
                    .await
                    .unwrap_or_else(|e| panic!("{name} was freed while open: {e}"));
                assert_eq!(attr.nlink, 0, "{name}");
            }
        }
    };

    // An open alone is logged at once; one that follows another within a
    // few milliseconds is held. Each file's open comes right after an open
    // of this one, so it is held when the unlink comes.
    let warm = a.create(create_req("warm")).await.unwrap().inode;
    a.release(release(warm)).await.unwrap();

    step("one at a time: open, then at once an unlink by another session");
    for (name, inode) in &files[..20] {
        a.open(open(warm)).await.unwrap();
        a.open(open(*inode)).await.unwrap();
        b.unlink(unlink(name)).await.unwrap();
        kept(&[(name.clone(), *inode)]).await;
    }
    for _ in &files[..20] {
        a.release(release(warm)).await.unwrap();
    }

    step("a burst: 20 opens at once, then every unlink");
    let opens = files[20..].iter().map(|(_, inode)| a.open(open(*inode)));
    for r in futures::future::join_all(opens).await {
        r.unwrap();
    }
    let unlinks = files[20..].iter().map(|(name, _)| b.unlink(unlink(name)));
    for r in futures::future::join_all(unlinks).await {
        r.unwrap();
    }
    kept(&files[20..]).await;

    step("the last release frees each of them; a file nobody holds goes at once");
    for (name, inode) in &files {
        a.release(release(*inode)).await.unwrap();
        let e = a.getattr(*inode).await.unwrap_err();
        assert_eq!(e.errno(), libc::ENOENT, "{name}: {e}");
    }
    let attr = a.create(create_req("not-held")).await.unwrap();
    a.release(release(attr.inode)).await.unwrap();
    b.unlink(unlink("not-held")).await.unwrap();
    let e = a.getattr(attr.inode).await.unwrap_err();
    assert_eq!(e.errno(), libc::ENOENT, "{e}");
}
