//! File locks kept by the master: flock and fcntl locks taken through one
//! mount are seen by another mount (another session), and the locks of a
//! mount that dies go when its session expires.
//!
//! Needs root and /dev/fuse; without them each test says so and passes.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mfs_tests::cluster::Cluster;
use mfs_tests::mountpoint::Mount;

use crate::util::{open_rw, skip_without_fuse, step};

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

/// flock(2): 0 or the errno.
fn flock(f: &File, op: i32) -> i32 {
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
        0
    } else {
        errno()
    }
}

fn lock_struct(typ: i32, start: i64, len: i64) -> libc::flock {
    // SAFETY: a plain C struct, all zeroes is valid.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = typ as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_start = start;
    fl.l_len = len;
    fl
}

/// fcntl(cmd) with a lock of `typ` on `len` bytes at `start`: 0 or the errno.
pub(crate) fn fcntl_lock(f: &File, cmd: i32, typ: i32, start: i64, len: i64) -> i32 {
    let mut fl = lock_struct(typ, start, len);
    // SAFETY: fcntl with a valid struct flock on a descriptor we own.
    if unsafe { libc::fcntl(f.as_raw_fd(), cmd, &mut fl) } == 0 {
        0
    } else {
        errno()
    }
}

/// F_GETLK for a lock of `typ` on `len` bytes at `start`.
fn getlk(f: &File, typ: i32, start: i64, len: i64) -> libc::flock {
    let mut fl = lock_struct(typ, start, len);
    // SAFETY: fcntl F_GETLK with a valid struct flock on a descriptor we own.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLK, &mut fl) };
    assert_eq!(r, 0, "F_GETLK failed: errno {}", errno());
    fl
}

/// Two mounts of one new cluster, and a file both see.
async fn two_mounts(env: &[(&str, &str)]) -> (Cluster, Mount, Mount) {
    let c = Cluster::start(1, env).await.unwrap();
    let a = Mount::start(&c, "a", &[]).unwrap();
    let b = Mount::start(&c, "b", &[]).unwrap();
    (c, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flock_between_two_mounts() {
    if skip_without_fuse() {
        return;
    }
    let (_c, a, b) = two_mounts(&[]).await;
    let fa = open_rw(&a.path().join("f"));
    let fb = open_rw(&b.path().join("f"));

    step("LOCK_EX on A makes LOCK_EX|LOCK_NB and LOCK_SH|LOCK_NB on B fail");
    assert_eq!(flock(&fa, libc::LOCK_EX), 0);
    assert_eq!(flock(&fb, libc::LOCK_EX | libc::LOCK_NB), libc::EWOULDBLOCK);
    assert_eq!(flock(&fb, libc::LOCK_SH | libc::LOCK_NB), libc::EWOULDBLOCK);

    step("after LOCK_UN on A, B gets it; shared locks then coexist");
    assert_eq!(flock(&fa, libc::LOCK_UN), 0);
    assert_eq!(flock(&fb, libc::LOCK_SH | libc::LOCK_NB), 0);
    assert_eq!(flock(&fa, libc::LOCK_SH | libc::LOCK_NB), 0);
    assert_eq!(flock(&fa, libc::LOCK_EX | libc::LOCK_NB), libc::EWOULDBLOCK);
    assert_eq!(flock(&fa, libc::LOCK_UN), 0);

    step("a blocking LOCK_EX on A waits for B's lock to go (B closes)");
    assert_eq!(flock(&fb, libc::LOCK_EX | libc::LOCK_NB), 0);
    let waiter = std::thread::spawn(move || {
        let t = Instant::now();
        let r = flock(&fa, libc::LOCK_EX);
        (r, t.elapsed(), fa)
    });
    std::thread::sleep(Duration::from_millis(700));
    assert!(!waiter.is_finished(), "LOCK_EX did not wait for B's lock");
    drop(fb); // the release of B's open file drops its flock
    let (r, waited, fa) = waiter.join().unwrap();
    assert_eq!(r, 0);
    assert!(
        waited >= Duration::from_millis(600),
        "waited only {waited:?}"
    );
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");
    let fb = open_rw(&b.path().join("f"));
    assert_eq!(flock(&fb, libc::LOCK_EX | libc::LOCK_NB), libc::EWOULDBLOCK);
    drop(fa);
    // FUSE sends the release of a closed file after close(2) returns.
    eventually("A's flock goes after its close", || {
        flock(&fb, libc::LOCK_EX | libc::LOCK_NB) == 0
    });
}

/// Polls `ok` every 20 ms for up to 5 s.
fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{what}: not after 5 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcntl_ranges_between_two_mounts() {
    if skip_without_fuse() {
        return;
    }
    let (_c, a, b) = two_mounts(&[]).await;
    let fa = open_rw(&a.path().join("f"));
    let fb = open_rw(&b.path().join("f"));

    step("a write lock on [100, 200) in A conflicts in B for overlapping ranges only");
    assert_eq!(fcntl_lock(&fa, libc::F_SETLK, libc::F_WRLCK, 100, 100), 0);
    assert_eq!(
        fcntl_lock(&fb, libc::F_SETLK, libc::F_RDLCK, 150, 10),
        libc::EAGAIN
    );
    assert_eq!(
        fcntl_lock(&fb, libc::F_SETLK, libc::F_WRLCK, 0, 101),
        libc::EAGAIN
    );
    assert_eq!(fcntl_lock(&fb, libc::F_SETLK, libc::F_WRLCK, 200, 100), 0);
    assert_eq!(fcntl_lock(&fb, libc::F_SETLK, libc::F_RDLCK, 0, 100), 0);

    step("F_GETLK in B reports A's lock; in A, B's");
    let fl = getlk(&fb, libc::F_WRLCK, 0, 0);
    assert_eq!(i32::from(fl.l_type), libc::F_WRLCK);
    assert_eq!((fl.l_start, fl.l_len), (100, 100));
    assert_eq!(fl.l_pid as u32, std::process::id());
    let fl = getlk(&fa, libc::F_RDLCK, 250, 1);
    assert_eq!(i32::from(fl.l_type), libc::F_WRLCK);
    assert_eq!((fl.l_start, fl.l_len), (200, 100));
    let fl = getlk(&fb, libc::F_WRLCK, 1000, 0);
    assert_eq!(i32::from(fl.l_type), libc::F_UNLCK);

    step("unlocking the middle of A's range frees just that part");
    assert_eq!(fcntl_lock(&fa, libc::F_SETLK, libc::F_UNLCK, 120, 10), 0);
    assert_eq!(fcntl_lock(&fb, libc::F_SETLK, libc::F_WRLCK, 120, 10), 0);
    assert_eq!(
        fcntl_lock(&fb, libc::F_SETLK, libc::F_WRLCK, 119, 1),
        libc::EAGAIN
    );
    assert_eq!(
        fcntl_lock(&fb, libc::F_SETLK, libc::F_WRLCK, 130, 1),
        libc::EAGAIN
    );

    step("OFD locks conflict across mounts too");
    assert_eq!(
        fcntl_lock(&fa, libc::F_OFD_SETLK, libc::F_WRLCK, 5000, 10),
        0
    );
    assert_eq!(
        fcntl_lock(&fb, libc::F_OFD_SETLK, libc::F_RDLCK, 5009, 1),
        libc::EAGAIN
    );

    step("closing A's file drops A's POSIX locks at once, its OFD lock at release");
    drop(fa);
    assert_eq!(fcntl_lock(&fb, libc::F_SETLK, libc::F_WRLCK, 100, 100), 0);
    eventually("A's OFD lock goes after its close", || {
        fcntl_lock(&fb, libc::F_OFD_SETLK, libc::F_WRLCK, 5000, 10) == 0
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_of_a_killed_mount_go_with_its_session() {
    if skip_without_fuse() {
        return;
    }
    let (_c, mut a, b) = two_mounts(&[("MFS_SESSION_TIMEOUT", "3")]).await;
    // Two files: the mount cannot tell flock from fcntl locks (fuser does
    // not pass the flag), so on one file they would conflict.
    let fa = open_rw(&a.path().join("f"));
    let fb = open_rw(&b.path().join("f"));
    let ga = open_rw(&a.path().join("g"));
    let gb = open_rw(&b.path().join("g"));
    assert_eq!(flock(&fa, libc::LOCK_EX), 0);
    assert_eq!(fcntl_lock(&ga, libc::F_SETLK, libc::F_WRLCK, 0, 10), 0);
    assert_eq!(flock(&fb, libc::LOCK_EX | libc::LOCK_NB), libc::EWOULDBLOCK);
    assert_eq!(
        fcntl_lock(&gb, libc::F_SETLK, libc::F_WRLCK, 5, 1),
        libc::EAGAIN
    );

    step("SIGKILL mount A; its session expires and B can lock");
    let pid = a.pid().expect("mount A runs");
    // SAFETY: kill(2) on the pid of mount A's process, a child of this test.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let t = Instant::now();
    loop {
        if flock(&fb, libc::LOCK_EX | libc::LOCK_NB) == 0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "A's flock still held 30 s after its mount was killed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("B got the flock {:?} after the kill", t.elapsed());
    assert!(
        t.elapsed() >= Duration::from_secs(1),
        "the lock went before the session could expire"
    );
    assert_eq!(fcntl_lock(&gb, libc::F_SETLK, libc::F_WRLCK, 0, 10), 0);
    drop(fa);
    drop(ga);
    let _ = a.terminate(Duration::from_secs(5));
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// A blocked F_SETLKW (waiting for a lock held through another mount) ends
/// with EINTR when its thread gets a signal, as it would on a local file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_interrupts_a_waiting_lock() {
    if skip_without_fuse() {
        return;
    }
    let (_c, a, b) = two_mounts(&[]).await;
    let fa = open_rw(&a.path().join("f"));
    let fb = open_rw(&b.path().join("f"));
    // SAFETY: a handler that does nothing, installed without SA_RESTART so
    // the interrupted call returns EINTR.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = ignore_signal as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
    assert_eq!(fcntl_lock(&fa, libc::F_SETLK, libc::F_WRLCK, 0, 1), 0);
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        // SAFETY: pthread_self has no preconditions.
        tx.send(unsafe { libc::pthread_self() }).unwrap();
        let r = fcntl_lock(&fb, libc::F_SETLKW, libc::F_WRLCK, 0, 1);
        (r, fb)
    });
    let thread = rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(!waiter.is_finished(), "F_SETLKW did not wait");
    // SAFETY: the waiter thread is alive (joined below).
    assert_eq!(unsafe { libc::pthread_kill(thread, libc::SIGUSR1) }, 0);
    let t = Instant::now();
    let (r, fb) = waiter.join().unwrap();
    assert_eq!(r, libc::EINTR);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // The interrupted request left no lock behind: A's is still the one.
    let fl = getlk(&fb, libc::F_WRLCK, 0, 0);
    assert_eq!((i32::from(fl.l_type), fl.l_start), (libc::F_WRLCK, 0));
    drop(fa);
    assert_eq!(fcntl_lock(&fb, libc::F_SETLK, libc::F_WRLCK, 0, 1), 0);
}

/// A forked process that opens the file itself, takes a write lock on its
/// byte 0, says so, and exits when `go` is closed.
struct Locker {
    pid: libc::pid_t,
    go: std::os::fd::OwnedFd,
}

fn pipe() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors that we then own.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both are open descriptors owned by nobody else.
    unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    }
}

fn fork_locker(path: &std::ffi::CStr) -> Locker {
    let (ready_r, ready_w) = pipe();
    let (go_r, go_w) = pipe();
    let mut fl = lock_struct(libc::F_WRLCK, 0, 1);
    // SAFETY: the child makes only async-signal-safe calls (open, fcntl,
    // write, read, _exit) on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: see above.
        unsafe {
            // The parent's ends: `go` must close when the parent's does.
            libc::close(ready_r.as_raw_fd());
            libc::close(go_w.as_raw_fd());
            let fd = libc::open(path.as_ptr(), libc::O_RDWR);
            let ok = u8::from(fd >= 0 && libc::fcntl(fd, libc::F_SETLK, &mut fl) == 0);
            libc::write(ready_w.as_raw_fd(), (&ok as *const u8).cast(), 1);
            let mut b = 0u8;
            libc::read(go_r.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    assert!(pid > 0, "fork failed: errno {}", errno());
    drop((ready_w, go_r));
    let mut ok = 0u8;
    // SAFETY: reading one byte into a local from a pipe we own.
    let n = unsafe { libc::read(ready_r.as_raw_fd(), (&mut ok as *mut u8).cast(), 1) };
    assert_eq!((n, ok), (1, 1), "process {pid} could not take its lock");
    Locker { pid, go: go_w }
}

impl Locker {
    /// Lets the process exit and reaps it.
    fn finish(self) {
        drop(self.go);
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(self.pid, &mut status, 0) }, self.pid);
    }
}

/// The kernel numbers a process's lock owner after its file table, which a
/// process started just after another one exited often reuses, and sends
/// the release of the exited one's file without waiting. Process after
/// process write-locks the file right after the last one exited (so the
/// lock of each one went at its exit): each one's lock must be seen for as
/// long as it lives (the unlock left from the closed file of its
/// predecessor must not take it away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_of_a_process_started_as_another_exits_is_kept() {
    if skip_without_fuse() {
        return;
    }
    let c = Cluster::start(1, &[]).await.unwrap();
    let m = Mount::start(&c, "m", &[]).unwrap();
    let path = m.path().join("f");
    let f = open_rw(&path);
    let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    step("150 processes one after the other, each with its own open and lock");
    for round in 0..150 {
        let child = fork_locker(&cpath);
        for _ in 0..3 {
            let fl = getlk(&f, libc::F_RDLCK, 0, 1);
            assert_eq!(
                (i32::from(fl.l_type), fl.l_pid),
                (libc::F_WRLCK, child.pid),
                "round {round}: the write lock of living process {} is not seen",
                child.pid
            );
        }
        child.finish();
    }
    let fl = getlk(&f, libc::F_WRLCK, 0, 1);
    assert_eq!(
        i32::from(fl.l_type),
        libc::F_UNLCK,
        "the last lock went with its process"
    );
}
