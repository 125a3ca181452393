//! Open files and directories of the mount: what a FUSE file handle stands
//! for.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mfs_proto::v1::{Attr, Credentials};

/// One open file (one `open`/`create` the master counted).
#[derive(Debug)]
pub struct OpenFile {
    /// Master inode.
    pub inode: u64,
    /// Opened for writing.
    pub writable: bool,
    /// Some data was written through this handle since the last flush.
    pub dirty: AtomicBool,
    /// The handle of the create that made the file, holding it in the
    /// I/O layer (`FileIo::hold`) until released.
    pub held: bool,
}

/// One entry of a directory listing, as readdir hands them out.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Name (for "." and "..": those).
    pub name: Vec<u8>,
    /// Master inode.
    pub inode: u64,
    /// Wire file type.
    pub kind: i32,
    /// Attributes (readdirplus only).
    pub attr: Option<Attr>,
    /// When the master was asked for them.
    pub fetched: super::xattrs::Fetch,
}

/// A directory listing, "." and ".." first.
#[derive(Debug)]
pub struct Listing {
    pub entries: Vec<Entry>,
    /// When it was read.
    pub at: Instant,
}

/// A listing read lately.
#[derive(Debug)]
struct Recent {
    cred: Credentials,
    changes: u64,
    list: Arc<Listing>,
}

/// Listings of held directories read lately, for the next open of the
/// same directory (`rm -rf` and `find` open each directory twice, one
/// right after the other). One is served again to the same credentials
/// while the directory is still held (no other client can change its
/// names), this client changed nothing since (`MasterClient::changes`),
/// and younger than the attribute time (the kernel keeps its attributes
/// for what is left of that).
#[derive(Debug, Default)]
pub struct RecentListings {
    map: Mutex<HashMap<(u64, bool), Recent>>,
}

/// Listings kept at most, and their entries (about 200 bytes each).
const RECENT_KEPT: usize = 256;
const RECENT_ENTRIES: usize = 100_000;

impl RecentListings {
    /// The listing of `dir` (`plus`: with attributes) read for `cred`
    /// when this client's change count was `changes`, if younger than
    /// `max_age`.
    pub fn get(
        &self,
        dir: u64,
        plus: bool,
        cred: &Credentials,
        changes: u64,
        max_age: Duration,
    ) -> Option<Arc<Listing>> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let r = map.get(&(dir, plus))?;
        let fresh = r.list.at.elapsed() < max_age;
        (fresh && r.changes == changes && r.cred == *cred).then(|| Arc::clone(&r.list))
    }

    /// Keeps `list` of `dir` (`plus`: with attributes), read for `cred`
    /// when the change count was `changes` (those older than `max_age` go
    /// first, all when there are too many).
    pub fn put(
        &self,
        dir: u64,
        plus: bool,
        cred: &Credentials,
        changes: u64,
        list: Arc<Listing>,
        max_age: Duration,
    ) {
        if list.entries.len() > RECENT_ENTRIES / 4 {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, r| r.list.at.elapsed() < max_age);
        let entries: usize = map.values().map(|r| r.list.entries.len()).sum();
        if map.len() >= RECENT_KEPT || entries + list.entries.len() > RECENT_ENTRIES {
            map.clear();
        }
        let cred = cred.clone();
        map.insert(
            (dir, plus),
            Recent {
                cred,
                changes,
                list,
            },
        );
    }
}

/// One open directory: the listing taken when reading starts at offset 0,
/// served by index so offsets stay valid while the directory changes.
#[derive(Debug, Default)]
pub struct OpenDir {
    /// The listing, once read.
    pub listing: tokio::sync::Mutex<Option<Arc<Listing>>>,
    /// Some of the listing was handed out (a read from offset 0 after
    /// that is a rewinddir: the listing is read again).
    served: AtomicBool,
}

impl OpenDir {
    /// Notes that entries were handed out.
    pub fn mark_read(&self) {
        self.served.store(true, Ordering::Relaxed);
    }

    /// Were entries handed out already?
    pub fn was_read(&self) -> bool {
        self.served.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
enum Handle {
    File(Arc<OpenFile>),
    Dir(Arc<OpenDir>),
}

/// The table of handles; numbers are never reused within a mount.
#[derive(Debug, Default)]
pub struct Handles {
    next: AtomicU64,
    map: Mutex<HashMap<u64, Handle>>,
    /// (mtime sec, mtime nsec, size) of each file at its last open here.
    seen: Mutex<HashMap<u64, (i64, u32, u64)>>,
}

impl Handles {
    /// Whether the kernel may keep the file's cached pages at this open:
    /// the file is `open_here` already (the cache is ours), or its mtime and
    /// size are what they were at the last open (nobody changed it since:
    /// close-to-open consistency). Records the version seen.
    pub fn may_keep_cache(&self, inode: u64, open_here: bool, version: (i64, u32, u64)) -> bool {
        let prev = self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(inode, version);
        open_here || prev == Some(version)
    }

    fn insert(&self, h: Handle) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, h);
        fh
    }

    /// Registers an open file; returns its handle number.
    pub fn add_file(&self, inode: u64, writable: bool, held: bool) -> u64 {
        self.insert(Handle::File(Arc::new(OpenFile {
            inode,
            writable,
            dirty: AtomicBool::new(false),
            held,
        })))
    }

    /// Registers an open directory; returns its handle number.
    pub fn add_dir(&self) -> u64 {
        self.insert(Handle::Dir(Arc::new(OpenDir::default())))
    }

    /// The open file behind `fh`.
    pub fn file(&self, fh: u64) -> Option<Arc<OpenFile>> {
        match self.map.lock().unwrap_or_else(|p| p.into_inner()).get(&fh) {
            Some(Handle::File(f)) => Some(Arc::clone(f)),
            _ => None,
        }
    }

    /// The open directory behind `fh`.
    pub fn dir(&self, fh: u64) -> Option<Arc<OpenDir>> {
        match self.map.lock().unwrap_or_else(|p| p.into_inner()).get(&fh) {
            Some(Handle::Dir(d)) => Some(Arc::clone(d)),
            _ => None,
        }
    }

    /// Forgets handle `fh`; returns the open file it stood for, if a file.
    pub fn remove(&self, fh: u64) -> Option<Arc<OpenFile>> {
        match self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh)
        {
            Some(Handle::File(f)) => Some(f),
            _ => None,
        }
    }

    /// Is any other handle open on `inode`?
    pub fn is_open(&self, inode: u64) -> bool {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|h| matches!(h, Handle::File(f) if f.inode == inode))
    }

    /// The open files per inode.
    pub fn open_counts(&self) -> HashMap<u64, u32> {
        let mut counts: HashMap<u64, u32> = HashMap::new();
        for h in self.map.lock().unwrap_or_else(|p| p.into_inner()).values() {
            if let Handle::File(f) = h {
                *counts.entry(f.inode).or_default() += 1;
            }
        }
        counts
    }

    /// Takes every open file out of the table (at unmount).
    pub fn drain_files(&self) -> Vec<Arc<OpenFile>> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let fhs: Vec<u64> = map
            .iter()
            .filter(|(_, h)| matches!(h, Handle::File(_)))
            .map(|(k, _)| *k)
            .collect();
        fhs.into_iter()
            .filter_map(|k| match map.remove(&k) {
                Some(Handle::File(f)) => Some(f),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(n: usize, at: Instant) -> Arc<Listing> {
        let fetched = super::super::xattrs::NoXattrs::default().fetch();
        let entry = |i: usize| Entry {
            name: format!("n{i}").into_bytes(),
            inode: i as u64 + 1,
            kind: 1,
            attr: None,
            fetched,
        };
        Arc::new(Listing {
            entries: (0..n).map(entry).collect(),
            at,
        })
    }

    #[test]
    fn a_recent_listing_is_served_to_its_caller_while_nothing_changed() {
        let r = RecentListings::default();
        let (alice, bob) = (
            Credentials {
                uid: 1,
                ..Default::default()
            },
            Credentials {
                uid: 2,
                ..Default::default()
            },
        );
        let age = Duration::from_secs(1);
        r.put(5, true, &alice, 7, listing(3, Instant::now()), age);
        assert_eq!(
            r.get(5, true, &alice, 7, age).map(|l| l.entries.len()),
            Some(3)
        );
        assert!(r.get(5, true, &alice, 8, age).is_none(), "changed since");
        assert!(r.get(5, true, &bob, 7, age).is_none(), "another caller");
        assert!(
            r.get(5, false, &alice, 7, age).is_none(),
            "without attributes"
        );
        assert!(
            r.get(6, true, &alice, 7, age).is_none(),
            "another directory"
        );
        assert!(
            r.get(5, true, &alice, 7, Duration::ZERO).is_none(),
            "too old"
        );
        // Too many entries: the old ones go; a huge listing is not kept.
        for d in 0..8 {
            r.put(
                100 + d,
                true,
                &alice,
                7,
                listing(RECENT_ENTRIES / 5, Instant::now()),
                age,
            );
        }
        assert!(r.get(5, true, &alice, 7, age).is_none());
        assert!(r.get(107, true, &alice, 7, age).is_some());
        r.put(
            9,
            true,
            &alice,
            7,
            listing(RECENT_ENTRIES, Instant::now()),
            age,
        );
        assert!(r.get(9, true, &alice, 7, age).is_none());
    }

    #[test]
    fn handles_are_typed_unique_and_removable() {
        let h = Handles::default();
        let a = h.add_file(10, true, false);
        let b = h.add_dir();
        let c = h.add_file(10, false, false);
        assert!(a != b && b != c && a != c);
        assert!(h.file(b).is_none() && h.dir(a).is_none());
        assert_eq!(h.file(a).map(|f| f.inode), Some(10));
        assert!(h.remove(a).is_some());
        assert!(h.is_open(10));
        assert_eq!(h.drain_files().len(), 1);
        assert!(!h.is_open(10));
        assert!(h.dir(b).is_some());
    }
}

/// Inodes known, for a short time, to have no `security.capability`
/// attribute. The kernel asks for it before every write (to drop file
/// capabilities); one master call per write would halve small-write rates.
/// An entry lives as long as attributes may be cached, and a set or remove
/// of that attribute through this mount drops it.
#[derive(Debug, Default)]
pub struct NoCaps {
    map: Mutex<HashMap<u64, std::time::Instant>>,
}

impl NoCaps {
    pub const NAME: &'static [u8] = b"security.capability";

    /// Whether `inode` was seen without the attribute within `ttl`.
    pub fn known(&self, inode: u64, ttl: std::time::Duration) -> bool {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&inode).is_some_and(|t| t.elapsed() < ttl)
    }

    pub fn remember(&self, inode: u64) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            map.clear();
        }
        map.insert(inode, std::time::Instant::now());
    }

    pub fn forget(&self, inode: u64) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&inode);
    }
}

/// Directories seen with the `noentrycache` extra attribute: names looked
/// up in them are not cached by the kernel.
#[derive(Debug, Default)]
pub struct NoEntryCache {
    dirs: Mutex<std::collections::HashSet<u64>>,
}

impl NoEntryCache {
    /// Notes the extra attributes of directory `inode` from a reply.
    pub fn note(&self, inode: u64, no_entry_cache: bool) {
        let mut dirs = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
        if no_entry_cache {
            dirs.insert(inode);
        } else if !dirs.is_empty() {
            dirs.remove(&inode);
        }
    }

    pub fn contains(&self, inode: u64) -> bool {
        let dirs = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
        !dirs.is_empty() && dirs.contains(&inode)
    }
}

#[cfg(test)]
mod no_caps_tests {
    use super::NoCaps;
    use std::time::Duration;

    #[test]
    fn remembers_for_the_ttl_and_forgets_on_change() {
        let c = NoCaps::default();
        assert!(!c.known(5, Duration::from_secs(1)));
        c.remember(5);
        assert!(c.known(5, Duration::from_secs(1)));
        assert!(!c.known(5, Duration::ZERO));
        c.forget(5);
        assert!(!c.known(5, Duration::from_secs(1)));
    }
}
