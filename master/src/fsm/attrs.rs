//! Changing attributes: SetAttr (chmod, chown, truncate, utimens in one),
//! the file size, and extended attributes.
//!
//! As everywhere in the namespace, an operation checks everything first and
//! then changes the state in steps that cannot fail.

use super::namespace::{Namespace, NodeData};
use super::perm::{self, MAY_WRITE};
use super::types::*;
use mfs_common::ids::Inode;

impl Namespace {
    // ---- attributes ---------------------------------------------------------------

    /// chmod, chown, truncate and utimens in one, all or nothing. Checks, in
    /// Linux's order: size (EISDIR for a directory, EINVAL for other
    /// non-files, EFBIG, then write permission: EACCES), uid (root only,
    /// or the owner "changing" it to itself: EPERM), gid (root, or the owner
    /// to one of its groups: EPERM), mode (owner or root: EPERM), explicit
    /// times (owner or root: EPERM), times set to now (owner, root or write
    /// permission: EACCES).
    pub(super) fn setattr(
        &mut self,
        cred: &Cred,
        ino: Inode,
        c: &AttrChange,
        t: Timespec,
    ) -> Result<Reply, Errno> {
        let node = self.node(ino)?;
        let owner = perm::owner_or_root(node, cred);
        // immutable: nothing; appendonly: only times set to now.
        let only_touch = c.mode.is_none()
            && c.uid.is_none()
            && c.gid.is_none()
            && c.size.is_none()
            && !matches!(c.atime, Some(TimeSet::At(_)))
            && !matches!(c.mtime, Some(TimeSet::At(_)));
        if node.eattr & eattr::IMMUTABLE != 0 && !c.is_empty() {
            return Err(Errno::EPERM);
        }
        if !only_touch {
            perm::may_change(node)?;
        }
        if let Some(size) = c.size {
            match node.ftype {
                FileType::Regular => {}
                FileType::Directory => return Err(Errno::EISDIR),
                _ => return Err(Errno::EINVAL),
            }
            if size > i64::MAX as u64 {
                return Err(Errno::EFBIG);
            }
            perm::access(node, cred, MAY_WRITE)?;
            if size > node.size {
                self.quota_check_growth(ino, size, t.sec)?;
            }
        }
        if let Some(uid) = c.uid {
            let keeps_owner = uid == node.uid && cred.uid == node.uid;
            if !cred.is_root() && !keeps_owner {
                return Err(Errno::EPERM);
            }
        }
        if let Some(gid) = c.gid {
            if !cred.is_root() && !(cred.uid == node.uid && (gid == node.gid || cred.in_group(gid)))
            {
                return Err(Errno::EPERM);
            }
        }
        if c.mode.is_some() && !owner {
            return Err(Errno::EPERM);
        }
        let explicit =
            matches!(c.atime, Some(TimeSet::At(_))) || matches!(c.mtime, Some(TimeSet::At(_)));
        let touch = c.atime == Some(TimeSet::Now) || c.mtime == Some(TimeSet::Now);
        if explicit && !owner {
            return Err(Errno::EPERM);
        }
        if touch && !owner {
            perm::access(node, cred, MAY_WRITE)?;
        }

        // All checked; now change.
        let is_dir = node.is_dir();
        let new_gid = c.gid.unwrap_or(node.gid);
        let mut new_mode = node.mode;
        if let Some(m) = c.mode {
            new_mode = m & MODE_MASK;
            if !cred.is_root() && !cred.in_group(new_gid) {
                new_mode &= !S_ISGID;
            }
        } else if (c.uid.is_some() || c.gid.is_some()) && !is_dir {
            // chown kills SUID, and SGID when it means "group executable".
            new_mode &= !S_ISUID;
            if new_mode & S_IXGRP != 0 {
                new_mode &= !S_ISGID;
            }
        }
        let resize = c.size.filter(|&s| s != node.size);
        if let Some(size) = resize {
            self.set_file_size(ino, size);
        }
        let n = self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        let chmod = n.mode != new_mode;
        n.mode = new_mode;
        if chmod {
            super::acl::follow_mode(n);
        }
        n.uid = c.uid.unwrap_or(n.uid);
        n.gid = new_gid;
        if resize.is_some() {
            n.mtime = t;
        }
        let at = |ts: TimeSet| match ts {
            TimeSet::Now => t,
            TimeSet::At(x) => x,
        };
        if let Some(a) = c.atime {
            n.atime = at(a);
        }
        if let Some(m) = c.mtime {
            n.mtime = at(m);
        }
        if !c.is_empty() {
            n.ctime = t;
        }
        Ok(Reply::Attr(n.attr(ino)))
    }

    /// Set a regular file's length, releasing the chunks wholly past it.
    /// (Zeroing the tail of the last kept chunk is the data path's job.)
    pub(crate) fn set_file_size(&mut self, ino: Inode, size: u64) {
        let Some(n) = self.nodes.get_mut(&ino) else {
            return;
        };
        let before = super::quota::contrib(n);
        n.size = size;
        self.recharge(ino, before);
        let Some(n) = self.nodes.get_mut(&ino) else {
            return;
        };
        let NodeData::File { chunks } = &mut n.data else {
            return;
        };
        let keep = usize::try_from(size.div_ceil(CHUNK_SIZE)).unwrap_or(usize::MAX);
        if chunks.len() <= keep {
            return;
        }
        let dropped = chunks.split_off(keep);
        for id in dropped.into_iter().flatten() {
            self.release_chunk(id);
        }
    }

    // ---- extended attributes ------------------------------------------------

    /// setxattr: EINVAL for both flags, then the name and value checks, the
    /// namespace's permission, EEXIST (create_only) / ENODATA (replace_only).
    pub(super) fn setxattr(
        &mut self,
        cred: &Cred,
        ino: Inode,
        name: &[u8],
        value: &[u8],
        (create_only, replace_only): (bool, bool),
        t: Timespec,
    ) -> Result<Reply, Errno> {
        let node = self.node(ino)?;
        if create_only && replace_only {
            return Err(Errno::EINVAL);
        }
        let ns = perm::xattr_name(name)?;
        perm::xattr_value(value)?;
        perm::xattr_access(node, cred, ns, true)?;
        let exists = node.xattrs.contains_key(name);
        if create_only && exists {
            return Err(Errno::EEXIST);
        }
        if replace_only && !exists {
            return Err(Errno::ENODATA);
        }
        if name == super::acl::ACCESS || name == super::acl::DEFAULT {
            return self.set_acl(ino, name, value, t);
        }
        let n = self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        n.xattrs.insert(name.to_vec(), value.to_vec());
        n.ctime = t;
        Ok(Reply::Ok)
    }

    pub(super) fn removexattr(
        &mut self,
        cred: &Cred,
        ino: Inode,
        name: &[u8],
        t: Timespec,
    ) -> Result<Reply, Errno> {
        let node = self.node(ino)?;
        let ns = perm::xattr_name(name)?;
        perm::xattr_access(node, cred, ns, true)?;
        if !node.xattrs.contains_key(name) {
            return Err(Errno::ENODATA);
        }
        let n = self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        n.xattrs.remove(name);
        n.ctime = t;
        Ok(Reply::Ok)
    }
}

/// The optional fields of a SetAttr.
#[derive(Default)]
pub(super) struct AttrChange {
    pub(super) mode: Option<u32>,
    pub(super) uid: Option<u32>,
    pub(super) gid: Option<u32>,
    pub(super) size: Option<u64>,
    pub(super) atime: Option<TimeSet>,
    pub(super) mtime: Option<TimeSet>,
}

impl AttrChange {
    pub(super) fn is_empty(&self) -> bool {
        self.mode.is_none()
            && self.uid.is_none()
            && self.gid.is_none()
            && self.size.is_none()
            && self.atime.is_none()
            && self.mtime.is_none()
    }
}
