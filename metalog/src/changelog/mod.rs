//! The changelog on the metalogger's disk: numbered text files of
//! [`line::Line`]s, as MooseFS's metalogger keeps them.
//!
//! `changelog_ml.0.mfs` is the file being written; at rotation it becomes
//! `changelog_ml.1.mfs`, `.1` becomes `.2`, and so on up to `BACK_LOGS`;
//! older files are removed. Reading every line in log order therefore means
//! reading the highest number first and `.0` last ([`files_oldest_first`]).

pub mod line;
pub mod writer;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub use line::{ImageMark, Kind, Line, LineError, Members};
pub use writer::{ChangelogWriter, WriterSettings};

/// File name of changelog number `n` (0: the current one).
pub fn file_name(n: u32) -> String {
    format!("changelog_ml.{n}.mfs")
}

/// The number of a changelog file name, if it is one.
pub fn file_number(name: &str) -> Option<u32> {
    name.strip_prefix("changelog_ml.")?
        .strip_suffix(".mfs")?
        .parse()
        .ok()
}

/// The changelog files in `dir`, oldest (highest number) first: the order
/// their lines were written in.
pub fn files_oldest_first(dir: &Path) -> Result<Vec<(u32, PathBuf)>> {
    let rd = std::fs::read_dir(dir).map_err(Error::io("list", dir))?;
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(Error::io("list", dir))?;
        if let Some(n) = e.file_name().to_str().and_then(file_number) {
            out.push((n, e.path()));
        }
    }
    out.sort_by_key(|f| std::cmp::Reverse(f.0));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_order() {
        assert_eq!(file_name(3), "changelog_ml.3.mfs");
        assert_eq!(file_number("changelog_ml.12.mfs"), Some(12));
        assert_eq!(file_number("changelog_ml.x.mfs"), None);
        assert_eq!(file_number("metadata_ml.mfs"), None);
        let tmp = tempfile::tempdir().unwrap();
        for n in [0, 10, 2] {
            std::fs::write(tmp.path().join(file_name(n)), "").unwrap();
        }
        std::fs::write(tmp.path().join("metadata_ml.mfs"), "").unwrap();
        let got: Vec<u32> = files_oldest_first(tmp.path())
            .unwrap()
            .into_iter()
            .map(|f| f.0)
            .collect();
        assert_eq!(got, vec![10, 2, 0]);
    }
}
