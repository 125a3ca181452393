//! Snapshot files: metadata images written whole or not at all.
//!
//! [`write_atomic`] writes `<name>.tmp`, fsyncs it, renames it to `<name>` and
//! fsyncs the directory, so after a crash either the old set of files or the
//! new one is there, plus maybe a `.tmp` that [`remove_tmp`] clears. Bytes
//! are stored verbatim: the caller's format carries its own version and CRC
//! (the metadata image does: magic, version, CRC32), so tools such as the
//! metalogger read the files as they are.
//!
//! [`list`], [`read_latest`] and [`prune`] look at files named
//! `snapshot-*.mfs` and order them by name; [`snapshot_name`] zero-pads so
//! that name order is index order.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{Result, StoreError};

pub const SNAPSHOT_PREFIX: &str = "snapshot-";
pub const SNAPSHOT_SUFFIX: &str = ".mfs";
pub const TMP_SUFFIX: &str = ".tmp";

/// `snapshot-{index:020}-{term:020}.mfs`.
pub fn snapshot_name(index: u64, term: u64) -> String {
    format!("{SNAPSHOT_PREFIX}{index:020}-{term:020}{SNAPSHOT_SUFFIX}")
}

fn check_name(dir: &Path, name: &str) -> Result<()> {
    let plain = !name.is_empty()
        && !name.ends_with(TMP_SUFFIX)
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0']);
    if plain {
        return Ok(());
    }
    Err(StoreError::Io {
        op: "name snapshot file",
        path: dir.join(name),
        source: io::Error::new(
            io::ErrorKind::InvalidInput,
            "a snapshot name must be a plain file name not ending in .tmp",
        ),
    })
}

/// Durably writes `bytes` as `dir/name`, replacing any file of that name.
/// Returns the path written.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf> {
    check_name(dir, name)?;
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let result = write_file(&tmp, bytes).and_then(|()| {
        fs::rename(&tmp, &path).map_err(StoreError::io("rename snapshot into place", &path))
    });
    if let Err(e) = result {
        // Best effort: a leftover .tmp is harmless and remove_tmp clears it.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)?;
    Ok(path)
}

fn write_file(tmp: &Path, bytes: &[u8]) -> Result<()> {
    let file = File::create(tmp).map_err(StoreError::io("create snapshot", tmp))?;
    write_and_sync(file, bytes).map_err(StoreError::io("write snapshot", tmp))
}

/// Bytes of a snapshot written out between two waits: small enough that
/// the disk's queue never holds more than two of them, so the Raft log's
/// syncs, which every write waits for, pass between them instead of
/// behind a whole image.
const WRITE_STEP: usize = 4 << 20;

/// Writes `bytes` in [`WRITE_STEP`] pieces, each handed to the disk as it
/// is written and waited for after the next one (`sync_file_range`), then
/// fsyncs. A whole image written first and fsynced after would put tens or
/// hundreds of MB in front of the log's syncs at once.
fn write_and_sync(mut file: File, bytes: &[u8]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let mut at = 0usize;
    for piece in bytes.chunks(WRITE_STEP) {
        file.write_all(piece)?;
        // SAFETY: plain syscalls on an open descriptor.
        unsafe {
            libc::sync_file_range(
                fd,
                at as libc::off64_t,
                piece.len() as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
            if at >= WRITE_STEP {
                libc::sync_file_range(
                    fd,
                    (at - WRITE_STEP) as libc::off64_t,
                    WRITE_STEP as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WAIT_BEFORE
                        | libc::SYNC_FILE_RANGE_WRITE
                        | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                );
            }
        }
        at += piece.len();
    }
    file.sync_all()
}

/// fsyncs a directory, making renames and removals in it durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io("fsync directory", dir))
}

/// Reads `dir/name` as written by [`write_atomic`].
pub fn read(dir: &Path, name: &str) -> Result<Vec<u8>> {
    let path = dir.join(name);
    fs::read(&path).map_err(StoreError::io("read snapshot", &path))
}

/// Snapshot file names in `dir`, oldest (smallest name) first.
pub fn list(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = file_names(dir)?
        .into_iter()
        .filter(|n| n.starts_with(SNAPSHOT_PREFIX) && n.ends_with(SNAPSHOT_SUFFIX))
        .collect();
    names.sort();
    Ok(names)
}

/// The newest snapshot and its bytes, or `None` if there is none. Checking
/// the bytes (and deciding whether an older file may stand in for a damaged
/// one) is the caller's business: [`list`] gives the candidates.
pub fn read_latest(dir: &Path) -> Result<Option<(String, Vec<u8>)>> {
    match list(dir)?.pop() {
        None => Ok(None),
        Some(name) => {
            let bytes = read(dir, &name)?;
            Ok(Some((name, bytes)))
        }
    }
}

/// Removes leftover `*.tmp` files (from a crash mid-write); returns how many.
/// Call at startup, before any `write_atomic`.
pub fn remove_tmp(dir: &Path) -> Result<usize> {
    let mut n = 0;
    for name in file_names(dir)? {
        if name.ends_with(TMP_SUFFIX) {
            let path = dir.join(&name);
            fs::remove_file(&path).map_err(StoreError::io("remove temp file", &path))?;
            n += 1;
        }
    }
    if n > 0 {
        sync_dir(dir)?;
    }
    Ok(n)
}

/// Removes all but the newest `keep` snapshots; returns the removed names.
pub fn prune(dir: &Path, keep: usize) -> Result<Vec<String>> {
    let names = list(dir)?;
    let old = names.len().saturating_sub(keep);
    let removed: Vec<String> = names.into_iter().take(old).collect();
    for name in &removed {
        let path = dir.join(name);
        fs::remove_file(&path).map_err(StoreError::io("remove old snapshot", &path))?;
    }
    if !removed.is_empty() {
        sync_dir(dir)?;
    }
    Ok(removed)
}

fn file_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(StoreError::io("list directory", dir))? {
        let entry = entry.map_err(StoreError::io("list directory", dir))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read() {
        let tmp = tempfile::tempdir().unwrap();
        let name = snapshot_name(10, 2);
        assert_eq!(
            name,
            "snapshot-00000000000000000010-00000000000000000002.mfs"
        );
        let path = write_atomic(tmp.path(), &name, b"image one").unwrap();
        assert_eq!(path, tmp.path().join(&name));
        assert_eq!(read(tmp.path(), &name).unwrap(), b"image one");
        // Replacing a file of the same name swaps the whole content.
        write_atomic(tmp.path(), &name, b"two").unwrap();
        assert_eq!(read(tmp.path(), &name).unwrap(), b"two");
        assert_eq!(file_names(tmp.path()).unwrap(), vec![name]);
        // Empty payloads are fine.
        write_atomic(tmp.path(), "snapshot-empty.mfs", b"").unwrap();
        assert_eq!(read(tmp.path(), "snapshot-empty.mfs").unwrap(), b"");
    }

    #[test]
    fn latest_is_chosen_by_index_and_tmp_is_ignored_then_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        assert_eq!(read_latest(dir).unwrap(), None);
        write_atomic(dir, &snapshot_name(9, 1), b"nine").unwrap();
        write_atomic(dir, &snapshot_name(100, 1), b"hundred").unwrap();
        write_atomic(dir, &snapshot_name(20, 3), b"twenty").unwrap();
        // A crash mid-write leaves a torn .tmp of a newer snapshot.
        let torn = format!("{}{TMP_SUFFIX}", snapshot_name(200, 3));
        fs::write(dir.join(&torn), b"half").unwrap();
        fs::write(dir.join("unrelated.txt"), b"x").unwrap();

        let (name, bytes) = read_latest(dir).unwrap().unwrap();
        assert_eq!(name, snapshot_name(100, 1));
        assert_eq!(bytes, b"hundred");

        assert_eq!(remove_tmp(dir).unwrap(), 1);
        assert!(!dir.join(&torn).exists());
        assert_eq!(remove_tmp(dir).unwrap(), 0);
    }

    #[test]
    fn prune_keeps_the_newest() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for i in 1..=5 {
            write_atomic(dir, &snapshot_name(i, 1), b"x").unwrap();
        }
        let removed = prune(dir, 2).unwrap();
        assert_eq!(
            removed,
            (1..=3).map(|i| snapshot_name(i, 1)).collect::<Vec<_>>()
        );
        assert_eq!(
            list(dir).unwrap(),
            vec![snapshot_name(4, 1), snapshot_name(5, 1)]
        );
        assert!(prune(dir, 10).unwrap().is_empty());
    }

    #[test]
    fn missing_file_error_names_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let err = read(tmp.path(), "snapshot-x.mfs").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("read snapshot") && msg.contains("snapshot-x.mfs"),
            "{msg}"
        );
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn bad_names_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in ["", "a/b", "x.tmp", "..", "."] {
            assert!(write_atomic(tmp.path(), bad, b"x").is_err(), "{bad:?}");
        }
    }
}
