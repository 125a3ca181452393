//! Conversions between the wire types (`mfs_proto`) and the namespace's own
//! types (`crate::fsm`). Only this file and the services know both.

use mfs_proto::v1 as pb;

use crate::chunks::state::{CopyInfo, Disk};
use crate::chunks::Location;
use crate::fsm::{self, Attr, ChunkId, Cred, FileType, Reply, Timespec};
use tonic::Status;

use super::error::invalid;

pub fn ftype_to_pb(t: FileType) -> pb::FileType {
    match t {
        FileType::Regular => pb::FileType::Regular,
        FileType::Directory => pb::FileType::Directory,
        FileType::Symlink => pb::FileType::Symlink,
        FileType::Fifo => pb::FileType::Fifo,
        FileType::Socket => pb::FileType::Socket,
        FileType::BlockDev => pb::FileType::BlockDevice,
        FileType::CharDev => pb::FileType::CharDevice,
    }
}

pub fn ftype_from_pb(t: i32) -> Option<FileType> {
    Some(match pb::FileType::try_from(t).ok()? {
        pb::FileType::Regular => FileType::Regular,
        pb::FileType::Directory => FileType::Directory,
        pb::FileType::Symlink => FileType::Symlink,
        pb::FileType::Fifo => FileType::Fifo,
        pb::FileType::Socket => FileType::Socket,
        pb::FileType::BlockDevice => FileType::BlockDev,
        pb::FileType::CharDevice => FileType::CharDev,
        pb::FileType::Unspecified => return None,
    })
}

pub fn ts_to_pb(t: Timespec) -> pb::Timespec {
    pb::Timespec {
        sec: t.sec,
        nsec: t.nsec,
    }
}

/// A wire timestamp, checked: nanoseconds below one second.
pub fn ts_from_pb(t: &pb::Timespec) -> Option<Timespec> {
    (t.nsec < 1_000_000_000).then_some(Timespec {
        sec: t.sec,
        nsec: t.nsec,
    })
}

/// A trashed or sustained file (meta mount).
pub fn removed_to_pb(f: &crate::fsm::RemovedFile) -> pb::RemovedFile {
    pb::RemovedFile {
        inode: f.inode.0,
        path: f.path.clone(),
        expires: f.expires,
        attr: Some(attr_to_pb(&f.attr)),
    }
}

pub fn attr_to_pb(a: &Attr) -> pb::Attr {
    pb::Attr {
        inode: a.inode.0,
        r#type: ftype_to_pb(a.ftype) as i32,
        mode: a.mode,
        uid: a.uid,
        gid: a.gid,
        nlink: a.nlink,
        size: a.size,
        atime: Some(ts_to_pb(a.atime)),
        mtime: Some(ts_to_pb(a.mtime)),
        ctime: Some(ts_to_pb(a.ctime)),
        rdev: a.rdev,
        goal: a.goal as u32,
        trash_time: a.trash_time,
        blocks_bytes: a.blocks_bytes,
        eattr: u32::from(a.eattr),
    }
}

/// Credentials of a request; a missing field means "nobody" (65534), never
/// root, so a malformed request cannot gain privileges.
pub fn cred_from_pb(c: Option<pb::Credentials>) -> Cred {
    match c {
        Some(c) => Cred {
            uid: c.uid,
            gid: c.gid,
            groups: c.groups.into_iter().take(64).collect(),
        },
        None => Cred {
            uid: 65534,
            gid: 65534,
            groups: Vec::new(),
        },
    }
}

/// A disk as a chunkserver reports it.
pub fn disk_from_pb(d: &pb::DiskInfo) -> Disk {
    Disk {
        path: d.path.chars().take(4096).collect(),
        total: d.total_bytes,
        used: d.used_bytes.min(d.total_bytes),
        chunks: d.chunks,
        marked: d.marked_for_removal,
        damaged: d.damaged,
    }
}

/// One reported copy.
pub fn copy_from_pb(c: &pb::ChunkCopy) -> (ChunkId, CopyInfo) {
    (
        ChunkId(c.chunk_id),
        CopyInfo {
            version: c.version,
            marked: c.on_marked_disk,
        },
    )
}

/// A chunk location for ReadChunk / WriteChunk.
pub fn location_to_pb(l: Location) -> pb::ChunkLocation {
    pb::ChunkLocation {
        chunk_id: l.id.0,
        version: l.version,
        file_length: l.length,
        servers: l
            .servers
            .into_iter()
            .map(|(id, address)| pb::ChunkServerAddr { id, address })
            .collect(),
        lease_secs: l.lease_secs,
        quota_room: None,
    }
}

/// The counts of a SetGoal / SetTrashTime.
pub fn tree_reply_to_pb(r: &Reply) -> Option<pb::SetTreeReply> {
    match *r {
        Reply::Tree {
            changed,
            not_changed,
            not_permitted,
        } => Some(pb::SetTreeReply {
            changed,
            not_changed,
            not_permitted,
        }),
        _ => None,
    }
}

/// The fsm's lock kind of a protobuf `LockKind`.
pub fn lock_kind_from_pb(kind: i32) -> Result<fsm::LockKind, Status> {
    match pb::LockKind::try_from(kind) {
        Ok(pb::LockKind::Posix) => Ok(fsm::LockKind::Posix),
        Ok(pb::LockKind::Flock) => Ok(fsm::LockKind::Flock),
        Err(_) => Err(invalid(format!(
            "lock kind {kind} is not LOCK_KIND_POSIX (0) or LOCK_KIND_FLOCK (1)"
        ))),
    }
}

/// The fsm's lock type of a protobuf `LockType`; `what` names the call.
pub fn lock_type_from_pb(ltype: i32, what: &str) -> Result<fsm::LockType, Status> {
    match pb::LockType::try_from(ltype) {
        Ok(pb::LockType::Unlock) => Ok(fsm::LockType::Unlock),
        Ok(pb::LockType::Read) => Ok(fsm::LockType::Read),
        Ok(pb::LockType::Write) => Ok(fsm::LockType::Write),
        Err(_) => Err(invalid(format!(
            "{what}: lock type {ltype} is not LOCK_TYPE_UNLOCK, _READ or _WRITE (0, 1, 2)"
        ))),
    }
}

/// A held lock as protobuf; `None` gives type LOCK_TYPE_UNLOCK (no lock).
pub fn file_lock_to_pb(lock: Option<&fsm::FileLock>) -> pb::FileLock {
    match lock {
        None => pb::FileLock::default(),
        Some(l) => pb::FileLock {
            r#type: if l.write {
                pb::LockType::Write
            } else {
                pb::LockType::Read
            } as i32,
            start: l.start,
            end: l.end,
            pid: l.pid,
            session: l.session.0,
        },
    }
}
