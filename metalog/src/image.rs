//! Metadata images on the metalogger's disk: `metadata_ml.mfs` (the newest)
//! and `metadata_ml.mfs.back` (the one before).
//!
//! An image is the master's metadata image format, byte for byte (magic,
//! version, the namespace, its Raft log position, CRC32): what a master's
//! snapshot holds. Writing goes to `metadata_ml.mfs.tmp`, fsync, then the
//! current image is renamed to `.back`, the new one into place, and the
//! directory fsynced: at every moment at least one whole image is on disk
//! (after a crash between the renames, only `.back`; restore tries both).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use mfs_master::fsm::Namespace;
use mfs_master::raft::learner::image_position;
use mfs_master::raft::observer::LogPosition;

use crate::error::{Error, Result};

/// The newest image.
pub const IMAGE_FILE: &str = "metadata_ml.mfs";
/// The image before it.
pub const BACK_FILE: &str = "metadata_ml.mfs.back";
const TMP_FILE: &str = "metadata_ml.mfs.tmp";

/// Durably replaces `dir/metadata_ml.mfs` with `image`, keeping the
/// previous one as `.back`.
pub fn write(dir: &Path, image: &[u8]) -> Result<PathBuf> {
    let tmp = dir.join(TMP_FILE);
    let cur = dir.join(IMAGE_FILE);
    let back = dir.join(BACK_FILE);
    let res = File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(image)?;
            f.sync_all()
        })
        .map_err(Error::io("write", &tmp));
    if let Err(e) = res {
        // Best effort: a leftover .tmp is overwritten next time.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if cur.exists() {
        fs::rename(&cur, &back).map_err(Error::io("keep the previous image as", &back))?;
    }
    fs::rename(&tmp, &cur).map_err(Error::io("put into place", &cur))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("fsync directory", dir))?;
    Ok(cur)
}

/// Reads and checks (magic, version, CRC) an image file: the namespace and
/// the log position it stands at.
pub fn read(path: &Path) -> Result<(Namespace, Option<LogPosition>)> {
    let bytes = fs::read(path).map_err(Error::io("read", path))?;
    image_position(&bytes).map_err(|e| Error::Data(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mfs_master::raft::learner::make_image;

    fn image_at(index: u64) -> Vec<u8> {
        let pos = LogPosition { index, term: 2 };
        make_image(
            &Namespace::new(),
            Some(pos),
            &[(1, "127.0.0.1:9421".into())],
        )
        .unwrap()
    }

    #[test]
    fn keeps_previous_as_back_and_reads_back() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), &image_at(5)).unwrap();
        assert!(!tmp.path().join(BACK_FILE).exists());
        write(tmp.path(), &image_at(9)).unwrap();
        let (_, pos) = read(&tmp.path().join(IMAGE_FILE)).unwrap();
        assert_eq!(pos.map(|p| p.index), Some(9));
        let (_, pos) = read(&tmp.path().join(BACK_FILE)).unwrap();
        assert_eq!(pos.map(|p| p.index), Some(5));
        assert!(!tmp.path().join(TMP_FILE).exists());
    }

    #[test]
    fn damaged_image_is_refused_with_its_name() {
        let tmp = tempfile::tempdir().unwrap();
        let mut a = image_at(3);
        let mid = a.len() / 2;
        a[mid] ^= 0xff;
        fs::write(tmp.path().join(IMAGE_FILE), &a).unwrap();
        let e = read(&tmp.path().join(IMAGE_FILE))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(IMAGE_FILE), "{e}");
    }
}
