//! Write-back creates: a mount making many files in one directory answers
//! the creates itself once the master delegated the directory to it, and
//! sends them in batches; another mount that reads or changes the
//! directory first makes the master recall it, so it sees every file.
//!
//! Needs root and /dev/fuse; without them each test says so and passes.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use mfs_tests::cluster::Cluster;
use mfs_tests::mountpoint::Mount;

use crate::util::{metric, rpc_count, skip_without_fuse, step};

pub(crate) fn create_new(p: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(p)
}

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// One master (and a chunkserver when `data`), two mounts "a" and "b";
/// None without root or /dev/fuse.
pub(crate) async fn two_mounts(data: bool) -> Option<(Cluster, Mount, Mount)> {
    if skip_without_fuse() {
        return None;
    }
    let mut c = Cluster::start(1, &[]).await.unwrap();
    if data {
        c.add_chunkservers(1, 1).await.unwrap();
    }
    let a = Mount::start(&c, "a", &[]).unwrap();
    let b = Mount::start(&c, "b", &[]).unwrap();
    Some((c, a, b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_answered_by_the_mount_are_seen_by_another_mount() {
    let Some((c, a, b)) = two_mounts(true).await else {
        return;
    };
    let m = &c.masters[0];
    let (da, db) = (a.path().join("d"), b.path().join("d"));
    fs::create_dir(&da).unwrap();
    let mut want = BTreeSet::new();

    step("A makes 300 files in d: the directory is delegated, creates go in batches");
    for i in 0..300 {
        let name = format!("f{i:03}");
        create_new(&da.join(&name)).unwrap_or_else(|e| panic!("create {name} on A: {e}"));
        want.insert(name);
    }
    assert!(rpc_count(m, "Delegate") >= 1, "A never asked for d");
    let batches = rpc_count(m, "Batch");
    assert!(
        rpc_count(m, "Create") < 10,
        "A sent {} creates itself",
        rpc_count(m, "Create")
    );

    step("B lists d at once: every name (d is recalled from A first)");
    assert_eq!(names(&db), want);
    assert!(metric(m, "mfs_recalls_total") >= 1, "no recall");
    assert!(
        metric(m, "mfs_writeback_ops_total") >= 290,
        "{} ops came through batches",
        metric(m, "mfs_writeback_ops_total")
    );
    assert!(rpc_count(m, "Batch") >= batches);
    let st = fs::metadata(db.join("f007")).unwrap();
    assert_eq!(st.mode() & 0o7777, 0o640 & !current_umask());
    assert_eq!((st.uid(), st.gid(), st.nlink(), st.len()), (0, 0, 1, 0));
    let sa = fs::metadata(da.join("f007")).unwrap();
    assert_eq!((sa.ino(), sa.mode()), (st.ino(), st.mode()));

    step("an existing name: EEXIST on A; A and B then create in d in turns");
    let e = create_new(&da.join("f000")).map(|_| ()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    for i in 0..120 {
        let name = format!("g{i:03}");
        let on = if i % 2 == 0 { &da } else { &db };
        create_new(&on.join(&name)).unwrap_or_else(|e| panic!("create {name}: {e}"));
        want.insert(name);
        let e = create_new(&on.join("f001")).map(|_| ()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists, "f001 again");
    }
    assert_eq!(names(&db), want);
    assert_eq!(names(&da), want);

    step("A writes, renames and unlinks files it made; B sees it");
    for i in 0..50 {
        create_new(&da.join(format!("h{i:02}"))).unwrap();
    }
    fs::write(da.join("h00"), b"hello").unwrap();
    fs::rename(da.join("h01"), da.join("h01.r")).unwrap();
    fs::remove_file(da.join("h02")).unwrap();
    assert_eq!(fs::read(db.join("h00")).unwrap(), b"hello");
    assert!(db.join("h01.r").exists() && !db.join("h01").exists());
    assert!(!db.join("h02").exists());
    for i in 3..50 {
        assert!(db.join(format!("h{i:02}")).exists(), "h{i:02}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_synced_with_fsync_of_the_directory_outlive_the_mount() {
    if skip_without_fuse() {
        return;
    }
    let c = Cluster::start(1, &[]).await.unwrap();
    let mut a = Mount::start(&c, "a", &[]).unwrap();
    let d = a.path().join("d");
    fs::create_dir(&d).unwrap();
    let mut want = BTreeSet::new();
    for i in 0..200 {
        let name = format!("f{i:03}");
        create_new(&d.join(&name)).unwrap();
        want.insert(name);
    }
    File::open(&d).unwrap().sync_all().unwrap();
    step("A is killed right after fsync(d); a new mount finds every file");
    let pid = a.pid().expect("mount runs");
    // SAFETY: kill(2) of the mount process this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let _ = a.terminate(std::time::Duration::from_secs(5));
    let b = Mount::start(&c, "b", &[]).unwrap();
    assert_eq!(names(&b.path().join("d")), want);
}

fn current_umask() -> u32 {
    // SAFETY: umask(2) twice puts the mask back as it was.
    unsafe {
        let m = libc::umask(0o022);
        libc::umask(m);
        m
    }
}

fn renameat2(from: &Path, to: &Path, flags: u32) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let (f, t) = (c(from), c(to));
    // SAFETY: two NUL-terminated paths that live across the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removals_and_renames_answered_by_the_mount_are_seen_by_another_mount() {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::MetadataExt;
    let Some((c, a, b)) = two_mounts(true).await else {
        return;
    };
    let m = &c.masters[0];
    let (da, db) = (a.path().join("d"), b.path().join("d"));
    fs::create_dir(&da).unwrap();
    fs::create_dir(da.join("empty")).unwrap();

    step("B makes a file in d and keeps it open");
    let mut kept = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(db.join("kept"))
        .unwrap();
    kept.write_all(b"still here").unwrap();
    kept.sync_all().unwrap();

    step("A makes 200 files and a subdirectory with 3 (both delegated)");
    let mut want = BTreeSet::from(["kept".to_string(), "empty".to_string()]);
    for i in 0..200 {
        let name = format!("f{i:03}");
        create_new(&da.join(&name)).unwrap();
        want.insert(name);
    }
    fs::create_dir(da.join("sub")).unwrap();
    for i in 0..3 {
        create_new(&da.join("sub").join(format!("s{i}"))).unwrap();
    }
    want.insert("sub".into());
    fs::write(da.join("f000"), b"zero").unwrap();
    let (unlinks, renames, rmdirs, setattrs) = (
        rpc_count(m, "Unlink"),
        rpc_count(m, "Rename"),
        rpc_count(m, "Rmdir"),
        rpc_count(m, "SetAttr"),
    );

    step("A renames, replaces, unlinks and removes; errors as a local fs gives");
    for i in 100..200 {
        let (from, to) = (format!("f{i:03}"), format!("f{i:03}.r"));
        fs::rename(da.join(&from), da.join(&to)).unwrap();
        want.remove(&from);
        want.insert(to);
    }
    for i in 1..50 {
        let name = format!("f{i:03}");
        fs::remove_file(da.join(&name)).unwrap();
        want.remove(&name);
    }
    // The kernel writes the times of each back right after its unlink:
    // answered by the mount.
    let sent = rpc_count(m, "SetAttr") - setattrs;
    assert!(sent < 5, "A sent {sent} SetAttr calls for 49 unlinks");
    // A file renamed over another: the old one is gone, the data moves.
    fs::rename(da.join("f000"), da.join("f050")).unwrap();
    want.remove("f000");
    let err = |r: std::io::Result<()>| r.unwrap_err().raw_os_error();
    assert_eq!(err(fs::remove_file(da.join("f001"))), Some(libc::ENOENT));
    assert_eq!(
        err(fs::rename(da.join("f002"), da.join("x"))),
        Some(libc::ENOENT)
    );
    let noreplace = renameat2(&da.join("f051"), &da.join("f052"), libc::RENAME_NOREPLACE);
    assert_eq!(err(noreplace), Some(libc::EEXIST));
    assert_eq!(err(fs::remove_dir(da.join("sub"))), Some(libc::ENOTEMPTY));
    for i in 0..3 {
        fs::remove_file(da.join("sub").join(format!("s{i}"))).unwrap();
    }
    fs::remove_dir(da.join("sub")).unwrap();
    want.remove("sub");
    fs::remove_dir(da.join("empty")).unwrap();
    want.remove("empty");
    // B's open file, unlinked by A: B still reads it.
    fs::remove_file(da.join("kept")).unwrap();
    want.remove("kept");
    assert!(
        rpc_count(m, "Unlink") - unlinks < 5 && rpc_count(m, "Rename") - renames < 5,
        "A sent {} unlinks and {} renames itself",
        rpc_count(m, "Unlink") - unlinks,
        rpc_count(m, "Rename") - renames
    );
    // To the master: sub while not empty, and "empty" (not held); the
    // second rmdir of sub (held, empty) was answered here.
    assert_eq!(rpc_count(m, "Rmdir") - rmdirs, 2);

    step("A links a file of d into e, removes its name in d, lists e: one link");
    let e = a.path().join("e");
    fs::create_dir(&e).unwrap();
    fs::hard_link(da.join("f060"), e.join("l")).unwrap();
    fs::remove_file(da.join("f060")).unwrap();
    want.remove("f060");
    let links: Vec<u64> = fs::read_dir(&e)
        .unwrap()
        .map(|x| x.unwrap().metadata().unwrap().nlink())
        .collect();
    assert_eq!(links, [1], "links of e/l as the listing of e gives them");

    step("B lists d: exactly what A left (d is recalled from A first)");
    assert_eq!(names(&db), want);
    assert_eq!(fs::read(db.join("f050")).unwrap(), b"zero");
    assert!(fs::metadata(db.join("f150.r")).unwrap().is_file());
    let mut s = String::new();
    kept.rewind().unwrap();
    kept.read_to_string(&mut s).unwrap();
    assert_eq!(s, "still here");
    drop(kept);

    step("a new mount sees the same");
    let n = Mount::start(&c, "n", &[]).unwrap();
    assert_eq!(names(&n.path().join("d")), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mount_answers_stat_of_files_it_made_in_a_directory_it_holds() {
    use std::os::unix::fs::PermissionsExt;
    let Some((c, a, b)) = two_mounts(true).await else {
        return;
    };
    let m = &c.masters[0];
    let (da, db) = (a.path().join("d"), b.path().join("d"));
    fs::create_dir(&da).unwrap();
    for i in 0..100 {
        create_new(&da.join(format!("f{i:03}"))).unwrap();
    }
    // Every create is at the master now.
    File::open(&da).unwrap().sync_all().unwrap();

    step("stat on A after the creates went out: answered by A");
    let before = rpc_count(m, "GetAttr") + rpc_count(m, "Lookup");
    let on_a: Vec<fs::Metadata> = (0..100)
        .map(|i| fs::metadata(da.join(format!("f{i:03}"))).unwrap())
        .collect();
    let asked = rpc_count(m, "GetAttr") + rpc_count(m, "Lookup") - before;
    assert!(asked < 10, "A asked the master {asked} times for 100 stats");

    step("A changes one file: its stat is the master's again");
    fs::set_permissions(da.join("f005"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(da.join("f006"), b"six").unwrap();
    fs::rename(da.join("f007"), da.join("f007.r")).unwrap();
    let st = fs::metadata(da.join("f005")).unwrap();
    assert_eq!(st.mode() & 0o7777, 0o600);
    assert_eq!(fs::metadata(da.join("f006")).unwrap().len(), 3);

    step("B's stat of each file (a recall) agrees with what A answered");
    for (i, sa) in on_a.iter().enumerate() {
        if (5..=7).contains(&i) {
            continue;
        }
        let sb = fs::metadata(db.join(format!("f{i:03}"))).unwrap();
        let key = |s: &fs::Metadata| {
            let t = |s, n| (s, n);
            (
                s.ino(),
                s.mode(),
                (s.uid(), s.gid(), s.nlink(), s.len()),
                t(s.mtime(), s.mtime_nsec()),
                t(s.ctime(), s.ctime_nsec()),
            )
        };
        assert_eq!(key(sa), key(&sb), "f{i:03}");
    }
    assert_eq!(
        fs::metadata(db.join("f005")).unwrap().mode() & 0o7777,
        0o600
    );
    assert_eq!(fs::read(db.join("f006")).unwrap(), b"six");
    assert!(db.join("f007.r").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_made_chmodded_and_removed_on_one_mount_keeps_its_delegations() {
    use std::os::unix::fs::PermissionsExt;
    let Some((c, a, b)) = two_mounts(false).await else {
        return;
    };
    let m = &c.masters[0];
    let (da, db) = (a.path().join("t"), b.path().join("t"));
    fs::create_dir(&da).unwrap();

    step("A makes 5 directories of 20 files, then sets their modes as tar does");
    for d in 0..5 {
        let sub = da.join(format!("s{d}"));
        fs::create_dir(&sub).unwrap();
        for i in 0..20 {
            create_new(&sub.join(format!("f{i:02}"))).unwrap();
        }
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o750)).unwrap();
    }
    let creates = rpc_count(m, "Create");
    for d in 0..5 {
        create_new(&da.join(format!("s{d}/after"))).unwrap();
    }
    assert_eq!(
        rpc_count(m, "Create"),
        creates,
        "a chmod of a held directory gave it back"
    );

    step("SGID on a held directory gives it back: files then take its group");
    let s0 = da.join("s0");
    std::os::unix::fs::chown(&s0, None, Some(4321)).unwrap();
    fs::set_permissions(&s0, fs::Permissions::from_mode(0o2770)).unwrap();
    for i in 0..3 {
        let p = s0.join(format!("g{i}"));
        create_new(&p).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().gid(), 4321, "{}", p.display());
    }
    assert!(
        rpc_count(m, "Create") > creates,
        "SGID directory still held"
    );

    step("rm -rf on A: the removals are answered by A (but in s0)");
    fs::remove_dir_all(&s0).unwrap();
    let unlinks = rpc_count(m, "Unlink");
    fs::remove_dir_all(&da).unwrap();
    let sent = rpc_count(m, "Unlink") - unlinks;
    assert!(sent < 10, "A sent {sent} of 84 unlinks itself");
    assert!(!db.exists(), "B still sees the tree");
    assert!(names(b.path()).is_empty(), "{:?}", names(b.path()));

    step("another client marks a file undeletable: A's delegations are recalled");
    let u = a.path().join("u");
    fs::create_dir(&u).unwrap();
    for i in 0..5 {
        create_new(&u.join(format!("f{i}"))).unwrap();
    }
    let f = u.join("f3");
    let fp = f.display().to_string();
    let (code, _, err) = crate::tools::tool("mfsseteattr", &["-f", "undeletable", &fp]);
    assert_eq!(code, 0, "{err}");
    let e = fs::remove_file(&f).unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        Some(libc::EPERM),
        "unlink of an undeletable file"
    );
    let (code, _, err) = crate::tools::tool("mfsdeleattr", &["-f", "undeletable", &fp]);
    assert_eq!(code, 0, "{err}");
    fs::remove_file(&f).unwrap();
}

/// A directory made in one this mount holds is made here (queued as
/// MkdirAt, whose apply delegates it to the session): a tree made on one
/// mount costs no Mkdir, Delegate, Readdir, Create or WriteChunk per
/// directory; another mount sees every name, mode and byte, and a change
/// it makes in such a directory recalls it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_made_in_a_held_directory_are_held_at_once() {
    let Some((c, a, b)) = two_mounts(true).await else {
        return;
    };
    let m = &c.masters[0];
    let (ta, tb) = (a.path().join("t"), b.path().join("t"));
    fs::create_dir(&ta).unwrap();
    for i in 0..3 {
        fs::write(ta.join(format!("top{i}")), b"top").unwrap();
    }

    step("A makes 6 directories of 3 subdirectories of 4 files with data under t");
    let before = |name: &str| rpc_count(m, name);
    let (readdirs, creates, leases) = (before("Readdir"), before("Create"), before("WriteChunk"));
    let (mkdirs, delegates) = (before("Mkdir"), before("Delegate"));
    let body = |d: usize, e: usize, i: usize| format!("d{d} e{e} f{i} ").repeat(50 + i);
    for d in 0..6 {
        for e in 0..3 {
            let dir = ta.join(format!("d{d}/e{e}"));
            fs::create_dir_all(&dir).unwrap();
            for i in 0..4 {
                fs::write(dir.join(format!("f{i}")), body(d, e, i)).unwrap();
            }
        }
    }
    let grew = |name: &str, was: u64| rpc_count(m, name) - was;
    assert!(
        grew("Readdir", readdirs) < 3,
        "{} listings",
        grew("Readdir", readdirs)
    );
    assert!(
        grew("Create", creates) < 3,
        "{} creates",
        grew("Create", creates)
    );
    assert!(
        grew("WriteChunk", leases) < 5,
        "{} leases",
        grew("WriteChunk", leases)
    );
    for (method, was) in [("Mkdir", mkdirs), ("Delegate", delegates)] {
        assert!(
            grew(method, was) < 3,
            "{} {method} calls",
            grew(method, was)
        );
    }

    step("B sees every name, mode and byte");
    for d in 0..6 {
        let meta = fs::metadata(tb.join(format!("d{d}"))).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.nlink(), 5, "d{d}: its 3 subdirectories");
        for e in 0..3 {
            let dir = tb.join(format!("d{d}/e{e}"));
            let meta = fs::metadata(&dir).unwrap();
            assert_eq!(meta.mode() & 0o7777, 0o755, "{}", dir.display());
            assert_eq!(
                names(&dir),
                set(&["f0", "f1", "f2", "f3"]),
                "{}",
                dir.display()
            );
            for i in 0..4 {
                let got = fs::read(dir.join(format!("f{i}"))).unwrap();
                assert!(got == body(d, e, i).into_bytes(), "d{d}/e{e}/f{i} differs");
            }
        }
    }

    step("B makes a file in one of them (recalled from A), A then adds more");
    fs::write(tb.join("d2/e1/from-b"), b"b").unwrap();
    for i in 0..3 {
        fs::write(ta.join(format!("d2/e1/after{i}")), b"a").unwrap();
    }
    assert_eq!(fs::read(ta.join("d2/e1/from-b")).unwrap(), b"b");
    let all = [
        "after0", "after1", "after2", "f0", "f1", "f2", "f3", "from-b",
    ];
    assert_eq!(names(&tb.join("d2/e1")), set(&all));

    step("A lists a directory it holds twice in a row: the second from the first");
    let e0 = ta.join("r");
    fs::create_dir(&e0).unwrap();
    for i in 0..4 {
        fs::write(e0.join(format!("f{i}")), b"r").unwrap();
    }
    for i in 0..4 {
        File::open(e0.join(format!("f{i}")))
            .unwrap()
            .sync_all()
            .unwrap();
    }
    let four = set(&["f0", "f1", "f2", "f3"]);
    assert_eq!(names(&e0), four);
    let (readdirs, listed) = (rpc_count(m, "Readdir"), std::time::Instant::now());
    assert_eq!(names(&e0), four);
    // (Served again only within the attribute time, 1 s.)
    if listed.elapsed() < std::time::Duration::from_millis(500) {
        assert_eq!(rpc_count(m, "Readdir"), readdirs, "listed again");
    }

    step("after A's change there, and then B's, A lists what is there");
    fs::write(e0.join("g"), b"a").unwrap();
    assert_eq!(names(&e0), set(&["f0", "f1", "f2", "f3", "g"]));
    fs::write(tb.join("r/h"), b"b").unwrap();
    assert_eq!(names(&e0), set(&["f0", "f1", "f2", "f3", "g", "h"]));
    assert_eq!(fs::metadata(e0.join("h")).unwrap().len(), 1);

    step("a directory A just made (not sent yet: A is stopped) is mounted as a subfolder");
    // z: made by A, with files (a stream of creates: held by A).
    let z = ta.join("z");
    fs::create_dir(&z).unwrap();
    for i in 0..4 {
        fs::write(z.join(format!("f{i}")), b"z").unwrap();
    }
    File::open(&z).unwrap().sync_all().unwrap();
    let leader = c
        .wait_leader(std::time::Duration::from_secs(30))
        .await
        .unwrap();
    let recalls = || metric(c.master(leader).unwrap(), "mfs_recalls_total");
    let recalled = recalls();
    fs::create_dir(z.join("new")).unwrap();
    let pid = a.pid().expect("mount A runs") as i32;
    // SAFETY: kill(2) of the mount process this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let sub = {
        let c = &c;
        std::thread::scope(|s| {
            let sub = s.spawn(|| Mount::start(c, "sub", &["-S", "/t/z/new"]));
            // Its registration waits for A to give t/z back.
            std::thread::sleep(std::time::Duration::from_millis(500));
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGCONT) };
            sub.join().unwrap()
        })
    };
    let sub = sub.unwrap_or_else(|e| panic!("the subfolder mount of t/z/new: {e:#}"));
    assert!(recalls() > recalled, "t/z was not held by A");
    fs::write(sub.path().join("x"), b"x").unwrap();
    assert_eq!(fs::read(z.join("new/x")).unwrap(), b"x");
}

/// Creates, renames and unlinks answered by the mount while the leader is
/// killed twice: no call fails, and the directory ends as the calls said
/// (each queued op applied exactly once, in order, by whichever master
/// led when its batch came).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_back_queue_survives_leader_kills() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    if skip_without_fuse() {
        return;
    }
    let mut c = Cluster::start(3, &[]).await.unwrap();
    c.add_chunkservers(1, 1).await.unwrap();
    let a = Mount::start(&c, "a", &[]).unwrap();
    let dir = a.path().join("d");
    fs::create_dir(&dir).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (dir, stop) = (dir.clone(), stop.clone());
        type Made = (BTreeSet<String>, Vec<(String, Vec<u8>)>, Vec<(String, u32)>);
        std::thread::spawn(move || -> Result<Made, String> {
            use std::os::unix::fs::PermissionsExt;
            let mut want = BTreeSet::new();
            // Files written (every fourth): their data.
            let mut written = Vec::new();
            // Directories made and chmodded (their mode queued too).
            let mut modes = Vec::new();
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let (f, r) = (format!("f{i}"), format!("r{i}"));
                create_new(&dir.join(&f)).map_err(|e| format!("create {f}: {e}"))?;
                match i % 4 {
                    0 => {
                        fs::rename(dir.join(&f), dir.join(&r))
                            .map_err(|e| format!("rename {f}: {e}"))?;
                        want.insert(r);
                    }
                    1 => fs::remove_file(dir.join(&f)).map_err(|e| format!("unlink {f}: {e}"))?,
                    3 => {
                        let data = format!("data of {f} ").repeat(50 + i % 300).into_bytes();
                        fs::write(dir.join(&f), &data).map_err(|e| format!("write {f}: {e}"))?;
                        written.push((f.clone(), data));
                        want.insert(f);
                    }
                    2 if i % 8 == 2 => {
                        let sub = format!("s{i}");
                        let mode = 0o700 | ((i / 8 % 8) as u32) << 3;
                        fs::create_dir(dir.join(&sub)).map_err(|e| format!("mkdir {sub}: {e}"))?;
                        fs::set_permissions(dir.join(&sub), fs::Permissions::from_mode(mode))
                            .map_err(|e| format!("chmod {sub}: {e}"))?;
                        modes.push((sub.clone(), mode));
                        want.extend([f, sub]);
                    }
                    _ => {
                        want.insert(f);
                    }
                }
                i += 1;
            }
            Ok((want, written, modes))
        })
    };
    for k in 0..2 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let leader = c.wait_leader(Duration::from_secs(30)).await.unwrap();
        step(&format!(
            "kill {}: SIGKILL of the leader, master {leader}",
            k + 1
        ));
        c.kill(leader).unwrap();
        c.wait_leader(Duration::from_secs(30)).await.unwrap();
        c.restart(leader).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let (want, written, modes) = worker.join().unwrap().unwrap_or_else(|e| panic!("{e}"));
    let leader = c.wait_leader(Duration::from_secs(30)).await.unwrap();
    let m = c.masters.iter().find(|m| m.id == leader).unwrap();
    assert!(
        metric(m, "mfs_writeback_ops_total") > 0,
        "the last leader took no batch: the test did not exercise the queue"
    );
    step(&format!("{} names expected", want.len()));
    assert_eq!(names(&dir), want);
    let b = Mount::start(&c, "b", &[]).unwrap();
    assert_eq!(names(&b.path().join("d")), want);
    step(&format!(
        "{} files written: every byte on another mount",
        written.len()
    ));
    for (f, data) in &written {
        let p = b.path().join("d").join(f);
        assert_eq!(&fs::read(&p).unwrap(), data, "{}", p.display());
    }
    step(&format!(
        "{} directories chmodded: each mode on another mount",
        modes.len()
    ));
    for (sub, mode) in &modes {
        let p = b.path().join("d").join(sub);
        assert_eq!(
            fs::metadata(&p).unwrap().mode() & 0o7777,
            *mode,
            "{}",
            p.display()
        );
    }
}

fn drop_dentries() {
    let _ = fs::write("/proc/sys/vm/drop_caches", "2\n");
}

/// A's kernel keeps the names it looked up in a directory A holds for
/// long (a long entry time); they are dropped from it before the master
/// hands the directory to another client, and when a rename takes one to
/// a directory A does not hold: A never sees a name that is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_kept_long_in_a_held_directory_go_with_the_directory() {
    let Some((c, a, b)) = two_mounts(false).await else {
        return;
    };
    let m = &c.masters[0];
    let (da, db) = (a.path().join("d"), b.path().join("d"));
    fs::create_dir(&da).unwrap();
    fs::create_dir(b.path().join("e")).unwrap();

    step("A makes 20 files in d (it holds d) and looks them up anew");
    for i in 0..20 {
        create_new(&da.join(format!("f{i:02}"))).unwrap();
    }
    assert!(rpc_count(m, "Delegate") >= 1, "A never asked for d");
    drop_dentries();
    let ino = |p: &Path| fs::metadata(p).map(|s| s.ino());
    let inos: Vec<u64> = (0..20)
        .map(|i| ino(&da.join(format!("f{i:02}"))).unwrap())
        .collect();

    step("A renames f05 into e, which it does not hold; B removes it there");
    fs::rename(da.join("f05"), a.path().join("e/f05")).unwrap();
    assert_eq!(ino(&a.path().join("e/f05")).unwrap(), inos[5]);
    fs::remove_file(b.path().join("e/f05")).unwrap();
    // Past the usual entry time (1 s): A's kernel asks again.
    std::thread::sleep(std::time::Duration::from_millis(1300));
    let e = ino(&a.path().join("e/f05")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "e/f05 still seen on A");

    step("B unlinks f03 and renames f04 to g04 in d (recalled from A)");
    fs::remove_file(db.join("f03")).unwrap();
    fs::rename(db.join("f04"), db.join("g04")).unwrap();
    assert!(metric(m, "mfs_recalls_total") >= 1, "no recall");
    // At once: A gave d back only after its kernel dropped the names.
    let e = ino(&da.join("f03")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "f03 still seen on A");
    let e = ino(&da.join("f04")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "f04 still seen on A");
    assert_eq!(ino(&da.join("g04")).unwrap(), inos[4]);
    for i in (0..20).filter(|i| ![3, 4, 5].contains(i)) {
        assert_eq!(ino(&da.join(format!("f{i:02}"))).unwrap(), inos[i]);
    }
    let mut want: BTreeSet<String> = (0..20)
        .filter(|i| ![3, 4, 5].contains(i))
        .map(|i| format!("f{i:02}"))
        .collect();
    want.insert("g04".into());
    assert_eq!(names(&da), want);
    assert_eq!(names(&db), want);
}
