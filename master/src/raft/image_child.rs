//! Metadata images taken without holding up applies.
//!
//! Encoding the namespace takes time in proportion to its size (110-280
//! ms for a 47-80 MB image here), and the namespace must not change
//! while it is read: an image taken in place holds the namespace's lock,
//! and every apply (every write of every client) waits that long, on every
//! master, at every snapshot. So the image is taken as MooseFS dumps its
//! metadata: a child process is forked while the lock is held, sees the
//! memory as it was at that instant (copy-on-write), encodes it and
//! streams the image back through a pipe. The lock is held only for the
//! fork itself (it copies page tables: about 25 ms for a 600 MB master
//! here), and
//! the applies go on while the child works.
//!
//! The child runs only the encoder and `write`, on memory of its own, then
//! leaves with `_exit` (no destructor, no flush, no logging: locks other
//! threads held at the fork stay held in the child). glibc's `fork` leaves
//! `malloc` usable in the child. If `fork` fails (no memory for the page
//! tables, a process limit), the image is taken in place as before, with
//! a warning.

use std::io::{self, Read};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use parking_lot::RwLockReadGuard;

use crate::fsm::Namespace;

/// The image of `ns` with `extra` carried along (see
/// [`Namespace::try_to_image`]). `ns` is released as soon as the child
/// has its copy of the namespace.
pub fn image(ns: RwLockReadGuard<'_, Namespace>, extra: &[u8]) -> io::Result<Vec<u8>> {
    let (read_end, write_end) = pipe()?;
    // SAFETY: a plain syscall.
    let parent = unsafe { libc::getpid() };
    let t = std::time::Instant::now();
    // SAFETY: the child only encodes memory it owns after the fork, writes
    // to a pipe and leaves with `_exit` (see the module's doc).
    let pid = unsafe { libc::fork() };
    let forked = t.elapsed();
    if pid == 0 {
        drop(read_end);
        child(&ns, extra, write_end, parent)
    }
    if pid < 0 {
        let e = io::Error::last_os_error();
        tracing::warn!(
            "cannot fork to take a metadata image ({e}): taking it in place, applies wait meanwhile"
        );
        return ns.try_to_image(extra).map_err(io::Error::other);
    }
    let hint = ns.image_size_hint();
    drop(ns);
    tracing::debug!(
        fork_ms = forked.as_secs_f64() * 1e3,
        "metadata image: the namespace is free again"
    );
    drop(write_end);
    let mut image = Vec::with_capacity(hint);
    let read = std::fs::File::from(read_end).read_to_end(&mut image);
    let status = wait(pid);
    read.map_err(|e| io::Error::new(e.kind(), format!("metadata image from child: {e}")))?;
    match status {
        Ok(0) => {}
        Ok(code) => {
            return Err(io::Error::other(format!(
                "the process taking the metadata image failed (status {code:#x})"
            )))
        }
        // Reaped by someone else (SIGCHLD ignored): the checksum tells.
        Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {}
        Err(e) => return Err(e),
    }
    Namespace::verify_image(&image).map_err(|e| {
        io::Error::other(format!(
            "the metadata image from the child process ({} bytes) is bad: {e}",
            image.len()
        ))
    })?;
    Ok(image)
}

/// In the child: encode, write, leave. Never returns.
///
/// First it lets go of everything else it inherited: it dies with the
/// master (a master killed and started again must not find its port, or
/// its data dir's lock, still held by the child), and closes every other
/// descriptor (a connection the master closes must not stay open in the
/// child).
fn child(ns: &Namespace, extra: &[u8], out: OwnedFd, parent: libc::pid_t) -> ! {
    use std::os::fd::AsRawFd;
    let keep = out.as_raw_fd() as libc::c_uint;
    // SAFETY: plain syscalls; the descriptors closed are not used here.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(1);
        }
        if keep > 3 {
            libc::syscall(libc::SYS_close_range, 3, keep - 1, 0);
        }
        libc::syscall(libc::SYS_close_range, keep + 1, libc::c_uint::MAX, 0);
    }
    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        match ns.try_to_image(extra) {
            Ok(image) => write_all(&out, &image),
            Err(_) => false,
        }
    }))
    .unwrap_or(false);
    // SAFETY: ends the child at once, running nothing of the parent's.
    unsafe { libc::_exit(if ok { 0 } else { 1 }) }
}

fn write_all(fd: &OwnedFd, mut buf: &[u8]) -> bool {
    use std::os::fd::AsRawFd;
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for `buf.len()` bytes; the fd is open.
        let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        buf = &buf[n as usize..];
    }
    true
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds: [RawFd; 2] = [-1, -1];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both were just opened and are owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The child's exit status (its raw wait status).
fn wait(pid: libc::pid_t) -> io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid place for the result.
        if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
            return Ok(status);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use parking_lot::RwLock;

    use super::*;
    use crate::fsm::{Cred, Inode, Op, Request, SessionId, Timespec};

    fn populated(files: u64) -> Namespace {
        let mut ns = Namespace::new();
        for i in 0..files {
            ns.apply(&Request {
                session: SessionId(0),
                seq: 0,
                acked: 0,
                time: Timespec::new(1_700_000_000 + i as i64, 7),
                op: Op::Create {
                    cred: Cred::root(),
                    parent: Inode::ROOT,
                    name: format!("f{i}").into_bytes(),
                    mode: 0o644,
                    umask: 0o022,
                    exclusive: true,
                },
            });
        }
        ns
    }

    #[test]
    fn the_child_gives_the_image_taken_in_place_and_frees_the_namespace() {
        let lock = RwLock::new(populated(3000));
        let expected = lock.read().try_to_image(b"extra").expect("image");
        let image = image(lock.read_recursive(), b"extra").expect("image from the child");
        assert_eq!(image.len(), expected.len());
        assert!(image == expected, "the images differ");
        let (ns, extra) = Namespace::from_image(&image).expect("loads");
        assert_eq!(extra, b"extra");
        assert_eq!(ns.inode_count(), 3001);
        // The guard was let go: a writer gets the lock at once.
        assert!(lock.try_write().is_some());
    }

    #[test]
    fn a_cut_image_is_refused() {
        let image = populated(10).try_to_image(b"x").expect("image");
        let cut = &image[..image.len() - 1];
        assert!(Namespace::verify_image(cut).is_err());
        assert!(Namespace::verify_image(&image).is_ok());
    }
}
