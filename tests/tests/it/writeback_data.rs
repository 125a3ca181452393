//! Write-back data: files a mount made in a directory it holds get their
//! data written to chunks the session holds, their length commits ride in
//! the write-back queue, and their opens and stats are answered by the
//! mount; another mount sees every byte.
//!
//! Needs root and /dev/fuse; without them each test says so and passes.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use mfs_tests::cluster::Cluster;
use mfs_tests::mountpoint::Mount;

use crate::util::{rpc_count, skip_without_fuse, step};
use crate::writeback::{create_new, two_mounts};

/// Small files made in a held directory: their data goes to the
/// chunkservers at close, their length commit rides in the write-back
/// queue; another mount reads every byte, and fsync makes a file durable
/// against a `kill -9` of its mount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn length_commits_of_files_made_in_a_held_directory_ride_in_the_queue() {
    use std::io::Write;
    let Some((c, mut a, b)) = two_mounts(true).await else {
        return;
    };
    let m = &c.masters[0];
    let (da, db) = (a.path().join("d"), b.path().join("d"));
    fs::create_dir(&da).unwrap();
    let content = |i: usize| format!("file {i} ").repeat(450 + i).into_bytes();
    let (ends, leases) = (rpc_count(m, "WriteChunkEnd"), rpc_count(m, "WriteChunk"));
    for i in 0..50 {
        fs::write(da.join(format!("s{i:02}")), content(i)).unwrap();
    }
    let sent = rpc_count(m, "WriteChunkEnd") - ends;
    assert!(sent < 5, "A sent {sent} of 50 length commits itself");
    let asked = rpc_count(m, "WriteChunk") - leases;
    assert!(asked < 5, "A asked for {asked} of 50 first leases itself");

    step("a file made here written again (its chunk is there: WriteChunk)");
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(da.join("s07"))
            .unwrap();
        f.write_all(b"AGAIN").unwrap();
    }
    let again = |i: usize| {
        let mut c = content(i);
        if i == 7 {
            c[..5].copy_from_slice(b"AGAIN");
        }
        c
    };

    step("B reads every file (after the recall): every byte");
    for i in 0..50 {
        let p = db.join(format!("s{i:02}"));
        assert_eq!(fs::read(&p).unwrap(), again(i), "{}", p.display());
    }

    step("a file fsynced on A outlives A's kill -9");
    let e = a.path().join("e");
    fs::create_dir(&e).unwrap();
    for i in 0..3 {
        create_new(&e.join(format!("x{i}"))).unwrap();
    }
    let mut f = create_new(&e.join("kept")).unwrap();
    f.write_all(b"durable").unwrap();
    f.sync_all().unwrap();
    let pid = a.pid().expect("mount runs");
    // SAFETY: kill(2) of the mount process this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let _ = a.terminate(std::time::Duration::from_secs(5));
    drop(f);
    let n = Mount::start(&c, "n", &[]).unwrap();
    assert_eq!(fs::read(n.path().join("e/kept")).unwrap(), b"durable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_made_here_write_held_chunks_and_survive_a_chunkserver_kill() {
    if skip_without_fuse() {
        return;
    }
    let mut c = Cluster::start(1, &[]).await.unwrap();
    c.add_chunkservers(3, 1).await.unwrap();
    let a = Mount::start(&c, "a", &[]).unwrap();
    let b = Mount::start(&c, "b", &[]).unwrap();
    let da = a.path().join("d");
    fs::create_dir(&da).unwrap();
    let d = da.to_string_lossy().into_owned();
    let (code, out, err) = crate::tools::tool("mfssetgoal", &["2", &d]);
    assert_eq!(code, 0, "mfssetgoal: {out}{err}");
    let content = |i: usize| format!("held {i} ").repeat(100 + 37 * i).into_bytes();

    step("A writes 60 files in d: their chunks are ids the session holds");
    let leases = rpc_count(&c.masters[0], "WriteChunk");
    for i in 0..60 {
        fs::write(da.join(format!("f{i:03}")), content(i)).unwrap();
    }
    assert!(
        rpc_count(&c.masters[0], "HoldChunks") >= 1,
        "A held no chunk ids"
    );
    let asked = rpc_count(&c.masters[0], "WriteChunk") - leases;
    assert!(asked < 5, "A asked for {asked} of 60 first leases itself");

    step("kill -9 chunkserver 1: writes on chains through it go on (named, then renewed)");
    c.kill_chunkserver(1).unwrap();
    let leases = rpc_count(&c.masters[0], "WriteChunk");
    for i in 60..160 {
        fs::write(da.join(format!("f{i:03}")), content(i))
            .unwrap_or_else(|e| panic!("write f{i:03} after the kill: {e}"));
    }
    // Held chains through the dead server: those writes renewed.
    let renewed = rpc_count(&c.masters[0], "WriteChunk") - leases;
    assert!(
        renewed > 0,
        "no write went through a held chain with the dead server"
    );

    step("B reads every file (after the recall): every byte, every file at its size");
    let db = b.path().join("d");
    for i in 0..160 {
        let p = db.join(format!("f{i:03}"));
        assert_eq!(fs::read(&p).unwrap(), content(i), "{}", p.display());
    }
    step("the chunks are known where they are: mfsfileinfo lists copies");
    let f = db.join("f100").to_string_lossy().into_owned();
    let (code, out, err) = crate::tools::tool("mfsfileinfo", &[&f]);
    assert_eq!(code, 0, "mfsfileinfo: {out}{err}");
    assert!(out.contains("copy 1"), "no copy listed: {out}");
}

/// Chunks a mount wrote on ids its session held and never named (it was
/// killed before its queue went out) are no one's once the session ends:
/// the leader deletes their copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_chunks_a_dead_mount_never_named_are_deleted_after_its_session() {
    use std::time::Duration;
    if skip_without_fuse() {
        return;
    }
    let mut c = Cluster::start(1, &[("MFS_SESSION_TIMEOUT", "3")])
        .await
        .unwrap();
    c.add_chunkservers(1, 1).await.unwrap();
    let mut a = Mount::start(&c, "a", &[]).unwrap();
    let da = a.path().join("d");
    fs::create_dir(&da).unwrap();
    step("A writes 40 small files in d, then is killed (-9) at once");
    for i in 0..40 {
        fs::write(da.join(format!("f{i:02}")), format!("file {i}")).unwrap();
    }
    let pid = a.pid().expect("mount runs");
    // SAFETY: kill(2) of the mount process this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let _ = a.terminate(Duration::from_secs(5));
    let written = c.chunk_files(1).unwrap().len();

    step("after A's session: B sees the files that went out; only their chunks stay");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let b = Mount::start(&c, "b", &[]).unwrap();
    let db = b.path().join("d");
    let mut named = 0;
    for e in fs::read_dir(&db).unwrap() {
        let p = e.unwrap().path();
        let data = fs::read(&p).unwrap();
        if !data.is_empty() {
            let i: usize = p.file_name().unwrap().to_string_lossy()[1..]
                .parse()
                .unwrap();
            assert_eq!(data, format!("file {i}").into_bytes(), "{}", p.display());
            named += 1;
        }
    }
    assert!(
        written > named,
        "every chunk A wrote was named before the kill ({written} copies): nothing to clean"
    );
    let took = crate::data::eventually(Duration::from_secs(60), || async {
        let left = c.chunk_files(1).unwrap().len();
        if left == named {
            Ok(())
        } else {
            Err(format!("{left} chunk copies, {named} files with data"))
        }
    })
    .await;
    eprintln!("{} unnamed copies deleted in {took:?}", written - named);
}

/// Drops the kernel's cached pages of `p` (clean ones: written back
/// first), so reads of it reach the mount.
fn drop_pages(p: &Path) {
    use std::os::fd::AsRawFd;
    let f = File::open(p).unwrap();
    f.sync_all().unwrap();
    // SAFETY: a plain call on an open descriptor.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise {}", p.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_made_and_written_here_are_opened_with_no_call_and_outlive_an_unlink_elsewhere() {
    use std::io::{Read, Seek, SeekFrom};
    let Some((c, a, b)) = two_mounts(true).await else {
        return;
    };
    let m = &c.masters[0];
    let (da, db) = (a.path().join("d"), b.path().join("d"));
    fs::create_dir(&da).unwrap();
    let body = |i: usize| -> Vec<u8> {
        let n = [0, 1, 4096, 5000, 200_000][i % 5];
        (0..n).map(|k| (k * 7 + i * 13) as u8).collect()
    };
    step("A makes 40 files with data (some empty, one of 200 kB each fifth)");
    for i in 0..40 {
        fs::write(da.join(format!("f{i:02}")), body(i)).unwrap();
    }
    File::open(&da).unwrap().sync_all().unwrap();
    for i in 0..40 {
        drop_pages(&da.join(format!("f{i:02}")));
    }

    step("A stats, opens and reads each: answered by A, the data from the chunkservers");
    let calls = || {
        ["Open", "Lookup", "GetAttr", "ReadChunk"]
            .iter()
            .map(|n| rpc_count(m, n))
            .sum::<u64>()
    };
    let before = calls();
    let mut on_a = Vec::new();
    for i in 0..40 {
        let p = da.join(format!("f{i:02}"));
        on_a.push(fs::metadata(&p).unwrap());
        let got = fs::read(&p).unwrap();
        assert!(got == body(i), "f{i:02}: {} bytes read", got.len());
    }
    let asked = calls() - before;
    assert!(asked < 10, "A asked the master {asked} times for 40 files");

    step("B unlinks a file A holds open: A reads it to the end");
    let mut held = File::open(da.join("f04")).unwrap();
    fs::remove_file(db.join("f04")).unwrap();
    assert!(!db.join("f04").exists());
    let mut got = Vec::new();
    held.seek(SeekFrom::Start(0)).unwrap();
    held.read_to_end(&mut got).unwrap();
    assert!(got == body(4), "f04 after the unlink: {} bytes", got.len());
    drop(held);

    step("B's stat of each file agrees with what A answered, to the nanosecond");
    for (i, sa) in on_a.iter().enumerate() {
        if i == 4 {
            continue;
        }
        let sb = fs::metadata(db.join(format!("f{i:02}"))).unwrap();
        let key = |s: &fs::Metadata| {
            (
                (s.ino(), s.mode(), s.nlink(), s.len(), s.blocks()),
                (s.mtime(), s.mtime_nsec()),
                (s.ctime(), s.ctime_nsec()),
            )
        };
        assert_eq!(key(sa), key(&sb), "f{i:02}");
        assert!(fs::read(db.join(format!("f{i:02}"))).unwrap() == body(i));
    }
}

/// Files overwritten one after another (open with O_TRUNC, write, close)
/// in a directory the mount holds: each open goes to the master without
/// waiting for the length commit of the file before (still queued), and
/// every byte and length is right, through a hard link elsewhere too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_overwritten_one_after_another_keep_every_byte() {
    let Some((c, a, b)) = two_mounts(true).await else {
        return;
    };
    let m = &c.masters[0];
    let (da, db) = (a.path().join("d"), b.path().join("d"));
    fs::create_dir(&da).unwrap();
    fs::create_dir(a.path().join("e")).unwrap();
    let body = |round: usize, i: usize| -> Vec<u8> {
        let n = [3000, 70_000, 1, 9000][(round + i) % 4];
        (0..n).map(|k| (k * 3 + i * 11 + round * 5) as u8).collect()
    };
    step("A makes 20 files, one hard-linked into another directory");
    for i in 0..20 {
        fs::write(da.join(format!("f{i:02}")), body(0, i)).unwrap();
    }
    fs::hard_link(da.join("f07"), a.path().join("e/g")).unwrap();
    step("A overwrites each file three times, checking its length as it goes");
    let (batches, opens) = (rpc_count(m, "Batch"), rpc_count(m, "Open"));
    for round in 1..4 {
        for i in 0..20 {
            let p = da.join(format!("f{i:02}"));
            fs::write(&p, body(round, i)).unwrap();
            let len = fs::metadata(&p).unwrap().len();
            assert_eq!(len, body(round, i).len() as u64, "f{i:02} round {round}");
        }
        let via_link = fs::read(a.path().join("e/g")).unwrap();
        assert!(
            via_link == body(round, 7),
            "e/g round {round}: {} bytes",
            via_link.len()
        );
    }
    eprintln!(
        "60 overwrites: {} Open, {} Batch calls",
        rpc_count(m, "Open") - opens,
        rpc_count(m, "Batch") - batches
    );
    step("B reads every file: the last round's bytes");
    for i in 0..20 {
        let got = fs::read(db.join(format!("f{i:02}"))).unwrap();
        assert!(got == body(3, i), "f{i:02} on B: {} bytes", got.len());
    }
    let g = fs::metadata(b.path().join("e/g")).unwrap();
    assert_eq!(g.len(), body(3, 7).len() as u64);
    assert_eq!(g.ino(), fs::metadata(db.join("f07")).unwrap().ino());
    drop(a);
}
