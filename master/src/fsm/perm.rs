//! Permission checks, as Linux makes them (fs/namei.c, fs/attr.c, fs/xattr.c).
//!
//! EACCES means "the mode bits say no"; EPERM means "only the owner (or root)
//! may do this, whatever the bits" (chmod, chown, explicit utimes, sticky
//! directories, privileged xattr namespaces).

use super::namespace::Node;
use super::types::{eattr, Cred, Errno, FileType, S_ISVTX, XATTR_NAME_MAX, XATTR_SIZE_MAX};

pub const MAY_EXEC: u32 = 1;
pub const MAY_WRITE: u32 = 2;
pub const MAY_READ: u32 = 4;

/// `inode_permission`: check `mask` (MAY_* bits) against the mode bits of the
/// first class that matches the caller (owner, then group, then other). Root
/// passes, except that executing a non-directory needs some x bit. Writing
/// an `immutable` inode is EPERM for everyone; with `noowner` the caller
/// counts as the owner.
pub fn access(node: &Node, cred: &Cred, mask: u32) -> Result<(), Errno> {
    if mask & MAY_WRITE != 0 && node.eattr & eattr::IMMUTABLE != 0 {
        return Err(Errno::EPERM);
    }
    if cred.is_root() {
        if mask & MAY_EXEC != 0 && node.ftype != FileType::Directory && node.mode & 0o111 == 0 {
            return Err(Errno::EACCES);
        }
        return Ok(());
    }
    let owner = cred.uid == node.uid || node.eattr & eattr::NOOWNER != 0;
    if let Some(acl) = super::acl::access_acl(node) {
        return if acl.permits(cred, (owner, node.gid), mask) {
            Ok(())
        } else {
            Err(Errno::EACCES)
        };
    }
    let bits = if owner {
        node.mode >> 6
    } else if cred.in_group(node.gid) {
        node.mode >> 3
    } else {
        node.mode
    } & 7;
    if bits & mask == mask {
        Ok(())
    } else {
        Err(Errno::EACCES)
    }
}

/// `inode_owner_or_capable` (everyone owns a `noowner` inode).
pub fn owner_or_root(node: &Node, cred: &Cred) -> bool {
    cred.is_root() || cred.uid == node.uid || node.eattr & eattr::NOOWNER != 0
}

/// An inode whose attributes, extended attributes and names may not change
/// (`immutable`, `appendonly`): EPERM, as Linux's `IS_IMMUTABLE ||
/// IS_APPEND` checks.
pub fn may_change(node: &Node) -> Result<(), Errno> {
    if node.eattr & (eattr::IMMUTABLE | eattr::APPENDONLY) != 0 {
        return Err(Errno::EPERM);
    }
    Ok(())
}

/// In a sticky directory only the owner of the entry, the owner of the
/// directory or root may remove or rename it (`check_sticky`): EPERM.
pub fn sticky(dir: &Node, victim: &Node, cred: &Cred) -> Result<(), Errno> {
    if dir.mode & S_ISVTX != 0 && !cred.is_root() && cred.uid != victim.uid && cred.uid != dir.uid {
        return Err(Errno::EPERM);
    }
    Ok(())
}

/// `may_delete`: remove `victim` from `dir`; `want_dir` says whether the
/// operation removes a directory (rmdir, or rename of a directory).
///
/// Then the extra attributes: nothing leaves an `appendonly` (or
/// `immutable`) directory, and an `undeletable`, `appendonly` or
/// `immutable` inode keeps its names (EPERM).
pub fn may_delete(dir: &Node, victim: &Node, cred: &Cred, want_dir: bool) -> Result<(), Errno> {
    access(dir, cred, MAY_WRITE | MAY_EXEC)?;
    sticky(dir, victim, cred)?;
    if dir.eattr & eattr::APPENDONLY != 0
        || victim.eattr & (eattr::UNDELETABLE | eattr::APPENDONLY | eattr::IMMUTABLE) != 0
    {
        return Err(Errno::EPERM);
    }
    let is_dir = victim.ftype == FileType::Directory;
    if want_dir && !is_dir {
        return Err(Errno::ENOTDIR);
    }
    if !want_dir && is_dir {
        return Err(Errno::EISDIR);
    }
    Ok(())
}

/// Extended attribute namespaces we accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XattrNs {
    User,
    Trusted,
    Security,
    System,
}

/// Validate an xattr name: ERANGE if empty or longer than 255 bytes,
/// EOPNOTSUPP for an unknown namespace, EINVAL for a bare prefix ("user.").
pub fn xattr_name(name: &[u8]) -> Result<XattrNs, Errno> {
    if name.is_empty() || name.len() > XATTR_NAME_MAX {
        return Err(Errno::ERANGE);
    }
    let prefixes: [(&[u8], XattrNs); 4] = [
        (b"user.", XattrNs::User),
        (b"trusted.", XattrNs::Trusted),
        (b"security.", XattrNs::Security),
        (b"system.", XattrNs::System),
    ];
    for (prefix, ns) in prefixes {
        if let Some(rest) = name.strip_prefix(prefix) {
            if rest.is_empty() || rest.contains(&0) {
                return Err(Errno::EINVAL);
            }
            return Ok(ns);
        }
    }
    Err(Errno::EOPNOTSUPP)
}

/// Validate a value for setxattr: E2BIG past 64 KiB.
pub fn xattr_value(value: &[u8]) -> Result<(), Errno> {
    if value.len() > XATTR_SIZE_MAX {
        return Err(Errno::E2BIG);
    }
    Ok(())
}

/// `xattr_permission`, simplified:
/// - trusted.*: root only (EPERM to write, ENODATA to read, as Linux);
/// - security.* and system.*: writing needs the owner or root (EPERM),
///   reading needs nothing (the kernel's own handlers decide what they hold);
/// - user.*: only regular files and directories carry them (EPERM to write,
///   ENODATA to read); a sticky directory's user.* may be written only by its
///   owner or root (EPERM); then the mode bits: write needs w, read needs r
///   (EACCES).
pub fn xattr_access(node: &Node, cred: &Cred, ns: XattrNs, write: bool) -> Result<(), Errno> {
    let refuse = if write { Errno::EPERM } else { Errno::ENODATA };
    if write {
        may_change(node)?;
    }
    match ns {
        XattrNs::Trusted => {
            if !cred.is_root() {
                return Err(refuse);
            }
            Ok(())
        }
        XattrNs::Security | XattrNs::System => {
            if write && !owner_or_root(node, cred) {
                return Err(Errno::EPERM);
            }
            Ok(())
        }
        XattrNs::User => {
            if !matches!(node.ftype, FileType::Regular | FileType::Directory) {
                return Err(refuse);
            }
            if write
                && node.ftype == FileType::Directory
                && node.mode & S_ISVTX != 0
                && !owner_or_root(node, cred)
            {
                return Err(Errno::EPERM);
            }
            access(node, cred, if write { MAY_WRITE } else { MAY_READ })
        }
    }
}

/// Whether a name listed by listxattr is visible to the caller: trusted.*
/// only to root, as Linux.
pub fn xattr_listable(name: &[u8], cred: &Cred) -> bool {
    cred.is_root() || !name.starts_with(b"trusted.")
}
