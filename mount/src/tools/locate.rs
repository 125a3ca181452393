//! From a local path to the cluster that serves it and the master's inode.
//!
//! `stat(PATH)` gives `st_dev` and `st_ino` (after an fsync of PATH, which
//! makes the mount send what it queued). The mount with that device in
//! `/proc/self/mountinfo` must have a source `mfs#MASTERS[:/subfolder]` (what
//! `mfsmount` names itself); the masters come from there unless the caller
//! overrides them. The kernel's inode numbers are the master's except for a
//! subfolder mount, where the subfolder's inode and 1 are swapped
//! ([`crate::fuse::convert::InodeMap`]).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why a path could not be tied to an rmfs inode.
#[derive(Debug, Error)]
pub enum LocateError {
    /// stat(2) failed.
    #[error("{path}: {source}")]
    Stat {
        /// The path as given.
        path: String,
        /// The system error.
        source: std::io::Error,
    },
    /// The path's file system is not an `mfs#...` FUSE mount.
    #[error("{0}: not on an rmfs mount")]
    NotRmfs(String),
    /// `/proc/self/mountinfo` could not be read.
    #[error("cannot read /proc/self/mountinfo: {0} (is /proc mounted?)")]
    Mountinfo(std::io::Error),
}

/// One line of `/proc/self/mountinfo`, the fields the tools need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Device major number.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// Where it is mounted (unescaped).
    pub mount_point: PathBuf,
    /// File system type, e.g. `fuse.mfs`.
    pub fstype: String,
    /// Mount source, e.g. `mfs#127.0.0.1:9421,127.0.0.1:9422` (unescaped).
    pub source: String,
}

/// The masters and subfolder an `mfs#` mount source names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfsSource {
    /// The masters as written: `host:port,host:port`.
    pub masters: String,
    /// The mounted subfolder (`None`: the root).
    pub subfolder: Option<String>,
}

/// A path found on an rmfs mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The mount it is on.
    pub mount: MountEntry,
    /// What the mount's source says.
    pub source: MfsSource,
    /// The kernel's inode number (`st_ino`); map it with
    /// [`crate::fuse::convert::InodeMap`] once the subfolder's inode is known.
    pub kernel_inode: u64,
    /// Is it a directory (stat said so)?
    pub is_dir: bool,
}

/// Undoes mountinfo's octal escapes (`\040` for a blank, `\134` for `\`).
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the text of `/proc/self/mountinfo`; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            // id parent maj:min root mountpoint opts [optional...] - fstype source superopts
            let f: Vec<&str> = line.split(' ').collect();
            let (maj, min) = f.get(2)?.split_once(':')?;
            let sep = f.iter().position(|x| *x == "-")?;
            Some(MountEntry {
                major: maj.parse().ok()?,
                minor: min.parse().ok()?,
                mount_point: PathBuf::from(unescape(f.get(4)?)),
                fstype: f.get(sep + 1)?.to_string(),
                source: unescape(f.get(sep + 2)?),
            })
        })
        .collect()
}

/// Parses a mount source `mfs#MASTERS[:/subfolder]`; `None` if it is not one.
pub fn parse_source(source: &str) -> Option<MfsSource> {
    let rest = source.strip_prefix("mfs#")?;
    let (masters, subfolder) = match rest.find(":/") {
        Some(p) => (&rest[..p], Some(rest[p + 1..].to_string())),
        None => (rest, None),
    };
    let subfolder = subfolder.filter(|s| !s.trim_matches('/').is_empty());
    Some(MfsSource {
        masters: masters.trim().to_string(),
        subfolder,
    })
}

/// The rmfs mount with device `major:minor` among `entries`.
pub fn find_mount(
    entries: &[MountEntry],
    major: u32,
    minor: u32,
) -> Option<(MountEntry, MfsSource)> {
    entries
        .iter()
        .filter(|e| e.major == major && e.minor == minor && e.fstype.starts_with("fuse"))
        .find_map(|e| parse_source(&e.source).map(|s| (e.clone(), s)))
}

/// Finds the rmfs mount `path` is on, and its kernel inode.
pub fn locate(path: &Path) -> Result<Located, LocateError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| LocateError::Stat {
        path: shown.clone(),
        source,
    })?;
    // The mount may still hold the path's create (or mkdir) in its
    // write-back queue: an fsync sends the queue, so the master knows
    // the inode the tool is about to name. (Refused opens are fine: a
    // path the caller may not open is no path it just made.)
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.sync_all();
    }
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(LocateError::Mountinfo)?;
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let (mount, source) =
        find_mount(&parse_mountinfo(&text), major, minor).ok_or(LocateError::NotRmfs(shown))?;
    Ok(Located {
        mount,
        source,
        kernel_inode: meta.ino(),
        is_dir: meta.is_dir(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 0:21 / /proc rw,nosuid - proc proc rw
95 60 0:52 / /tmp/x/mnt\\040a rw,nosuid,nodev,relatime shared:50 - fuse.mfs mfs#127.0.0.1:9421,127.0.0.1:9422 rw,user_id=0
96 60 0:53 / /tmp/y rw - fuse sshfs#host:/ rw
97 60 0:54 / /tmp/z rw - fuse.mfs mfs#m1:9421:/projects/a rw
garbage line
";

    #[test]
    fn mountinfo_lines_are_parsed_and_unescaped() {
        let e = parse_mountinfo(SAMPLE);
        assert_eq!(e.len(), 4);
        assert_eq!(e[1].major, 0);
        assert_eq!(e[1].minor, 52);
        assert_eq!(e[1].mount_point, PathBuf::from("/tmp/x/mnt a"));
        assert_eq!(e[1].fstype, "fuse.mfs");
        assert_eq!(e[1].source, "mfs#127.0.0.1:9421,127.0.0.1:9422");
    }

    #[test]
    fn only_mfs_fuse_mounts_match_the_device() {
        let e = parse_mountinfo(SAMPLE);
        let (m, s) = find_mount(&e, 0, 52).unwrap();
        assert_eq!(m.mount_point, PathBuf::from("/tmp/x/mnt a"));
        assert_eq!(s.masters, "127.0.0.1:9421,127.0.0.1:9422");
        assert_eq!(s.subfolder, None);
        assert!(find_mount(&e, 0, 53).is_none(), "sshfs is not rmfs");
        assert!(find_mount(&e, 0, 21).is_none(), "proc is not rmfs");
        assert!(find_mount(&e, 9, 9).is_none());
        let (_, s) = find_mount(&e, 0, 54).unwrap();
        assert_eq!(s.masters, "m1:9421");
        assert_eq!(s.subfolder.as_deref(), Some("/projects/a"));
    }

    #[test]
    fn a_root_subfolder_is_no_subfolder() {
        assert_eq!(parse_source("mfs#h:1:/").unwrap().subfolder, None);
        assert_eq!(parse_source("sshfs#h:/x"), None);
    }

    #[test]
    fn a_path_outside_any_mfs_mount_is_refused() {
        let err = locate(Path::new("/proc/self")).unwrap_err();
        assert!(matches!(err, LocateError::NotRmfs(_)), "{err}");
        assert_eq!(err.to_string(), "/proc/self: not on an rmfs mount");
        let err = locate(Path::new("/nonexistent/rmfs/path")).unwrap_err();
        assert!(matches!(err, LocateError::Stat { .. }), "{err}");
    }
}
