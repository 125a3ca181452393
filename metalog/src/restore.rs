//! Restore: a metalogger's data dir → the namespace → a new master data dir.
//!
//! 1. The image: `metadata_ml.mfs` is loaded (magic, version and CRC
//!    checked); when it is missing or damaged, `metadata_ml.mfs.back`.
//!    With neither file present, replay starts from an empty namespace at
//!    index 0 (a changelog kept from the cluster's first entry suffices).
//! 2. The changelog: every line of `changelog_ml.N.mfs` … `changelog_ml.0.mfs`
//!    (oldest first) whose index is above the image's is applied in order.
//!    Each line's CRC is checked and indexes must follow one another. Replay
//!    stops at the first damaged line, gap, or `IMAGE` line (a jump the
//!    metalogger made by snapshot: the entries before it are not in the
//!    changelog, and only an image taken at or after that jump can bridge
//!    it), and says which file, line and index. Exceptions: lines at or
//!    below the image's index are not needed and are skipped, even damaged
//!    ones whose INDEX field still reads; an unfinished last line (no
//!    newline: the metalogger died mid-write) is ignored.
//! 3. Sessions in the restored namespace are closed (their clients belong
//!    to the old cluster), and a master data dir is written
//!    (`mfs_master::raft::restore::write_master_dir`): a new single-master
//!    cluster with a fresh cluster id. The namespace keeps the cluster id it
//!    was born with, as a record.
//!
//! When replay stops early, nothing is written unless `partial` is set: the
//! changes after the stop would be lost, which the user has to accept.

use std::fmt;
use std::path::{Path, PathBuf};

use mfs_master::fsm::{Namespace, Op, Request, SessionId};
use mfs_master::raft::node::now;
use mfs_master::raft::observer::LogPosition;
use mfs_master::raft::restore::{write_master_dir, RestoredDir};

use crate::changelog::{files_oldest_first, Kind, Line};
use crate::error::{Error, Result};
use crate::image::{self, BACK_FILE, IMAGE_FILE};

/// Why replay stopped before the end of the changelog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// A line that does not read (bad CRC, cut, garbage).
    Damaged {
        file: PathBuf,
        line: usize,
        index: Option<u64>,
        error: String,
    },
    /// Lines missing: `expected` was due, `found` came.
    Gap {
        file: PathBuf,
        line: usize,
        expected: u64,
        found: u64,
    },
    /// An `IMAGE` line above the image replay started from.
    Jump {
        file: PathBuf,
        line: usize,
        index: u64,
    },
    /// A `REQ` line whose request does not decode.
    BadRequest {
        file: PathBuf,
        line: usize,
        index: u64,
        error: String,
    },
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Damaged {
                file,
                line,
                index,
                error,
            } => write!(
                f,
                "{}:{line}: damaged line{} ({error})",
                file.display(),
                index.map(|i| format!(" (index {i}?)")).unwrap_or_default()
            ),
            Stop::Gap {
                file,
                line,
                expected,
                found,
            } => write!(
                f,
                "{}:{line}: gap in the changelog: index {expected} expected, {found} found \
                 (entries {expected}..{} are missing)",
                file.display(),
                found.saturating_sub(1)
            ),
            Stop::Jump { file, line, index } => write!(
                f,
                "{}:{line}: the metalogger jumped to index {index} by a snapshot; the entries \
                 before it are only in the image it wrote then, which is older than the one \
                 restored from",
                file.display()
            ),
            Stop::BadRequest {
                file,
                line,
                index,
                error,
            } => write!(
                f,
                "{}:{line}: index {index}: request does not decode ({error})",
                file.display()
            ),
        }
    }
}

/// The outcome of a replay.
pub struct Replay {
    /// The namespace as of [`Replay::last`].
    pub ns: Namespace,
    /// The image replay started from (None: from an empty namespace).
    pub image_file: Option<PathBuf>,
    /// Where that image stands.
    pub image_pos: Option<LogPosition>,
    /// The position the namespace is restored to.
    pub last: Option<LogPosition>,
    /// Namespace changes (`REQ` lines) applied after the image.
    pub changes: u64,
    /// Lines applied after the image (changes and other entries).
    pub lines: u64,
    /// Why replay stopped early, if it did.
    pub stop: Option<Stop>,
    /// Things worth telling that did not stop replay (a damaged newest
    /// image, an unfinished last line, ...).
    pub notes: Vec<String>,
}

impl Replay {
    /// "restored up to index N (M changes after the image)".
    pub fn summary(&self) -> String {
        let upto = match self.last {
            Some(p) => format!("index {}", p.index),
            None => "the empty namespace".into(),
        };
        let from = match (&self.image_file, self.image_pos) {
            (Some(f), Some(p)) => format!("{} at index {}", f.display(), p.index),
            (Some(f), None) => format!("{} (empty state)", f.display()),
            (None, _) => "no image (an empty namespace)".into(),
        };
        format!(
            "restored up to {upto} ({} changes after the image; image: {from})",
            self.changes
        )
    }
}

/// Picks the image to start from: the newest that reads, else the `.back`.
fn load_image(
    from: &Path,
    notes: &mut Vec<String>,
) -> Result<(Namespace, Option<PathBuf>, Option<LogPosition>)> {
    let mut errors = Vec::new();
    let mut any = false;
    for name in [IMAGE_FILE, BACK_FILE] {
        let path = from.join(name);
        if !path.exists() {
            continue;
        }
        any = true;
        match image::read(&path) {
            Ok((ns, pos)) => {
                if !errors.is_empty() {
                    notes.push(format!(
                        "newest image unusable, used {name}: {}",
                        errors.join("; ")
                    ));
                }
                return Ok((ns, Some(path), pos));
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    if any {
        return Err(Error::Data(format!(
            "no readable metadata image in {}: {}",
            from.display(),
            errors.join("; ")
        )));
    }
    notes.push(format!(
        "no {IMAGE_FILE} in {}: replaying the changelog from an empty namespace",
        from.display()
    ));
    Ok((Namespace::new(), None, None))
}

/// Loads the image of `from` and applies the changelog after it.
pub fn replay(from: &Path) -> Result<Replay> {
    if !from.is_dir() {
        return Err(Error::Data(format!(
            "{} is not a directory (give the metalogger's DATA_PATH)",
            from.display()
        )));
    }
    let mut notes = Vec::new();
    let (mut ns, image_file, image_pos) = load_image(from, &mut notes)?;
    let mut next = image_pos.map(|p| p.index + 1).unwrap_or(0);
    let mut last = image_pos;
    let mut changes = 0;
    let mut lines = 0;
    let mut stop = None;
    let files = files_oldest_first(from)?;
    'files: for (n, path) in &files {
        let bytes = std::fs::read(path).map_err(Error::io("read", path))?;
        let text = String::from_utf8_lossy(&bytes);
        let unfinished_tail = *n == 0 && !text.is_empty() && !text.ends_with('\n');
        let all: Vec<&str> = text.lines().collect();
        for (i, t) in all.iter().enumerate() {
            let lineno = i + 1;
            let line = match Line::parse(t) {
                Ok(l) => l,
                Err(e) => {
                    if Line::index_of(t).is_some_and(|x| x < next) {
                        notes.push(format!(
                            "{}:{lineno}: damaged line below the restore point skipped ({e})",
                            path.display()
                        ));
                        continue;
                    }
                    if unfinished_tail && lineno == all.len() {
                        notes.push(format!(
                            "{}:{lineno}: unfinished last line ignored (the metalogger stopped mid-write)",
                            path.display()
                        ));
                        continue;
                    }
                    stop = Some(Stop::Damaged {
                        file: path.clone(),
                        line: lineno,
                        index: Line::index_of(t),
                        error: e.to_string(),
                    });
                    break 'files;
                }
            };
            if line.index < next {
                continue;
            }
            if line.kind == Kind::Image {
                stop = Some(Stop::Jump {
                    file: path.clone(),
                    line: lineno,
                    index: line.index,
                });
                break 'files;
            }
            if line.index > next {
                stop = Some(Stop::Gap {
                    file: path.clone(),
                    line: lineno,
                    expected: next,
                    found: line.index,
                });
                break 'files;
            }
            if line.kind == Kind::Req {
                match line.decode_request() {
                    Ok(req) => {
                        ns.apply(&req);
                        changes += 1;
                    }
                    Err(e) => {
                        stop = Some(Stop::BadRequest {
                            file: path.clone(),
                            line: lineno,
                            index: line.index,
                            error: e.to_string(),
                        });
                        break 'files;
                    }
                }
            }
            lines += 1;
            next = line.index + 1;
            last = Some(LogPosition {
                index: line.index,
                term: line.term,
            });
        }
    }
    Ok(Replay {
        ns,
        image_file,
        image_pos,
        last,
        changes,
        lines,
        stop,
        notes,
    })
}

/// What `mfsmetalogger restore` is asked to do.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The metalogger's DATA_PATH.
    pub from: PathBuf,
    /// The new master's DATA_PATH (absent or empty).
    pub to: PathBuf,
    /// The new master's MASTER_ID.
    pub master_id: u64,
    /// The address the new master will listen on (`host:port`).
    pub advertise: String,
    /// Write the data dir even when replay stopped before the end.
    pub partial: bool,
}

/// Replays `o.from` and writes a master data dir at `o.to`.
pub async fn restore(o: &RestoreOptions) -> Result<(Replay, RestoredDir)> {
    let mut r = replay(&o.from)?;
    if let Some(stop) = &r.stop {
        if !o.partial {
            return Err(Error::Data(format!(
                "replay stopped: {stop}\n{}\nnothing written: rerun with --partial to write a \
                 master data dir holding the namespace as of that point (the later changes are lost)",
                r.summary()
            )));
        }
    }
    let ids: Vec<SessionId> = r.ns.sessions().iter().map(|s| s.id).collect();
    if !ids.is_empty() {
        r.ns.apply(&Request {
            session: SessionId(0),
            seq: 0,
            acked: 0,
            time: now(),
            op: Op::ExpireSessions { ids: ids.clone() },
        });
        r.notes.push(format!(
            "{} client sessions of the old cluster closed",
            ids.len()
        ));
    }
    r.ns.check()
        .map_err(|e| Error::Data(format!("the restored namespace is inconsistent: {e}")))?;
    let dir = write_master_dir(&o.to, o.master_id, &o.advertise, &r.ns, r.last)
        .await
        .map_err(Error::Data)?;
    Ok((r, dir))
}

#[cfg(test)]
mod tests;
