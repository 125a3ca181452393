//! The apply hook of the metalogger: every committed entry the learner
//! applies becomes a changelog line; every jump of its state (a snapshot)
//! becomes a metadata image plus an `IMAGE` line.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use mfs_master::raft::observer::{ApplyObserver, Change, LogPosition};

use crate::changelog::{ChangelogWriter, ImageMark, Line, Members, WriterSettings};
use crate::error::Result;
use crate::image;

/// Gauge: index of the last changelog line written.
pub const LAST_INDEX_GAUGE: &str = "mfs_metalogger_last_index";
/// Gauge: log index of the newest metadata image written.
pub const IMAGE_INDEX_GAUGE: &str = "mfs_metalogger_image_index";
/// Counter: changelog lines written.
pub const LINES_COUNTER: &str = "mfs_metalogger_lines_total";

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Writes the changelog and the images of one metalogger data dir.
pub struct Recorder {
    dir: PathBuf,
    writer: Mutex<ChangelogWriter>,
    /// Serialises image writes (timer and snapshot installs).
    images: Mutex<()>,
}

impl Recorder {
    /// Opens the changelog in `s.dir`, resuming after its last line.
    pub fn open(s: WriterSettings) -> Result<Arc<Recorder>> {
        let dir = s.dir.clone();
        let w = ChangelogWriter::open(s)?;
        if let Some(i) = w.last_index() {
            metrics::gauge!(LAST_INDEX_GAUGE).set(i as f64);
        }
        Ok(Arc::new(Recorder {
            dir,
            writer: Mutex::new(w),
            images: Mutex::new(()),
        }))
    }

    fn writer(&self) -> MutexGuard<'_, ChangelogWriter> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Index of the last changelog line.
    pub fn last_index(&self) -> Option<u64> {
        self.writer().last_index()
    }

    /// fsyncs the changelog, rotating it first when it is due.
    pub fn sync(&self) -> Result<()> {
        let mut w = self.writer();
        w.rotate_if_due()?;
        w.sync()
    }

    /// Writes `image` (the state at `pos`) as `metadata_ml.mfs`, after
    /// handing the changelog lines written so far to the OS.
    pub fn write_image(&self, pos: Option<LogPosition>, image: &[u8]) -> Result<()> {
        self.writer().flush()?;
        let _g = self.images.lock().unwrap_or_else(|p| p.into_inner());
        let path = image::write(&self.dir, image)?;
        let index = pos.map(|p| p.index).unwrap_or(0);
        metrics::gauge!(IMAGE_INDEX_GAUGE).set(index as f64);
        tracing::info!(file = %path.display(), index, bytes = image.len(), "metadata image written");
        Ok(())
    }

    fn append(&self, line: &Line) -> Result<()> {
        if self.writer().append(line)? {
            metrics::gauge!(LAST_INDEX_GAUGE).set(line.index as f64);
            metrics::counter!(LINES_COUNTER).increment(1);
        }
        Ok(())
    }
}

impl ApplyObserver for Recorder {
    fn applied(&self, pos: LogPosition, change: &Change<'_>) -> Result<(), String> {
        let line = match change {
            Change::Request(req) => Line::request(pos.index, pos.term, req),
            Change::Blank => Line::nop(pos.index, pos.term, now_secs()),
            Change::Membership { voters, learners } => Line::members(
                pos.index,
                pos.term,
                now_secs(),
                &Members {
                    voters: voters.clone(),
                    learners: learners.clone(),
                },
            ),
        };
        self.append(&line).map_err(|e| {
            format!("changelog: {e}; the metalogger stops (fix the disk, then start it again: it resumes where it was)")
        })
    }

    fn batch_done(&self) -> Result<(), String> {
        self.writer().flush().map_err(|e| format!("changelog: {e}"))
    }

    fn state_replaced(&self, pos: Option<LogPosition>, image: &[u8]) -> Result<(), String> {
        let Some(pos) = pos else {
            return Ok(());
        };
        if self.last_index().is_some_and(|l| l >= pos.index) {
            return Ok(());
        }
        let res = self.write_image(Some(pos), image).and_then(|()| {
            self.append(&Line::image(
                pos.index,
                pos.term,
                now_secs(),
                &ImageMark {
                    file: image::IMAGE_FILE.into(),
                    reason: "the state moved here without the entries before it (a snapshot)"
                        .into(),
                },
            ))?;
            self.writer().sync()
        });
        match res {
            Ok(()) => {
                tracing::info!(
                    index = pos.index,
                    "state jumped ahead of the changelog: image written and noted in the changelog"
                );
                Ok(())
            }
            Err(e) => Err(format!("metadata image at index {}: {e}", pos.index)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changelog::{files_oldest_first, Kind};
    use mfs_master::fsm::{Namespace, Op, Request, SessionId, Timespec};
    use mfs_master::raft::learner::make_image;

    fn settings(dir: &std::path::Path) -> WriterSettings {
        WriterSettings {
            dir: dir.to_path_buf(),
            back_logs: 3,
            rotate_entries: 0,
            rotate_after: None,
        }
    }

    fn lines(dir: &std::path::Path) -> Vec<Line> {
        let mut out = Vec::new();
        for (_, p) in files_oldest_first(dir).unwrap() {
            for l in std::fs::read_to_string(p).unwrap().lines() {
                out.push(Line::parse(l).unwrap());
            }
        }
        out
    }

    #[test]
    fn entries_become_lines_and_a_jump_becomes_an_image() {
        let tmp = tempfile::tempdir().unwrap();
        let r = Recorder::open(settings(tmp.path())).unwrap();
        let req = Request {
            session: SessionId(0),
            seq: 0,
            acked: 0,
            time: Timespec { sec: 7, nsec: 0 },
            op: Op::SetClusterId { id: "c".into() },
        };
        let p = |index| LogPosition { index, term: 1 };
        r.applied(
            p(0),
            &Change::Membership {
                voters: vec![(1, "a:1".into())],
                learners: vec![],
            },
        )
        .unwrap();
        r.applied(p(1), &Change::Blank).unwrap();
        r.applied(p(2), &Change::Request(&req)).unwrap();
        r.batch_done().unwrap();
        // A snapshot behind the changelog changes nothing.
        let img = make_image(&Namespace::new(), Some(p(1)), &[]).unwrap();
        r.state_replaced(Some(p(1)), &img).unwrap();
        assert!(!tmp.path().join(image::IMAGE_FILE).exists());
        // A snapshot ahead of it is written and noted.
        let img = make_image(&Namespace::new(), Some(p(10)), &[]).unwrap();
        r.state_replaced(Some(p(10)), &img).unwrap();
        r.applied(p(11), &Change::Blank).unwrap();
        r.sync().unwrap();
        let got: Vec<(u64, Kind)> = lines(tmp.path())
            .iter()
            .map(|l| (l.index, l.kind))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, Kind::Members),
                (1, Kind::Nop),
                (2, Kind::Req),
                (10, Kind::Image),
                (11, Kind::Nop)
            ]
        );
        assert_eq!(lines(tmp.path())[2].decode_request().unwrap(), req);
        let (_, pos) = image::read(&tmp.path().join(image::IMAGE_FILE)).unwrap();
        assert_eq!(pos.map(|p| p.index), Some(10));
    }
}
