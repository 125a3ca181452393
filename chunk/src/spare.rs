//! Spare chunk files: the files of deleted chunks, emptied and kept in a
//! disk's `spare/` folder, so that a new chunk takes one (a rename) instead
//! of a new inode.
//!
//! Why: on ext4 without a journal the kernel will not hand out an inode
//! freed in the last 60 s (300 s more while its table block is dirty), and
//! finds a free one by reading the inode table entry by entry: after many
//! deletes, making a file costs about 0.5 ms of CPU here instead of 20 µs.
//! A chunkserver deletes and makes chunk files all the time.
//!
//! A spare is truncated to nothing when kept. Taking one writes the new
//! chunk's header into it first and then renames it into place without
//! replacing anything (`RENAME_NOREPLACE`), so a crash leaves either a spare
//! (reused at the next start) or a whole new chunk file.
//!
//! Spares are also made ahead ([`run`]): a background task keeps
//! [`Spares::ahead`] empty files (`HDD_SPARE_FILES`, default
//! [`DEFAULT_SPARES`]) on each disk that takes new chunks, so that
//! a new chunk is a rename (~10-25 µs) and not a new inode in its folder
//! (5 µs to 0.25 ms here, as the file system's state goes: more after
//! many deletes), which the close of each small file waits for on every
//! copy.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::Store;

/// The folder of a disk that holds its spares.
pub const SPARE_DIR: &str = "spare";

/// Spares made ahead on each disk by default (`HDD_SPARE_FILES`): empty
/// files, an inode each and no data blocks. A burst of new chunks up to
/// this many per disk makes no inode (fsbench's 2,000 small files of goal
/// 2 on 3 chunkservers are ~1,350 new chunks a server: with 512 made
/// ahead, the pool ran dry within the first of them and the rest waited
/// for inode searches). Twice as many are kept from deleted chunks.
pub const DEFAULT_SPARES: usize = 4096;

/// How often the background task looks for disks short of spares.
const MAKE_EVERY: Duration = Duration::from_millis(100);

/// One disk's spare files.
#[derive(Debug)]
pub struct Spares {
    dir: PathBuf,
    files: Mutex<Vec<PathBuf>>,
    next: AtomicU64,
    /// False when the folder cannot be used (then files are removed).
    usable: bool,
    /// How many are made ahead; twice as many are kept at most.
    ahead: usize,
}

impl Spares {
    /// The spares found in `disk`'s spare folder (made when missing),
    /// `ahead` of them to be made ahead (none with 0: then every spare
    /// found is removed and deleted chunk files are removed too).
    pub fn load(disk: &Path, ahead: usize) -> Spares {
        let dir = disk.join(SPARE_DIR);
        let mut files = Vec::new();
        let mut next = 0u64;
        let usable = match std::fs::create_dir(&dir) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match std::fs::read_dir(&dir) {
                Ok(entries) => {
                    for e in entries.flatten() {
                        let n = e.file_name().to_str().and_then(|n| n.parse::<u64>().ok());
                        if let Some(n) = n {
                            next = next.max(n + 1);
                            files.push(e.path());
                        }
                    }
                    true
                }
                Err(e) => {
                    tracing::warn!(
                        "cannot list {}: {e}; deleted chunk files are removed",
                        dir.display()
                    );
                    false
                }
            },
            Err(e) => {
                tracing::warn!(
                    "cannot make {}: {e}; deleted chunk files are removed",
                    dir.display()
                );
                false
            }
        };
        for extra in files.iter().skip(ahead.saturating_mul(2)) {
            if let Err(e) = std::fs::remove_file(extra) {
                tracing::debug!("cannot remove spare {}: {e}", extra.display());
            }
        }
        files.truncate(ahead.saturating_mul(2));
        Spares {
            dir,
            files: Mutex::new(files),
            next: AtomicU64::new(next),
            usable,
            ahead,
        }
    }

    fn files(&self) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many spares there are.
    pub fn count(&self) -> usize {
        self.files().len()
    }

    /// How many are made ahead.
    pub fn ahead(&self) -> usize {
        self.ahead
    }

    /// Keeps the file at `path` (a deleted chunk's) as a spare: emptied and
    /// moved into the spare folder. False when it was not kept (the pool is
    /// full, or a step failed): the caller removes it.
    pub fn keep(&self, path: &Path) -> bool {
        if !self.usable || self.count() >= self.ahead.saturating_mul(2) {
            return false;
        }
        let to = self
            .dir
            .join(self.next.fetch_add(1, Ordering::Relaxed).to_string());
        let emptied = File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(0));
        match emptied.and_then(|()| std::fs::rename(path, &to)) {
            Ok(()) => {
                self.files().push(to);
                true
            }
            Err(e) => {
                tracing::debug!("cannot keep {} as a spare: {e}", path.display());
                false
            }
        }
    }

    /// Makes new empty spares until there are as many as made ahead; the
    /// number made. Stops at the first file that cannot be made (the
    /// error).
    pub fn make(&self) -> io::Result<usize> {
        let mut made = 0;
        while self.usable && self.count() < self.ahead {
            let to = self
                .dir
                .join(self.next.fetch_add(1, Ordering::Relaxed).to_string());
            File::options().write(true).create_new(true).open(&to)?;
            self.files().push(to);
            made += 1;
        }
        Ok(made)
    }

    /// A spare to make a new chunk from, if any.
    pub fn take(&self) -> Option<PathBuf> {
        self.files().pop()
    }

    /// Gives back a spare taken and not used.
    pub fn put_back(&self, spare: PathBuf) {
        self.files().push(spare);
    }
}

/// Runs for ever: every [`MAKE_EVERY`], makes spares on the disks that take
/// new chunks and have fewer than they make ahead.
pub async fn run(store: Arc<Store>) {
    let mut tick = tokio::time::interval(MAKE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A disk that failed to make one is left alone for a while (full inode
    // table, read-only file system): a warning a minute, not ten a second.
    let mut failed_at: Vec<Option<Instant>> = vec![None; store.disks().len()];
    loop {
        tick.tick().await;
        let short: Vec<usize> = store
            .disks()
            .iter()
            .enumerate()
            .filter(|(i, d)| {
                !d.marked
                    && !d.is_damaged()
                    && d.spares.count() < d.spares.ahead()
                    && failed_at[*i].is_none_or(|t| t.elapsed() > Duration::from_secs(60))
            })
            .map(|(i, _)| i)
            .collect();
        if short.is_empty() {
            continue;
        }
        let s = store.clone();
        let r = tokio::task::spawn_blocking(move || {
            short
                .into_iter()
                .map(|i| (i, s.disks()[i].spares.make()))
                .collect::<Vec<_>>()
        })
        .await;
        let Ok(results) = r else {
            tracing::warn!("the spare file task failed");
            continue;
        };
        for (i, r) in results {
            match r {
                Ok(n) => {
                    metrics::counter!("mfs_chunk_spares_made_total").increment(n as u64);
                    failed_at[i] = None;
                }
                Err(e) => {
                    tracing::warn!(
                        "disk {}: cannot make a spare chunk file: {e}; new chunks are new files (tried again in a minute)",
                        store.disks()[i].path.display()
                    );
                    failed_at[i] = Some(Instant::now());
                }
            }
        }
    }
}

/// Renames `from` to `to` unless `to` exists (EEXIST then).
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
    };
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: two NUL-terminated paths that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_files_are_emptied_taken_and_found_again() {
        let d = tempfile::tempdir().unwrap();
        let s = Spares::load(d.path(), 4);
        let f = d.path().join("chunk");
        std::fs::write(&f, b"old data").unwrap();
        assert!(s.keep(&f));
        assert!(!f.exists());
        assert_eq!(s.count(), 1);
        let again = Spares::load(d.path(), 3);
        assert_eq!(again.count(), 1, "found at the next start");
        let spare = s.take().unwrap();
        assert_eq!(std::fs::metadata(&spare).unwrap().len(), 0, "emptied");
        assert!(s.take().is_none());

        // Made ahead: new names, after the ones found.
        assert_eq!(again.make().unwrap(), 2);
        assert_eq!(again.make().unwrap(), 0, "enough already");
        let mut names: Vec<_> = std::fs::read_dir(d.path().join(SPARE_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["0", "1", "2"]);
        assert_eq!(again.count(), 3);

        let to = d.path().join("new");
        std::fs::write(&to, b"here").unwrap();
        let e = rename_noreplace(&spare, &to).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        assert_eq!(std::fs::read(&to).unwrap(), b"here", "nothing replaced");
        std::fs::remove_file(&to).unwrap();
        rename_noreplace(&spare, &to).unwrap();
        assert!(to.exists() && !spare.exists());
    }

    #[test]
    fn at_most_twice_the_made_ahead_are_kept() {
        let d = tempfile::tempdir().unwrap();
        let s = Spares::load(d.path(), 2);
        assert_eq!(s.make().unwrap(), 2);
        assert_eq!(s.make().unwrap(), 0, "as many as made ahead");
        for i in 0..4 {
            let f = d.path().join(format!("chunk{i}"));
            std::fs::write(&f, b"x").unwrap();
            assert_eq!(s.keep(&f), i < 2, "keep {i}");
        }
        assert_eq!(s.count(), 4);
        let on_disk = || std::fs::read_dir(d.path().join(SPARE_DIR)).unwrap().count();
        assert_eq!(on_disk(), 4);
        // Fewer made ahead after a restart: the spares beyond are removed.
        let fewer = Spares::load(d.path(), 1);
        assert_eq!((fewer.count(), on_disk()), (2, 2));
        let none = Spares::load(d.path(), 0);
        assert_eq!((none.count(), on_disk()), (0, 0));
        assert_eq!(none.make().unwrap(), 0);
    }
}
