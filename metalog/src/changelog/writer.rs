//! Appends lines to `changelog_ml.0.mfs`, rotates the numbered files, and
//! resumes after a restart exactly where the last complete line ended.
//!
//! Durability: [`ChangelogWriter::flush`] hands buffered lines to the OS
//! (they survive a crash of the process); [`ChangelogWriter::sync`] also
//! fsyncs (they survive a crash of the machine). The daemon flushes after
//! every batch of applied entries and syncs on a timer; rotation syncs the
//! file it closes and the directory.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::file_name;
use super::line::{Kind, Line};
use crate::error::{Error, Result};

/// How the changelog is written.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    /// The metalogger's DATA_PATH.
    pub dir: PathBuf,
    /// Rotated files kept besides the current one (`.1` ..= `.back_logs`).
    pub back_logs: u32,
    /// Rotate after this many lines in the current file (0: never by count).
    pub rotate_entries: u64,
    /// Rotate a non-empty current file this long after it was started.
    pub rotate_after: Option<Duration>,
}

/// The writer of the current changelog file.
pub struct ChangelogWriter {
    s: WriterSettings,
    path0: PathBuf,
    out: BufWriter<File>,
    lines_in_file: u64,
    file_started: Instant,
    last: Option<u64>,
    unsynced: bool,
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("fsync directory", dir))
}

/// The last good line's index in `path`, if any.
fn last_index_in(path: &Path) -> Result<Option<u64>> {
    let bytes = fs::read(path).map_err(Error::io("read", path))?;
    let text = String::from_utf8_lossy(&bytes);
    Ok(text
        .lines()
        .rev()
        .find_map(|l| Line::parse(l).ok())
        .map(|l| l.index))
}

/// Checks the current file: drops a torn tail (a line cut short by a crash,
/// or damaged lines at the very end), warns about damaged lines elsewhere.
/// Returns (lines kept, index of the last line).
fn recover(path: &Path) -> Result<(u64, Option<u64>)> {
    let bytes = fs::read(path).map_err(Error::io("read", path))?;
    let mut keep = match bytes.iter().rposition(|b| *b == b'\n') {
        Some(p) => p + 1,
        None => 0,
    };
    if keep < bytes.len() {
        tracing::warn!(
            file = %path.display(),
            bytes = bytes.len() - keep,
            "unfinished last line (the metalogger stopped mid-write): dropped; the entry is written again"
        );
    }
    // Damaged complete lines at the tail are dropped too: they are what a
    // crash of the machine leaves, and the entries come again from Raft.
    loop {
        if keep == 0 {
            break;
        }
        let start = bytes[..keep - 1]
            .iter()
            .rposition(|b| *b == b'\n')
            .map(|p| p + 1)
            .unwrap_or(0);
        let text = String::from_utf8_lossy(&bytes[start..keep - 1]);
        match Line::parse(&text) {
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(file = %path.display(), "damaged last line dropped ({e}); the entry is written again");
                keep = start;
            }
        }
    }
    if keep < bytes.len() {
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(Error::io("open", path))?;
        f.set_len(keep as u64)
            .and_then(|()| f.sync_all())
            .map_err(Error::io("truncate the torn tail of", path))?;
    }
    let text = String::from_utf8_lossy(&bytes[..keep]);
    let mut count = 0;
    let mut last = None;
    for (i, l) in text.lines().enumerate() {
        count += 1;
        match Line::parse(l) {
            Ok(line) => last = Some(line.index),
            Err(e) => tracing::error!(
                file = %path.display(),
                line = i + 1,
                "damaged changelog line ({e}): a restore will stop there; keep the metadata images"
            ),
        }
    }
    Ok((count, last))
}

impl ChangelogWriter {
    /// Opens the changelog in `s.dir` (created if missing), resuming after
    /// the last complete line.
    pub fn open(s: WriterSettings) -> Result<ChangelogWriter> {
        if s.back_logs == 0 {
            return Err(Error::Config(
                "BACK_LOGS must be at least 1 (rotated changelog files kept)".into(),
            ));
        }
        fs::create_dir_all(&s.dir).map_err(Error::io("create", &s.dir))?;
        let path0 = s.dir.join(file_name(0));
        let (lines_in_file, mut last) = if path0.exists() {
            recover(&path0)?
        } else {
            (0, None)
        };
        if last.is_none() {
            // Just rotated: the last line is in an older file.
            for (n, p) in super::files_oldest_first(&s.dir)?.into_iter().rev() {
                if n == 0 {
                    continue;
                }
                if let Some(i) = last_index_in(&p)? {
                    last = Some(i);
                    break;
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path0)
            .map_err(Error::io("open", &path0))?;
        sync_dir(&s.dir)?;
        Ok(ChangelogWriter {
            s,
            path0,
            out: BufWriter::with_capacity(256 << 10, file),
            lines_in_file,
            file_started: Instant::now(),
            last,
            unsynced: false,
        })
    }

    /// Index of the last line written (None: no line yet).
    pub fn last_index(&self) -> Option<u64> {
        self.last
    }

    /// Appends `line` unless its index is at or below the last line's (an
    /// entry seen again after a restart). Returns whether it was written.
    pub fn append(&mut self, line: &Line) -> Result<bool> {
        if let Some(last) = self.last {
            if line.index <= last {
                return Ok(false);
            }
            if line.index != last + 1 && line.kind != Kind::Image {
                tracing::error!(
                    last,
                    next = line.index,
                    "changelog gap: entries between were never seen here; a restore needs a newer image"
                );
            }
        }
        if self.should_rotate() {
            self.rotate()?;
        }
        self.out
            .write_all(line.to_text().as_bytes())
            .map_err(Error::io("write", &self.path0))?;
        self.lines_in_file += 1;
        self.last = Some(line.index);
        self.unsynced = true;
        Ok(true)
    }

    fn should_rotate(&self) -> bool {
        self.lines_in_file > 0
            && ((self.s.rotate_entries > 0 && self.lines_in_file >= self.s.rotate_entries)
                || self
                    .s
                    .rotate_after
                    .is_some_and(|d| self.file_started.elapsed() >= d))
    }

    /// Hands buffered lines to the OS.
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(Error::io("write", &self.path0))
    }

    /// Flushes and fsyncs the current file (if anything was written since
    /// the last sync).
    pub fn sync(&mut self) -> Result<()> {
        self.flush()?;
        if self.unsynced {
            self.out
                .get_ref()
                .sync_data()
                .map_err(Error::io("fsync", &self.path0))?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Rotates when the current file is old enough (call on a timer: a
    /// quiet cluster writes no line that would trigger it).
    pub fn rotate_if_due(&mut self) -> Result<()> {
        if self.should_rotate() {
            self.rotate()?;
        }
        Ok(())
    }

    /// `.0` becomes `.1`, `.1` becomes `.2`, ...; files above BACK_LOGS are
    /// removed; a new empty `.0` is started.
    pub fn rotate(&mut self) -> Result<()> {
        self.unsynced = true;
        self.sync()?;
        let dir = self.s.dir.clone();
        for (n, p) in super::files_oldest_first(&dir)? {
            if n >= self.s.back_logs {
                fs::remove_file(&p).map_err(Error::io("remove old changelog", &p))?;
            }
        }
        for n in (0..self.s.back_logs).rev() {
            let from = dir.join(file_name(n));
            if from.exists() {
                let to = dir.join(file_name(n + 1));
                fs::rename(&from, &to).map_err(Error::io("rotate", &from))?;
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path0)
            .map_err(Error::io("create", &self.path0))?;
        sync_dir(&dir)?;
        self.out = BufWriter::with_capacity(256 << 10, file);
        self.lines_in_file = 0;
        self.file_started = Instant::now();
        tracing::info!(last = ?self.last, "changelog rotated");
        Ok(())
    }
}

impl Drop for ChangelogWriter {
    fn drop(&mut self) {
        if let Err(e) = self.sync() {
            tracing::error!("closing the changelog: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changelog::files_oldest_first;

    fn settings(dir: &Path, back_logs: u32, rotate_entries: u64) -> WriterSettings {
        WriterSettings {
            dir: dir.to_path_buf(),
            back_logs,
            rotate_entries,
            rotate_after: None,
        }
    }

    fn indexes(dir: &Path) -> Vec<u64> {
        let mut out = Vec::new();
        for (_, p) in files_oldest_first(dir).unwrap() {
            let text = fs::read_to_string(p).unwrap();
            for l in text.lines() {
                out.push(Line::parse(l).unwrap().index);
            }
        }
        out
    }

    #[test]
    fn rotates_by_count_and_keeps_back_logs_files() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = ChangelogWriter::open(settings(tmp.path(), 2, 3)).unwrap();
        for i in 1..=10 {
            assert!(w.append(&Line::nop(i, 1, 0)).unwrap());
        }
        w.sync().unwrap();
        // Files of 3 lines: 1-3, 4-6, 7-9, 10. BACK_LOGS=2 keeps .1 and .2.
        let files: Vec<u32> = files_oldest_first(tmp.path())
            .unwrap()
            .into_iter()
            .map(|f| f.0)
            .collect();
        assert_eq!(files, vec![2, 1, 0]);
        assert_eq!(indexes(tmp.path()), (4..=10).collect::<Vec<_>>());
    }

    #[test]
    fn resumes_after_restart_without_duplicates() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let mut w = ChangelogWriter::open(settings(tmp.path(), 5, 4)).unwrap();
            for i in 0..6 {
                w.append(&Line::nop(i, 1, 0)).unwrap();
            }
        }
        let mut w = ChangelogWriter::open(settings(tmp.path(), 5, 4)).unwrap();
        assert_eq!(w.last_index(), Some(5));
        // Entries seen again after a restart are skipped.
        for i in 3..9 {
            let written = w.append(&Line::nop(i, 1, 0)).unwrap();
            assert_eq!(written, i > 5, "index {i}");
        }
        drop(w);
        assert_eq!(indexes(tmp.path()), (0..9).collect::<Vec<_>>());
    }

    #[test]
    fn resumes_from_an_older_file_right_after_rotation() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let mut w = ChangelogWriter::open(settings(tmp.path(), 5, 0)).unwrap();
            for i in 0..3 {
                w.append(&Line::nop(i, 1, 0)).unwrap();
            }
            w.rotate().unwrap();
        }
        let w = ChangelogWriter::open(settings(tmp.path(), 5, 0)).unwrap();
        assert_eq!(w.last_index(), Some(2));
    }

    #[test]
    fn torn_and_damaged_tail_is_dropped_and_rewritten() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let mut w = ChangelogWriter::open(settings(tmp.path(), 5, 0)).unwrap();
            for i in 0..4 {
                w.append(&Line::nop(i, 1, 0)).unwrap();
            }
        }
        let p0 = tmp.path().join(file_name(0));
        // Damage line 3 (index 3, the last complete line) and add half a line.
        let text = fs::read_to_string(&p0).unwrap();
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        lines[3] = lines[3].replace("NOP", "NOQ");
        let mut damaged = lines.join("\n");
        damaged.push('\n');
        damaged.push_str("4|1|0|0000");
        fs::write(&p0, damaged).unwrap();

        let mut w = ChangelogWriter::open(settings(tmp.path(), 5, 0)).unwrap();
        assert_eq!(w.last_index(), Some(2));
        for i in 3..6 {
            assert!(w.append(&Line::nop(i, 1, 0)).unwrap());
        }
        drop(w);
        assert_eq!(indexes(tmp.path()), (0..6).collect::<Vec<_>>());
    }

    #[test]
    fn zero_back_logs_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let e = ChangelogWriter::open(settings(tmp.path(), 0, 0))
            .err()
            .unwrap();
        assert!(e.to_string().contains("BACK_LOGS"), "{e}");
    }
}
