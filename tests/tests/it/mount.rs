//! The FUSE mount: real `mfsmount -f` processes on real masters, driven
//! through the kernel with plain system calls.
//!
//! Needs root and /dev/fuse; without them each test says so and passes.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mfs_tests::cluster::Cluster;
use mfs_tests::mountpoint::{fuse_available, is_fuse_mounted, Mount};

use crate::util::step;

fn skip_without_fuse() -> bool {
    if fuse_available() {
        return false;
    }
    eprintln!("skipped: mounting needs root and /dev/fuse");
    true
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

/// The errno of the last failed libc call.
fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Ok, or the errno.
type Res = Result<(), i32>;

fn rc(r: i32) -> Res {
    if r == 0 {
        Ok(())
    } else {
        Err(last_errno())
    }
}

fn io_res<T>(r: std::io::Result<T>) -> Res {
    r.map(|_| ()).map_err(|e| e.raw_os_error().unwrap_or(-1))
}

// ---- the operations, as system calls on a path ----

fn mkdir(p: &Path, mode: u32) -> Res {
    // SAFETY: valid C string.
    rc(unsafe { libc::mkdir(cpath(p).as_ptr(), mode) })
}

fn create_excl(p: &Path, mode: u32) -> Res {
    // SAFETY: valid C string; the descriptor is closed right away.
    let fd = unsafe {
        libc::open(
            cpath(p).as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
            mode,
        )
    };
    if fd < 0 {
        return Err(last_errno());
    }
    // SAFETY: fd is ours.
    rc(unsafe { libc::close(fd) })
}

fn rename2(a: &Path, b: &Path, flags: u32) -> Res {
    // SAFETY: valid C strings; renameat2 through syscall(2).
    rc(unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            cpath(a).as_ptr(),
            libc::AT_FDCWD,
            cpath(b).as_ptr(),
            flags,
        ) as i32
    })
}

fn setxattr(p: &Path, name: &str, value: &[u8], flags: i32) -> Res {
    let n = CString::new(name).unwrap_or_default();
    // SAFETY: valid C strings and buffer.
    rc(unsafe {
        libc::lsetxattr(
            cpath(p).as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
}

fn removexattr(p: &Path, name: &str) -> Res {
    let n = CString::new(name).unwrap_or_default();
    // SAFETY: valid C strings.
    rc(unsafe { libc::lremovexattr(cpath(p).as_ptr(), n.as_ptr()) })
}

fn mkfifo(p: &Path, mode: u32) -> Res {
    // SAFETY: valid C string.
    rc(unsafe { libc::mkfifo(cpath(p).as_ptr(), mode) })
}

/// The user.* extended attributes of `p` (not following symlinks).
fn xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let c = cpath(p);
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: buffer of the given length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return out;
    }
    for name in buf[..n as usize].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name_s = String::from_utf8_lossy(name).into_owned();
        if !name_s.starts_with("user.") {
            continue;
        }
        let cn = CString::new(name).unwrap_or_default();
        let mut val = vec![0u8; 64 * 1024];
        // SAFETY: buffer of the given length.
        let m = unsafe {
            libc::lgetxattr(c.as_ptr(), cn.as_ptr(), val.as_mut_ptr().cast(), val.len())
        };
        val.truncate(m.max(0) as usize);
        out.insert(name_s, val);
    }
    out
}

/// What the model compares of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    kind: char,
    mode: u32,
    /// Regular files and symlinks only (a directory's size is the file
    /// system's business).
    size: Option<u64>,
    nlink: u64,
    target: Option<PathBuf>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

/// Every node under `root`, by relative path.
fn tree(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let r = rel.join(e.file_name());
            let p = root.join(&r);
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let ft = m.file_type();
            let kind = if ft.is_dir() {
                'd'
            } else if ft.is_symlink() {
                'l'
            } else if ft.is_file() {
                'f'
            } else {
                'p'
            };
            if ft.is_dir() {
                stack.push(r.clone());
            }
            out.insert(
                r.to_string_lossy().into_owned(),
                Node {
                    kind,
                    mode: m.mode() & 0o7777,
                    size: (kind == 'f' || kind == 'l').then_some(m.size()),
                    nlink: m.nlink(),
                    target: ft.is_symlink().then(|| std::fs::read_link(&p).unwrap_or_default()),
                    xattrs: if kind == 'f' || kind == 'd' {
                        xattrs(&p)
                    } else {
                        BTreeMap::new()
                    },
                },
            );
        }
    }
    out
}

/// A small deterministic generator (xorshift64*), seeded per run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

const NAMES: &[&str] = &["a", "b", "c"];

/// A path: an existing one (from the local tree) most of the time, else a
/// random one of depth 1 to 3.
fn some_path(rng: &mut Rng, existing: &[String]) -> String {
    if !existing.is_empty() && rng.below(10) < 6 {
        let base = rng.pick(existing).clone();
        if rng.below(3) == 0 {
            return format!("{base}/{}", rng.pick(NAMES));
        }
        return base;
    }
    let depth = 1 + rng.below(3);
    (0..depth)
        .map(|_| *rng.pick(NAMES))
        .collect::<Vec<_>>()
        .join("/")
}

/// One random operation, applied to a root; returns its description and
/// its outcome.
fn apply(op: &Op, root: &Path) -> Res {
    let p = |s: &str| root.join(s);
    match op {
        Op::Mkdir(a, m) => mkdir(&p(a), *m),
        Op::Create(a, m) => create_excl(&p(a), *m),
        Op::Rename(a, b, f) => rename2(&p(a), &p(b), *f),
        Op::Link(a, b) => io_res(std::fs::hard_link(p(a), p(b))),
        Op::Unlink(a) => io_res(std::fs::remove_file(p(a))),
        Op::Rmdir(a) => io_res(std::fs::remove_dir(p(a))),
        Op::Chmod(a, m) => io_res(std::fs::set_permissions(
            p(a),
            std::fs::Permissions::from_mode(*m),
        )),
        Op::Symlink(t, b) => io_res(std::os::unix::fs::symlink(t, p(b))),
        Op::SetXattr(a, n, v, f) => setxattr(&p(a), n, v, *f),
        Op::RemoveXattr(a, n) => removexattr(&p(a), n),
        Op::Mkfifo(a, m) => mkfifo(&p(a), *m),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Mkdir(String, u32),
    Create(String, u32),
    Rename(String, String, u32),
    Link(String, String),
    Unlink(String),
    Rmdir(String),
    Chmod(String, u32),
    Symlink(String, String),
    SetXattr(String, String, Vec<u8>, i32),
    RemoveXattr(String, String),
    Mkfifo(String, u32),
}

fn random_op(rng: &mut Rng, local: &BTreeMap<String, Node>) -> Op {
    let existing: Vec<String> = local.keys().cloned().collect();
    let a = some_path(rng, &existing);
    let b = some_path(rng, &existing);
    let modes = [0o755, 0o700, 0o644, 0o600, 0o1777, 0o2755, 0o4755];
    let mode = *rng.pick(&modes);
    // xattrs only on files and directories (Linux refuses user.* on the
    // rest with EPERM, a detail outside this model).
    let xattr_ok = local.get(&a).is_some_and(|n| n.kind == 'f' || n.kind == 'd');
    let xname = format!("user.k{}", rng.below(2));
    match rng.below(12) {
        0 | 1 => Op::Mkdir(a, mode),
        2 | 3 => Op::Create(a, mode),
        4 => {
            let flags = *rng.pick(&[0, 0, libc::RENAME_NOREPLACE, libc::RENAME_EXCHANGE]);
            Op::Rename(a, b, flags)
        }
        5 => Op::Link(a, b),
        6 => Op::Unlink(a),
        7 => Op::Rmdir(a),
        8 => Op::Chmod(a, mode),
        9 => Op::Symlink(rng.pick(&["a", "../b", "c/d", "/x"]).to_string(), b),
        10 if xattr_ok => {
            let v = format!("v{}", rng.below(100)).into_bytes();
            let f = *rng.pick(&[0, libc::XATTR_CREATE, libc::XATTR_REPLACE]);
            Op::SetXattr(a, xname, v, f)
        }
        11 if xattr_ok => Op::RemoveXattr(a, xname),
        _ => Op::Mkfifo(a, mode),
    }
}

fn describe_diff(m: &BTreeMap<String, Node>, l: &BTreeMap<String, Node>) -> String {
    let mut out = String::new();
    for (k, v) in l {
        match m.get(k) {
            None => out.push_str(&format!("  missing on the mount: {k} {v:?}\n")),
            Some(mv) if mv != v => {
                out.push_str(&format!("  {k}: mount {mv:?}\n  {k}: local {v:?}\n"))
            }
            _ => {}
        }
    }
    for k in m.keys().filter(|k| !l.contains_key(*k)) {
        out.push_str(&format!("  only on the mount: {k} {:?}\n", m[k]));
    }
    out
}

/// Random metadata operations (mkdir, create, rename with flags, link,
/// unlink, rmdir, chmod, symlink, mkfifo, xattrs) run on the mount and on a
/// local directory give the same errno each time and the same tree (names,
/// types, modes, sizes, link counts, targets, xattrs) after every step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_metadata_ops_match_local_fs() {
    if skip_without_fuse() {
        return;
    }
    let steps: usize = std::env::var("MFS_MODEL_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let seed: u64 = std::env::var("MFS_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    step(&format!("start 1 master and a mount; {steps} steps, MFS_MODEL_SEED={seed}"));
    let c = Cluster::start(1, &[]).await.unwrap();
    // Entries cached by the kernel for 1 s (every change goes through this
    // mount, so the kernel's own invalidation must keep them right); the
    // walk after each step then costs readdirs and xattr calls only.
    let m = Mount::start(&c, "mnt", &["-o", "mfsentrycacheto=1"]).unwrap();
    let local = c.root().join("local");
    std::fs::create_dir_all(&local).unwrap();
    let mut rng = Rng(seed);
    let mut local_tree = tree(&local);
    let t = Instant::now();
    for i in 0..steps {
        let op = random_op(&mut rng, &local_tree);
        let got = apply(&op, m.path());
        let want = apply(&op, &local);
        assert_eq!(
            got, want,
            "step {i} (seed {seed}): {op:?}: errno on the mount vs local"
        );
        local_tree = tree(&local);
        let mount_tree = tree(m.path());
        assert!(
            mount_tree == local_tree,
            "step {i} (seed {seed}): after {op:?} the trees differ:\n{}",
            describe_diff(&mount_tree, &local_tree)
        );
    }
    eprintln!(
        "{steps} steps in {:.1?}; final tree has {} nodes",
        t.elapsed(),
        local_tree.len()
    );
}

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
    assert_eq!(errno_of(std::fs::create_dir(r.join(&long))), libc::ENAMETOOLONG);
    assert_eq!(errno_of(std::fs::File::create(r.join(&long))), libc::ENAMETOOLONG);
    assert_eq!(errno_of(std::fs::metadata(r.join(&long))), libc::ENAMETOOLONG);

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
    assert_eq!(rename2(&r.join("d"), &r.join("d/sub/x"), 0), Err(libc::EINVAL));
    assert_eq!(
        rename2(&r.join("f"), &r.join("d"), libc::RENAME_NOREPLACE),
        Err(libc::EEXIST)
    );
    assert_eq!(rename2(&r.join("f"), &r.join("d"), 0), Err(libc::EISDIR));
    assert_eq!(rename2(&r.join("f"), &r.join("d"), libc::RENAME_EXCHANGE), Ok(()));
    assert!(r.join("f/sub").is_dir() && r.join("d").is_file());
    assert_eq!(
        rename2(&r.join("d"), &r.join("nothing"), libc::RENAME_EXCHANGE),
        Err(libc::ENOENT)
    );

    step("link to a directory is EPERM; symlink loops are ELOOP");
    assert_eq!(errno_of(std::fs::hard_link(r.join("f"), r.join("g"))), libc::EPERM);
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
    assert_eq!(xattrs(&r.join("d")).get("user.a").map(Vec::as_slice), Some(&b"1"[..]));
}

/// Two mounts of one cluster see each other's changes (names at once,
/// attributes after the attribute cache time).
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
    std::fs::set_permissions(a.path().join("dir/file"), std::fs::Permissions::from_mode(0o600))
        .unwrap();
    let mode = std::fs::metadata(b.path().join("dir/file")).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o600);

    step("rename and unlink on B show on A");
    std::fs::rename(b.path().join("dir/file"), b.path().join("moved")).unwrap();
    assert!(a.path().join("moved").is_file());
    assert!(!a.path().join("dir/file").exists());
    std::fs::remove_file(b.path().join("moved")).unwrap();
    assert!(!a.path().join("moved").exists());

    step("a subfolder mount shows only that subtree");
    std::fs::create_dir_all(a.path().join("sub/inner")).unwrap();
    let s = Mount::start(&c, "s", &["-S", "/sub"]).unwrap();
    assert!(s.path().join("inner").is_dir());
    assert!(!s.path().join("sub").exists());
    std::fs::create_dir(s.path().join("from-s")).unwrap();
    assert!(a.path().join("sub/from-s").is_dir());
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
    f.set_permissions(std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::remove_file(&p).unwrap();
    let names: Vec<_> = std::fs::read_dir(m.path()).unwrap().flatten().collect();
    assert!(names.is_empty(), "left behind: {names:?}");
    let meta = f.metadata().unwrap();
    assert_eq!(meta.nlink(), 0);
    assert_eq!(meta.mode() & 0o7777, 0o640);
    f.set_permissions(std::fs::Permissions::from_mode(0o600)).unwrap();
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
    assert!(!m.path().join("x").exists(), "the mount point still shows the file system");

    step("umount");
    let mut m2 = Mount::start(&c, "mnt2", &[]).unwrap();
    assert!(m2.path().join("x").is_dir());
    let out = std::process::Command::new("umount").arg(m2.path()).status().unwrap();
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
