//! The attributes the master last gave for each inode, so the kernel's
//! own time write-back can be answered here.
//!
//! With the writeback cache, the kernel keeps a regular file's ctime
//! itself: after a rename, link or unlink it sets the ctime it caches and
//! at once sends a SETATTR of the mtime it caches and that ctime. The
//! master set its ctime in the operation already, so when that mtime is
//! the one the master gave, the call changes nothing there: answering it
//! here saves a round trip on every rename and unlink of a file. The
//! reply carries no attribute cache time, so the next stat asks the
//! master (the link count after an unlink, for one).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use mfs_proto::v1::{Attr, Timespec};

/// Entries kept at most; past it the map starts afresh.
const MAX_ENTRIES: usize = 65_536;

/// How long what the master said of an inode's mtime is used.
pub(crate) const FRESH: Duration = Duration::from_secs(60);

/// How far from now the kernel's ctime of a time write-back may be.
const CTIME_SLACK: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub(crate) struct KnownAttrs {
    map: Mutex<HashMap<u64, (Attr, Instant)>>,
}

impl KnownAttrs {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Attr, Instant)>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes what the master said of an inode.
    pub(crate) fn note(&self, a: &Attr) {
        let mut m = self.map();
        if m.len() >= MAX_ENTRIES && !m.contains_key(&a.inode) {
            m.clear();
        }
        m.insert(a.inode, (*a, Instant::now()));
    }

    /// Forgets an inode (the kernel forgot it).
    pub(crate) fn forget(&self, inode: u64) {
        self.map().remove(&inode);
    }

    /// What the master said of `inode` less than `fresh` ago.
    pub(crate) fn recent(&self, inode: u64, fresh: Duration) -> Option<Attr> {
        let m = self.map();
        let (a, seen) = m.get(&inode)?;
        (seen.elapsed() <= fresh).then_some(*a)
    }

    /// The attributes to answer a SETATTR of only `mtime` (and the
    /// kernel's `ctime`) with, when it is the kernel's time write-back:
    /// `mtime` is the one the master gave less than `fresh` ago, and
    /// `ctime` is now. `None`: send it to the master.
    pub(crate) fn time_writeback(
        &self,
        inode: u64,
        mtime: &Timespec,
        ctime: Option<SystemTime>,
        fresh: Duration,
    ) -> Option<Attr> {
        let ctime = ctime?;
        let now = SystemTime::now();
        let near = match now.duration_since(ctime) {
            Ok(d) => d <= CTIME_SLACK,
            Err(e) => e.duration() <= CTIME_SLACK,
        };
        if !near {
            return None;
        }
        let m = self.map();
        let (a, seen) = m.get(&inode)?;
        if seen.elapsed() > fresh || a.mtime.as_ref() != Some(mtime) {
            return None;
        }
        let mut a = *a;
        a.ctime = Some(super::convert::timespec(ctime));
        Some(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(inode: u64, mtime: i64) -> Attr {
        Attr {
            inode,
            mtime: Some(Timespec {
                sec: mtime,
                nsec: 5,
            }),
            ..Attr::default()
        }
    }

    #[test]
    fn only_the_known_mtime_with_a_current_ctime_is_answered_here() {
        let k = KnownAttrs::default();
        let fresh = FRESH;
        let now = Some(SystemTime::now());
        let same = Timespec { sec: 100, nsec: 5 };
        assert!(k.time_writeback(7, &same, now, fresh).is_none(), "unknown");
        k.note(&attr(7, 100));
        let a = k.time_writeback(7, &same, now, fresh).expect("answered");
        assert_eq!(a.mtime, Some(same));
        assert!(a.ctime.is_some_and(|c| c.sec > 100));
        let other = Timespec { sec: 101, nsec: 5 };
        assert!(
            k.time_writeback(7, &other, now, fresh).is_none(),
            "new mtime"
        );
        let old = Some(SystemTime::now() - Duration::from_secs(30));
        assert!(
            k.time_writeback(7, &same, old, fresh).is_none(),
            "old ctime"
        );
        assert!(
            k.time_writeback(7, &same, None, fresh).is_none(),
            "no ctime"
        );
        assert!(
            k.time_writeback(7, &same, now, Duration::ZERO).is_none(),
            "stale"
        );
        assert_eq!(k.recent(7, fresh).map(|a| a.mtime), Some(Some(same)));
        std::thread::sleep(Duration::from_millis(2));
        assert!(k.recent(7, Duration::from_millis(1)).is_none(), "stale");
        k.forget(7);
        assert!(
            k.time_writeback(7, &same, now, fresh).is_none(),
            "forgotten"
        );
        assert!(k.recent(7, fresh).is_none(), "forgotten");
    }
}
