//! Plain data types of the state machine: requests, replies, attributes, errnos.
//!
//! These travel inside Raft log entries (serde), so changing one is a change of
//! the on-disk log format: add variants at the end, never reorder.

use mfs_common::ids::{ChunkId, ChunkKey, ChunkVersion, Inode, SessionId};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Goal of the root directory of a new cluster, inherited by everything below.
pub const DEFAULT_GOAL: u8 = 1;
/// Trash time (seconds) of the root directory of a new cluster.
pub const DEFAULT_TRASH_TIME: u32 = 86400;
/// Longest name of a directory entry, in bytes (Linux NAME_MAX).
pub const NAME_MAX: usize = 255;
/// Longest symlink target, in bytes (Linux PATH_MAX - 1).
pub const SYMLINK_MAX: usize = 4095;
/// Longest extended attribute name, in bytes (Linux XATTR_NAME_MAX).
pub const XATTR_NAME_MAX: usize = 255;
/// Largest extended attribute value, in bytes (Linux XATTR_SIZE_MAX).
pub const XATTR_SIZE_MAX: usize = 65536;
/// Most hard links a non-directory may have (as ext4).
pub const LINK_MAX: u32 = 65000;
/// Size of a chunk: a file's byte `o` lives in chunk `o / CHUNK_SIZE`.
pub const CHUNK_SIZE: u64 = 64 << 20;
/// Replies kept per session at most; beyond this the oldest are dropped, as if
/// the client had acknowledged them (a retry of those then gets `STALE_SEQ`).
pub const MAX_CACHED_REPLIES: usize = 4096;
/// Highest chunk index a file may use (a file's chunk list is a vector, so a
/// write far past the end would allocate it all): 2^22 chunks of 64 MiB,
/// 256 TiB. Past it: EFBIG.
pub const MAX_CHUNK_INDEX: u32 = (1 << 22) - 1;
/// Highest goal (copies per chunk), as MooseFS.
pub const MAX_GOAL: u8 = 9;

/// Permission bits.
pub const S_ISUID: u32 = 0o4000;
pub const S_ISGID: u32 = 0o2000;
pub const S_ISVTX: u32 = 0o1000;
pub const S_IXGRP: u32 = 0o0010;
pub const MODE_MASK: u32 = 0o7777;

/// A Linux errno, as the state machine reports failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Errno(pub i32);

macro_rules! errnos {
    ($($name:ident = $val:expr),* $(,)?) => {
        impl Errno {
            $(pub const $name: Errno = Errno($val);)*

            /// The symbolic name ("ENOENT"), if this is one we know.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($val => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
    };
}

errnos! {
    EPERM = 1,
    ENOENT = 2,
    EIO = 5,
    E2BIG = 7,
    EBADF = 9,
    EAGAIN = 11,
    ENOMEM = 12,
    EACCES = 13,
    EBUSY = 16,
    EEXIST = 17,
    EXDEV = 18,
    ENODEV = 19,
    ENOTDIR = 20,
    EISDIR = 21,
    EINVAL = 22,
    ENFILE = 23,
    EMFILE = 24,
    EFBIG = 27,
    ENOSPC = 28,
    EROFS = 30,
    EMLINK = 31,
    ERANGE = 34,
    ENAMETOOLONG = 36,
    ENOLCK = 37,
    ENOSYS = 38,
    ENOTEMPTY = 39,
    ELOOP = 40,
    EBADR = 53,
    ENODATA = 61,
    EOPNOTSUPP = 95,
    ESTALE = 116,
    EDQUOT = 122,
}

impl Errno {
    /// The request names a session the state machine does not know (never
    /// registered, closed or expired): the client must register a new
    /// session. ESTALE, which no file operation of the state machine returns
    /// (an unknown inode is ENOENT), and which the heartbeat also answers for
    /// an unknown session.
    pub const UNKNOWN_SESSION: Errno = Errno::ESTALE;
    /// The request's sequence number is at or below what its session has
    /// already acknowledged, and its reply is no longer kept: a client bug or
    /// a very late duplicate. Nothing is applied. EBADR ("invalid request
    /// descriptor"), returned for nothing else.
    pub const STALE_SEQ: Errno = Errno::EBADR;
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "errno {}", self.0),
        }
    }
}

impl std::error::Error for Errno {}

/// A point in time, as stamped by the leader.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: u32,
}

impl Timespec {
    pub const fn new(sec: i64, nsec: u32) -> Self {
        Timespec { sec, nsec }
    }
}

/// Kind of an inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FileType {
    Regular,
    Directory,
    Symlink,
    Fifo,
    Socket,
    BlockDev,
    CharDev,
}

/// Who asks: the caller's credentials as the kernel gave them to the mount.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cred {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl Cred {
    pub fn root() -> Self {
        Cred::default()
    }

    pub fn user(uid: u32, gid: u32) -> Self {
        Cred {
            uid,
            gid,
            groups: Vec::new(),
        }
    }

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Whether `gid` is the primary or a supplementary group of the caller.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// Attributes of one inode, the same through each of its names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attr {
    pub inode: Inode,
    pub ftype: FileType,
    /// Permission bits only (low 12 bits); the type is `ftype`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    pub rdev: u32,
    pub goal: u8,
    pub trash_time: u32,
    /// Space used, in bytes (st_blocks * 512).
    pub blocks_bytes: u64,
    /// Extra attributes (`eattr` bits).
    pub eattr: u8,
}

/// Extra attributes of an inode (mfsseteattr).
pub use mfs_common::eattr;

/// The fields of a SetAttr that `Namespace::setattr_unchanged` may find
/// unchanged (`None`: not set by the request).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SameAttrs {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mtime: Option<Timespec>,
}

/// A new value for atime or mtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimeSet {
    /// The request's time (UTIME_NOW).
    Now,
    /// An explicit time.
    At(Timespec),
}

/// A create or mkdir a mount answered itself (`Op::CreateAt`,
/// `Op::MkdirAt`): encoded as the fields of those ops always were.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MakeAt {
    pub cred: Cred,
    pub parent: Inode,
    pub name: Vec<u8>,
    pub mode: u32,
    pub umask: u32,
    /// A number the session holds.
    pub inode: Inode,
    /// The mount's clock.
    pub time: Timespec,
}

/// How a file is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpenMode {
    Read,
    Write,
    ReadWrite,
}

impl OpenMode {
    pub fn reads(self) -> bool {
        matches!(self, OpenMode::Read | OpenMode::ReadWrite)
    }
    pub fn writes(self) -> bool {
        matches!(self, OpenMode::Write | OpenMode::ReadWrite)
    }
}

/// One change to the namespace, as carried by one Raft log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The client session, or `SessionId(0)` for internal operations (no
    /// deduplication).
    pub session: SessionId,
    /// The client's sequence number of this request, starting at 1.
    pub seq: u64,
    /// Every request of this session with a sequence number <= `acked` has had
    /// its reply delivered; the state machine may forget those replies.
    pub acked: u64,
    /// The leader's clock when it proposed the entry.
    pub time: Timespec,
    pub op: Op,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Open a new client session; replies `Reply::Session`. Never deduplicated
    /// (a retried registration leaves an idle session that expires).
    RegisterSession { info: String },
    /// Close the requesting session: its open files are released and its
    /// replies forgotten. A retry after success gets `UNKNOWN_SESSION`.
    CloseSession,
    /// Internal (session 0 only): the leader expires idle sessions.
    ExpireSessions { ids: Vec<SessionId> },
    Mkdir {
        cred: Cred,
        parent: Inode,
        name: Vec<u8>,
        mode: u32,
        umask: u32,
    },
    Mknod {
        cred: Cred,
        parent: Inode,
        name: Vec<u8>,
        ftype: FileType,
        mode: u32,
        umask: u32,
        rdev: u32,
    },
    /// open(2) with O_CREAT: creates a regular file, opened for the session
    /// whatever its mode. With `exclusive` false an existing regular file is
    /// opened instead, as `creat(2)` would (write permission needed, no
    /// truncation: the kernel sends that as a SetAttr); EISDIR for an
    /// existing directory, EEXIST for other types.
    Create {
        cred: Cred,
        parent: Inode,
        name: Vec<u8>,
        mode: u32,
        umask: u32,
        exclusive: bool,
    },
    /// open(2) of an existing inode (as through /proc/self/fd, also one
    /// with no name left): EISDIR to write a directory, ELOOP for a symlink,
    /// EACCES without the permission. Counts one open of the inode by the
    /// session (not for directories, nor for session 0); `truncate` empties
    /// a regular file. Replies its attributes.
    Open {
        cred: Cred,
        inode: Inode,
        mode: OpenMode,
        truncate: bool,
    },
    /// One open of `inode` by the session ends; EBADF if it holds none. At
    /// the last open of an unlinked inode, the inode is freed.
    Release { inode: Inode },
    SetAttr {
        cred: Cred,
        inode: Inode,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeSet>,
        mtime: Option<TimeSet>,
    },
    Unlink {
        cred: Cred,
        parent: Inode,
        name: Vec<u8>,
    },
    Rmdir {
        cred: Cred,
        parent: Inode,
        name: Vec<u8>,
    },
    Rename {
        cred: Cred,
        parent: Inode,
        name: Vec<u8>,
        new_parent: Inode,
        new_name: Vec<u8>,
        noreplace: bool,
        exchange: bool,
    },
    Link {
        cred: Cred,
        inode: Inode,
        new_parent: Inode,
        new_name: Vec<u8>,
    },
    Symlink {
        cred: Cred,
        parent: Inode,
        name: Vec<u8>,
        target: Vec<u8>,
    },
    SetXattr {
        cred: Cred,
        inode: Inode,
        name: Vec<u8>,
        value: Vec<u8>,
        create_only: bool,
        replace_only: bool,
    },
    RemoveXattr {
        cred: Cred,
        inode: Inode,
        name: Vec<u8>,
    },
    /// Internal (session 0 only): the first entry of a new cluster.
    SetClusterId { id: String },
    /// Internal (session 0 only): a new chunk for the hole at slot `index`
    /// of regular file `inode` (the chunk list grows with holes as needed):
    /// the next chunk id, version 1, refcount 1, the file's goal, "fresh"
    /// (no write has ended on it). Replies `Reply::Chunk`; EEXIST when the
    /// slot already holds a chunk (nothing changes), EFBIG past
    /// `MAX_CHUNK_INDEX`. Leaders now use `WriteNewChunk`; this stays for
    /// the logs and changelogs that hold it.
    AllocChunk { inode: Inode, index: u32 },
    /// Internal (session 0 only): a chunk's copies took a new version on the
    /// chunkservers; record it. EINVAL unless `version` is above the current
    /// one, ENOENT for an unknown chunk. Replies `Reply::Chunk`.
    SetChunkVersion {
        chunk: ChunkId,
        version: ChunkVersion,
    },
    /// A client's write lease on slot `index` of `inode`, granted by the
    /// leader with `chunk` at `version` (at or above the recorded one):
    /// checks the slot still holds `chunk` (EAGAIN: ask again), that the
    /// chunk is not shared (EIO) and the caller may write (write permission,
    /// or the session has the file open and is its owner), then records the
    /// version. Replies `Reply::Chunk` with the file's length.
    WriteChunk {
        cred: Cred,
        inode: Inode,
        index: u32,
        chunk: ChunkId,
        version: ChunkVersion,
    },
    /// A write to slot `index` ended: the file's length becomes the larger
    /// of its length and `length`, mtime and ctime the request's time, and
    /// the chunk is no longer fresh. EINVAL when the slot no longer holds
    /// `chunk` (the file was truncated meanwhile; the length is not grown).
    /// Replies the file's attributes.
    WriteChunkEnd {
        inode: Inode,
        index: u32,
        chunk: ChunkId,
        length: u64,
    },
    /// Internal (session 0 only): the leader deleted every copy of these
    /// chunks (or found none); they leave the list of pending deletes.
    ChunksDeleted { ids: Vec<ChunkId> },
    /// mfssetgoal: the goal (1..=9, else EINVAL) of `inode` (a regular file
    /// or a directory, else EINVAL), and with `recursive` of every file and
    /// directory below it. Only the owner or root may change an inode; the
    /// others are counted. Replies `Reply::Tree`.
    SetGoal {
        cred: Cred,
        inode: Inode,
        goal: u8,
        recursive: bool,
    },
    /// mfssettrashtime: as `SetGoal`, for the trash time (seconds).
    SetTrashTime {
        cred: Cred,
        inode: Inode,
        trash_time: u32,
        recursive: bool,
    },
    /// A file lock (fcntl, OFD, flock) of (session, `owner`, `kind`) on
    /// bytes `start..=end` of `inode`: set, changed or (`LockType::Unlock`)
    /// removed. EAGAIN when another owner's lock conflicts (never waits);
    /// EBADF when the session does not hold the inode open (to lock) or for
    /// session 0. See `locks`.
    SetLock {
        inode: Inode,
        owner: u64,
        kind: super::locks::LockKind,
        ltype: super::locks::LockType,
        start: u64,
        end: u64,
        pid: u32,
    },
    /// `Release` of each inode listed (an inode listed twice, twice), in one
    /// entry: mounts send the releases of closed files in batches. An inode
    /// the session does not hold is skipped; replies `Ok`.
    ReleaseMany { inodes: Vec<Inode> },
    /// mfsseteattr / mfsdeleattr: the extra attributes of `inode` (any
    /// type) become `(eattr | set) & !clear`, and below it with `recursive`;
    /// bits outside `eattr::ALL`: EINVAL. Only the owner or root may change
    /// an inode; the others are counted. Replies `Reply::Tree`.
    SetEattr {
        cred: Cred,
        inode: Inode,
        set: u8,
        clear: u8,
        recursive: bool,
    },
    /// mfsmakesnapshot: a copy of `src` (a whole tree for a directory) as
    /// `name` in `parent`, sharing the files' chunks. See
    /// `Namespace::snapshot`. Replies `Reply::Attr` of the copy.
    Snapshot {
        cred: Cred,
        src: Inode,
        parent: Inode,
        name: Vec<u8>,
    },
    /// Internal: `count` chunk ids for the leader to hand out (new chunks,
    /// copy-on-write duplicates). Replies `Reply::Chunk` with the first.
    ReserveChunkIds { count: u32 },
    /// Internal: slot `index` of `inode` names `new` (a duplicate of the
    /// shared chunk `old`, at `version`) instead of `old`. Replies
    /// `Reply::Chunk`.
    CowChunk {
        inode: Inode,
        index: u32,
        old: ChunkId,
        new: ChunkId,
        version: ChunkVersion,
    },
    /// `WriteChunk` of an empty slot with a new chunk (a reserved id, made
    /// on the chunkservers at `version`): allocation and lease in one
    /// entry. See `Namespace::write_new_chunk`. Replies `Reply::Chunk`.
    WriteNewChunk {
        cred: Cred,
        inode: Inode,
        index: u32,
        chunk: ChunkId,
        version: ChunkVersion,
    },
    /// `WriteChunkEnd` with the mtime the writer's kernel keeps (ctime is
    /// the request's time).
    WriteChunkEndAt {
        inode: Inode,
        index: u32,
        chunk: ChunkId,
        length: u64,
        mtime: Timespec,
    },
    /// Internal: the listed files leave the trash if their trash time is
    /// over at the request's time (freed, or sustained while open).
    PurgeTrash { inodes: Vec<Inode> },
    /// rm in the meta mount's trash: `inode` leaves the trash now. ENOENT
    /// when it is not in the trash, EPERM unless root or the owner.
    TrashDelete { cred: Cred, inode: Inode },
    /// mv into the meta mount's `trash/undel/`: `inode` goes back to its
    /// path. See `Namespace::undelete`. Replies `Reply::Attr`.
    Undelete { cred: Cred, inode: Inode },
    /// A path written into a trashed file in the meta mount: where
    /// `Undelete` will put it. EINVAL for an empty path or a bad component.
    SetTrashPath {
        cred: Cred,
        inode: Inode,
        path: Vec<u8>,
    },
    /// mfssetquota / mfsdelquota (`None`) on directory `inode`: root only
    /// (EPERM), ENOTDIR for another type. See `quota`.
    SetQuota {
        cred: Cred,
        inode: Inode,
        setting: Option<super::quota::QuotaSetting>,
    },
    /// fallocate(PUNCH_HOLE) of whole chunks: slots `first..first+count`
    /// of regular file `inode` become holes (their chunks lose a
    /// reference); the length stays. The rules of a truncate (EACCES,
    /// EPERM, EISDIR/EINVAL for other types). Replies `Reply::Attr`.
    PunchChunks {
        cred: Cred,
        inode: Inode,
        first: u32,
        count: u32,
    },
    /// `WriteChunkEnd` with the attribute changes a client kept while it
    /// wrote the file (a chmod and utimes of a file being written, as tar
    /// makes them before close), in one entry. The write ends as
    /// `WriteChunkEndAt` (mtime `None`: the request's time); the changes
    /// are then applied as a SetAttr by `cred` would apply them, or left
    /// out when it would refuse them (the reply shows what is there).
    /// Replies `Reply::Attr`.
    WriteChunkEndWith {
        cred: Cred,
        inode: Inode,
        index: u32,
        chunk: ChunkId,
        length: u64,
        mtime: Option<Timespec>,
        mode: Option<u32>,
        atime: Option<Timespec>,
    },
    /// A mount's count of its opens, after it met a new leader: the
    /// session holds each `(inode, count)` listed at least `count` times
    /// (an open answered by a leader that died before logging it counts
    /// again; what the session holds beyond is kept: releases on their way
    /// take it). Inodes that are gone or directories are skipped; session
    /// 0: EBADF. Replies `Ok`.
    AssertOpens { opens: Vec<(Inode, u32)> },
    /// RegisterSession with the rights an export (`mfsexports.cfg`) gave
    /// the client, decided by the leader; replies `Reply::Session`.
    RegisterSessionWith { info: String, rights: Rights },
    /// Write-back: directory `dir` is delegated to the session (its mount
    /// may answer creates there before they reach the master; a call of
    /// another session naming `dir` makes the leader recall it first),
    /// and the session is given `inodes` more inode numbers for those
    /// creates when it holds fewer than that. EBUSY when another session
    /// holds `dir`, or where a mount could not foresee what a create
    /// does: a default ACL, extra attributes or SGID on `dir`, a quota at
    /// or above it. Session 0: EBADF. Replies `Reply::Delegated`. See
    /// `delegations`.
    Delegate { dir: Inode, inodes: u32 },
    /// The delegation of `dir` ends: given back by its holder, or taken by
    /// the leader (session 0) from `holder`. Ok also when `holder` does
    /// not hold it (any more).
    Undelegate { dir: Inode, holder: SessionId },
    /// A create a mount answered itself in a directory delegated to it: an
    /// exclusive `Create` of inode number `inode`, which must be one the
    /// session holds (EINVAL otherwise), with times `time` (the mount's
    /// clock, as it answered; the request's time when more than a minute
    /// away from it). Replies `Reply::Attr`.
    CreateAt(MakeAt),
    /// A mount's write-back queue: `ops` applied in order, each as if
    /// alone (one failing does not stop the next). Only `CreateAt`, `MkdirAt`,
    /// `Release`, `ReleaseMany`, `Unlink`, `Rmdir`, `Rename`, the
    /// `WriteChunkEnd` kinds, `WriteNewChunk`, `AttachChunk`, `SetAttrAt`
    /// and `Open` without truncation (EINVAL for the whole batch
    /// otherwise). Replies
    /// `Reply::Batch`.
    Batch { ops: Vec<Op> },
    /// `count` new chunk ids (consecutive; at most `MAX_HELD_CHUNKS`
    /// held in all, else EBUSY and nothing changes) the session holds for
    /// the first chunks of files its mount makes (see `AttachChunk`),
    /// after giving back `give_back` (ids it will not use: they are no
    /// one's then). Replies `Reply::Chunk` with the first id (0 for none).
    HoldChunks { count: u32, give_back: Vec<ChunkId> },
    /// Places `chunk`, an id the session holds (EINVAL otherwise), in the
    /// empty slot `index` of `inode` at version 1, fresh: the mount wrote
    /// its copies before, on a chain the leader gave with the id. The
    /// rule of `WriteNewChunk` otherwise. Replies `Reply::Chunk`.
    AttachChunk {
        cred: Cred,
        inode: Inode,
        index: u32,
        chunk: ChunkId,
    },
    // New variants go last: entries are encoded by variant index (logs
    // written by an older master must decode the same).
    /// Internal (session 0 only): opens the leader answered before
    /// logging them (`Open` without truncation, each in its own session
    /// with its own sequence number and time), logged together in one
    /// entry: each applied as if alone, in order (anything else is
    /// EINVAL, in its place). Replies `Reply::Batch`.
    Opens { opens: Vec<Request> },
    /// `CreateAt` of a directory: made with the held number `inode`, and
    /// delegated to the session at once (nobody else can have seen it).
    /// Replies `Reply::Attr`.
    MkdirAt(MakeAt),
    /// `WriteChunkEnd` queued by a mount holding the file's directory,
    /// with its own time as the ctime (`ctime`; the request's time when
    /// more than a minute away from it, as `CreateAt`'s) and the mtime
    /// (`None`: the ctime), so the mount knows the file's attributes
    /// after it. Replies `Reply::Attr`.
    WriteChunkEndTimed {
        inode: Inode,
        index: u32,
        chunk: ChunkId,
        length: u64,
        mtime: Option<Timespec>,
        ctime: Timespec,
    },
    /// `Open` with truncation that also places a new chunk (a reserved id
    /// at `version`, as `WriteNewChunk`) in the emptied first slot, for
    /// the opener's write lease: one entry for both. The open stands alone
    /// when the chunk cannot be placed. Replies as `Open`.
    OpenLeased {
        cred: Cred,
        inode: Inode,
        mode: OpenMode,
        chunk: ChunkId,
        version: ChunkVersion,
    },
    /// The end of a write lease on a new chunk that no write made (they
    /// failed, or none came: a truncating open's lease left unused):
    /// `end` (one of the `WriteChunkEnd` kinds, else EINVAL) applies, then
    /// the chunk, when it was still fresh, leaves its slot (a hole again)
    /// and the table, instead of staying as a chunk with no copy. Replies
    /// as `end`, with the attributes after both.
    WriteChunkEndUnmade { end: Box<Op> },
    /// The leader is about to order copies of `chunk` to `version` (above
    /// the committed version and any recorded before): recorded first, so
    /// that a later leader picks a version above it (see
    /// `Namespace::order_chunk_version`). Internal.
    OrderChunkVersion {
        chunk: ChunkId,
        version: ChunkVersion,
    },
    /// `SetAttr` without a length queued by a mount holding the directory
    /// `inode` (it answered the call itself): `time` (the mount's clock,
    /// the request's time when more than a minute away from it, as
    /// `CreateAt`'s) is the new ctime and the time `TimeSet::Now` sets.
    /// Replies `Reply::Attr`.
    SetAttrAt {
        cred: Cred,
        inode: Inode,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        atime: Option<TimeSet>,
        mtime: Option<TimeSet>,
        time: Timespec,
    },
    /// `WriteChunkEndWith` queued by a mount holding the file's directory,
    /// with its own time as the ctime (`ctime`, as `WriteChunkEndTimed`'s),
    /// so the mount knows the file's attributes after it. Replies
    /// `Reply::Attr`.
    WriteChunkEndWithTimed {
        cred: Cred,
        inode: Inode,
        index: u32,
        chunk: ChunkId,
        length: u64,
        mtime: Option<Timespec>,
        mode: Option<u32>,
        atime: Option<Timespec>,
        ctime: Timespec,
    },
}

impl Op {
    /// The (inode, slot, chunk) of a `WriteChunkEnd` kind.
    pub fn write_end_target(&self) -> Option<(Inode, u32, ChunkId)> {
        match self {
            Op::WriteChunkEnd {
                inode,
                index,
                chunk,
                ..
            }
            | Op::WriteChunkEndAt {
                inode,
                index,
                chunk,
                ..
            }
            | Op::WriteChunkEndWith {
                inode,
                index,
                chunk,
                ..
            }
            | Op::WriteChunkEndTimed {
                inode,
                index,
                chunk,
                ..
            }
            | Op::WriteChunkEndWithTimed {
                inode,
                index,
                chunk,
                ..
            } => Some((*inode, *index, *chunk)),
            _ => None,
        }
    }
}

/// What a session may do, from the line of `mfsexports.cfg` that let it
/// register. Kept in the namespace (every master enforces it after a
/// failover); a session registered with no exports file has none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rights {
    /// The directory it mounted: it sees nothing outside (the root for a
    /// meta session).
    pub root: Inode,
    pub read_only: bool,
    /// May set quotas.
    pub admin: bool,
    /// Registered for the meta file system (trash, sustained files).
    pub meta: bool,
    /// Root's calls run as this (uid, gid).
    pub maproot: Option<(u32, u32)>,
    /// Every call runs as this (uid, gid).
    pub mapall: Option<(u32, u32)>,
    /// The address its calls must come from (None: any, `dynamicip`).
    pub from: Option<std::net::IpAddr>,
    /// Goals and trash times it may set: (min, max).
    pub goal: (u8, u8),
    pub trash_time: (u32, u32),
    /// The exports line that gave them, for logs and `mfscli`.
    pub line: u32,
}

impl Rights {
    /// `cred` as this session's calls run: mapall, else maproot for root.
    pub fn map(&self, cred: Cred) -> Cred {
        let to = |(uid, gid): (u32, u32)| Cred {
            uid,
            gid,
            groups: Vec::new(),
        };
        match (self.mapall, self.maproot) {
            (Some(m), _) => to(m),
            (None, Some(m)) if cred.uid == 0 => to(m),
            _ => cred,
        }
    }
}

impl Op {
    /// The operation's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Op::RegisterSession { .. } => "RegisterSession",
            Op::CloseSession => "CloseSession",
            Op::ExpireSessions { .. } => "ExpireSessions",
            Op::Mkdir { .. } => "Mkdir",
            Op::Mknod { .. } => "Mknod",
            Op::Create { .. } => "Create",
            Op::Open { .. } => "Open",
            Op::Release { .. } => "Release",
            Op::SetAttr { .. } => "SetAttr",
            Op::Unlink { .. } => "Unlink",
            Op::Rmdir { .. } => "Rmdir",
            Op::Rename { .. } => "Rename",
            Op::Link { .. } => "Link",
            Op::Symlink { .. } => "Symlink",
            Op::SetXattr { .. } => "SetXattr",
            Op::RemoveXattr { .. } => "RemoveXattr",
            Op::SetClusterId { .. } => "SetClusterId",
            Op::AllocChunk { .. } => "AllocChunk",
            Op::SetChunkVersion { .. } => "SetChunkVersion",
            Op::OrderChunkVersion { .. } => "OrderChunkVersion",
            Op::WriteChunk { .. } => "WriteChunk",
            Op::WriteChunkEnd { .. } => "WriteChunkEnd",
            Op::ChunksDeleted { .. } => "ChunksDeleted",
            Op::SetGoal { .. } => "SetGoal",
            Op::SetTrashTime { .. } => "SetTrashTime",
            Op::SetLock { .. } => "SetLock",
            Op::ReleaseMany { .. } => "ReleaseMany",
            Op::AssertOpens { .. } => "AssertOpens",
            Op::RegisterSessionWith { .. } => "RegisterSessionWith",
            Op::SetEattr { .. } => "SetEattr",
            Op::Snapshot { .. } => "Snapshot",
            Op::ReserveChunkIds { .. } => "ReserveChunkIds",
            Op::CowChunk { .. } => "CowChunk",
            Op::WriteChunkEndAt { .. } => "WriteChunkEndAt",
            Op::WriteNewChunk { .. } => "WriteNewChunk",
            Op::OpenLeased { .. } => "OpenLeased",
            Op::WriteChunkEndUnmade { .. } => "WriteChunkEndUnmade",
            Op::Delegate { .. } => "Delegate",
            Op::Undelegate { .. } => "Undelegate",
            Op::CreateAt(_) => "CreateAt",
            Op::MkdirAt(_) => "MkdirAt",
            Op::Batch { .. } => "Batch",
            Op::Opens { .. } => "Opens",
            Op::HoldChunks { .. } => "HoldChunks",
            Op::AttachChunk { .. } => "AttachChunk",
            Op::PurgeTrash { .. } => "PurgeTrash",
            Op::TrashDelete { .. } => "TrashDelete",
            Op::Undelete { .. } => "Undelete",
            Op::SetTrashPath { .. } => "SetTrashPath",
            Op::SetQuota { .. } => "SetQuota",
            Op::PunchChunks { .. } => "PunchChunks",
            Op::WriteChunkEndWith { .. } => "WriteChunkEndWith",
            Op::WriteChunkEndTimed { .. } => "WriteChunkEndTimed",
            Op::SetAttrAt { .. } => "SetAttrAt",
            Op::WriteChunkEndWithTimed { .. } => "WriteChunkEndWithTimed",
        }
    }

    /// Operations only the leader itself may issue (with session 0).
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            Op::ExpireSessions { .. }
                | Op::SetClusterId { .. }
                | Op::AllocChunk { .. }
                | Op::SetChunkVersion { .. }
                | Op::OrderChunkVersion { .. }
                | Op::ChunksDeleted { .. }
                | Op::ReserveChunkIds { .. }
                | Op::CowChunk { .. }
                | Op::PurgeTrash { .. }
                | Op::Opens { .. }
        )
    }
}

impl fmt::Display for Request {
    /// Short form for logs: "session 3 seq 17 Mkdir".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "session {} seq {} {}",
            self.session,
            self.seq,
            self.op.name()
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Ok,
    /// Attributes of the created, linked, opened or changed inode.
    Attr(Attr),
    /// A newly registered session.
    Session {
        id: SessionId,
    },
    Err(Errno),
    /// A chunk of a file: its id, its version now, the file's length.
    Chunk {
        id: ChunkId,
        version: ChunkVersion,
        length: u64,
    },
    /// What a SetGoal or SetTrashTime changed (counted in inodes).
    Tree {
        changed: u64,
        not_changed: u64,
        not_permitted: u64,
    },
    /// A delegation granted, with the inode numbers `first..first+count`
    /// newly given (count 0: the session held enough).
    Delegated {
        first: u64,
        count: u32,
    },
    /// Each operation's errno of a `Batch`, in order (0: done).
    Batch(Vec<i32>),
}

impl Reply {
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Reply::Err(e) => Some(*e),
            _ => None,
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Ok => f.write_str("ok"),
            Reply::Attr(a) => write!(f, "attr of inode {}", a.inode),
            Reply::Session { id } => write!(f, "session {id}"),
            Reply::Err(e) => write!(f, "error {e}"),
            Reply::Chunk { id, version, .. } => write!(f, "chunk {}", ChunkKey::new(*id, *version)),
            Reply::Tree {
                changed,
                not_changed,
                not_permitted,
            } => write!(
                f,
                "{changed} changed, {not_changed} not changed, {not_permitted} not permitted"
            ),
            Reply::Delegated { first, count } => {
                write!(f, "delegated, inodes {first}+{count}")
            }
            Reply::Batch(r) => write!(f, "batch of {}", r.len()),
        }
    }
}

impl From<Result<Reply, Errno>> for Reply {
    fn from(r: Result<Reply, Errno>) -> Self {
        r.unwrap_or_else(Reply::Err)
    }
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub inode: Inode,
    pub ftype: FileType,
    /// With `plus`, the entry's attributes.
    pub attr: Option<Attr>,
}

/// A registered session, as listed by `Namespace::sessions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    pub id: SessionId,
    pub info: String,
    /// Number of distinct inodes the session has open.
    pub open_files: usize,
    /// Time of the session's last request (registration included).
    pub last_seen: Timespec,
    /// Replies kept for retries.
    pub cached_replies: usize,
}

/// Counts for statfs and monitoring.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatFs {
    /// Inodes in use (sustained ones included).
    pub inodes: u64,
    pub dirs: u64,
    pub files: u64,
    /// Symlinks, fifos, sockets and devices.
    pub others: u64,
    /// Open but unlinked files.
    pub sustained: u64,
    /// Sum of regular files' sizes.
    pub bytes: u64,
    /// Entries of the chunk table.
    pub chunks: u64,
}
