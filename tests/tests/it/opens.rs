//! Opens a leader answered and never logged (it answers an open before
//! logging it, and may die in between): the mount tells the next leader
//! what it holds, so the file stays while open and can be locked.
//!
//! The lost open is made by hand: a Release sent in the mount's session
//! (as its request, with a sequence number of its own) takes the master's
//! count of the open away, exactly what the master is left with when the
//! open's entry died with its leader.
//!
//! Needs root and /dev/fuse; without them the test says so and passes.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use mfs_proto::v1::meta_service_client::MetaServiceClient;
use mfs_proto::v1::{ReleaseRequest, RequestId};
use mfs_tests::cluster::Cluster;
use mfs_tests::mountpoint::Mount;

use crate::locks::fcntl_lock;
use crate::tools::ok;
use crate::util::{open_rw, skip_without_fuse, step};

/// The session the mount registered (from its log).
fn session_of(m: &Mount) -> u64 {
    let log = m.log_text();
    log.lines()
        .find_map(|l| {
            let rest = l.split("session registered session=").nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no session in the mount's log:\n{log}"))
}

/// Takes one open of `inode` away from `session` at the leader.
async fn lose_open(c: &Cluster, session: u64, inode: u64, seq: u64) {
    let leader = c.wait_leader(Duration::from_secs(30)).await.unwrap();
    let addr = c.master(leader).unwrap().addr();
    let mut raw = MetaServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    raw.release(ReleaseRequest {
        id: Some(RequestId {
            session,
            seq,
            acked: 0,
        }),
        inode,
        more: Vec::new(),
    })
    .await
    .unwrap();
}

/// Waits until the master counts `n` files open by `session`.
async fn wait_open_files(c: &Cluster, session: u64, n: u64) {
    let admin = c.admin().await.unwrap();
    let t = std::time::Instant::now();
    loop {
        let info = admin.cluster_info().await.unwrap();
        let open = info
            .sessions
            .iter()
            .find(|s| s.id == session)
            .map(|s| s.open_files);
        if open == Some(n) {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "session {session} holds {open:?} files open, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_lost_with_their_leader_are_told_to_the_next() {
    if skip_without_fuse() {
        return;
    }
    let mut c = Cluster::start(3, &[]).await.unwrap();
    c.add_chunkservers(1, 1).await.unwrap();
    let m = Mount::start(&c, "mnt", &[]).unwrap();
    let path = m.path().join("held");
    std::fs::write(&path, b"held data").unwrap();
    // No trash: an unlinked file that nobody holds is freed at once.
    ok("mfssettrashtime", &["0", &path.display().to_string()]);
    let session = session_of(&m);
    // The writes' open is released (in the mount's next batch): then the
    // one below is the session's only open of the file.
    wait_open_files(&c, session, 0).await;
    let f = open_rw(&path);
    let inode = f.metadata().unwrap().ino();
    // Far above the mount's own sequence numbers.
    let seq = 1 << 40;

    step("the master forgets the open: a lock on the held file still works");
    lose_open(&c, session, inode, seq).await;
    wait_open_files(&c, session, 0).await;
    assert_eq!(
        fcntl_lock(&f, libc::F_SETLK, libc::F_WRLCK, 0, 1),
        0,
        "F_SETLK on a file held open"
    );

    step("forgotten again, and the leader killed: the mount tells the new one");
    lose_open(&c, session, inode, seq + 1).await;
    let leader = c.wait_leader(Duration::from_secs(30)).await.unwrap();
    c.kill(leader).unwrap();
    // A call through the mount meets the new leader.
    std::fs::write(m.path().join("after"), b"x").unwrap();
    // The mount tells it in a task of its own, right after.
    tokio::time::sleep(Duration::from_secs(2)).await;

    step("unlinked while held: the file stays (nlink 0) until it is closed");
    std::fs::remove_file(&path).unwrap();
    // The mount may answer the unlink itself (it holds the directory) and
    // send it in its next batch: fsync of the directory sends it now.
    std::fs::File::open(m.path()).unwrap().sync_all().unwrap();
    let admin = c.admin().await.unwrap();
    let a = admin
        .getattr(inode)
        .await
        .unwrap_or_else(|e| panic!("the held file was freed at its unlink: {e}"));
    assert_eq!(a.nlink, 0);
    drop(f);
    let t = std::time::Instant::now();
    while admin.getattr(inode).await.is_ok() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the file outlived its last close by 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
