//! The FUSE mount: real `mfsmount -f` processes on real masters, driven
//! through the kernel with plain system calls.
//!
//! Needs root and /dev/fuse; without them each test says so and passes.

mod deferred;
mod model;
mod sys;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mfs_tests::cluster::Cluster;
use mfs_tests::mountpoint::{is_fuse_mounted, Mount};

use crate::util::{rpc_count, skip_without_fuse, step};
use sys::{removexattr, rename2, setxattr, xattrs};

fn errno_of(r: std::io::Result<impl Sized>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

/// Bad input gets Linux's errno: names over 255 bytes, non-empty rmdir,
/// existing names, a directory moved into itself, RENAME_NOREPLACE and
/// RENAME_EXCHANGE, O_EXCL, a hard link to a directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errno_for_bad_input() {
    if skip_without_fuse() {
        return;
    }
    let c = Cluster::start(1, &[]).await.unwrap();
    let m = Mount::start(&c, "mnt", &[]).unwrap();
    let r = m.path();

    step("NAME_MAX: 255 bytes work, 256 are ENAMETOOLONG");
    let ok = "n".repeat(255);
    let long = "n".repeat(256);
    assert_eq!(errno_of(std::fs::create_dir(r.join(&ok))), 0);
    assert!(r.join(&ok).is_dir());
    assert_eq!(
        errno_of(std::fs::create_dir(r.join(&long))),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        errno_of(std::fs::File::create(r.join(&long))),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        errno_of(std::fs::metadata(r.join(&long))),
        libc::ENAMETOOLONG
    );

    step("EEXIST, ENOTEMPTY, ENOTDIR, EISDIR");
    std::fs::create_dir_all(r.join("d/sub")).unwrap();
    std::fs::write(r.join("f"), b"").unwrap();
    assert_eq!(errno_of(std::fs::create_dir(r.join("d"))), libc::EEXIST);
    assert_eq!(errno_of(std::fs::remove_dir(r.join("d"))), libc::ENOTEMPTY);
    assert_eq!(errno_of(std::fs::remove_dir(r.join("f"))), libc::ENOTDIR);
    assert_eq!(errno_of(std::fs::remove_file(r.join("d"))), libc::EISDIR);
    assert_eq!(errno_of(std::fs::create_dir(r.join("f/x"))), libc::ENOTDIR);
    assert_eq!(
        errno_of(
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(r.join("f"))
        ),
        libc::EEXIST
    );

    step("rename: into its own subtree is EINVAL; NOREPLACE and EXCHANGE");
    assert_eq!(
        rename2(&r.join("d"), &r.join("d/sub/x"), 0),
        Err(libc::EINVAL)
    );
    assert_eq!(
        rename2(&r.join("f"), &r.join("d"), libc::RENAME_NOREPLACE),
        Err(libc::EEXIST)
    );
    assert_eq!(rename2(&r.join("f"), &r.join("d"), 0), Err(libc::EISDIR));
    assert_eq!(
        rename2(&r.join("f"), &r.join("d"), libc::RENAME_EXCHANGE),
        Ok(())
    );
    assert!(r.join("f/sub").is_dir() && r.join("d").is_file());
    assert_eq!(
        rename2(&r.join("d"), &r.join("nothing"), libc::RENAME_EXCHANGE),
        Err(libc::ENOENT)
    );

    step("link to a directory is EPERM; symlink loops are ELOOP");
    assert_eq!(
        errno_of(std::fs::hard_link(r.join("f"), r.join("g"))),
        libc::EPERM
    );
    std::os::unix::fs::symlink("loop", r.join("loop")).unwrap();
    assert_eq!(errno_of(std::fs::metadata(r.join("loop"))), libc::ELOOP);

    step("xattrs: XATTR_CREATE on an existing name, XATTR_REPLACE on a missing one");
    assert_eq!(setxattr(&r.join("d"), "user.a", b"1", 0), Ok(()));
    assert_eq!(
        setxattr(&r.join("d"), "user.a", b"2", libc::XATTR_CREATE),
        Err(libc::EEXIST)
    );
    assert_eq!(
        setxattr(&r.join("d"), "user.b", b"2", libc::XATTR_REPLACE),
        Err(libc::ENODATA)
    );
    assert_eq!(removexattr(&r.join("d"), "user.b"), Err(libc::ENODATA));
    assert_eq!(
        xattrs(&r.join("d")).get("user.a").map(Vec::as_slice),
        Some(&b"1"[..])
    );
}

/// A small file opened for reading is read without asking the master where
/// its chunk is: the Open reply says. Read on a second mount, whose caches
/// know nothing of the files; the bytes are the ones written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_files_are_read_with_the_location_open_gave() {
    if skip_without_fuse() {
        return;
    }
    let mut c = Cluster::start(1, &[]).await.unwrap();
    c.add_chunkservers(2, 1).await.unwrap();
    let a = Mount::start(&c, "a", &[]).unwrap();
    let b = Mount::start(&c, "b", &[]).unwrap();
    step("write 20 small files on A");
    let body = |i: usize| format!("small file {i} ").repeat(100 + i).into_bytes();
    for i in 0..20 {
        std::fs::write(a.path().join(format!("f{i}")), body(i)).unwrap();
    }
    step("read them on B: one Open each, no ReadChunk");
    let leader = c.wait_leader(Duration::from_secs(10)).await.unwrap();
    let m = c.master(leader).unwrap();
    let (opens, reads) = (rpc_count(m, "Open"), rpc_count(m, "ReadChunk"));
    for i in 0..20 {
        assert_eq!(
            std::fs::read(b.path().join(format!("f{i}"))).unwrap(),
            body(i),
            "f{i}"
        );
    }
    assert!(rpc_count(m, "Open") >= opens + 20, "an Open per file");
    assert_eq!(
        rpc_count(m, "ReadChunk"),
        reads,
        "ReadChunk calls while reading"
    );
}

/// Two mounts of one cluster see each other's changes: names within the
/// entry cache time (1 s by default), attributes after the attribute cache
/// time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_mounts_see_each_others_changes() {
    if skip_without_fuse() {
        return;
    }
    let c = Cluster::start(3, &[]).await.unwrap();
    let a = Mount::start(&c, "a", &[]).unwrap();
    let b = Mount::start(&c, "b", &["-o", "mfsattrcacheto=0"]).unwrap();

    step("mkdir and create on A show on B");
    std::fs::create_dir(a.path().join("dir")).unwrap();
    std::fs::File::create(a.path().join("dir/file")).unwrap();
    assert!(b.path().join("dir").is_dir());
    let names: Vec<String> = std::fs::read_dir(b.path().join("dir"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["file".to_string()]);

    step("chmod on A shows on B (B caches no attributes)");
    std::fs::set_permissions(
        a.path().join("dir/file"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let mode = std::fs::metadata(b.path().join("dir/file")).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o600);

    step("rename and unlink on B show on A");
    std::fs::rename(b.path().join("dir/file"), b.path().join("moved")).unwrap();
    assert!(a.path().join("moved").is_file());
    within_entry_ttl("the old name goes on A", || {
        !a.path().join("dir/file").exists()
    });
    std::fs::remove_file(b.path().join("moved")).unwrap();
    within_entry_ttl("the unlinked name goes on A", || {
        !a.path().join("moved").exists()
    });

    step("a subfolder mount shows only that subtree");
    std::fs::create_dir_all(a.path().join("sub/inner")).unwrap();
    let s = Mount::start(&c, "s", &["-S", "/sub"]).unwrap();
    assert!(s.path().join("inner").is_dir());
    assert!(!s.path().join("sub").exists());
    std::fs::create_dir(s.path().join("from-s")).unwrap();
    assert!(a.path().join("sub/from-s").is_dir());
}

/// Reads 4 KiB at `off` through `f` (opened with readahead off, so the
/// mount gets exactly this read).
fn read_page(f: &std::fs::File, off: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 4096];
    f.read_exact_at(&mut buf, off).unwrap();
    buf
}

fn open_for_random_reads(path: &std::path::Path) -> std::fs::File {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: advice on a descriptor we own; no memory is passed.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
    assert_eq!(rc, 0, "posix_fadvise");
    f
}

/// The read block cache (small reads fetch and keep the 64 KiB block
/// around them) never hides another mount's write for long: a reopen reads
/// it at once, and a file kept open sees it within the location time (3 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_reads_see_another_mounts_write() {
    use std::io::Write;
    if skip_without_fuse() {
        return;
    }
    let c = cluster_with_chunkservers(2).await;
    let a = Mount::start(&c, "a", &[]).unwrap();
    let b = Mount::start(&c, "b", &[]).unwrap();
    let old = vec![1u8; 256 << 10];
    std::fs::write(a.path().join("f"), &old).unwrap();

    step("B reads pages of block 0, then A rewrites the block");
    let fb = open_for_random_reads(&b.path().join("f"));
    assert_eq!(read_page(&fb, 0), vec![1u8; 4096]);
    assert_eq!(read_page(&fb, 8192), vec![1u8; 4096]);
    let mut fa = std::fs::OpenOptions::new()
        .write(true)
        .open(a.path().join("f"))
        .unwrap();
    fa.write_all(&vec![2u8; 64 << 10]).unwrap();
    fa.sync_all().unwrap();
    drop(fa);

    step("B, keeping the file open, sees the write within 3 s");
    let t = Instant::now();
    let mut off = 12288;
    while read_page(&fb, off) != vec![2u8; 4096] {
        assert!(
            t.elapsed() < Duration::from_millis(4500),
            "B still reads the old block after {:?}",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(350));
        off += 4096;
        assert!(off < 64 << 10, "ran out of unread pages in the block");
    }
    drop(fb);

    step("A rewrites it again; B reopens and reads the new data at once");
    let fb = open_for_random_reads(&b.path().join("f"));
    assert_eq!(read_page(&fb, 4096)[0], 2);
    drop(fb);
    let mut fa = std::fs::OpenOptions::new()
        .write(true)
        .open(a.path().join("f"))
        .unwrap();
    fa.write_all(&vec![3u8; 64 << 10]).unwrap();
    drop(fa);
    let fb = open_for_random_reads(&b.path().join("f"));
    assert_eq!(read_page(&fb, 32768), vec![3u8; 4096]);
    assert_eq!(read_page(&fb, 65536), vec![1u8; 4096], "block 1 unchanged");
}

/// Waits until `cond` holds, for a bit more than the default entry cache
/// time (a name cached by the kernel may outlive a change elsewhere that
/// long, and no longer).
fn within_entry_ttl(what: &str, cond: impl Fn() -> bool) {
    let t = std::time::Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < std::time::Duration::from_millis(2500),
            "{what}: not within the entry cache time"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A file unlinked while open stays usable through the open descriptor
/// (no `.fuse_hidden` rename: the session holds it at the master).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlinked_open_file_stays_usable() {
    if skip_without_fuse() {
        return;
    }
    let c = Cluster::start(1, &[]).await.unwrap();
    let m = Mount::start(&c, "mnt", &[]).unwrap();
    let p = m.path().join("f");
    let f = std::fs::File::create(&p).unwrap();
    f.set_permissions(std::fs::Permissions::from_mode(0o640))
        .unwrap();
    std::fs::remove_file(&p).unwrap();
    let names: Vec<_> = std::fs::read_dir(m.path()).unwrap().flatten().collect();
    assert!(names.is_empty(), "left behind: {names:?}");
    let meta = f.metadata().unwrap();
    assert_eq!(meta.nlink(), 0);
    assert_eq!(meta.mode() & 0o7777, 0o640);
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .unwrap();
    assert_eq!(f.metadata().unwrap().mode() & 0o7777, 0o600);
    drop(f);
}

/// SIGTERM unmounts and ends mfsmount with status 0; so does `umount`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_umount_leave_no_mount() {
    if skip_without_fuse() {
        return;
    }
    let c = Cluster::start(1, &[]).await.unwrap();
    let mut m = Mount::start(&c, "mnt", &[]).unwrap();
    std::fs::create_dir(m.path().join("x")).unwrap();
    step("SIGTERM");
    let st = m.terminate(Duration::from_secs(15)).unwrap();
    assert!(st.success(), "mfsmount exited with {st}: {}", m.log_text());
    assert!(!is_fuse_mounted(m.path()));
    assert!(
        !m.path().join("x").exists(),
        "the mount point still shows the file system"
    );

    step("umount");
    let mut m2 = Mount::start(&c, "mnt2", &[]).unwrap();
    assert!(m2.path().join("x").is_dir());
    let out = std::process::Command::new("umount")
        .arg(m2.path())
        .status()
        .unwrap();
    assert!(out.success());
    let t = Instant::now();
    while m2.pid().is_some() && t.elapsed() < Duration::from_secs(15) {
        if !is_fuse_mounted(m2.path()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!is_fuse_mounted(m2.path()));
    // mfsmount ends by itself after an external umount.
    let st = wait_exit(&mut m2, Duration::from_secs(15));
    assert!(st, "mfsmount still runs after umount: {}", m2.log_text());
}

fn wait_exit(m: &mut Mount, timeout: Duration) -> bool {
    let Some(pid) = m.pid() else {
        return true;
    };
    let t = Instant::now();
    while t.elapsed() < timeout {
        // A zombie child counts as exited: look at its state.
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let st = state.rsplit(')').next().unwrap_or("").trim_start();
        if state.is_empty() || st.starts_with('Z') {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A mount started while no master runs says why and waits; it mounts as
/// soon as the master is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_waits_for_the_master() {
    if skip_without_fuse() {
        return;
    }
    let mut c = Cluster::start(1, &[]).await.unwrap();
    c.stop(1).unwrap();
    let dir = c.root().join("late");
    step("mfsmount with the master down");
    let starter = {
        let addrs = c.addrs();
        let root = c.root().to_path_buf();
        std::thread::spawn(move || {
            let fake = FakeCluster { addrs, root };
            fake.mount("late")
        })
    };
    std::thread::sleep(Duration::from_secs(7));
    let log = std::fs::read_to_string(c.root().join("late.log")).unwrap_or_default();
    assert!(
        log.contains("still trying") && log.contains("Connection refused"),
        "no message about the missing master: {log}"
    );
    assert!(!is_fuse_mounted(&dir));
    step("start the master: the mount comes up");
    c.restart(1).unwrap();
    let m = starter.join().unwrap().unwrap();
    assert!(m.path().is_dir());
}

/// Just enough of a cluster for [`Mount::start`] from another thread.
struct FakeCluster {
    addrs: Vec<String>,
    root: PathBuf,
}

impl FakeCluster {
    fn mount(&self, name: &str) -> anyhow::Result<Mount> {
        Mount::start_with(&self.root, &self.addrs, name, &[])
    }
}

/// Starts a cluster of one master and `n` chunkservers (goal 1 files fit
/// on any of them).
async fn cluster_with_chunkservers(n: usize) -> Cluster {
    let mut c = Cluster::start(1, &[]).await.unwrap();
    c.add_chunkservers(n, 1).await.unwrap();
    c
}

/// File contents through the mount: write and read back (large and odd
/// sizes), O_APPEND, truncate down and up, a sparse file's hole, fsync, an
/// unlinked open file's data, and another mount reading it all after close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_contents_round_trip() {
    use std::io::{Read, Seek, SeekFrom, Write};
    if skip_without_fuse() {
        return;
    }
    let c = cluster_with_chunkservers(2).await;
    let a = Mount::start(&c, "a", &[]).unwrap();
    let r = a.path();

    step("write 3 MiB + 123 bytes, read back");
    let data: Vec<u8> = (0..(3 << 20) + 123u32)
        .map(|i| (i * 7 + i / 4096) as u8)
        .collect();
    std::fs::write(r.join("big"), &data).unwrap();
    assert_eq!(std::fs::read(r.join("big")).unwrap(), data);
    assert_eq!(
        std::fs::metadata(r.join("big")).unwrap().len(),
        data.len() as u64
    );

    step("O_APPEND");
    std::fs::write(r.join("log"), b"one\n").unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(r.join("log"))
        .unwrap();
    f.write_all(b"two\n").unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(std::fs::read(r.join("log")).unwrap(), b"one\ntwo\n");

    step("truncate down, then up (zeros)");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(r.join("big"))
        .unwrap();
    f.set_len(10).unwrap();
    f.set_len(20).unwrap();
    drop(f);
    let got = std::fs::read(r.join("big")).unwrap();
    assert_eq!(&got[..10], &data[..10]);
    assert_eq!(&got[10..], &[0u8; 10]);

    step("sparse: a write past the end leaves a hole of zeros");
    let mut f = std::fs::File::create(r.join("sparse")).unwrap();
    f.seek(SeekFrom::Start(70 << 20)).unwrap();
    f.write_all(b"tail").unwrap();
    drop(f);
    let mut f = std::fs::File::open(r.join("sparse")).unwrap();
    assert_eq!(f.metadata().unwrap().len(), (70 << 20) + 4);
    let mut buf = vec![1u8; 4096];
    f.seek(SeekFrom::Start(64 << 20)).unwrap();
    f.read_exact(&mut buf).unwrap();
    assert!(buf.iter().all(|b| *b == 0));
    f.seek(SeekFrom::Start(70 << 20)).unwrap();
    let mut tail = String::new();
    f.read_to_string(&mut tail).unwrap();
    assert_eq!(tail, "tail");

    step("an unlinked open file keeps its data");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(r.join("gone"))
        .unwrap();
    f.write_all(b"still here").unwrap();
    f.sync_all().unwrap();
    std::fs::remove_file(r.join("gone")).unwrap();
    let mut s = String::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "still here");
    drop(f);

    step("another mount reads what was written");
    let b = Mount::start(&c, "b", &["-o", "mfsattrcacheto=0"]).unwrap();
    assert_eq!(std::fs::read(b.path().join("log")).unwrap(), b"one\ntwo\n");
    assert_eq!(std::fs::read(b.path().join("big")).unwrap().len(), 20);
    assert!(!b.path().join("gone").exists());
}

/// Killing the leader (SIGKILL) while a program makes directories through
/// the mount: the program sees a pause, no error, and every directory it
/// made exists exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_survives_leader_kill() {
    if skip_without_fuse() {
        return;
    }
    let mut c = Cluster::start(3, &[]).await.unwrap();
    let m = Mount::start(&c, "mnt", &[]).unwrap();
    let root = m.path().to_path_buf();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut made = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Err(e) = std::fs::create_dir(root.join(format!("d{made}"))) {
                    return Err(format!("mkdir d{made}: {e}"));
                }
                made += 1;
            }
            Ok(made)
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let leader = c.wait_leader(Duration::from_secs(10)).await.unwrap();
    step(&format!("SIGKILL the leader, master {leader}"));
    c.kill(leader).unwrap();
    c.wait_leader(Duration::from_secs(30)).await.unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let made = worker.join().unwrap().unwrap();
    step(&format!("{made} directories made across the failover"));
    let mut names: Vec<String> = std::fs::read_dir(m.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = (0..made).map(|i| format!("d{i}")).collect();
    want.sort();
    assert_eq!(names, want);
}

/// With `mfsiotimeout`, a call that finds no master fails with EIO after
/// about that long instead of waiting for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_timeout_gives_eio() {
    if skip_without_fuse() {
        return;
    }
    let mut c = Cluster::start(1, &[]).await.unwrap();
    let m = Mount::start(&c, "mnt", &["-o", "mfsiotimeout=2"]).unwrap();
    std::fs::create_dir(m.path().join("before")).unwrap();
    c.stop(1).unwrap();
    let t = Instant::now();
    let r = std::fs::create_dir(m.path().join("after"));
    let took = t.elapsed();
    assert_eq!(errno_of(r), libc::EIO);
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(20),
        "failed after {took:?}"
    );
}

/// File times through the writeback cache: the mtime a written file shows
/// at close stays once the caches expire (the commit carries it), and an
/// explicit utime made while writes are pending is the one kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtime_of_written_files_holds() {
    use std::io::Write;
    if skip_without_fuse() {
        return;
    }
    let c = cluster_with_chunkservers(1).await;
    let m = Mount::start(&c, "mnt", &[]).unwrap();
    let p = m.path().join("f");
    let mut f = std::fs::File::create(&p).unwrap();
    f.write_all(b"data").unwrap();
    drop(f);
    let first = std::fs::metadata(&p).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let later = std::fs::metadata(&p).unwrap();
    assert_eq!(
        (later.mtime(), later.mtime_nsec(), later.len()),
        (first.mtime(), first.mtime_nsec(), 4),
        "the mtime moved after close"
    );

    step("utime while writes are pending");
    let mut f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all(b"more").unwrap();
    let when = std::time::UNIX_EPOCH + Duration::from_secs(2_000_000);
    f.set_modified(when).unwrap();
    drop(f);
    std::thread::sleep(Duration::from_millis(2500));
    let meta = std::fs::metadata(&p).unwrap();
    assert_eq!((meta.mtime(), meta.len()), (2_000_000, 4));
    assert_eq!(std::fs::read(&p).unwrap(), b"more");
}

/// The mount's limits in /sys/class/bdi: read-ahead 4 MiB, and written
/// pages up to `mfsdirtylimit` MiB (256 by default; 0 keeps the kernel's,
/// 1% of its dirty page limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mount_sets_its_read_ahead_and_dirty_page_limit() {
    if skip_without_fuse() {
        return;
    }
    let c = Cluster::start(1, &[]).await.unwrap();
    let bdi = |m: &Mount, name: &str| {
        let dev = std::fs::metadata(m.path()).unwrap().dev();
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        std::fs::read_to_string(format!("/sys/class/bdi/{major}:{minor}/{name}"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let a = Mount::start(&c, "a", &[]).unwrap();
    let b = Mount::start(&c, "b", &["-o", "mfsdirtylimit=0"]).unwrap();
    let c2 = Mount::start(&c, "c", &["-o", "mfsdirtylimit=64"]).unwrap();
    if bdi(&a, "max_bytes").is_empty() {
        eprintln!("this kernel has no max_bytes in /sys/class/bdi: skipped");
        return;
    }
    // The kernel keeps the limit as a fine-grained ratio: what it reads
    // back is within a fraction of a percent of what was set.
    let near = |m: &Mount, mib: u64| {
        let v: u64 = bdi(m, "max_bytes").parse().unwrap_or(0);
        v.abs_diff(mib << 20) < (mib << 20) / 100
    };
    crate::util::wait_for(10, "the limits set", || near(&a, 256) && near(&c2, 64));
    assert_eq!(bdi(&a, "read_ahead_kb"), "4096");
    assert_eq!(bdi(&b, "read_ahead_kb"), "4096");
    // The kernel gives a FUSE mount 1% of its dirty page limit.
    assert_eq!(
        bdi(&b, "max_ratio"),
        "1",
        "mfsdirtylimit=0 keeps the kernel's"
    );
    assert_ne!(bdi(&a, "max_ratio"), "1");
}
