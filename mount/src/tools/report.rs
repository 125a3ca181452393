//! What the tools count and how they print it, in MooseFS's formats:
//!
//! ```text
//! dir:                                  (mfsgetgoal -r)
//!  files with goal        2 :          4
//!  directories with goal  2 :          1
//! dir:                                  (mfssetgoal -r)
//!  inodes with goal changed:               5
//!  inodes with goal not changed:           0
//!  inodes with permission denied:          0
//! file:                                 (mfscheckfile)
//!  chunks with 2 copies:            3
//! file:                                 (mfsfileinfo)
//!     chunk 0: 0000000000000682_00000001 / (id:1666 ver:1)   (a tab first)
//!         copy 1: 127.0.0.1:9422                         (two tabs)
//! dir:                                  (mfsdirinfo)
//!  inodes:                 8
//!   directories:           2
//! ...
//! ```
//!
//! Everything here is pure (plain data in, text out), so it is unit tested
//! without a cluster.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use mfs_proto::v1::{DirInfoReply, FileType, QuotaInfo, SetTreeReply};

/// Bytes of file data one chunk holds.
pub const CHUNK_SIZE: u64 = 64 << 20;

/// Width numbers are printed in (MooseFS's plain `print_number`).
const NUM_WIDTH: usize = 10;

/// How many chunk slots a file of `length` bytes has.
pub fn chunk_count(length: u64) -> u64 {
    length.div_ceil(CHUNK_SIZE)
}

/// Inodes counted by a per-inode value (goal or trash time), files and
/// directories apart, for `mfsgetgoal -r` / `mfsgettrashtime -r`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValueCounts {
    /// Regular files by value.
    pub files: BTreeMap<u32, u64>,
    /// Directories by value.
    pub dirs: BTreeMap<u32, u64>,
}

impl ValueCounts {
    /// Counts one inode (other types than files and directories are not
    /// counted, as in MooseFS).
    pub fn add(&mut self, ftype: i32, value: u32) {
        if ftype == FileType::Directory as i32 {
            *self.dirs.entry(value).or_default() += 1;
        } else if ftype == FileType::Regular as i32 {
            *self.files.entry(value).or_default() += 1;
        }
    }
}

/// `mfsgetgoal -r` / `mfsgettrashtime -r` output; `what` is `goal` or
/// `trashtime`.
pub fn value_counts(path: &str, what: &str, c: &ValueCounts) -> String {
    let files = format!("files with {what}");
    let dirs = format!("directories with {what}");
    let width = dirs.len() + 2;
    let mut out = format!("{path}:\n");
    for (label, map) in [(&files, &c.files), (&dirs, &c.dirs)] {
        for (v, n) in map {
            let _ = writeln!(out, " {label:<width$}{v} : {n:>NUM_WIDTH$}");
        }
    }
    out
}

/// `mfsgeteattr -r` output: files and directories by their set of extra
/// attributes (`-` for none).
pub fn eattr_counts(path: &str, c: &ValueCounts) -> String {
    let width = "directories with attributes".len() + 2;
    let mut out = format!("{path}:\n");
    for (label, map) in [
        ("files with attributes", &c.files),
        ("directories with attributes", &c.dirs),
    ] {
        for (v, n) in map {
            let names = mfs_common::eattr::names(u8::try_from(*v).unwrap_or(u8::MAX));
            let _ = writeln!(out, " {label:<width$}{names} : {n:>NUM_WIDTH$}");
        }
    }
    out
}

/// `mfssetgoal -r` / `mfssettrashtime -r` output; `what` is `goal` or
/// `trashtime`.
pub fn set_tree(path: &str, what: &str, r: &SetTreeReply) -> String {
    let rows = [
        (format!("inodes with {what} changed:"), r.changed),
        (format!("inodes with {what} not changed:"), r.not_changed),
        (
            "inodes with permission denied:".to_string(),
            r.not_permitted,
        ),
    ];
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 1;
    let mut out = format!("{path}:\n");
    for (label, n) in rows {
        let _ = writeln!(out, " {label:<width$}{n:>NUM_WIDTH$}");
    }
    out
}

/// One chunk slot of a file as the master reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkSlot {
    /// No chunk: the slot reads as zeros.
    Hole,
    /// A chunk and the addresses of its valid copies (maybe none).
    Chunk {
        /// Chunk id.
        id: u64,
        /// Committed version.
        version: u32,
        /// `host:port` of each valid copy, the best first.
        copies: Vec<String>,
    },
    /// A chunk the master knows no valid copy of (it answered EIO, so its
    /// id is not known here).
    Lost,
}

/// Seven days: the grace period MooseFS calls "default".
pub const DEFAULT_GRACE_SECS: u32 = 7 * 86400;

/// `mfsgetquota` / `mfssetquota` output for one directory, as MooseFS's
/// (plain numbers, `-` for no limit), with a line when a soft limit is
/// exceeded (`now`: Unix seconds). `None`: "PATH: no quota".
pub fn quota(path: &str, q: Option<&QuotaInfo>, now: i64) -> String {
    let Some(q) = q else {
        return format!("{path}: no quota\n");
    };
    let grace = if q.grace_secs == DEFAULT_GRACE_SECS {
        "default".to_string()
    } else {
        format!("{} seconds", q.grace_secs)
    };
    let mut out = format!(
        "{path}: (current values | soft quota | hard quota) ; soft quota grace period: {grace}\n"
    );
    let u = q.usage.unwrap_or_default();
    let (soft, hard) = (q.soft.unwrap_or_default(), q.hard.unwrap_or_default());
    let rows = [
        ("inodes  ", u.inodes, soft.inodes, hard.inodes),
        ("length  ", u.length, soft.length, hard.length),
        ("size    ", u.size, soft.size, hard.size),
        ("realsize", u.realsize, soft.realsize, hard.realsize),
    ];
    let limit = |l: Option<u64>| l.map_or_else(|| "-".to_string(), |v| v.to_string());
    for (name, cur, s, h) in rows {
        out.push_str(&format!(
            " {name} | {cur:>20} | {:>20} | {:>20} |\n",
            limit(s),
            limit(h)
        ));
    }
    if q.soft_exceeded_since != 0 {
        let left = q
            .soft_exceeded_since
            .saturating_add(i64::from(q.grace_secs))
            .saturating_sub(now);
        if left > 0 {
            out.push_str(&format!(
                " soft quota exceeded: acts as hard in {left} seconds\n"
            ));
        } else {
            out.push_str(" soft quota exceeded for longer than the grace period: acts as hard\n");
        }
    }
    out
}

/// `mfscheckfile` output: chunks counted by their number of valid copies
/// (holes are not chunks).
pub fn check_file(path: &str, slots: &[ChunkSlot]) -> String {
    let mut by_copies: BTreeMap<usize, u64> = BTreeMap::new();
    for s in slots {
        match s {
            ChunkSlot::Chunk { copies, .. } => {
                *by_copies.entry(copies.len().min(10)).or_default() += 1;
            }
            ChunkSlot::Lost => *by_copies.entry(0).or_default() += 1,
            ChunkSlot::Hole => {}
        }
    }
    let mut out = format!("{path}:\n");
    for (n, count) in by_copies {
        let label = match n {
            1 => " chunks with 1 copy:    ".to_string(),
            10.. => " chunks with 10+ copies:".to_string(),
            n => format!(" chunks with {n} copies:  "),
        };
        let _ = writeln!(out, "{label} {count:>NUM_WIDTH$}");
    }
    out
}

/// `mfsfileinfo` output: each chunk, its id and version, and its copies.
pub fn file_info(path: &str, slots: &[ChunkSlot]) -> String {
    let mut out = format!("{path}:\n");
    if slots.is_empty() {
        out.push_str("\tno chunks - empty file\n");
    }
    for (i, s) in slots.iter().enumerate() {
        match s {
            ChunkSlot::Hole => {
                let _ = writeln!(out, "\tchunk {i}: empty");
            }
            ChunkSlot::Lost => {
                let _ = writeln!(out, "\tchunk {i}: no valid copies !!!");
            }
            ChunkSlot::Chunk {
                id,
                version,
                copies,
            } => {
                let _ = writeln!(
                    out,
                    "\tchunk {i}: {id:016X}_{version:08X} / (id:{id} ver:{version})"
                );
                if copies.is_empty() {
                    out.push_str("\t\tno valid copies !!!\n");
                }
                for (k, addr) in copies.iter().enumerate() {
                    let _ = writeln!(out, "\t\tcopy {}: {addr}", k + 1);
                }
            }
        }
    }
    out
}

/// `mfsdirinfo` output of what the master counted (its `DirInfo` call: a
/// chunk shared by snapshots counts once).
pub fn dir_info(path: &str, d: &DirInfoReply) -> String {
    let rows = [
        (" inodes:       ", d.inodes),
        ("  directories: ", d.dirs),
        ("  files:       ", d.files),
        (" chunks:       ", d.chunks),
        (" length:       ", d.length),
        (" size:         ", d.size),
        (" realsize:     ", d.realsize),
    ];
    let mut out = format!("{path}:\n");
    for (label, n) in rows {
        let _ = writeln!(out, "{label}{n:>NUM_WIDTH$}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getgoal_recursive_lists_files_then_directories_by_value() {
        let mut c = ValueCounts::default();
        for (t, g) in [
            (FileType::Regular, 2),
            (FileType::Regular, 3),
            (FileType::Regular, 2),
            (FileType::Directory, 2),
            (FileType::Symlink, 5),
        ] {
            c.add(t as i32, g);
        }
        let text = value_counts("d", "goal", &c);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "d:");
        assert!(
            lines[1].starts_with(" files with goal        2 :"),
            "{text}"
        );
        assert!(
            lines[1].ends_with(" 2") && lines[2].ends_with(" 1"),
            "{text}"
        );
        assert!(
            lines[2].starts_with(" files with goal        3 :"),
            "{text}"
        );
        assert!(
            lines[3].starts_with(" directories with goal  2 :"),
            "{text}"
        );
        assert_eq!(lines.len(), 4, "symlinks are not counted: {text}");
    }

    #[test]
    fn settree_counts_are_labelled_and_aligned() {
        let r = SetTreeReply {
            changed: 7,
            not_changed: 2,
            not_permitted: 1,
        };
        let text = set_tree("x", "trashtime", &r);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[1].starts_with(" inodes with trashtime changed:"));
        assert!(lines[1].trim_end().ends_with(" 7"));
        assert!(lines[2].starts_with(" inodes with trashtime not changed:"));
        assert!(lines[3].starts_with(" inodes with permission denied:"));
        let len = lines[1].len();
        assert!(lines.iter().skip(1).all(|l| l.len() == len), "{text}");
    }

    #[test]
    fn checkfile_counts_chunks_by_copies_and_skips_holes() {
        let chunk = |n: usize| ChunkSlot::Chunk {
            id: 1,
            version: 1,
            copies: vec!["a:1".into(); n],
        };
        let slots = [
            chunk(2),
            ChunkSlot::Hole,
            chunk(2),
            chunk(1),
            chunk(0),
            ChunkSlot::Lost,
            chunk(12),
        ];
        let text = check_file("f", &slots);
        let want_prefixes = [
            ("f:", None),
            (" chunks with 0 copies:", Some(2)),
            (" chunks with 1 copy:", Some(1)),
            (" chunks with 2 copies:", Some(2)),
            (" chunks with 10+ copies:", Some(1)),
        ];
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), want_prefixes.len(), "{text}");
        for (l, (p, n)) in lines.iter().zip(want_prefixes) {
            assert!(l.starts_with(p), "{l:?} vs {p:?}");
            if let Some(n) = n {
                assert_eq!(l.split_whitespace().last(), Some(n.to_string().as_str()));
            }
        }
    }

    #[test]
    fn fileinfo_shows_ids_in_hex_and_decimal_and_every_copy() {
        let slots = [
            ChunkSlot::Chunk {
                id: 1666,
                version: 1,
                copies: vec!["10.0.0.1:9422".into(), "10.0.0.2:9422".into()],
            },
            ChunkSlot::Hole,
            ChunkSlot::Chunk {
                id: 7,
                version: 3,
                copies: vec![],
            },
            ChunkSlot::Lost,
        ];
        let text = file_info("f", &slots);
        assert_eq!(
            text,
            "f:\n\tchunk 0: 0000000000000682_00000001 / (id:1666 ver:1)\n\
             \t\tcopy 1: 10.0.0.1:9422\n\t\tcopy 2: 10.0.0.2:9422\n\
             \tchunk 1: empty\n\
             \tchunk 2: 0000000000000007_00000003 / (id:7 ver:3)\n\t\tno valid copies !!!\n\
             \tchunk 3: no valid copies !!!\n"
        );
        assert_eq!(file_info("e", &[]), "e:\n\tno chunks - empty file\n");
    }

    #[test]
    fn dirinfo_renders_every_count() {
        let d = DirInfoReply {
            inodes: 5,
            dirs: 1,
            files: 3,
            chunks: 3,
            length: 1000,
            size: 1024,
            realsize: 2048,
        };
        let text = dir_info("d", &d);
        assert!(text.starts_with("d:\n inodes:"), "{text}");
        assert!(text.contains("\n  files:       "), "{text}");
        assert!(text
            .lines()
            .any(|l| l.starts_with(" realsize:") && l.ends_with(&d.realsize.to_string())));
    }
}
