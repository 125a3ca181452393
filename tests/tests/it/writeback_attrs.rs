//! Changes of a held directory's attributes: tar sets the mtime, owner
//! and mode of every directory it makes, and the mount holding one answers
//! those itself (queued for the master with its own time as the ctime),
//! when it can foresee the outcome. Another mount sees exactly what it
//! answered.
//!
//! Needs root and /dev/fuse; without them each test says so and passes.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use mfs_tests::cluster::Cluster;
use mfs_tests::mountpoint::Mount;

use crate::util::{as_user, rpc_count, skip_without_fuse, step};
use crate::writeback::{create_new, two_mounts};

/// utimensat(2) of `p`: atime left as it is, mtime `mtime` (seconds, or
/// the time now with `None`).
fn set_mtime(p: &Path, mtime: Option<i64>) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let omit = libc::timespec {
        tv_sec: 0,
        tv_nsec: libc::UTIME_OMIT,
    };
    let m = match mtime {
        Some(s) => libc::timespec {
            tv_sec: s,
            tv_nsec: 250_000_000,
        },
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
    };
    let times = [omit, m];
    // SAFETY: a valid C string and two timespecs.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
    assert_eq!(
        r,
        0,
        "utimensat {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

/// What both mounts must agree on.
fn seen(p: &Path) -> (u32, u32, u32, u64, (i64, i64), (i64, i64)) {
    let m = fs::metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
    (
        m.mode(),
        m.uid(),
        m.gid(),
        m.nlink(),
        (m.mtime(), m.mtime_nsec()),
        (m.ctime(), m.ctime_nsec()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_of_a_held_directorys_attributes_are_answered_by_its_mount() {
    if skip_without_fuse() {
        return;
    }
    let c = Cluster::start(1, &[]).await.unwrap();
    // A's kernel keeps what A answered (its stats below show it).
    let a = Mount::start(
        &c,
        "a",
        &["-o", "allow_other,mfsattrcacheto=60,mfsentrycacheto=60"],
    )
    .unwrap();
    let b = Mount::start(&c, "b", &[]).unwrap();
    let m = &c.masters[0];
    let (ta, tb) = (a.path().join("t"), b.path().join("t"));
    fs::create_dir(&ta).unwrap();

    step("A makes files in t, then t/s0..s3 with files (it holds them), and s3/x");
    for i in 0..10 {
        create_new(&ta.join(format!("f{i}"))).unwrap();
    }
    let subs: Vec<String> = (0..4).map(|d| format!("s{d}")).collect();
    for s in &subs {
        fs::create_dir(ta.join(s)).unwrap();
        for i in 0..5 {
            create_new(&ta.join(format!("{s}/f{i}"))).unwrap();
        }
    }
    fs::create_dir(ta.join("s3/x")).unwrap();

    step("A sets each one's mtime, owner and mode as tar does: no SetAttr sent");
    let sent = rpc_count(m, "SetAttr");
    let modes = [0o750, 0o705, 0o1777, 0o711];
    for (d, s) in subs.iter().enumerate() {
        let p = ta.join(s);
        set_mtime(&p, Some(1_700_000_000 + d as i64));
        std::os::unix::fs::chown(&p, Some(0), Some(0)).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(modes[d])).unwrap();
    }
    // t's own mtime is that of the last directory made in it, here.
    fs::set_permissions(&ta, fs::Permissions::from_mode(0o755)).unwrap();
    step("A touches s0, root gives s1 to 1000, who changes its mode");
    set_mtime(&ta.join("s0"), None);
    std::os::unix::fs::chown(ta.join("s1"), Some(1000), Some(1000)).unwrap();
    assert!(as_user(1000, &ta, "chmod 700 s1"), "the owner's chmod");
    assert_eq!(
        rpc_count(m, "SetAttr"),
        sent,
        "a change of a held directory went to the master"
    );

    step("lookups and listings in s1 (0700, owner 1000) go only to those who may");
    // (A name the kernel never saw: its lookup reaches A.)
    let denied = |what: &str| {
        let script = format!("{what} 2>&1 | grep -q 'Permission denied'");
        as_user(2000, &ta, &script)
    };
    assert!(denied("stat s1/nope"), "2000 looked up a name in s1");
    assert!(denied("ls s1"), "2000 listed s1");
    assert!(
        as_user(1000, &ta, "ls s1 >/dev/null"),
        "the owner's listing of s1"
    );

    step("A lists s1..s3 and t, then stats them: A answers the kernel's GetAttr");
    let asked = rpc_count(m, "GetAttr");
    for s in ["s1", "s2", "s3", ""] {
        let p = ta.join(s);
        // Reading a directory makes the kernel ask for its atime again.
        assert!(fs::read_dir(&p).unwrap().count() > 0);
        seen(&p);
    }
    assert_eq!(
        rpc_count(m, "GetAttr"),
        asked,
        "a held directory's attributes were asked from the master"
    );

    step("another user's chmod goes to the master, which refuses it");
    assert!(!as_user(2000, &ta, "chmod 777 s2"), "a non-owner's chmod");
    let sent = rpc_count(m, "SetAttr");
    assert!(sent >= 1, "the refused chmod was answered by A");

    step("after an unlink in s0 (the master's time) a chmod there goes to the master");
    fs::remove_file(ta.join("s0/f0")).unwrap();
    fs::set_permissions(ta.join("s0"), fs::Permissions::from_mode(0o770)).unwrap();
    assert_eq!(rpc_count(m, "SetAttr"), sent + 1);

    step("A renames s2 to s2r (the master's time is its ctime then)");
    fs::rename(ta.join("s2"), ta.join("s2r")).unwrap();

    step("what A answers is what B sees (the master recalls the directories)");
    let names = ["s0", "s1", "s2r", "s3", ""];
    let on_a: Vec<_> = names
        .iter()
        .map(|s| {
            // Read first: the kernel asks A for the attributes then.
            let p = ta.join(s);
            fs::read_dir(&p).unwrap().for_each(drop);
            seen(&p)
        })
        .collect();
    let on_b: Vec<_> = names.iter().map(|s| seen(&tb.join(s))).collect();
    assert_eq!(on_a, on_b, "A and B disagree ({names:?})");
    let dir = libc::S_IFDIR;
    assert_eq!(on_b[0].0, dir | 0o770);
    assert_eq!((on_b[1].0, on_b[1].1, on_b[1].2), (dir | 0o700, 1000, 1000));
    assert_eq!(on_b[2].0, dir | 0o1777);
    assert_eq!(on_b[3].0, dir | 0o711);
    assert_eq!(on_b[4].0, dir | 0o755);
    for (d, s) in on_b.iter().enumerate().skip(1).take(3) {
        assert_eq!(s.4, (1_700_000_000 + d as i64, 250_000_000), "s{d} mtime");
    }
    assert_eq!((on_b[3].3, on_b[4].3), (3, 6), "nlink of s3 and t");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - on_b[0].4 .0).abs() < 60, "s0 touched now");
}

/// A file tar makes in a held directory: written, then its mode and times
/// set while open (kept for the length commit), then closed. The commit
/// takes the mount's time, so the mount still knows the file's attributes
/// after it: a stat of it, even after the kernel forgot it, and a listing
/// of its directory (with every entry's attributes) ask nothing of the
/// master, and another mount sees the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_made_as_tar_makes_them_keep_their_attributes_on_the_mount() {
    use std::io::Write;
    let Some((c, a, b)) = two_mounts(true).await else {
        return;
    };
    let m = &c.masters[0];
    let (da, db) = (a.path().join("d"), b.path().join("d"));
    fs::create_dir(&da).unwrap();
    for i in 0..5 {
        create_new(&da.join(format!("w{i}"))).unwrap();
    }
    // Made in a held directory: held at once, everything in it made here.
    let (ta, tb) = (da.join("t"), db.join("t"));
    fs::create_dir(&ta).unwrap();

    step("A makes 10 files in d/t: write, fchmod, chown to itself, utime, close");
    for i in 0..10u32 {
        let p = ta.join(format!("f{i}"));
        let mut f = create_new(&p).unwrap();
        f.write_all(&vec![b'x'; 1000 + i as usize]).unwrap();
        f.set_permissions(fs::Permissions::from_mode(0o600 | (i % 8) << 3))
            .unwrap();
        std::os::unix::fs::fchown(&f, Some(0), Some(0)).unwrap();
        set_mtime(&p, Some(1_600_000_000 + i64::from(i)));
        drop(f);
    }
    fs::create_dir(ta.join("sub")).unwrap();

    step("the kernel forgets them: A answers their stat and t's listing itself");
    let _ = fs::write("/proc/sys/vm/drop_caches", "2\n");
    // (d itself is looked up in the root, which A does not hold.)
    fs::metadata(&da).unwrap();
    let calls = || ["Lookup", "GetAttr", "Readdir"].map(|k| rpc_count(m, k));
    let asked = calls();
    let full = |p: &Path| {
        let s = fs::metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
        (seen(p), s.size(), (s.atime(), s.atime_nsec()))
    };
    let on_a: Vec<_> = (0..10).map(|i| full(&ta.join(format!("f{i}")))).collect();
    let listed = |dir: &Path| {
        let mut l: Vec<(String, u64, u32)> = fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let s = e.metadata().unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    s.size(),
                    s.mode(),
                )
            })
            .collect();
        l.sort();
        l
    };
    let list_a = listed(&ta);
    // (Another test's drop_caches meanwhile makes the kernel look d and t
    // up again: d is in the root, which A does not hold.)
    let [lookups, getattrs, readdirs] = calls();
    assert!(
        lookups <= asked[0] + 2 && [getattrs, readdirs] == [asked[1], asked[2]],
        "A asked the master: {asked:?} calls (Lookup, GetAttr, Readdir) before, {:?} after",
        [lookups, getattrs, readdirs]
    );
    assert_eq!(list_a.len(), 11);

    step("B sees what A answered (the master recalls d and t)");
    let on_b: Vec<_> = (0..10).map(|i| full(&tb.join(format!("f{i}")))).collect();
    assert_eq!(on_a, on_b);
    assert_eq!(list_a, listed(&tb));
    for (i, (s, size, _)) in on_b.iter().enumerate() {
        let i = i as u32;
        assert_eq!(s.0, libc::S_IFREG | 0o600 | (i % 8) << 3, "f{i} mode");
        assert_eq!(*size, 1000 + u64::from(i), "f{i} size");
        assert_eq!(
            s.4,
            (1_600_000_000 + i64::from(i), 250_000_000),
            "f{i} mtime"
        );
    }
}
