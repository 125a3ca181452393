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
//!   lock owner, whose POSIX locks on the file are dropped (Linux semantics)
//!   and who is forgotten as a holder of the file. At `release` of an open
//!   file, the owners that locked through it and through no other open file
//!   (OFD and flock owners are the open file) are unlocked, and so is the
//!   release's own flock owner. The master drops the rest at the session's
//!   last release of the inode, and everything when the session closes or
//!   expires.
//! - Owner numbers are reused: the kernel derives them from the address of
//!   the process's file table (or of the open file), and a process started
//!   just after another one exited often gets the same. The kernel sends a
//!   release without waiting for it, so the unlock of a closed file can
//!   reach the master after the next process with that number has locked.
//!   Hence a flush forgets its owner (a POSIX owner is never unlocked again
//!   at release), and a lock call of an owner waits while an unlock of the
//!   same (inode, owner) is on its way ([`LockOwners::settled`]): the new
//!   lock is applied after the old unlock, never dropped by it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fuser::{Errno, FileHandle, INodeNo, LockOwner, ReplyEmpty, ReplyLock};
use mfs_proto::v1::{GetLockRequest, LockKind, LockType, SetLockRequest};
use tokio::sync::Notify;

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
/// so that closes only cost a master call when there is something to drop,
/// and which unlocks are on their way to the master.
#[derive(Debug, Default)]
pub(crate) struct LockOwners {
    inner: Mutex<Owners>,
    /// Woken when an unlock of [`Owners::dropping`] is done.
    dropped: Notify,
}

#[derive(Debug, Default)]
struct Owners {
    /// Open file (fh) → (master inode, owners that locked through it).
    by_fh: HashMap<u64, (u64, BTreeSet<u64>)>,
    /// (inode, owner) → unlocks of it sent and not answered yet.
    dropping: HashMap<(u64, u64), u32>,
}

impl Owners {
    fn start_drop(&mut self, inode: u64, owner: u64) {
        *self.dropping.entry((inode, owner)).or_default() += 1;
    }
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

    /// Returns once no unlock of `owner` on `inode` is on its way (one
    /// started after this call began is not waited for).
    pub(crate) async fn settled(&self, inode: u64, owner: u64) {
        loop {
            let notified = self.dropped.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.lock().dropping.contains_key(&(inode, owner)) {
                return;
            }
            notified.await;
        }
    }

    /// A close by `owner`, whose POSIX locks on `inode` all go: whether it
    /// may hold any (it locked through some open file of it). If so, it is
    /// forgotten as a holder and its unlock counts as on its way until
    /// [`done`](LockOwners::done).
    pub(crate) fn flushed(&self, inode: u64, owner: u64) -> bool {
        let mut g = self.lock();
        let mut held = false;
        for (i, owners) in g.by_fh.values_mut() {
            if *i == inode {
                held |= owners.remove(&owner);
            }
        }
        if held {
            g.start_drop(inode, owner);
        }
        held
    }

    /// Forget open file `fh` (of `inode` when it is not known here): its
    /// inode and the owners to unlock: those that locked through it and
    /// through no other open file, and `flock_owner`. Their unlocks count
    /// as on their way until [`done`](LockOwners::done).
    pub(crate) fn take_fh(&self, fh: u64, inode: u64, flock_owner: Option<u64>) -> (u64, Vec<u64>) {
        let mut g = self.lock();
        let (inode, owners) = g.by_fh.remove(&fh).unwrap_or((inode, BTreeSet::new()));
        let mut alone: Vec<u64> = owners
            .into_iter()
            .filter(|o| {
                !g.by_fh
                    .values()
                    .any(|(i, os)| *i == inode && os.contains(o))
            })
            .collect();
        if let Some(o) = flock_owner.filter(|o| !alone.contains(o)) {
            alone.push(o);
        }
        for &o in &alone {
            g.start_drop(inode, o);
        }
        (inode, alone)
    }

    /// The unlock of `owner` on `inode` that `flushed` or `take_fh` counted
    /// is answered (or failed).
    pub(crate) fn done(&self, inode: u64, owner: u64) {
        {
            let mut g = self.lock();
            if let Some(n) = g.dropping.get_mut(&(inode, owner)) {
                *n -= 1;
                if *n == 0 {
                    g.dropping.remove(&(inode, owner));
                }
            }
        }
        self.dropped.notify_waiters();
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
        // An unlock of a closed file with the same owner number (an exited
        // process's) must not land after this call.
        self.lock_owners.settled(inode, c.owner.0).await;
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
        let mut asserted = false;
        loop {
            match self.master.set_lock(req).await {
                Ok(()) => return reply.ok(),
                // The master does not count the file open for this session:
                // its open was answered by a leader that died before logging
                // it. Tell what is held, and ask again (once).
                Err(e) if e.errno() == libc::EBADF && ltype != LockType::Unlock && !asserted => {
                    asserted = true;
                    if self.assert_opens(Some(inode)).await.is_err() {
                        return reply.error(errno(&e));
                    }
                }
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

    /// Removes every lock of `owner` on master inode `inode` (an unlock
    /// counted by `flushed` or `take_fh`); errors are logged (the master
    /// drops them at the session's end anyway).
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
        self.lock_owners.done(inode, owner);
    }

    /// A close(2) by the process owning `owner`: its POSIX locks on the
    /// file go (Linux drops them at any close of the file).
    pub(crate) async fn unlock_on_flush(&self, ino: INodeNo, owner: LockOwner) {
        let inode = self.map.to_master(ino);
        if self.lock_owners.flushed(inode, owner.0) {
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
        let (inode, owners) =
            self.lock_owners
                .take_fh(fh.0, self.map.to_master(ino), flock_owner.map(|o| o.0));
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
        assert_eq!(t.take_fh(2, 10, None), (10, vec![200]));
        t.done(10, 200);
        assert_eq!(t.take_fh(1, 10, Some(300)), (10, vec![100, 300]));
        assert_eq!(t.take_fh(1, 11, None), (11, vec![]), "unknown fh");
    }

    #[test]
    fn a_flush_forgets_its_owner_on_that_inode_only() {
        let t = LockOwners::default();
        t.note(1, 10, 100);
        t.note(2, 10, 100);
        t.note(3, 11, 100);
        t.note(1, 10, 200);
        assert!(t.flushed(10, 100));
        assert!(!t.flushed(10, 100), "its locks are gone already");
        assert!(!t.flushed(12, 100));
        t.done(10, 100);
        // The release of fh 1 unlocks the OFD owner only, not process 100.
        assert_eq!(t.take_fh(1, 10, None), (10, vec![200]));
        assert_eq!(t.take_fh(3, 11, None), (11, vec![100]));
    }

    #[tokio::test]
    async fn a_lock_call_waits_for_an_unlock_of_its_owner_on_the_way() {
        let t = std::sync::Arc::new(LockOwners::default());
        t.note(1, 10, 100);
        t.note(2, 11, 100);
        let (_, owners) = t.take_fh(1, 10, None);
        assert_eq!(owners, vec![100]);
        // Another inode, another owner: nothing to wait for.
        t.settled(11, 100).await;
        t.settled(10, 101).await;
        let waiter = tokio::spawn({
            let t = std::sync::Arc::clone(&t);
            async move { t.settled(10, 100).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "must wait for the unlock");
        t.done(10, 100);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken by done")
            .expect("the waiter ran");
        // Two unlocks on the way: settled after the second only.
        t.note(3, 10, 100);
        t.note(4, 10, 100);
        assert!(t.flushed(10, 100));
        t.note(4, 10, 100);
        assert_eq!(t.take_fh(4, 10, None).1, vec![100]);
        t.done(10, 100);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), t.settled(10, 100))
                .await
                .is_err()
        );
        t.done(10, 100);
        t.settled(10, 100).await;
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
