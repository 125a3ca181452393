//! The FUSE file system of `mfsmount` (fuser, pure-Rust mount: no libfuse).
//!
//! - [`fs::MfsFs`]: the fuser `Filesystem`; each call runs as a task on the
//!   tokio runtime and answers through its reply object, so a call waiting
//!   for a failover never blocks the others. Metadata goes to the master
//!   group through [`crate::MasterClient`] (leader following, exactly-once
//!   retries), file data through [`crate::io::FileIo`].
//! - [`options`]: the mount options (MooseFS names) and their sources.
//! - [`convert`]: wire ↔ fuser types, errno, the inode map of a subfolder
//!   mount.
//! - [`creds`]: the caller's supplementary groups from `/proc`.
//! - [`handles`]: open files and directories.
//! - `known_attrs`: the master's last attributes of each inode; the
//!   kernel's time write-back after a rename or unlink is answered here.
//! - [`xattrs`]: extended attributes; inodes known to have none are
//!   answered without the master.
//! - `locks`: file locks (fcntl, OFD, flock) kept by the master.
//! - `releases`: releases of closed files, sent to the master in batches.
//! - `entries`: names looked up in a directory held here are given the
//!   kernel for long, and dropped from it when the directory goes back.
//! - [`metafs`]: the meta file system of `mfsmount -m` (trash, undel,
//!   sustained).
//!
//! Kernel features asked for at init: several reader threads (fuser's
//! `n_threads`, with a cloned `/dev/fuse` fd each), async reads, the
//! writeback cache (optional), 1 MiB writes, read-ahead up to what the
//! kernel allows, readdirplus, parallel directory operations, atomic
//! O_TRUNC, POSIX and flock locks (sent to the master).

pub mod convert;
pub mod creds;
mod data_ops;
mod entries;
mod fallocate;
pub mod fs;
pub mod handles;
mod known_attrs;
mod locks;
mod meta_ops;
pub mod metafs;
pub mod options;
mod pages;
mod releases;
mod sizes;
mod writeback;
pub mod xattrs;

pub use fs::{FsHandle, FsSettings, MfsFs};
pub use metafs::MetaFs;
pub use options::{MountConfig, Overrides, Resolved};

use crate::error::ClientError;

/// The session's notifier, once the session is made: shared by the
/// threads that tell the kernel things (`pages`, `entries`), set once by
/// [`FsHandle::set_notifier`].
pub(crate) type Kernel = std::sync::Arc<std::sync::OnceLock<fuser::Notifier>>;
use crate::master::MasterClient;
use mfs_proto::v1::{Credentials, FileType};

/// The master inode of the subfolder to mount (`components` from
/// [`Resolved::subfolder`]; empty: the root, inode 1). Looked up with root
/// credentials; the error says which component is missing or not a
/// directory.
pub async fn resolve_root(
    master: &MasterClient,
    components: &[Vec<u8>],
) -> Result<u64, ClientError> {
    let root = Credentials {
        uid: 0,
        gid: 0,
        groups: Vec::new(),
    };
    let mut inode = 1;
    let mut path = String::new();
    for c in components {
        path.push('/');
        path.push_str(&String::from_utf8_lossy(c));
        let a = master.lookup(&root, inode, c).await.map_err(|e| match e {
            ClientError::Errno(n, _) => ClientError::Errno(
                n,
                format!("subfolder {path}: {}", crate::error::errno_name(n)),
            ),
            other => other,
        })?;
        if a.r#type != FileType::Directory as i32 {
            return Err(ClientError::Errno(
                libc::ENOTDIR,
                format!("subfolder {path} is not a directory"),
            ));
        }
        inode = a.inode;
    }
    Ok(inode)
}
