//! The leader's orders on the store: create, delete, set version, truncate,
//! duplicate, and receiving a replica.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use super::{lock, read_lock, write_lock, Change, Slot, SlotState, Store};
use crate::disk::{self, TEMP_SUFFIX};
use crate::error::ChunkError;
use crate::format::{ChunkFile, FormatError, CHUNK_SIZE, HEADER_SIZE};

/// How long a version the leader asked for and this server lacked keeps
/// older writes from making the chunk (a lease outlives no such wait).
const MISSED_TIME: std::time::Duration = std::time::Duration::from_secs(600);
/// Past this many remembered, the ones older than `MISSED_TIME` are dropped.
const MISSED_KEPT: usize = 1024;

/// A copy being received from a peer: a temp file that becomes the chunk
/// when [`Store::finish_replica`] is called, and is removed if dropped
/// before.
#[derive(Debug)]
pub struct ReplicaWriter {
    file: Option<ChunkFile>,
    disk: usize,
    id: u64,
    version: u32,
    temp: PathBuf,
}

impl ReplicaWriter {
    /// Writes a piece of the chunk.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), ChunkError> {
        super::check_range(offset, data.len() as u64)?;
        let f = self
            .file
            .as_mut()
            .ok_or(ChunkError::NotFound { id: self.id })?;
        f.write(offset, data)
            .map(|_| ())
            .map_err(|e| fmt_err(&self.temp, e))
    }

    /// Sets the length (a source chunk whose tail is zeros has a written
    /// length past its last non-zero piece).
    pub fn set_length(&mut self, length: u64) -> Result<(), ChunkError> {
        let f = self
            .file
            .as_mut()
            .ok_or(ChunkError::NotFound { id: self.id })?;
        if length > f.length() {
            f.truncate(length).map_err(|e| fmt_err(&self.temp, e))?;
        }
        Ok(())
    }
}

impl Drop for ReplicaWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

fn fmt_err(path: &Path, e: FormatError) -> ChunkError {
    match e {
        FormatError::Io(io) => ChunkError::io(format!("writing {}", path.display()), io),
        other => ChunkError::io(
            format!("writing {}", path.display()),
            std::io::Error::other(other.to_string()),
        ),
    }
}

fn fsync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
            tracing::warn!("fsync of folder {} failed: {e}", dir.display());
        }
    }
}

fn temp_path(final_path: &Path) -> PathBuf {
    let mut t = final_path.as_os_str().to_owned();
    t.push(TEMP_SUFFIX);
    PathBuf::from(t)
}

impl Store {
    /// The disk for a new chunk of `need` bytes: not marked, not damaged,
    /// above its reserve; the one with the most free space.
    fn choose_disk(&self, need: u64) -> Result<usize, ChunkError> {
        let mut best: Option<(usize, u64)> = None;
        for (i, d) in self.disks.iter().enumerate() {
            if d.marked || d.is_damaged() {
                continue;
            }
            let Ok(sp) = d.space() else { continue };
            if sp.avail < self.opts.reserve.saturating_add(need) {
                continue;
            }
            if best.is_none_or(|(_, a)| sp.avail > a) {
                best = Some((i, sp.avail));
            }
        }
        best.map(|(i, _)| i).ok_or_else(|| {
            ChunkError::NoSpace(format!(
                "no disk takes new chunks (all full below the {} byte reserve, marked for removal, or damaged)",
                self.opts.reserve
            ))
        })
    }

    fn new_slot(
        &self,
        id: u64,
        disk: usize,
        version: u32,
        length: u64,
        path: PathBuf,
        file: Option<ChunkFile>,
    ) -> Arc<Slot> {
        if file.is_some() {
            self.open_count.fetch_add(1, Ordering::Relaxed);
            lock(&self.open_order).push_back(id);
        }
        self.disks[disk].add_chunk(disk::chunk_bytes(length));
        Arc::new(Slot {
            id,
            disk,
            state: RwLock::new(SlotState {
                version,
                length,
                path,
                file,
                gone: false,
            }),
        })
    }

    /// Creates an empty chunk (id, version).
    pub fn create(&self, id: u64, version: u32) -> Result<(), ChunkError> {
        let _busy = self.busy();
        let disk = self.choose_disk(HEADER_SIZE)?;
        let d = &self.disks[disk];
        let path = d.chunk_path(id, version);
        let mut map = write_lock(&self.chunks);
        if let Some(s) = map.get(&id) {
            return Err(ChunkError::Exists {
                id,
                version: read_lock(&s.state).version,
            });
        }
        // A spare file of a deleted chunk first (no new inode); else a new
        // file. The folder is there but on a new disk: made only then (no
        // mkdir and stat before every create).
        let spared = d.spares.take().and_then(|spare| {
            match ChunkFile::create_from_spare(&spare, &path, id, version) {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::debug!("spare {} not used: {e}", spare.display());
                    d.spares.put_back(spare);
                    None
                }
            }
        });
        let made = match spared {
            Some(f) => Ok(f),
            None => match ChunkFile::create(&path, id, version) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir).map_err(|e| {
                            ChunkError::io(format!("creating folder {}", dir.display()), e)
                        })?;
                    }
                    ChunkFile::create(&path, id, version)
                }
                other => other,
            },
        };
        let mut f = made.map_err(|e| ChunkError::io(format!("creating {}", path.display()), e))?;
        if self.opts.direct_writes {
            f.allow_direct();
        }
        let slot = self.new_slot(id, disk, version, 0, path, Some(f));
        map.insert(id, slot);
        drop(map);
        self.push_change(
            id,
            Change::Added {
                version,
                marked: d.marked,
            },
        );
        self.evict();
        Ok(())
    }

    /// For a write that may make its chunk: creates an empty chunk (id,
    /// version) unless a copy of `id` is here already (the write then
    /// checks its version). Stale when the leader asked this server for a
    /// later version of `id` that it lacked: the writer's lease is old, and
    /// a copy made for it now would miss what the newer lease writes.
    pub fn create_missing(&self, id: u64, version: u32) -> Result<(), ChunkError> {
        if read_lock(&self.chunks).contains_key(&id) {
            return Ok(());
        }
        if let Some(&(later, _)) = lock(&self.missed).get(&id) {
            if later > version {
                return Err(ChunkError::Stale {
                    id,
                    have: later,
                    want: version,
                });
            }
        }
        match self.create(id, version) {
            Err(ChunkError::Exists { .. }) => Ok(()),
            other => other,
        }
    }

    /// Whether a new chunk would be made from a spare file now (a disk
    /// that takes new chunks has one): a rename, not a new inode.
    pub fn has_spares(&self) -> bool {
        self.disks
            .iter()
            .any(|d| !d.marked && !d.is_damaged() && d.spares.count() > 0)
    }

    /// The copy of `id` that an order is to give `new_version`; when it is
    /// not here, that version is noted (see `create_missing`).
    fn slot_to_relabel(&self, id: u64, new_version: u32) -> Result<Arc<Slot>, ChunkError> {
        let r = self.slot(id);
        if r.is_err() {
            self.note_missed(id, new_version);
        }
        r
    }

    /// Notes that the leader asked for version `version` of `id`, which is
    /// not here (see `create_missing`).
    fn note_missed(&self, id: u64, version: u32) {
        let now = std::time::Instant::now();
        let mut m = lock(&self.missed);
        if m.len() >= MISSED_KEPT {
            m.retain(|_, (_, t)| now.duration_since(*t) < MISSED_TIME);
        }
        m.insert(id, (version, now));
    }

    /// Deletes the copy of `id` (of `version`, or any when 0).
    pub fn delete(&self, id: u64, version: u32) -> Result<(), ChunkError> {
        let _busy = self.busy();
        let slot = self.slot(id)?;
        let mut s = write_lock(&slot.state);
        if s.gone {
            return Err(ChunkError::NotFound { id });
        }
        if version != 0 && s.version != version {
            return Err(ChunkError::Stale {
                id,
                have: s.version,
                want: version,
            });
        }
        self.close_file(&mut s);
        let d = &self.disks[slot.disk];
        let kept = !d.marked && !d.is_damaged() && d.spares.keep(&s.path);
        if !kept {
            match std::fs::remove_file(&s.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ChunkError::io(format!("removing {}", s.path.display()), e)),
            }
        }
        s.gone = true;
        self.unmap(&slot);
        self.disks[slot.disk].remove_chunk(disk::chunk_bytes(s.length));
        self.push_change(id, Change::Removed { version: s.version });
        Ok(())
    }

    /// Changes the version of (id, version) to `new_version`.
    pub fn set_version(&self, id: u64, version: u32, new_version: u32) -> Result<(), ChunkError> {
        let _busy = self.busy();
        let slot = self.slot_to_relabel(id, new_version)?;
        let mut s = write_lock(&slot.state);
        if !s.gone && s.version == new_version {
            // Asked again: the leader's first ask took, but its commit did
            // not follow (the call that made it was given up). The copy is
            // what is asked; no write can have come at that version
            // (leases are given after the commit).
            return Ok(());
        }
        Self::check(&slot, &s, version)?;
        self.relabel_locked(&slot, &mut s, new_version)
    }

    fn relabel_locked(
        &self,
        slot: &Slot,
        s: &mut SlotState,
        new_version: u32,
    ) -> Result<(), ChunkError> {
        let d = &self.disks[slot.disk];
        if new_version != s.version {
            self.ensure_open(slot, s)?;
            let new_path = d.chunk_path(slot.id, new_version);
            if let Some(f) = s.file.as_mut() {
                f.set_version(new_version, &new_path).map_err(|e| {
                    ChunkError::io(
                        format!("renaming {} to version {new_version:08X}", s.path.display()),
                        e,
                    )
                })?;
            }
            if self.opts.fsync_before_close {
                fsync_dir(&new_path);
            }
            s.version = new_version;
            s.path = new_path;
        }
        self.push_change(
            slot.id,
            Change::Added {
                version: s.version,
                marked: d.marked,
            },
        );
        Ok(())
    }

    /// Sets the length of (id, version) and its version to `new_version`
    /// (0 or equal: unchanged).
    pub fn truncate(
        &self,
        id: u64,
        version: u32,
        new_version: u32,
        length: u64,
    ) -> Result<(), ChunkError> {
        if length > CHUNK_SIZE {
            return Err(ChunkError::Invalid(format!(
                "length {length} is over the chunk size ({CHUNK_SIZE} bytes)"
            )));
        }
        let _busy = self.busy();
        let slot = self.slot_to_relabel(id, new_version)?;
        let mut s = write_lock(&slot.state);
        Self::check(&slot, &s, version)?;
        self.ensure_open(&slot, &mut s)?;
        let res = match s.file.as_mut() {
            Some(f) => f.truncate(length),
            None => Ok(()),
        };
        if let Err(e) = res {
            return Err(self.fail(&slot, &mut s, e, "truncating"));
        }
        let d = &self.disks[slot.disk];
        if length > s.length {
            d.add_bytes(length - s.length);
        } else {
            d.sub_bytes(s.length - length);
        }
        s.length = length;
        let nv = if new_version == 0 {
            s.version
        } else {
            new_version
        };
        self.relabel_locked(&slot, &mut s, nv)
    }

    /// Makes chunk (new_id, new_version) with the content of (id, version).
    pub fn duplicate(
        &self,
        id: u64,
        version: u32,
        new_id: u64,
        new_version: u32,
    ) -> Result<(), ChunkError> {
        let _busy = self.busy();
        if let Some(s) = read_lock(&self.chunks).get(&new_id) {
            return Err(ChunkError::Exists {
                id: new_id,
                version: read_lock(&s.state).version,
            });
        }
        let slot = self.slot(id)?;
        let s = read_lock(&slot.state);
        Self::check(&slot, &s, version)?;
        let need = disk::chunk_bytes(s.length);
        let disk = self.choose_disk(need)?;
        let d = &self.disks[disk];
        let final_path = d.chunk_path(new_id, new_version);
        let temp = temp_path(&final_path);
        if let Some(dir) = final_path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| ChunkError::io(format!("creating folder {}", dir.display()), e))?;
        }
        std::fs::copy(&s.path, &temp).map_err(|e| {
            ChunkError::io(
                format!("copying {} to {}", s.path.display(), temp.display()),
                e,
            )
        })?;
        drop(s);
        let mut w = ReplicaWriter {
            file: None,
            disk,
            id: new_id,
            version: new_version,
            temp: temp.clone(),
        };
        let mut f = match ChunkFile::open(&temp, id, version) {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                return Err(fmt_err(&temp, e));
            }
        };
        let relabel = f.relabel(new_id, new_version);
        w.file = Some(f);
        relabel.map_err(|e| ChunkError::io(format!("writing header of {}", temp.display()), e))?;
        self.finish_replica(w)
    }

    /// Starts receiving a copy of (id, version) of `length` bytes. `None`:
    /// this copy is here already (nothing to do).
    pub fn begin_replica(
        &self,
        id: u64,
        version: u32,
        length: u64,
    ) -> Result<Option<ReplicaWriter>, ChunkError> {
        if length > CHUNK_SIZE {
            return Err(ChunkError::Invalid(format!(
                "source says length {length}, over the chunk size"
            )));
        }
        if let Some(info) = self.status(id) {
            if info.version == version {
                return Ok(None);
            }
        }
        let disk = self.choose_disk(disk::chunk_bytes(length))?;
        let final_path = self.disks[disk].chunk_path(id, version);
        let temp = temp_path(&final_path);
        if let Some(dir) = final_path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| ChunkError::io(format!("creating folder {}", dir.display()), e))?;
        }
        let mut f = ChunkFile::create(&temp, id, version).map_err(|e| {
            ChunkError::io(
                format!(
                    "creating {} (is a replication of this chunk already running?)",
                    temp.display()
                ),
                e,
            )
        })?;
        if self.opts.direct_writes {
            f.allow_direct();
        }
        Ok(Some(ReplicaWriter {
            file: Some(f),
            disk,
            id,
            version,
            temp,
        }))
    }

    /// Checks a received copy (every CRC), makes it durable, renames it in
    /// (replacing an older local copy) and reports it added.
    pub fn finish_replica(&self, mut w: ReplicaWriter) -> Result<(), ChunkError> {
        let Some(mut f) = w.file.take() else {
            return Err(ChunkError::NotFound { id: w.id });
        };
        let temp = w.temp.clone();
        let fail = |e: ChunkError| {
            let _ = std::fs::remove_file(&temp);
            e
        };
        f.verify().map_err(|e| fail(fmt_err(&temp, e)))?;
        f.sync()
            .map_err(|e| fail(ChunkError::io(format!("fsync of {}", temp.display()), e)))?;
        let d = &self.disks[w.disk];
        let final_path = d.chunk_path(w.id, w.version);
        let mut map = write_lock(&self.chunks);
        let old = map.get(&w.id).cloned();
        if let Some(old) = &old {
            let s = read_lock(&old.state);
            if !s.gone && s.version == w.version {
                return Err(fail(ChunkError::Exists {
                    id: w.id,
                    version: s.version,
                }));
            }
        }
        f.rename(&final_path)
            .map_err(|e| fail(ChunkError::io(format!("renaming {} in", temp.display()), e)))?;
        fsync_dir(&final_path);
        let length = f.length();
        let slot = self.new_slot(w.id, w.disk, w.version, length, final_path, Some(f));
        map.insert(w.id, slot);
        drop(map);
        if let Some(old) = old {
            // An older copy of the chunk: replaced.
            let mut s = write_lock(&old.state);
            if !s.gone {
                self.close_file(&mut s);
                if let Err(e) = std::fs::remove_file(&s.path) {
                    tracing::warn!("cannot remove replaced copy {}: {e}", s.path.display());
                }
                s.gone = true;
                self.disks[old.disk].remove_chunk(disk::chunk_bytes(s.length));
            }
        }
        self.push_change(
            w.id,
            Change::Added {
                version: w.version,
                marked: d.marked,
            },
        );
        self.evict();
        Ok(())
    }
}
