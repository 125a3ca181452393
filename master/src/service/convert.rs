//! Conversions between the wire types (`mfs_proto`) and the namespace's own
//! types (`crate::fsm`). Only this file and the services know both.

use mfs_proto::v1 as pb;

use crate::chunks::state::{CopyInfo, Disk};
use crate::chunks::Location;
use crate::fsm::{self, Attr, ChunkId, Cred, FileType, Inode, Namespace, Op, Reply, Timespec};
use tonic::Status;

use super::access::Caller;
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
/// An open's mode from the wire.
pub fn open_mode(mode: i32) -> Result<fsm::OpenMode, Status> {
    match pb::OpenMode::try_from(mode) {
        Ok(pb::OpenMode::Read) => Ok(fsm::OpenMode::Read),
        Ok(pb::OpenMode::Write) => Ok(fsm::OpenMode::Write),
        Ok(pb::OpenMode::ReadWrite) => Ok(fsm::OpenMode::ReadWrite),
        Err(_) => Err(invalid("Open: unknown mode")),
    }
}

pub fn ts_from_pb(t: &pb::Timespec) -> Option<Timespec> {
    (t.nsec < 1_000_000_000).then_some(Timespec {
        sec: t.sec,
        nsec: t.nsec,
    })
}

/// A trashed or sustained file (meta mount); `ns` as in [`attr_to_pb`].
pub fn removed_to_pb(f: &crate::fsm::RemovedFile, ns: &Namespace) -> pb::RemovedFile {
    pb::RemovedFile {
        inode: f.inode.0,
        path: f.path.clone(),
        expires: f.expires,
        attr: Some(attr_to_pb(&f.attr, ns)),
    }
}

/// Attributes as the wire carries them. `has_xattrs` is not one of the
/// fsm's `Attr` fields (those are kept in reply caches, inside images): it
/// is read from `ns`, the namespace as it is now (false when the inode is
/// gone).
pub fn attr_to_pb(a: &Attr, ns: &Namespace) -> pb::Attr {
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
        has_xattrs: Some(ns.has_xattrs(a.inode)),
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
        written_by_others: l.written_by_others,
        create: l.create,
        // Signed by the service (`Meta::with_token`).
        token: Vec::new(),
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

/// The op of an Unlink call (alone or in a client's batch).
pub(super) fn unlink_op(c: &Caller, r: pb::UnlinkRequest) -> Op {
    Op::Unlink {
        cred: c.cred(r.cred),
        parent: Inode(r.parent),
        name: r.name,
    }
}

/// The op of an Rmdir call (alone or in a client's batch).
pub(super) fn rmdir_op(c: &Caller, r: pb::RmdirRequest) -> Op {
    Op::Rmdir {
        cred: c.cred(r.cred),
        parent: Inode(r.parent),
        name: r.name,
    }
}

/// The op of a Rename call (alone or in a client's batch).
pub(super) fn rename_op(c: &Caller, r: pb::RenameRequest) -> Op {
    Op::Rename {
        cred: c.cred(r.cred),
        parent: Inode(r.parent),
        name: r.name,
        new_parent: Inode(r.new_parent),
        new_name: r.new_name,
        noreplace: r.noreplace,
        exchange: r.exchange,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::{Inode, Op, Request, SessionId};

    /// A namespace with a session that applies requests in order.
    struct Ns {
        ns: Namespace,
        sid: SessionId,
        seq: u64,
    }

    impl Ns {
        fn new() -> Ns {
            let mut ns = Namespace::new();
            let req = |op| Request {
                session: SessionId(0),
                seq: 0,
                acked: 0,
                time: Timespec::new(1000, 0),
                op,
            };
            ns.apply(&req(Op::SetClusterId { id: "t".into() }));
            let Reply::Session { id } = ns.apply(&req(Op::RegisterSession { info: "t".into() }))
            else {
                panic!("no session")
            };
            Ns {
                ns,
                sid: id,
                seq: 0,
            }
        }

        fn run(&mut self, op: Op) -> Reply {
            self.seq += 1;
            let reply = self.ns.apply(&Request {
                session: self.sid,
                seq: self.seq,
                acked: self.seq - 1,
                time: Timespec::new(1000 + self.seq as i64, 0),
                op,
            });
            assert!(!matches!(reply, Reply::Err(_)), "{reply:?}");
            reply
        }

        /// The wire attributes of a reply.
        fn attr_of(&self, r: &Reply) -> pb::Attr {
            match r {
                Reply::Attr(a) => attr_to_pb(a, &self.ns),
                r => panic!("{r:?}"),
            }
        }

        /// `has_xattrs` of `inode` as GetAttr sends it.
        fn flag(&self, inode: u64) -> Option<bool> {
            let a = self.ns.getattr(Inode(inode)).expect("inode");
            attr_to_pb(&a, &self.ns).has_xattrs
        }

        fn set(&mut self, inode: u64, name: &str, value: Vec<u8>) {
            self.run(Op::SetXattr {
                cred: Cred::root(),
                inode: Inode(inode),
                name: name.as_bytes().to_vec(),
                value,
                create_only: false,
                replace_only: false,
            });
        }

        fn remove(&mut self, inode: u64, name: &str) {
            self.run(Op::RemoveXattr {
                cred: Cred::root(),
                inode: Inode(inode),
                name: name.as_bytes().to_vec(),
            });
        }
    }

    fn create(parent: u64, name: &str) -> Op {
        Op::Create {
            cred: Cred::root(),
            parent: Inode(parent),
            name: name.as_bytes().to_vec(),
            mode: 0o644,
            umask: 0o022,
            exclusive: true,
        }
    }

    /// An ACL beyond the mode bits (so it is kept): owner rwx, user 2000
    /// rw-, group r--, mask rw-, other ---.
    fn acl() -> Vec<u8> {
        crate::fsm::acl_xattr_value([
            (0x01, 7, u32::MAX),
            (0x02, 6, 2000),
            (0x04, 4, u32::MAX),
            (0x10, 6, u32::MAX),
            (0x20, 0, u32::MAX),
        ])
    }

    #[test]
    fn has_xattrs_follows_user_xattrs_and_acls() {
        let mut t = Ns::new();
        let r = t.run(create(1, "f"));
        let f = t.attr_of(&r);
        assert_eq!(f.has_xattrs, Some(false), "a fresh file has none");
        let f = f.inode;
        t.set(f, "user.x", b"1".to_vec());
        assert_eq!(t.flag(f), Some(true), "user.x set");
        t.remove(f, "user.x");
        assert_eq!(t.flag(f), Some(false), "user.x removed");
        t.set(f, "system.posix_acl_access", acl());
        assert_eq!(t.flag(f), Some(true), "access ACL set");
        t.set(f, "trusted.t", b"2".to_vec());
        t.remove(f, "system.posix_acl_access");
        assert_eq!(t.flag(f), Some(true), "trusted.t is left");
        t.remove(f, "trusted.t");
        assert_eq!(t.flag(f), Some(false), "all removed");
        t.set(f, "user.y", b"3".to_vec());
        let mut gone = t.ns.getattr(Inode(f)).expect("inode");
        gone.inode = Inode(1 << 40);
        assert_eq!(
            attr_to_pb(&gone, &t.ns).has_xattrs,
            Some(false),
            "an inode that is gone"
        );
    }

    #[test]
    fn a_file_made_under_a_default_acl_has_xattrs_in_the_create_reply() {
        let mut t = Ns::new();
        let r = t.run(Op::Mkdir {
            cred: Cred::root(),
            parent: Inode::ROOT,
            name: b"d".to_vec(),
            mode: 0o755,
            umask: 0,
        });
        let d = t.attr_of(&r).inode;
        assert_eq!(t.flag(d), Some(false));
        t.set(d, "system.posix_acl_default", acl());
        assert_eq!(t.flag(d), Some(true), "default ACL set");
        let r = t.run(create(d, "g"));
        assert_eq!(t.attr_of(&r).has_xattrs, Some(true), "inherited ACL");
        let r = t.run(create(1, "h"));
        assert_eq!(t.attr_of(&r).has_xattrs, Some(false), "no default ACL");
    }
}
