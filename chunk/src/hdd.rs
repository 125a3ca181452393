//! `mfshdd.cfg`: the disks a chunkserver stores chunks on.
//!
//! One disk a line: `[*]/path [SIZE]`. `#` starts a comment; blank lines are
//! ignored. A leading `*` marks the disk for removal (its chunks are drained
//! by the leader and it takes no new chunks). An optional size (`10GiB`,
//! `500G`, `2TB`, plain bytes) caps the space this chunkserver uses there.

use std::path::{Path, PathBuf};

/// One line of `mfshdd.cfg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// The disk's directory.
    pub path: PathBuf,
    /// Marked for removal (`*`).
    pub marked: bool,
    /// Most bytes to use on it, if capped.
    pub limit: Option<u64>,
}

/// A bad `mfshdd.cfg`.
#[derive(Debug, thiserror::Error)]
pub enum HddError {
    /// The file cannot be read.
    #[error("cannot read disk list {path}: {source} (set HDD_CONF_FILENAME, or create it with one disk directory a line)")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is wrong.
    #[error("{path}:{line}: {msg}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// No disk listed.
    #[error("{path} lists no disk: add one directory a line where chunks may be stored")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// Reads and checks `mfshdd.cfg` (every path must be an existing directory).
pub fn load(path: &Path) -> Result<Vec<DiskSpec>, HddError> {
    let text = std::fs::read_to_string(path).map_err(|source| HddError::Read {
        path: path.to_owned(),
        source,
    })?;
    let disks = parse(path, &text)?;
    if disks.is_empty() {
        return Err(HddError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(disks)
}

/// Parses the text of `mfshdd.cfg` (named `path` in errors), checking that
/// every disk directory exists.
pub fn parse(path: &Path, text: &str) -> Result<Vec<DiskSpec>, HddError> {
    let mut out: Vec<DiskSpec> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |msg: String| HddError::Line {
            path: path.to_owned(),
            line,
            msg,
        };
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let (marked, rest) = match content.strip_prefix('*') {
            Some(r) => (true, r.trim_start()),
            None => (false, content),
        };
        let mut words = rest.split_whitespace();
        let Some(dir) = words.next() else {
            return Err(err("`*` without a disk path".into()));
        };
        if !dir.starts_with('/') {
            return Err(err(format!(
                "`{dir}`: expected an absolute disk path, optionally preceded by `*` (marked for removal)"
            )));
        }
        let limit = match words.next() {
            None => None,
            Some(s) => Some(parse_size(s).map_err(|e| {
                err(format!(
                    "bad option `{s}` after {dir}: {e} (expected a size limit such as 10GiB)"
                ))
            })?),
        };
        if let Some(extra) = words.next() {
            return Err(err(format!(
                "unexpected `{extra}`: a line holds one disk path and at most one size limit"
            )));
        }
        let dir = PathBuf::from(dir);
        match std::fs::metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(err(format!("{} is not a directory", dir.display()))),
            Err(e) => {
                return Err(err(format!(
                    "disk path {} cannot be used: {e} (create and mount it, or remove the line)",
                    dir.display()
                )))
            }
        }
        if out.iter().any(|d| d.path == dir) {
            return Err(err(format!("disk {} is listed twice", dir.display())));
        }
        out.push(DiskSpec {
            path: dir,
            marked,
            limit,
        });
    }
    Ok(out)
}

/// Parses a size: plain bytes or a number with a unit (`K`, `M`, `G`, `T`,
/// `P`; `KiB`.. binary; `KB`.. decimal; bare letters binary, as MooseFS).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` does not start with a number"))?;
    let unit = unit.trim();
    let mul: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024f64,
        "m" | "mib" => 1024f64.powi(2),
        "g" | "gib" => 1024f64.powi(3),
        "t" | "tib" => 1024f64.powi(4),
        "p" | "pib" => 1024f64.powi(5),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "pb" => 1e15,
        _ => return Err(format!("unknown unit `{unit}` in `{s}`")),
    };
    let v = n * mul;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_marks_and_limits() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        let b = d.path().join("b");
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        let text = format!(
            "# disks\n\n{} # first\n  *{}  10GiB\n",
            a.display(),
            b.display()
        );
        let got = parse(Path::new("mfshdd.cfg"), &text).unwrap();
        assert_eq!(
            got,
            vec![
                DiskSpec {
                    path: a,
                    marked: false,
                    limit: None
                },
                DiskSpec {
                    path: b,
                    marked: true,
                    limit: Some(10 << 30)
                },
            ]
        );
    }

    #[test]
    fn missing_path_names_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let text = format!("{}\n# x\n/nonexistent/disk/9\n", d.path().display());
        let e = parse(Path::new("/etc/mfs/mfshdd.cfg"), &text)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/etc/mfs/mfshdd.cfg:3:"), "{e}");
        assert!(e.contains("/nonexistent/disk/9"), "{e}");
    }

    #[test]
    fn bad_option_and_relative_path_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let text = format!("{} lots\n", d.path().display());
        let e = parse(Path::new("h.cfg"), &text).unwrap_err().to_string();
        assert!(e.contains("h.cfg:1:") && e.contains("lots"), "{e}");
        let e = parse(Path::new("h.cfg"), "\nrelative/dir\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("h.cfg:2:"), "{e}");
        let text = format!("{0}\n{0}\n", d.path().display());
        let e = parse(Path::new("h.cfg"), &text).unwrap_err().to_string();
        assert!(e.contains("h.cfg:2:") && e.contains("twice"), "{e}");
    }

    #[test]
    fn empty_list_is_an_error_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("mfshdd.cfg");
        std::fs::write(&p, "# nothing\n").unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("mfshdd.cfg") && e.contains("no disk"), "{e}");
        let e = load(&d.path().join("absent.cfg")).unwrap_err().to_string();
        assert!(e.contains("absent.cfg"), "{e}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("2TB").unwrap(), 2_000_000_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3 parsecs").is_err());
    }
}
