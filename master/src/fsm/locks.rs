//! File locks kept in the namespace: fcntl/POSIX byte ranges (OFD locks are
//! POSIX locks owned by the open file), and flock whole-file locks.
//!
//! A lock belongs to (session, owner, kind), where the owner is an opaque
//! number chosen by the mount (the kernel's `lock_owner`). Locks of one
//! owner never conflict with each other and never overlap: setting a range
//! replaces what the owner held there (splitting older locks), and adjacent
//! ranges of the same type are merged, as fcntl does. Locks of different
//! kinds never conflict (as Linux, where flock and fcntl locks are apart).
//!
//! Only a session holding the inode open may lock it; every lock of a
//! session on an inode goes at the session's last release of the inode, and
//! all of them when the session closes or expires. Waiting for a lock is the
//! client's business (it retries on EAGAIN): apply never blocks.

use super::namespace::Namespace;
use super::types::{Errno, Reply};
use mfs_common::ids::{Inode, SessionId};
use serde::{Deserialize, Serialize};

/// Locks one inode may carry at most; beyond: ENOLCK.
pub const MAX_LOCKS_PER_INODE: usize = 4096;

/// Family of a lock: locks of different kinds never conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LockKind {
    /// fcntl byte-range locks (and OFD locks, owned by the open file).
    Posix,
    /// flock(2): always the whole file, owned by the open file.
    Flock,
}

/// What a SetLock asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LockType {
    /// Remove the owner's locks in the range.
    Unlock,
    /// Shared.
    Read,
    /// Exclusive.
    Write,
}

/// One held lock (fields in the order locks are sorted: one owner's locks
/// are together, by start): bytes `start..=end` (`end == u64::MAX`: to the end of
/// the file, whatever its length).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FileLock {
    pub session: SessionId,
    pub owner: u64,
    pub kind: LockKind,
    pub start: u64,
    pub end: u64,
    /// Exclusive (write) or shared (read).
    pub write: bool,
    /// The process id the holder gave (reported by F_GETLK).
    pub pid: u32,
}

impl FileLock {
    fn same_owner(&self, session: SessionId, owner: u64, kind: LockKind) -> bool {
        self.session == session && self.owner == owner && self.kind == kind
    }

    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start <= end && start <= self.end
    }
}

/// A lock request, as `Op::SetLock` carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LockRequest {
    pub inode: Inode,
    pub owner: u64,
    pub kind: LockKind,
    pub ltype: LockType,
    pub start: u64,
    pub end: u64,
    pub pid: u32,
}

/// What F_GETLK asks: a lock of type `write` by (session, owner, kind) on
/// bytes `start..=end` of `inode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockQuery {
    pub inode: Inode,
    pub session: SessionId,
    pub owner: u64,
    pub kind: LockKind,
    pub write: bool,
    pub start: u64,
    pub end: u64,
}

impl Namespace {
    /// The first lock of another (session, owner) of the same kind that
    /// conflicts with `q` (F_GETLK); EINVAL for an empty range, ENOENT for
    /// an unknown inode. Locks are kept sorted, so "first" is the same on
    /// every replica.
    pub fn get_lock(&self, q: &LockQuery) -> Result<Option<FileLock>, Errno> {
        self.node(q.inode)?;
        if q.start > q.end {
            return Err(Errno::EINVAL);
        }
        Ok(self.conflict(q))
    }

    /// Every lock held on `inode`, in their canonical order.
    pub fn locks_of(&self, inode: Inode) -> Vec<FileLock> {
        self.locks.get(&inode).cloned().unwrap_or_default()
    }

    fn conflict(&self, q: &LockQuery) -> Option<FileLock> {
        self.locks.get(&q.inode)?.iter().copied().find(|l| {
            l.kind == q.kind
                && !l.same_owner(q.session, q.owner, q.kind)
                && (l.write || q.write)
                && l.overlaps(q.start, q.end)
        })
    }

    /// Apply `Op::SetLock` for session `sid`: EINVAL for an empty range,
    /// ENOENT for an unknown inode, EBADF unless the session has the inode
    /// open (to lock; unlocking is always allowed), EAGAIN on a conflict,
    /// ENOLCK past `MAX_LOCKS_PER_INODE`.
    pub(crate) fn set_lock(&mut self, sid: SessionId, r: &LockRequest) -> Result<Reply, Errno> {
        if r.start > r.end {
            return Err(Errno::EINVAL);
        }
        self.node(r.inode)?;
        let write = match r.ltype {
            LockType::Unlock => {
                self.unlock_range(sid, r);
                return Ok(Reply::Ok);
            }
            LockType::Read => false,
            LockType::Write => true,
        };
        let open = self
            .sessions
            .get(&sid)
            .is_some_and(|s| s.open.contains_key(&r.inode));
        if !open {
            return Err(Errno::EBADF);
        }
        let q = LockQuery {
            inode: r.inode,
            session: sid,
            owner: r.owner,
            kind: r.kind,
            write,
            start: r.start,
            end: r.end,
        };
        if self.conflict(&q).is_some() {
            return Err(Errno::EAGAIN);
        }
        let mut locks = self.locks.get(&r.inode).cloned().unwrap_or_default();
        cut(&mut locks, sid, r.owner, r.kind, r.start, r.end);
        let mut new = FileLock {
            session: sid,
            owner: r.owner,
            kind: r.kind,
            write,
            start: r.start,
            end: r.end,
            pid: r.pid,
        };
        // Merge with adjacent ranges of the same owner and type.
        locks.retain(|l| {
            let same = l.same_owner(sid, r.owner, r.kind) && l.write == write;
            let before = l.end.checked_add(1) == Some(new.start);
            let after = new.end.checked_add(1) == Some(l.start);
            if same && (before || after) {
                new.start = new.start.min(l.start);
                new.end = new.end.max(l.end);
                false
            } else {
                true
            }
        });
        locks.push(new);
        if locks.len() > MAX_LOCKS_PER_INODE {
            return Err(Errno::ENOLCK);
        }
        locks.sort();
        self.locks.insert(r.inode, locks);
        Ok(Reply::Ok)
    }

    fn unlock_range(&mut self, sid: SessionId, r: &LockRequest) {
        let Some(locks) = self.locks.get_mut(&r.inode) else {
            return;
        };
        cut(locks, sid, r.owner, r.kind, r.start, r.end);
        locks.sort();
        if locks.is_empty() {
            self.locks.remove(&r.inode);
        }
    }

    /// Drop every lock of session `sid` (closed or expired).
    pub(crate) fn drop_session_locks(&mut self, sid: SessionId) {
        self.locks.retain(|_, locks| {
            locks.retain(|l| l.session != sid);
            !locks.is_empty()
        });
    }

    /// Drop every lock of session `sid` on `inode` (its last release).
    pub(crate) fn drop_inode_locks(&mut self, sid: SessionId, inode: Inode) {
        if let Some(locks) = self.locks.get_mut(&inode) {
            locks.retain(|l| l.session != sid);
            if locks.is_empty() {
                self.locks.remove(&inode);
            }
        }
    }

    /// Invariants of the lock table, for `check`: known inodes, sessions
    /// holding them open, sorted, non-empty ranges, no overlap within an
    /// owner.
    pub(crate) fn check_locks(&self) -> Result<(), String> {
        for (ino, locks) in &self.locks {
            if locks.is_empty() {
                return Err(format!("inode {ino}: empty lock list"));
            }
            if !locks.is_sorted() {
                return Err(format!("inode {ino}: locks out of order"));
            }
            for (i, l) in locks.iter().enumerate() {
                if l.start > l.end {
                    return Err(format!("inode {ino}: lock with an empty range"));
                }
                let open = self
                    .sessions
                    .get(&l.session)
                    .is_some_and(|s| s.open.contains_key(ino));
                if !open {
                    return Err(format!(
                        "inode {ino}: lock of session {} that does not hold it open",
                        l.session
                    ));
                }
                if let Some(n) = locks.get(i + 1) {
                    if n.same_owner(l.session, l.owner, l.kind) && n.start <= l.end {
                        return Err(format!("inode {ino}: overlapping locks of one owner"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Remove `start..=end` from the locks of (sid, owner, kind) in `locks`,
/// keeping the parts of each lock outside the range.
fn cut(
    locks: &mut Vec<FileLock>,
    sid: SessionId,
    owner: u64,
    kind: LockKind,
    start: u64,
    end: u64,
) {
    let mut pieces = Vec::new();
    locks.retain(|l| {
        if !l.same_owner(sid, owner, kind) || !l.overlaps(start, end) {
            return true;
        }
        if l.start < start {
            pieces.push(FileLock {
                end: start - 1,
                ..*l
            });
        }
        if l.end > end {
            pieces.push(FileLock {
                start: end + 1,
                ..*l
            });
        }
        false
    });
    locks.extend(pieces);
}

#[cfg(test)]
#[path = "locks_tests.rs"]
mod tests;
