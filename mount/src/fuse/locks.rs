//! File locks (fcntl/POSIX, OFD, flock) kept by the master, so they hold
//! between mounts: the kernel's getlk/setlk become GetLock/SetLock calls.
//!
//! - fuser 0.18 does not pass the kernel's `FUSE_LK_FLOCK` flag, so a flock
//!   arrives as a whole-file lock owned by the open file, like an OFD lock:
//!   both are sent as POSIX locks. flock and fcntl locks on one file then
//!   conflict with each other (as on NFS); each family alone behaves as on
//!   Linux.
//! - Waiting (F_SETLKW, flock without LOCK_NB): the master never blocks, so
//!   the mount asks again on EAGAIN, every 10 ms doubling to 200 ms, until
//!   granted. fuser does not pass FUSE_INTERRUPT; instead, between tries,
//!   the waiting thread's pending signals are read from `/proc`: a signal
//!   not blocked ends the wait with EINTR (as the kernel would for a local
//!   lock). After [`LOCK_WAIT_MAX`] the wait ends with EINTR too.
//! - Release: the kernel's `flush` (every close) names the closing process's
//!   lock owner, whose POSIX locks on the file are dropped (Linux semantics).
//!   At `release` of an open file, the owners that locked through it and
//!   through no other open file (OFD and flock owners are the open file) are
//!   unlocked, and so is the release's own flock owner. The master drops
//!   the rest at the session's last release of the inode, and everything
//!   when the session closes or expires.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fuser::{Errno, FileHandle, INodeNo, LockOwner, ReplyEmpty, ReplyLock};
use mfs_proto::v1::{GetLockRequest, LockKind, LockType, SetLockRequest};

use super::convert::errno;
use super::fs::Shared;

/// First pause between two tries of a waiting lock.
const WAIT_FIRST: Duration = Duration::from_millis(10);
/// Longest pause between two tries.
const WAIT_MAX_STEP: Duration = Duration::from_millis(200);
/// Longest wait for a lock; then EINTR.
pub const LOCK_WAIT_MAX: Duration = Duration::from_secs(3600);
/// The kernel's "to the end of the file" (OFFSET_MAX).
const OFFSET_MAX: u64 = i64::MAX as u64;

/// Which lock owners took locks through which open files of this mount,
/// so that closes only cost a master call when there is something to drop.
#[derive(Debug, Default)]
pub(crate) struct LockOwners {
    inner: Mutex<Owners>,
}

#[derive(Debug, Default)]
struct Owners {
    /// Open file (fh) → (master inode, owners that locked through it).
    by_fh: HashMap<u64, (u64, BTreeSet<u64>)>,
}

impl LockOwners {
    fn lock(&self) -> std::sync::MutexGuard<'_, Owners> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `owner` locks (or tries to) `inode` through open file `fh`.
    pub(crate) fn note(&self, fh: u64, inode: u64, owner: u64) {
        self.lock()
            .by_fh
            .entry(fh)
            .or_insert_with(|| (inode, BTreeSet::new()))
            .1
            .insert(owner);
    }

    /// Whether `owner` may hold locks on `inode` (it locked through some
    /// open file of it).
    pub(crate) fn may_hold(&self, inode: u64, owner: u64) -> bool {
        self.lock()
            .by_fh
            .values()
            .any(|(i, o)| *i == inode && o.contains(&owner))
    }

    /// Forget open file `fh`: its inode and the owners that locked through
    /// it and through no other open file.
    pub(crate) fn take_fh(&self, fh: u64) -> Option<(u64, Vec<u64>)> {
        let mut g = self.lock();
        let (inode, owners) = g.by_fh.remove(&fh)?;
        let alone = owners
            .into_iter()
            .filter(|o| !g.by_fh.values().any(|(_, os)| os.contains(o)))
            .collect();
        Some((inode, alone))
    }
}

/// The lock type of the kernel's `typ` (F_RDLCK, F_WRLCK, F_UNLCK).
fn lock_type(typ: i32) -> Option<LockType> {
    match typ {
        libc::F_RDLCK => Some(LockType::Read),
        libc::F_WRLCK => Some(LockType::Write),
        libc::F_UNLCK => Some(LockType::Unlock),
        _ => None,
    }
}

/// Whether thread `tid` has a signal pending that it does not block (what
/// would interrupt a local F_SETLKW). False when it cannot be told.
fn signal_pending(tid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        // The thread is gone: nobody waits any more.
        return true;
    };
    let mask = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    (mask("SigPnd:") | mask("ShdPnd:")) & !mask("SigBlk:") != 0
}

/// One lock call from the kernel, as [`Shared::setlk`] takes it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LockCall {
    pub ino: INodeNo,
    pub fh: FileHandle,
    pub owner: LockOwner,
    pub start: u64,
    pub end: u64,
    pub typ: i32,
    /// The lock's pid (reported by F_GETLK).
    pub pid: u32,
    /// The calling thread (to see whether it was signalled while waiting).
    pub caller: u32,
}

impl Shared {
    /// fcntl F_SETLK/F_SETLKW, OFD locks and flock: set, change or remove
    /// the lock at the master; with `sleep`, wait until it is granted.
    pub(crate) async fn setlk(&self, c: LockCall, sleep: bool, reply: ReplyEmpty) {
        let Some(ltype) = lock_type(c.typ) else {
            return reply.error(Errno::EINVAL);
        };
        if c.start > c.end {
            return reply.error(Errno::EINVAL);
        }
        let inode = self.map.to_master(c.ino);
        if ltype != LockType::Unlock {
            self.lock_owners.note(c.fh.0, inode, c.owner.0);
        }
        let req = SetLockRequest {
            id: None,
            inode,
            owner: c.owner.0,
            kind: LockKind::Posix as i32,
            r#type: ltype as i32,
            start: c.start,
            end: c.end,
            pid: c.pid,
        };
        let deadline = Instant::now() + LOCK_WAIT_MAX;
        let mut pause = WAIT_FIRST;
        loop {
            match self.master.set_lock(req).await {
                Ok(()) => return reply.ok(),
                Err(e) if sleep && e.errno() == libc::EAGAIN => {
                    if Instant::now() >= deadline || signal_pending(c.caller) {
                        return reply.error(Errno::EINTR);
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(WAIT_MAX_STEP);
                }
                Err(e) => {
                    if e.errno() != libc::EAGAIN {
                        tracing::debug!(inode, error = %e, "lock request failed");
                    }
                    return reply.error(errno(&e));
                }
            }
        }
    }

    /// fcntl F_GETLK (and F_OFD_GETLK): the first conflicting lock at the
    /// master, or F_UNLCK.
    pub(crate) async fn getlk(&self, c: LockCall, reply: ReplyLock) {
        let ltype = match lock_type(c.typ) {
            Some(t @ (LockType::Read | LockType::Write)) => t,
            _ => return reply.error(Errno::EINVAL),
        };
        if c.start > c.end {
            return reply.error(Errno::EINVAL);
        }
        let req = GetLockRequest {
            session: 0,
            inode: self.map.to_master(c.ino),
            owner: c.owner.0,
            kind: LockKind::Posix as i32,
            r#type: ltype as i32,
            start: c.start,
            end: c.end,
        };
        match self.master.get_lock(req).await {
            Ok(l) => {
                let typ = match LockType::try_from(l.r#type) {
                    Ok(LockType::Read) => libc::F_RDLCK,
                    Ok(LockType::Write) => libc::F_WRLCK,
                    _ => return reply.locked(c.start, c.end, libc::F_UNLCK, 0),
                };
                reply.locked(l.start, l.end.min(OFFSET_MAX), typ, l.pid)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// Removes every lock of `owner` on master inode `inode`; errors are
    /// logged (the master drops them at the session's end anyway).
    async fn unlock_owner(&self, inode: u64, owner: u64) {
        let req = SetLockRequest {
            id: None,
            inode,
            owner,
            kind: LockKind::Posix as i32,
            r#type: LockType::Unlock as i32,
            start: 0,
            end: u64::MAX,
            pid: 0,
        };
        if let Err(e) = self.master.set_lock(req).await {
            tracing::warn!(inode, owner, error = %e, "dropping the locks of a closed file failed");
        }
    }

    /// A close(2) by the process owning `owner`: its POSIX locks on the
    /// file go (Linux drops them at any close of the file).
    pub(crate) async fn unlock_on_flush(&self, ino: INodeNo, owner: LockOwner) {
        let inode = self.map.to_master(ino);
        if self.lock_owners.may_hold(inode, owner.0) {
            self.unlock_owner(inode, owner.0).await;
        }
    }

    /// The last close of open file `fh`: the locks owned by it (OFD,
    /// flock) go, and those of `flock_owner` (the kernel's flock owner).
    pub(crate) async fn unlock_on_release(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        flock_owner: Option<LockOwner>,
    ) {
        let (inode, mut owners) = self
            .lock_owners
            .take_fh(fh.0)
            .unwrap_or_else(|| (self.map.to_master(ino), Vec::new()));
        if let Some(o) = flock_owner {
            if !owners.contains(&o.0) {
                owners.push(o.0);
            }
        }
        for owner in owners {
            self.unlock_owner(inode, owner).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_shared_by_two_open_files_survive_one_release() {
        let t = LockOwners::default();
        t.note(1, 10, 100); // process 100 through fh 1
        t.note(2, 10, 100); // ... and through fh 2
        t.note(2, 10, 200); // OFD owner of fh 2
        assert!(t.may_hold(10, 100));
        assert!(!t.may_hold(11, 100));
        assert_eq!(t.take_fh(2), Some((10, vec![200])));
        assert!(t.may_hold(10, 100));
        assert!(!t.may_hold(10, 200));
        assert_eq!(t.take_fh(1), Some((10, vec![100])));
        assert_eq!(t.take_fh(1), None);
    }

    #[test]
    fn signals_of_this_thread_are_read() {
        // This test thread has no signal pending.
        let tid = unsafe { libc::gettid() } as u32;
        assert!(!signal_pending(tid));
        // A thread that does not exist: the waiter is gone.
        assert!(signal_pending(u32::MAX - 1));
    }
}
