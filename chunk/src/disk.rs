//! One disk of a chunkserver: its space, its health, and the start-up scan
//! that finds its chunks.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::format::{self, HEADER_SIZE};
use crate::hdd::DiskSpec;
use crate::spare::Spares;

/// Suffix of a copy being received (Replicate, Duplicate); removed at start.
pub const TEMP_SUFFIX: &str = ".tmp";
/// Suffix given to a damaged copy: kept for inspection, never served.
pub const BAD_SUFFIX: &str = ".bad";

/// A disk listed in `mfshdd.cfg`.
#[derive(Debug)]
pub struct Disk {
    /// Its directory.
    pub path: PathBuf,
    /// Marked for removal: no new chunks, its chunks are drained.
    pub marked: bool,
    /// Most bytes to use, if capped in `mfshdd.cfg`.
    pub limit: Option<u64>,
    /// I/O errors made it unusable.
    damaged: AtomicBool,
    /// Chunks that hit an I/O error on it (the second distinct one marks the
    /// disk damaged).
    failed_chunks: Mutex<HashSet<u64>>,
    /// Bytes held by chunk files (headers plus written lengths).
    bytes: AtomicU64,
    /// Chunks on it.
    chunks: AtomicU64,
    /// Bytes that writes in flight add to chunks (see [`Disk::claim`]).
    growing: AtomicU64,
    /// Files of deleted chunks kept for new ones (`crate::spare`).
    pub spares: Spares,
    /// Keeps the disk's lock file (and its flock) while we run.
    _lock: File,
}

/// Space on a disk, as reported to the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Bytes usable by this chunkserver.
    pub total: u64,
    /// Bytes used.
    pub used: u64,
    /// Bytes still free for chunks (before the reserve).
    pub avail: u64,
}

impl Disk {
    /// Opens a disk: takes its lock file so that two chunkservers never
    /// share it.
    /// `spares`: how many spare chunk files to make ahead on it (see
    /// `crate::spare`).
    pub fn open(spec: &DiskSpec, spares: usize) -> Result<Disk, String> {
        let lock_path = spec.path.join(".lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| {
                format!(
                    "disk {}: cannot open {}: {e}",
                    spec.path.display(),
                    lock_path.display()
                )
            })?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(format!(
                "disk {} is in use by another chunkserver (lock {} is held): give each chunkserver its own disks",
                spec.path.display(),
                lock_path.display()
            ));
        }
        Ok(Disk {
            path: spec.path.clone(),
            marked: spec.marked,
            limit: spec.limit,
            damaged: AtomicBool::new(false),
            failed_chunks: Mutex::new(HashSet::new()),
            bytes: AtomicU64::new(0),
            growing: AtomicU64::new(0),
            chunks: AtomicU64::new(0),
            spares: Spares::load(&spec.path, spares),
            _lock: lock,
        })
    }

    /// I/O errors made it unusable.
    pub fn is_damaged(&self) -> bool {
        self.damaged.load(Ordering::Relaxed)
    }

    /// Marks the disk damaged; returns true if it was not already.
    pub fn mark_damaged(&self) -> bool {
        !self.damaged.swap(true, Ordering::Relaxed)
    }

    /// Records an I/O error of `chunk` on this disk; returns true when this
    /// makes the disk damaged (a second chunk failing).
    pub fn note_io_error(&self, chunk: u64) -> bool {
        let n = match self.failed_chunks.lock() {
            Ok(mut s) => {
                s.insert(chunk);
                s.len()
            }
            Err(_) => 2,
        };
        n >= 2 && self.mark_damaged()
    }

    /// Chunks on the disk.
    pub fn chunk_count(&self) -> u64 {
        self.chunks.load(Ordering::Relaxed)
    }

    /// Accounts a chunk added (`+1`, its bytes) or removed.
    pub fn add_chunk(&self, bytes: u64) {
        self.chunks.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Accounts a chunk removed with `bytes`.
    pub fn remove_chunk(&self, bytes: u64) {
        let _ = self
            .chunks
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                Some(c.saturating_sub(1))
            });
        self.sub_bytes(bytes);
    }

    /// Accounts bytes added to a chunk.
    pub fn add_bytes(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Accounts bytes taken from a chunk.
    pub fn sub_bytes(&self, bytes: u64) {
        let _ = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(bytes))
            });
    }

    /// Claims `grow` bytes for a write that lengthens a chunk, if the
    /// disk has them free beyond `reserve` counting the other writes in
    /// flight (writes to different chunks run at once: each checking the
    /// free space alone, they could together overrun the reserve and meet
    /// the file system's own ENOSPC midway). The claim ends when dropped,
    /// after the write. `Err(avail)` inside: no room (`avail`: the free
    /// space it saw).
    pub fn claim(&self, grow: u64, reserve: u64) -> std::io::Result<Result<Claim<'_>, u64>> {
        let others = self.growing.fetch_add(grow, Ordering::AcqRel);
        let claim = Claim { disk: self, grow };
        let avail = self.space()?.avail;
        let want = reserve.saturating_add(grow).saturating_add(others);
        Ok(if avail < want { Err(avail) } else { Ok(claim) })
    }

    /// Space on the disk now (statvfs), capped by the `mfshdd.cfg` limit.
    pub fn space(&self) -> std::io::Result<Space> {
        let (fs_total, fs_used, fs_avail) = statvfs(&self.path)?;
        Ok(match self.limit {
            None => Space {
                total: fs_total,
                used: fs_used,
                avail: fs_avail,
            },
            Some(limit) => {
                let total = limit.min(fs_total);
                let used = self.bytes.load(Ordering::Relaxed);
                Space {
                    total,
                    used,
                    avail: total.saturating_sub(used).min(fs_avail),
                }
            }
        })
    }

    /// Where chunk (id, version) lives on this disk.
    pub fn chunk_path(&self, id: u64, version: u32) -> PathBuf {
        self.path
            .join(format::subdir_name(id))
            .join(format::file_name(id, version))
    }
}

/// (total, used, available to unprivileged users) bytes of the file system
/// holding `path`.
pub fn statvfs(path: &Path) -> std::io::Result<(u64, u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: `st` is plain old data filled in by the call; `c` is a valid
    // NUL-terminated string that outlives it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let frsize = st.f_frsize as u64;
    let total = st.f_blocks as u64 * frsize;
    let free = st.f_bfree as u64 * frsize;
    let avail = st.f_bavail as u64 * frsize;
    Ok((total, total.saturating_sub(free), avail))
}

/// A chunk found by the scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Chunk id.
    pub id: u64,
    /// Version.
    pub version: u32,
    /// Written length.
    pub length: u64,
    /// The file.
    pub path: PathBuf,
}

/// What the scan of one disk found.
#[derive(Debug, Default)]
pub struct ScanResult {
    /// Good chunks.
    pub chunks: Vec<Found>,
    /// Chunk files with a bad header (quarantined with a `.bad` suffix):
    /// (id, version from the name, what is wrong).
    pub bad: Vec<(u64, u32, String)>,
    /// Temp files of unfinished replications, removed.
    pub temp_removed: usize,
    /// Files that are not chunk files (left alone).
    pub ignored: Vec<PathBuf>,
}

/// Scans a disk's 256 subfolders (making those missing): parses names,
/// checks headers, removes temp files, quarantines bad chunks; logs
/// progress every few seconds.
pub fn scan(root: &Path) -> std::io::Result<ScanResult> {
    let mut res = ScanResult::default();
    let mut last_log = Instant::now();
    let mut make_folders = true;
    for sub in 0..256u64 {
        let dir = root.join(format::subdir_name(sub));
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Made now, so the first chunks a write creates there do
                // not wait for a mkdir (a create still makes a missing one).
                if make_folders {
                    if let Err(e) = std::fs::create_dir(&dir) {
                        tracing::warn!("cannot make chunk folder {}: {e}", dir.display());
                        make_folders = false;
                    }
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                res.ignored.push(path);
                continue;
            };
            if name.ends_with(TEMP_SUFFIX) {
                match std::fs::remove_file(&path) {
                    Ok(()) => res.temp_removed += 1,
                    Err(e) => tracing::warn!("cannot remove temp file {}: {e}", path.display()),
                }
                continue;
            }
            if name.ends_with(BAD_SUFFIX) {
                continue;
            }
            let Some((id, version)) = format::parse_file_name(&name) else {
                res.ignored.push(path);
                continue;
            };
            if format::subdir_name(id) != format::subdir_name(sub) {
                res.bad.push((
                    id,
                    version,
                    format!("{} is in the wrong folder", path.display()),
                ));
                quarantine(&path);
                continue;
            }
            match format::read_header(&path)
                .and_then(|h| format::check_header_matches(&h, id, version).map(|()| h))
            {
                Ok(h) => res.chunks.push(Found {
                    id,
                    version,
                    length: h.length,
                    path,
                }),
                Err(e) => {
                    res.bad
                        .push((id, version, format!("{}: {e}", path.display())));
                    quarantine(&path);
                }
            }
            if last_log.elapsed() >= Duration::from_secs(3) {
                tracing::info!("scanned {} chunks on {}", res.chunks.len(), root.display());
                last_log = Instant::now();
            }
        }
    }
    Ok(res)
}

/// Renames a damaged copy out of the way (`.bad`), or removes it if that
/// fails; it is never served again.
pub fn quarantine(path: &Path) {
    let mut bad = path.as_os_str().to_owned();
    bad.push(BAD_SUFFIX);
    if let Err(e) = std::fs::rename(path, &bad) {
        if e.kind() == std::io::ErrorKind::NotFound {
            return;
        }
        tracing::warn!("cannot quarantine {}: {e}; removing it", path.display());
        let _ = std::fs::remove_file(path);
    }
}

/// The bytes a chunk of written length `length` is accounted for.
pub fn chunk_bytes(length: u64) -> u64 {
    HEADER_SIZE + length
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::ChunkFile;

    #[test]
    fn writes_in_flight_claim_room_together() {
        let d = tempfile::tempdir().unwrap();
        let spec = DiskSpec {
            path: d.path().to_owned(),
            marked: false,
            limit: Some(10 << 20),
        };
        let disk = Disk::open(&spec, 0).unwrap();
        let mib = 1u64 << 20;
        let claim = |grow| disk.claim(grow * mib, mib).unwrap();
        let a = claim(4).expect("room for the first");
        let b = claim(4).expect("1 MiB reserve + 8 MiB in flight fit in 10");
        assert!(claim(2).is_err(), "the third would overrun the reserve");
        drop(a);
        let c = claim(2).expect("room once the first write is done");
        drop((b, c));
        assert_eq!(disk.growing.load(Ordering::Relaxed), 0, "claims end");
    }

    #[test]
    fn scan_finds_chunks_removes_temps_and_reports_bad_ones() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let spec = DiskSpec {
            path: root.to_owned(),
            marked: false,
            limit: None,
        };
        let disk = Disk::open(&spec, 0).unwrap();
        // Two good chunks.
        for (id, ver, len) in [(0x101u64, 3u32, 5usize), (0x2FF, 1, 0)] {
            let p = disk.chunk_path(id, ver);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            let mut c = ChunkFile::create(&p, id, ver).unwrap();
            c.write(0, &vec![1u8; len]).unwrap();
        }
        // A temp file of an unfinished replication.
        let tmp = root
            .join("01")
            .join("chunk_0000000000000201_00000001.mfs.tmp");
        std::fs::write(&tmp, b"partial").unwrap();
        // A file whose header says another chunk (misnamed).
        let mis = disk.chunk_path(0x301, 1);
        ChunkFile::create(&root.join("01").join("x"), 0x401, 1).unwrap();
        std::fs::rename(root.join("01").join("x"), &mis).unwrap();
        // A stray file.
        std::fs::write(root.join("01").join("notes.txt"), b"hi").unwrap();

        let r = scan(root).unwrap();
        let mut got: Vec<(u64, u32, u64)> = r
            .chunks
            .iter()
            .map(|f| (f.id, f.version, f.length))
            .collect();
        got.sort();
        assert_eq!(got, vec![(0x101, 3, 5), (0x2FF, 1, 0)]);
        assert_eq!(r.temp_removed, 1);
        assert!(!tmp.exists());
        assert_eq!(r.bad.len(), 1);
        assert_eq!((r.bad[0].0, r.bad[0].1), (0x301, 1));
        assert!(!mis.exists(), "the bad copy is out of the way");
        assert_eq!(r.ignored.len(), 1);
        // A second scan no longer sees the quarantined file.
        let r2 = scan(root).unwrap();
        assert!(r2.bad.is_empty());
        assert_eq!(r2.chunks.len(), 2);
    }

    #[test]
    fn a_disk_cannot_be_opened_twice() {
        let d = tempfile::tempdir().unwrap();
        let spec = DiskSpec {
            path: d.path().to_owned(),
            marked: false,
            limit: None,
        };
        let _a = Disk::open(&spec, 0).unwrap();
        let e = Disk::open(&spec, 0).unwrap_err();
        assert!(e.contains("in use"), "{e}");
    }

    #[test]
    fn space_is_reported_and_capped_by_limit() {
        let d = tempfile::tempdir().unwrap();
        let mut spec = DiskSpec {
            path: d.path().to_owned(),
            marked: false,
            limit: None,
        };
        let s = Disk::open(&spec, 0).unwrap().space().unwrap();
        assert!(s.total > 0 && s.used <= s.total && s.avail <= s.total);
        let d2 = tempfile::tempdir().unwrap();
        spec.path = d2.path().to_owned();
        spec.limit = Some(1 << 20);
        let disk = Disk::open(&spec, 0).unwrap();
        disk.add_chunk(1000);
        let s = disk.space().unwrap();
        assert_eq!((s.total, s.used), (1 << 20, 1000));
        assert!(s.avail <= (1 << 20) - 1000);
    }

    #[test]
    fn second_failing_chunk_marks_the_disk_damaged() {
        let d = tempfile::tempdir().unwrap();
        let disk = Disk::open(
            &DiskSpec {
                path: d.path().to_owned(),
                marked: false,
                limit: None,
            },
            0,
        )
        .unwrap();
        assert!(!disk.note_io_error(1));
        assert!(!disk.note_io_error(1));
        assert!(disk.note_io_error(2));
        assert!(disk.is_damaged());
        assert!(!disk.note_io_error(3), "reported once");
    }
}

/// Bytes claimed on a disk for a write in flight ([`Disk::claim`]).
#[derive(Debug)]
pub struct Claim<'a> {
    disk: &'a Disk,
    grow: u64,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.disk.growing.fetch_sub(self.grow, Ordering::AcqRel);
    }
}
