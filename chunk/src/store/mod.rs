//! The chunk store: every copy on every disk, the open-file cache, and the
//! queue of changes the master must hear about.
//!
//! All methods do blocking file I/O: call them from `spawn_blocking` (the
//! gRPC service does). Locking: the map of chunks is behind one `RwLock`
//! held only to look up, insert or remove; each chunk has its own `RwLock`:
//! reads of a chunk share it, writes and orders take it alone, so
//! concurrent writes to one chunk are serialised and different chunks run
//! in parallel.

mod orders;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use orders::ReplicaWriter;

use crate::disk::{self, Disk, Found, ScanResult};
use crate::error::ChunkError;
use crate::format::{ChunkFile, FormatError, CHUNK_SIZE};
use crate::hdd::DiskSpec;

/// Largest read or write request: 16 MiB.
pub const MAX_IO: u64 = 16 << 20;

/// Store settings.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Bytes kept free on every disk: below it a disk takes no new chunks
    /// and writes that grow a chunk fail with ENOSPC.
    pub reserve: u64,
    /// fsync a chunk's data when its file is closed (evicted from the cache).
    pub fsync_before_close: bool,
    /// Open chunk files kept in the cache.
    pub open_files: usize,
    /// Write whole pages of data with `O_DIRECT` (HDD_DIRECT_WRITES).
    pub direct_writes: bool,
    /// Spare chunk files made ahead on each disk (HDD_SPARE_FILES).
    pub spare_files: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            reserve: 256 << 20,
            fsync_before_close: false,
            open_files: 1000,
            direct_writes: true,
            spare_files: crate::spare::DEFAULT_SPARES,
        }
    }
}

/// A change of the copies held, for the next heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A copy was created or got a new version.
    Added {
        /// Its version.
        version: u32,
        /// It is on a disk marked for removal.
        marked: bool,
    },
    /// A copy was deleted or dropped.
    Removed {
        /// Its version.
        version: u32,
    },
}

/// What a chunk holds now (for ChunkStatus and the inventory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkInfo {
    /// Chunk id.
    pub id: u64,
    /// Version.
    pub version: u32,
    /// Written length.
    pub length: u64,
    /// The file.
    pub path: PathBuf,
    /// On a disk marked for removal.
    pub marked: bool,
}

/// One copy.
#[derive(Debug)]
struct Slot {
    id: u64,
    disk: usize,
    state: RwLock<SlotState>,
}

#[derive(Debug)]
struct SlotState {
    version: u32,
    length: u64,
    path: PathBuf,
    /// The open file, when cached.
    file: Option<ChunkFile>,
    /// Deleted or dropped: anyone still holding the slot must not use it.
    gone: bool,
}

/// Every copy this chunkserver holds.
#[derive(Debug)]
pub struct Store {
    disks: Vec<Arc<Disk>>,
    chunks: RwLock<HashMap<u64, Arc<Slot>>>,
    /// Ids of chunks whose file was opened, oldest first (may hold stale
    /// ids; `open_count` is the truth).
    open_order: Mutex<std::collections::VecDeque<u64>>,
    open_count: AtomicUsize,
    changes: Mutex<BTreeMap<u64, Change>>,
    /// Chunks the leader asked for at a version while they were not here:
    /// (that version, when). A write that may create its chunk at an older
    /// version is refused (`create_missing`).
    missed: Mutex<HashMap<u64, (u32, std::time::Instant)>>,
    opts: StoreOptions,
    load: AtomicU32,
}

fn read_lock<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write_lock<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts an operation in progress (the heartbeat's `load`).
struct LoadGuard<'a>(&'a AtomicU32);

impl Drop for LoadGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Store {
    /// Opens the disks (taking their locks) and scans them, one thread per
    /// disk. A disk whose scan fails is marked damaged; the others serve.
    pub fn open(specs: &[DiskSpec], opts: StoreOptions) -> Result<Store, String> {
        let mut disks = Vec::with_capacity(specs.len());
        for s in specs {
            disks.push(Arc::new(Disk::open(s, opts.spare_files)?));
        }
        let results: Vec<std::io::Result<ScanResult>> = std::thread::scope(|sc| {
            let handles: Vec<_> = disks
                .iter()
                .map(|d| sc.spawn(move || disk::scan(&d.path)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(std::io::Error::other("the scan thread panicked")))
                })
                .collect()
        });
        let store = Store {
            disks,
            chunks: RwLock::new(HashMap::new()),
            open_order: Mutex::new(Default::default()),
            open_count: AtomicUsize::new(0),
            changes: Mutex::new(BTreeMap::new()),
            missed: Mutex::new(HashMap::new()),
            opts,
            load: AtomicU32::new(0),
        };
        for (i, r) in results.into_iter().enumerate() {
            let d = &store.disks[i];
            match r {
                Ok(r) => {
                    for (id, version, why) in &r.bad {
                        tracing::error!(
                            "bad chunk {id:016X} version {version:08X}: {why}; not served"
                        );
                        store.push_change(*id, Change::Removed { version: *version });
                    }
                    for p in &r.ignored {
                        tracing::warn!("ignoring {}: not a chunk file", p.display());
                    }
                    tracing::info!(
                        disk = %d.path.display(),
                        chunks = r.chunks.len(),
                        bad = r.bad.len(),
                        temp_removed = r.temp_removed,
                        marked = d.marked,
                        "disk scanned"
                    );
                    for f in r.chunks {
                        store.insert_found(i, f);
                    }
                }
                Err(e) => {
                    tracing::error!(
                        "disk {} cannot be scanned: {e}; marked damaged",
                        d.path.display()
                    );
                    d.mark_damaged();
                }
            }
        }
        Ok(store)
    }

    /// Adds a scanned chunk; of two copies of one chunk the newer version
    /// wins and the other is quarantined.
    fn insert_found(&self, disk: usize, f: Found) {
        let mut map = write_lock(&self.chunks);
        if let Some(old) = map.get(&f.id) {
            let (ov, op) = {
                let s = read_lock(&old.state);
                (s.version, s.path.clone())
            };
            let (loser, keep_new) = if f.version > ov {
                (op, true)
            } else {
                (f.path.clone(), false)
            };
            tracing::warn!(
                "chunk {:016X} found twice (versions {ov:08X} and {:08X}); keeping the newer, quarantining {}",
                f.id,
                f.version,
                loser.display()
            );
            disk::quarantine(&loser);
            if !keep_new {
                return;
            }
            let od = old.disk;
            let ol = read_lock(&old.state).length;
            self.disks[od].remove_chunk(disk::chunk_bytes(ol));
        }
        self.disks[disk].add_chunk(disk::chunk_bytes(f.length));
        map.insert(
            f.id,
            Arc::new(Slot {
                id: f.id,
                disk,
                state: RwLock::new(SlotState {
                    version: f.version,
                    length: f.length,
                    path: f.path,
                    file: None,
                    gone: false,
                }),
            }),
        );
    }

    /// The disks.
    pub fn disks(&self) -> &[Arc<Disk>] {
        &self.disks
    }

    /// Operations in progress.
    pub fn load(&self) -> u32 {
        self.load.load(Ordering::Relaxed)
    }

    fn busy(&self) -> LoadGuard<'_> {
        self.load.fetch_add(1, Ordering::Relaxed);
        LoadGuard(&self.load)
    }

    /// Chunks held.
    pub fn chunk_count(&self) -> usize {
        read_lock(&self.chunks).len()
    }

    fn slot(&self, id: u64) -> Result<Arc<Slot>, ChunkError> {
        read_lock(&self.chunks)
            .get(&id)
            .cloned()
            .ok_or(ChunkError::NotFound { id })
    }

    /// Every chunk id held, sorted (the scrub's round robin).
    pub fn ids(&self) -> Vec<u64> {
        let mut v: Vec<u64> = read_lock(&self.chunks).keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// What is held of one chunk.
    pub fn status(&self, id: u64) -> Option<ChunkInfo> {
        let slot = self.slot(id).ok()?;
        let s = read_lock(&slot.state);
        if s.gone {
            return None;
        }
        Some(ChunkInfo {
            id,
            version: s.version,
            length: s.length,
            path: s.path.clone(),
            marked: self.disks[slot.disk].marked,
        })
    }

    /// Every copy held (for the full report to the master).
    pub fn inventory(&self) -> Vec<ChunkInfo> {
        let slots: Vec<Arc<Slot>> = read_lock(&self.chunks).values().cloned().collect();
        slots.iter().filter_map(|s| self.status(s.id)).collect()
    }

    /// Records a change for the next heartbeat (the latest per chunk wins).
    fn push_change(&self, id: u64, c: Change) {
        lock(&self.changes).insert(id, c);
    }

    /// Takes the changes queued since the last call.
    pub fn take_changes(&self) -> BTreeMap<u64, Change> {
        std::mem::take(&mut *lock(&self.changes))
    }

    /// Puts back changes whose heartbeat failed (newer ones win).
    pub fn return_changes(&self, old: BTreeMap<u64, Change>) {
        let mut c = lock(&self.changes);
        for (id, ch) in old {
            c.entry(id).or_insert(ch);
        }
    }

    /// Checks the version under the chunk's lock.
    fn check(slot: &Slot, s: &SlotState, version: u32) -> Result<(), ChunkError> {
        if s.gone {
            return Err(ChunkError::NotFound { id: slot.id });
        }
        if s.version != version {
            return Err(ChunkError::Stale {
                id: slot.id,
                have: s.version,
                want: version,
            });
        }
        Ok(())
    }

    /// Opens the chunk's file if it is not cached (state locked for write).
    fn ensure_open(&self, slot: &Slot, s: &mut SlotState) -> Result<(), ChunkError> {
        if s.file.is_some() {
            return Ok(());
        }
        let mut f = ChunkFile::open(&s.path, slot.id, s.version)
            .map_err(|e| self.fail(slot, s, e, "opening"))?;
        if self.opts.direct_writes {
            f.allow_direct();
        }
        s.file = Some(f);
        self.open_count.fetch_add(1, Ordering::Relaxed);
        lock(&self.open_order).push_back(slot.id);
        Ok(())
    }

    /// Closes cached files beyond the cache size (oldest opened first);
    /// never blocks on a busy chunk.
    fn evict(&self) {
        let mut tries = 0;
        while self.open_count.load(Ordering::Relaxed) > self.opts.open_files && tries < 64 {
            tries += 1;
            let Some(id) = lock(&self.open_order).pop_front() else {
                return;
            };
            let Ok(slot) = self.slot(id) else { continue };
            let Ok(mut s) = slot.state.try_write() else {
                lock(&self.open_order).push_back(id);
                continue;
            };
            self.close_file(&mut s);
        }
    }

    fn close_file(&self, s: &mut SlotState) {
        if let Some(f) = s.file.take() {
            self.open_count.fetch_sub(1, Ordering::Relaxed);
            if self.opts.fsync_before_close {
                if let Err(e) = f.sync() {
                    tracing::warn!("fsync of {} on close failed: {e}", s.path.display());
                }
            }
        }
    }

    /// Turns a format error into the client's error, dropping the copy when
    /// it is damaged (bad block, bad header) or its disk failed (EIO).
    fn fail(&self, slot: &Slot, s: &mut SlotState, e: FormatError, doing: &str) -> ChunkError {
        let id = slot.id;
        match e {
            FormatError::Io(io) if io.raw_os_error() == Some(libc::ENOSPC) => {
                ChunkError::io(format!("{doing} chunk {id:016X}"), io)
            }
            FormatError::Io(io) if io.raw_os_error() == Some(libc::EIO) => {
                let d = &self.disks[slot.disk];
                tracing::error!(
                    "I/O error {doing} chunk {id:016X} on {}: {io}",
                    d.path.display()
                );
                self.drop_locked(slot, s, &format!("I/O error: {io}"));
                if d.note_io_error(id) {
                    self.damage_disk(slot.disk);
                }
                ChunkError::Corrupt {
                    id,
                    msg: format!("I/O error {doing} it: {io}"),
                }
            }
            FormatError::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
                tracing::error!(
                    "chunk {id:016X}: its file {} disappeared; dropping this copy",
                    s.path.display()
                );
                self.drop_locked(slot, s, "file missing");
                ChunkError::NotFound { id }
            }
            FormatError::Io(io) => ChunkError::io(format!("{doing} chunk {id:016X}"), io),
            FormatError::BadBlock { block } => {
                tracing::error!(
                    "chunk {id:016X} version {:08X}: bad block {block} (CRC mismatch) in {}; dropping this copy",
                    s.version,
                    s.path.display()
                );
                self.drop_locked(slot, s, "bad block");
                metrics::counter!("mfs_chunk_bad_blocks_total").increment(1);
                ChunkError::Corrupt {
                    id,
                    msg: format!("block {block} fails its CRC check"),
                }
            }
            FormatError::BadHeader(m) => {
                tracing::error!(
                    "chunk {id:016X}: {m} in {}; dropping this copy",
                    s.path.display()
                );
                self.drop_locked(slot, s, "bad header");
                ChunkError::Corrupt {
                    id,
                    msg: format!("bad header: {m}"),
                }
            }
        }
    }

    /// Drops a damaged copy: out of the map, file quarantined, reported.
    fn drop_locked(&self, slot: &Slot, s: &mut SlotState, why: &str) {
        if s.gone {
            return;
        }
        tracing::warn!(
            "chunk {:016X} version {:08X} dropped ({why}); the master will be told",
            slot.id,
            s.version
        );
        self.close_file(s);
        s.gone = true;
        self.unmap(slot);
        disk::quarantine(&s.path);
        self.disks[slot.disk].remove_chunk(disk::chunk_bytes(s.length));
        self.push_change(slot.id, Change::Removed { version: s.version });
    }

    /// Removes the slot from the map (if it is still the one mapped).
    fn unmap(&self, slot: &Slot) {
        let mut map = write_lock(&self.chunks);
        if map
            .get(&slot.id)
            .is_some_and(|m| std::ptr::eq(m.as_ref(), slot))
        {
            map.remove(&slot.id);
        }
    }

    /// A disk failed: every copy on it is reported removed.
    fn damage_disk(&self, disk: usize) {
        let d = &self.disks[disk];
        d.mark_damaged();
        let victims: Vec<Arc<Slot>> = {
            let mut map = write_lock(&self.chunks);
            let ids: Vec<u64> = map
                .iter()
                .filter(|(_, s)| s.disk == disk)
                .map(|(id, _)| *id)
                .collect();
            ids.iter().filter_map(|id| map.remove(id)).collect()
        };
        tracing::error!(
            "disk {} is damaged (I/O errors on several chunks): its {} chunks are reported lost; the other disks keep serving",
            d.path.display(),
            victims.len()
        );
        for v in victims {
            // The current holder (if any) keeps its lock; mark what we can.
            if let Ok(mut s) = v.state.try_write() {
                s.gone = true;
                self.close_file(&mut s);
                self.push_change(v.id, Change::Removed { version: s.version });
            } else {
                let ver = read_lock(&v.state).version;
                self.push_change(v.id, Change::Removed { version: ver });
            }
            d.remove_chunk(0);
        }
    }

    /// Reads `size` bytes at `offset` of chunk (id, version); every block
    /// returned is checked.
    pub fn read(
        &self,
        id: u64,
        version: u32,
        offset: u64,
        size: u64,
    ) -> Result<Vec<u8>, ChunkError> {
        check_range(offset, size)?;
        let _busy = self.busy();
        let slot = self.slot(id)?;
        let (res, opened) = loop {
            {
                let s = read_lock(&slot.state);
                Self::check(&slot, &s, version)?;
                if let Some(f) = &s.file {
                    break (f.read(offset, size as usize), false);
                }
            }
            let mut s = write_lock(&slot.state);
            Self::check(&slot, &s, version)?;
            self.ensure_open(&slot, &mut s)?;
            if let Some(f) = &s.file {
                break (f.read(offset, size as usize), true);
            }
        };
        if opened {
            self.evict();
        }
        match res {
            Ok((data, repairs)) => {
                if !repairs.is_empty() {
                    let mut s = write_lock(&slot.state);
                    if let (false, Some(f)) = (s.gone, s.file.as_mut()) {
                        tracing::warn!(
                            "chunk {id:016X}: blocks {repairs:?} hold their data from before an interrupted write; table repaired"
                        );
                        if let Err(e) = f.repair(&repairs) {
                            tracing::warn!("chunk {id:016X}: cannot repair its block table: {e}");
                        }
                    }
                }
                metrics::counter!("mfs_chunk_bytes_read_total").increment(data.len() as u64);
                Ok(data)
            }
            Err(e) => {
                let mut s = write_lock(&slot.state);
                Err(self.fail(&slot, &mut s, e, "reading"))
            }
        }
    }

    /// [`Store::read`] without blocking: the data when the chunk's file is
    /// open and every block read is in the page cache, else `None` (also
    /// for any error: the blocking read finds and handles it).
    pub fn read_cached(&self, id: u64, version: u32, offset: u64, size: u64) -> Option<Vec<u8>> {
        check_range(offset, size).ok()?;
        let _busy = self.busy();
        let slot = self.slot(id).ok()?;
        let s = slot.state.try_read().ok()?;
        Self::check(&slot, &s, version).ok()?;
        let (data, repairs) = s.file.as_ref()?.read_cached(offset, size as usize).ok()??;
        if !repairs.is_empty() {
            return None;
        }
        metrics::counter!("mfs_chunk_bytes_read_total").increment(data.len() as u64);
        Some(data)
    }

    /// Writes `data` at `offset` of chunk (id, version); returns the written
    /// length after it.
    pub fn write(
        &self,
        id: u64,
        version: u32,
        offset: u64,
        data: &[u8],
    ) -> Result<u64, ChunkError> {
        self.write_ranges(id, version, &[(offset, data)])
    }

    /// Writes each `(offset, data)` of chunk (id, version) in order, under
    /// one hold of the chunk; returns the written length after them. A
    /// range out of bounds fails the call before anything is written.
    pub fn write_ranges(
        &self,
        id: u64,
        version: u32,
        ranges: &[(u64, &[u8])],
    ) -> Result<u64, ChunkError> {
        check_ranges(ranges)?;
        let _busy = self.busy();
        let slot = self.slot(id)?;
        let s = write_lock(&slot.state);
        self.write_locked(&slot, s, version, ranges)
    }

    /// [`Store::write_ranges`] unless the chunk is busy (another write or a
    /// sync holds it), its file is not open, or a range must read blocks
    /// it fills partly: `None` then, and nothing was done. For a caller that
    /// must not wait on a lock (small writes on an async worker thread).
    pub fn write_if_free(
        &self,
        id: u64,
        version: u32,
        ranges: &[(u64, &[u8])],
    ) -> Option<Result<u64, ChunkError>> {
        if let Err(e) = check_ranges(ranges) {
            return Some(Err(e));
        }
        let _busy = self.busy();
        let slot = match self.slot(id) {
            Ok(slot) => slot,
            Err(e) => return Some(Err(e)),
        };
        let s = match slot.state.try_write() {
            Ok(s) => s,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        // Not open (opening reads the header), or a write that must read
        // the old content of a block it fills partly: either may wait for
        // the disk.
        let lens = ranges
            .iter()
            .map(|(offset, data)| (*offset, data.len() as u64));
        match s.file.as_ref().map(|f| f.ranges_without_reading(lens)) {
            Some(true) => {}
            Some(false) => return None,
            None if !s.gone => return None,
            None => {} // answered as the blocking write would: not found
        }
        Some(self.write_locked(&slot, s, version, ranges))
    }

    /// The write of [`Store::write_ranges`] under the chunk's lock `s`.
    fn write_locked(
        &self,
        slot: &Slot,
        mut s: RwLockWriteGuard<'_, SlotState>,
        version: u32,
        ranges: &[(u64, &[u8])],
    ) -> Result<u64, ChunkError> {
        let id = slot.id;
        Self::check(slot, &s, version)?;
        let end = ranges
            .iter()
            .map(|(offset, data)| offset + data.len() as u64)
            .max()
            .unwrap_or(0);
        let disk = &self.disks[slot.disk];
        // Held until the write is done (the growth counts as in flight).
        let _claim = if end > s.length {
            let grow = end - s.length;
            let claimed = disk.claim(grow, self.opts.reserve).map_err(|e| {
                ChunkError::io(format!("checking space on {}", disk.path.display()), e)
            })?;
            match claimed {
                Ok(c) => Some(c),
                Err(avail) => {
                    return Err(ChunkError::NoSpace(format!(
                        "disk {} has {avail} bytes free, keeping {} in reserve (HDD_LEAVE_SPACE_DEFAULT) and {grow} for this write besides those in flight",
                        disk.path.display(),
                        self.opts.reserve
                    )))
                }
            }
        } else {
            None
        };
        let opened = s.file.is_none();
        self.ensure_open(slot, &mut s)?;
        let mut length = s.length;
        let Some(f) = s.file.as_mut() else {
            return Err(ChunkError::NotFound { id });
        };
        let mut bytes = 0;
        let mut res = Ok(());
        for (offset, data) in ranges {
            match f.write(*offset, data) {
                Ok(len) => length = len,
                Err(e) => {
                    res = Err(e);
                    break;
                }
            }
            bytes += data.len() as u64;
        }
        metrics::counter!("mfs_chunk_bytes_written_total").increment(bytes);
        // The ranges written before one that failed count.
        if length > s.length {
            disk.add_bytes(length - s.length);
            s.length = length;
        }
        let out = match res {
            Ok(()) => Ok(length),
            Err(e) => Err(self.fail(slot, &mut s, e, "writing")),
        };
        drop(s);
        if opened {
            self.evict();
        }
        out
    }

    /// Makes chunk (id, version) durable.
    pub fn sync(&self, id: u64, version: u32) -> Result<(), ChunkError> {
        let _busy = self.busy();
        let slot = self.slot(id)?;
        let mut s = write_lock(&slot.state);
        Self::check(&slot, &s, version)?;
        self.ensure_open(&slot, &mut s)?;
        let r = match &s.file {
            Some(f) => f.sync(),
            None => Ok(()),
        };
        r.map_err(|e| self.fail(&slot, &mut s, FormatError::Io(e), "syncing"))
    }

    /// Closes every cached file (fsyncing them when HDD_FSYNC_BEFORE_CLOSE
    /// is set): at shutdown.
    pub fn close_all(&self) {
        let slots: Vec<Arc<Slot>> = read_lock(&self.chunks).values().cloned().collect();
        for slot in slots {
            let mut s = write_lock(&slot.state);
            self.close_file(&mut s);
        }
    }

    /// Re-reads one chunk whole and checks every block (the scrub). A bad
    /// copy is dropped and reported; returns the error then.
    pub fn verify(&self, id: u64) -> Result<(), ChunkError> {
        let _busy = self.busy();
        let slot = self.slot(id)?;
        let mut s = write_lock(&slot.state);
        if s.gone {
            return Err(ChunkError::NotFound { id });
        }
        let opened = s.file.is_none();
        self.ensure_open(&slot, &mut s)?;
        let res = match s.file.as_mut() {
            Some(f) => f
                .verify()
                .and_then(|r| f.repair(&r).map_err(FormatError::Io)),
            None => Ok(()),
        };
        let out = res.map_err(|e| self.fail(&slot, &mut s, e, "scrubbing"));
        if opened {
            self.close_file(&mut s);
        }
        out
    }
}

/// [`check_range`] of every `(offset, data)`.
pub fn check_ranges(ranges: &[(u64, &[u8])]) -> Result<(), ChunkError> {
    ranges
        .iter()
        .try_for_each(|(offset, data)| check_range(*offset, data.len() as u64))
}

/// Checks a request range: inside the chunk and at most 16 MiB.
pub fn check_range(offset: u64, size: u64) -> Result<(), ChunkError> {
    if size > MAX_IO {
        return Err(ChunkError::Invalid(format!(
            "{size} bytes asked; at most {MAX_IO} bytes a request"
        )));
    }
    if offset.checked_add(size).is_none_or(|e| e > CHUNK_SIZE) {
        return Err(ChunkError::Invalid(format!(
            "range {offset}+{size} goes past the chunk size ({CHUNK_SIZE} bytes)"
        )));
    }
    Ok(())
}
