//! Conversions between the master's wire types and fuser's: attributes, file
//! types, times, errors, and the inode numbers the kernel sees (the mounted
//! subfolder is the kernel's root).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType as FuseType, INodeNo};
use mfs_proto::v1::{Attr, FileType, Timespec};

use crate::error::ClientError;

/// The longest name of a directory entry (NAME_MAX).
pub const NAME_MAX: usize = 255;

/// Block size reported in `st_blksize`: large, so tools read and write in
/// big pieces (the kernel's requests go up to `max_write` anyway).
pub const BLKSIZE: u32 = 64 * 1024;

/// The errno a failed call maps to, for a FUSE reply.
pub fn errno(e: &ClientError) -> Errno {
    Errno::from_i32(e.errno())
}

/// The translation between the master's inode numbers and the kernel's: the
/// root of the mount (the subfolder) is the kernel's inode 1, and the
/// master's inode 1 takes the subfolder's number (a swap, so every inode
/// keeps a unique number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InodeMap {
    root: u64,
}

impl InodeMap {
    /// A map for a mount whose root is master inode `root`.
    pub fn new(root: u64) -> InodeMap {
        InodeMap { root }
    }

    /// The master inode of kernel inode `ino`.
    pub fn to_master(&self, ino: INodeNo) -> u64 {
        let ino = ino.0;
        if ino == 1 {
            self.root
        } else if ino == self.root {
            1
        } else {
            ino
        }
    }

    /// The kernel inode of master inode `ino`.
    pub fn to_kernel(&self, ino: u64) -> INodeNo {
        INodeNo(if ino == self.root {
            1
        } else if ino == 1 {
            self.root
        } else {
            ino
        })
    }
}

/// The fuser file type of a wire file type (unknown values read as regular
/// files, so a newer master cannot make the mount fail a stat).
pub fn file_type(t: i32) -> FuseType {
    match FileType::try_from(t).unwrap_or(FileType::Regular) {
        FileType::Directory => FuseType::Directory,
        FileType::Symlink => FuseType::Symlink,
        FileType::Fifo => FuseType::NamedPipe,
        FileType::Socket => FuseType::Socket,
        FileType::BlockDevice => FuseType::BlockDevice,
        FileType::CharDevice => FuseType::CharDevice,
        FileType::Regular | FileType::Unspecified => FuseType::RegularFile,
    }
}

/// The wire file type of the S_IFMT bits of `mode` (None: not a type
/// mknod can create).
pub fn type_of_mode(mode: u32) -> Option<FileType> {
    match mode & libc::S_IFMT {
        libc::S_IFREG | 0 => Some(FileType::Regular),
        libc::S_IFIFO => Some(FileType::Fifo),
        libc::S_IFSOCK => Some(FileType::Socket),
        libc::S_IFBLK => Some(FileType::BlockDevice),
        libc::S_IFCHR => Some(FileType::CharDevice),
        _ => None,
    }
}

fn time(t: Option<&Timespec>) -> SystemTime {
    match t {
        Some(t) if t.sec >= 0 => UNIX_EPOCH + Duration::new(t.sec as u64, t.nsec.min(999_999_999)),
        Some(t) => {
            UNIX_EPOCH - Duration::new(t.sec.unsigned_abs(), 0)
                + Duration::new(0, t.nsec.min(999_999_999))
        }
        None => UNIX_EPOCH,
    }
}

/// A `SystemTime` as the wire's seconds and nanoseconds.
pub fn timespec(t: SystemTime) -> Timespec {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timespec {
            sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nsec: d.subsec_nanos(),
        },
        Err(e) => {
            let d = e.duration();
            let (sec, nsec) = if d.subsec_nanos() == 0 {
                (-(d.as_secs() as i64), 0)
            } else {
                (-(d.as_secs() as i64) - 1, 1_000_000_000 - d.subsec_nanos())
            };
            Timespec { sec, nsec }
        }
    }
}

/// The fuser attributes of a wire `Attr`, with the kernel's inode number.
/// `local_size`: the length of data written here and not yet committed to
/// the master (the larger size wins).
pub fn file_attr(a: &Attr, map: &InodeMap, local_size: Option<u64>) -> FileAttr {
    let size = local_size.map_or(a.size, |l| l.max(a.size));
    FileAttr {
        ino: map.to_kernel(a.inode),
        size,
        blocks: a.blocks_bytes.div_ceil(512),
        atime: time(a.atime.as_ref()),
        mtime: time(a.mtime.as_ref()),
        ctime: time(a.ctime.as_ref()),
        crtime: time(a.ctime.as_ref()),
        kind: file_type(a.r#type),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: BLKSIZE,
        flags: 0,
    }
}

/// Answers a statfs with the master's figures (block size 4096 and
/// NAME_MAX when it gives none).
pub fn reply_statfs(s: &mfs_proto::v1::StatfsReply, reply: fuser::ReplyStatfs) {
    let bsize = if s.block_size == 0 {
        4096
    } else {
        s.block_size
    };
    let b = u64::from(bsize);
    let namelen = if s.name_max == 0 {
        NAME_MAX as u32
    } else {
        s.name_max
    };
    reply.statfs(
        s.total_bytes / b,
        s.free_bytes / b,
        s.available_bytes / b,
        s.total_inodes,
        s.free_inodes,
        bsize,
        namelen,
        bsize,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_map_is_a_bijection_around_the_subfolder() {
        let m = InodeMap::new(42);
        for ino in [1u64, 2, 41, 42, 43, 1000] {
            assert_eq!(m.to_master(m.to_kernel(ino)), ino);
        }
        assert_eq!(m.to_master(INodeNo(1)), 42);
        assert_eq!(m.to_kernel(42), INodeNo(1));
        let plain = InodeMap::new(1);
        assert_eq!(plain.to_master(INodeNo(1)), 1);
        assert_eq!(plain.to_kernel(7), INodeNo(7));
    }

    #[test]
    fn times_round_trip_with_nanoseconds_and_before_epoch() {
        for (sec, nsec) in [
            (0i64, 0u32),
            (1_700_000_000, 123_456_789),
            (-5, 250_000_000),
        ] {
            let t = time(Some(&Timespec { sec, nsec }));
            let back = timespec(t);
            assert_eq!((back.sec, back.nsec), (sec, nsec));
        }
    }

    #[test]
    fn attr_conversion_keeps_type_mode_and_local_size() {
        let a = Attr {
            inode: 5,
            r#type: FileType::Symlink as i32,
            mode: 0o104777,
            size: 10,
            nlink: 1,
            blocks_bytes: 1000,
            ..Default::default()
        };
        let f = file_attr(&a, &InodeMap::new(1), Some(20));
        assert_eq!(f.kind, FuseType::Symlink);
        assert_eq!(f.perm, 0o4777);
        assert_eq!(f.size, 20);
        assert_eq!(f.blocks, 2);
        assert_eq!(file_attr(&a, &InodeMap::new(1), Some(3)).size, 10);
    }

    #[test]
    fn mknod_types() {
        assert_eq!(type_of_mode(libc::S_IFIFO | 0o644), Some(FileType::Fifo));
        assert_eq!(type_of_mode(0o644), Some(FileType::Regular));
        assert_eq!(type_of_mode(libc::S_IFDIR | 0o755), None);
    }
}
