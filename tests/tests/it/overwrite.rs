//! Files overwritten in place (open with O_TRUNC, write, close): the
//! truncating open takes the write lease of the file's new first chunk in
//! the same change, so the write at close asks the master for nothing; an
//! open that truncates and writes nothing leaves an empty file with no
//! chunk, and other clients may write it at once. Another mount that had
//! the files cached (it made them) reads the new lengths: the kernel keeps
//! its own length of a file it caches (writeback cache), so the mount gives
//! it a new inode when the length changed elsewhere (`fuse::sizes`).
//!
//! Needs root and /dev/fuse; without them each test says so and passes.

use std::fs::{self, OpenOptions};
use std::io::Write;

use mfs_tests::cluster::Cluster;
use mfs_tests::mountpoint::Mount;

use crate::tools::{fileinfo_chunks, ok};
use crate::util::{rpc_count, skip_without_fuse, step};

/// One master, two chunkservers (goal 2), mounts "a" and "b"; "b" keeps
/// no names or attributes cached (every open looks its file up: what
/// another client closed shows at once, not after the cache times).
async fn cluster() -> Option<(Cluster, Mount, Mount)> {
    if skip_without_fuse() {
        return None;
    }
    let mut c = Cluster::start(1, &[]).await.unwrap();
    c.add_chunkservers(2, 1).await.unwrap();
    let a = Mount::start(&c, "a", &[]).unwrap();
    let b = Mount::start(&c, "b", &["-o", "mfsentrycacheto=0,mfsattrcacheto=0"]).unwrap();
    ok("mfssetgoal", &["2", &a.path().display().to_string()]);
    Some((c, a, b))
}

fn body(round: usize, i: usize) -> Vec<u8> {
    let n = [5000, 1, 300_000, 65_536][(round + i) % 4];
    (0..n).map(|k| (k * 7 + i * 3 + round * 11) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncating_opens_take_the_first_chunks_lease_with_them() {
    let Some((c, a, b)) = cluster().await else {
        return;
    };
    let m = &c.masters[0];
    // Another client's directory: the files are not made by A.
    let (da, db) = (a.path().join("d"), b.path().join("d"));
    fs::create_dir(&db).unwrap();
    step("B makes 12 files; A overwrites each twice (open O_TRUNC, write, close)");
    for i in 0..12 {
        fs::write(db.join(format!("f{i:02}")), body(0, i)).unwrap();
    }
    let leases = rpc_count(m, "WriteChunk");
    for round in 1..3 {
        for i in 0..12 {
            let mut f = OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(da.join(format!("f{i:02}")))
                .unwrap();
            f.write_all(&body(round, i)).unwrap();
            drop(f);
        }
    }
    let asked = rpc_count(m, "WriteChunk") - leases;
    assert!(
        asked < 5,
        "A asked for {asked} write leases itself for 24 overwrites"
    );
    step("B reads every byte of the last round, on two copies");
    for i in 0..12 {
        let p = db.join(format!("f{i:02}"));
        let got = fs::read(&p).unwrap();
        assert!(got == body(2, i), "f{i:02} on B: {} bytes", got.len());
        let info = ok("mfsfileinfo", &[&p.display().to_string()]);
        for (chunk, copies) in fileinfo_chunks(&info) {
            assert_eq!(copies.len(), 2, "f{i:02} chunk {chunk}:\n{info}");
        }
    }

    step("A appends to a file B has read: B reads it whole");
    let p = da.join("f05");
    let mut want = fs::read(db.join("f05")).unwrap();
    let more: Vec<u8> = (0..70_000u32).map(|k| (k % 251) as u8).collect();
    OpenOptions::new()
        .append(true)
        .open(&p)
        .unwrap()
        .write_all(&more)
        .unwrap();
    want.extend_from_slice(&more);
    let got = fs::read(db.join("f05")).unwrap();
    assert!(
        got == want,
        "f05 on B: {} bytes of {}",
        got.len(),
        want.len()
    );

    step("A truncates a file by an open that writes nothing: empty, no chunk");
    let p = da.join("f02");
    drop(
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&p)
            .unwrap(),
    );
    let pb = db.join("f02");
    assert_eq!(fs::metadata(&pb).unwrap().len(), 0);
    let info = ok("mfsfileinfo", &[&pb.display().to_string()]);
    assert!(fileinfo_chunks(&info).is_empty(), "{info}");

    step("B writes that file at once: its lease is free");
    fs::write(&pb, b"after").unwrap();
    assert_eq!(fs::read(&pb).unwrap(), b"after");
    let info = ok("mfsfileinfo", &[&pb.display().to_string()]);
    let chunks = fileinfo_chunks(&info);
    assert!(chunks.len() == 1 && chunks[0].1.len() == 2, "{info}");
}
