//! The namespace state machine.
//!
//! The whole namespace lives in RAM in a [`Namespace`], changed only by
//! [`Namespace::apply`] with requests taken from committed Raft log entries.
//!
//! **Architecture invariant**: apply is pure and deterministic. It does no
//! I/O, reads no clock (time comes in the [`Request`], stamped by the leader),
//! uses no randomness, and iterates only ordered maps; inode and session
//! numbers come from counters in the state. So every replica that applies the
//! same log holds the same namespace, byte for byte ([`Namespace::to_image`]).
//! No openraft or protobuf types here: the gRPC layer converts.
//!
//! Files: `types` (requests, replies, errnos), `namespace` (the state and its
//! reads), `ops` (apply, sessions, create/open/setattr/xattr), `remove`
//! (unlink, rmdir, link, rename, freeing), `chunks` (the data path's
//! operations: chunk allocation and versions, writes, goal and trash time),
//! `perm` (permission rules), `locks` (file locks), `snapshot`
//! (mfsmakesnapshot's tree copy sharing chunks, copy-on-write of a shared
//! chunk), `trash` (deleted files kept for their trash time, undelete), `quota`
//! (directory quotas and their usage),
//! `acl` (POSIX ACLs: parsing, checks, chmod,
//! inheritance), `image` (snapshot format).

mod acl;
mod attrs;
mod chunks;
mod delegations;
mod image;
mod locks;
mod namespace;
mod ops;
mod perm;
mod quota;
mod remove;
mod snapshot;
mod trash;
mod types;

#[cfg(test)]
mod tests;

pub use acl::xattr_value as acl_xattr_value;
pub use delegations::{MAX_BATCH, MAX_HELD_CHUNKS, MAX_INODES_PER_GRANT};
pub use image::{ImageError, IMAGE_MAGIC, IMAGE_VERSION};
pub use locks::{FileLock, LockKind, LockQuery, LockType, MAX_LOCKS_PER_INODE};
pub use mfs_common::ids::{ChunkId, ChunkVersion, Inode, SessionId};
pub use namespace::{check_name, ChunkInfo, Namespace};
pub use quota::{DirStats, Limits, Quota, QuotaSetting, Usage, DEFAULT_GRACE};
pub use trash::{RemovedFile, TrashEntry};
pub use types::*;
