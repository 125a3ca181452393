//! Operations on names of existing inodes: unlink, rmdir, link, rename; and
//! what happens to an inode when its last name goes.

use super::namespace::{check_name, Namespace};
use super::perm::{self, MAY_EXEC, MAY_WRITE};
use super::types::*;
use mfs_common::ids::{ChunkId, Inode};

/// One side of a rename: directory and name.
type Place<'a> = (Inode, &'a [u8]);

impl Namespace {
    /// Resolve `name` in `parent` for removal: ENOENT/ENOTDIR for the parent,
    /// EINVAL/ENAMETOOLONG for the name, EACCES without search permission,
    /// ENOENT if absent.
    fn lookup_victim(&self, cred: &Cred, parent: Inode, name: &[u8]) -> Result<Inode, Errno> {
        let dir = self.dir(parent)?;
        check_name(name)?;
        perm::access(dir, cred, MAY_EXEC)?;
        Self::child(dir, name).ok_or(Errno::ENOENT)
    }

    /// unlink(2): then write permission on the parent (EACCES), sticky
    /// (EPERM), EISDIR for a directory.
    pub(crate) fn unlink(
        &mut self,
        cred: &Cred,
        parent: Inode,
        name: &[u8],
        t: Timespec,
    ) -> Result<Reply, Errno> {
        let victim = self.lookup_victim(cred, parent, name)?;
        perm::may_delete(self.node(parent)?, self.node(victim)?, cred, false)?;
        self.charge_tree(parent, victim, false);
        self.remove_entry(parent, name, t);
        self.drop_link(victim, (parent, name), t);
        Ok(Reply::Ok)
    }

    /// rmdir(2): as unlink, but ENOTDIR for a non-directory and ENOTEMPTY.
    pub(crate) fn rmdir(
        &mut self,
        cred: &Cred,
        parent: Inode,
        name: &[u8],
        t: Timespec,
    ) -> Result<Reply, Errno> {
        let victim = self.lookup_victim(cred, parent, name)?;
        let vnode = self.node(victim)?;
        perm::may_delete(self.node(parent)?, vnode, cred, true)?;
        if vnode.entries().is_some_and(|e| !e.is_empty()) {
            return Err(Errno::ENOTEMPTY);
        }
        self.charge_tree(parent, victim, false);
        self.remove_entry(parent, name, t);
        if let Some(p) = self.nodes.get_mut(&parent) {
            p.nlink = p.nlink.saturating_sub(1);
        }
        self.free_inode(victim);
        Ok(Reply::Ok)
    }

    /// link(2): the new name's checks (as create), then EPERM for a
    /// directory, ENOENT for an inode with no name left, EMLINK.
    pub(crate) fn link(
        &mut self,
        cred: &Cred,
        ino: Inode,
        new_parent: Inode,
        new_name: &[u8],
        t: Timespec,
    ) -> Result<Reply, Errno> {
        self.node(ino)?;
        self.may_create(cred, new_parent, new_name)?;
        let node = self.node(ino)?;
        if node.is_dir() {
            return Err(Errno::EPERM);
        }
        perm::may_change(node)?;
        if node.nlink == 0 {
            return Err(Errno::ENOENT);
        }
        if node.nlink >= LINK_MAX {
            return Err(Errno::EMLINK);
        }
        self.quota_check(&[new_parent], super::quota::contrib(node), t.sec)?;
        self.add_entry(new_parent, new_name, ino, t);
        self.charge_tree(new_parent, ino, true);
        let n = self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        n.nlink += 1;
        n.ctime = t;
        Ok(Reply::Attr(n.attr(ino)))
    }

    /// Whether `a` is `b` or one of its ancestors.
    pub(crate) fn is_ancestor(&self, a: Inode, b: Inode) -> bool {
        let mut cur = b;
        for _ in 0..=self.nodes.len() {
            if cur == a {
                return true;
            }
            if cur == Inode::ROOT {
                return false;
            }
            match self.nodes.get(&cur).and_then(|n| n.dir_parent()) {
                Some(p) => cur = p,
                None => return false,
            }
        }
        false
    }

    /// renameat2(2). Checks in Linux's order: both flags (EINVAL); parents
    /// (ENOENT, ENOTDIR), names (EINVAL, ENAMETOOLONG), search permission
    /// (EACCES); source absent (ENOENT); EXCHANGE without target (ENOENT),
    /// NOREPLACE with target (EEXIST); source directory an ancestor of the new
    /// parent (EINVAL); target directory an ancestor of the old parent
    /// (ENOTEMPTY, EINVAL with EXCHANGE); same inode: success, no change;
    /// removal rights on the source, creation or removal rights on the target
    /// (EACCES, EPERM for sticky, ENOTDIR for a directory onto a non-directory,
    /// EISDIR for a non-directory onto a directory); write permission on a
    /// directory that changes parent (EACCES, its ".." changes); target
    /// directory not empty (ENOTEMPTY); EMLINK.
    pub(crate) fn rename(
        &mut self,
        cred: &Cred,
        (parent, name): Place,
        (new_parent, new_name): Place,
        (noreplace, exchange): (bool, bool),
        t: Timespec,
    ) -> Result<Reply, Errno> {
        if noreplace && exchange {
            return Err(Errno::EINVAL);
        }
        let op = self.dir(parent)?;
        let np = self.dir(new_parent)?;
        check_name(name)?;
        check_name(new_name)?;
        perm::access(op, cred, MAY_EXEC)?;
        perm::access(np, cred, MAY_EXEC)?;
        let src = Self::child(op, name).ok_or(Errno::ENOENT)?;
        let dst = Self::child(np, new_name);
        if exchange && dst.is_none() {
            return Err(Errno::ENOENT);
        }
        if noreplace && dst.is_some() {
            return Err(Errno::EEXIST);
        }
        let snode = self.node(src)?;
        let src_dir = snode.is_dir();
        if src_dir && self.is_ancestor(src, new_parent) {
            return Err(Errno::EINVAL);
        }
        let dnode = match dst {
            Some(d) => Some(self.node(d)?),
            None => None,
        };
        let dst_dir = dnode.is_some_and(|n| n.is_dir());
        if let Some(d) = dst {
            if dst_dir && self.is_ancestor(d, parent) {
                return Err(if exchange {
                    Errno::EINVAL
                } else {
                    Errno::ENOTEMPTY
                });
            }
        }
        if dst == Some(src) {
            return Ok(Reply::Ok);
        }
        perm::may_delete(op, snode, cred, src_dir)?;
        match dnode {
            None => perm::access(np, cred, MAY_WRITE | MAY_EXEC)?,
            Some(dn) => perm::may_delete(np, dn, cred, if exchange { dst_dir } else { src_dir })?,
        }
        let moves = parent != new_parent;
        if moves && src_dir {
            perm::access(snode, cred, MAY_WRITE)?;
        }
        if moves && exchange && dst_dir {
            if let Some(dn) = dnode {
                perm::access(dn, cred, MAY_WRITE)?;
            }
        }
        if !exchange
            && dnode
                .and_then(|n| n.entries())
                .is_some_and(|e| !e.is_empty())
        {
            return Err(Errno::ENOTEMPTY);
        }
        // Subdirectory count changes of the two parents when they differ.
        let full = |n: &super::namespace::Node| n.nlink >= u32::MAX - 1;
        if moves {
            let gains_np = src_dir && !dst_dir;
            let gains_op = exchange && dst_dir && !src_dir;
            if (gains_np && full(np)) || (gains_op && full(op)) {
                return Err(Errno::EMLINK);
            }
        }

        self.quota_check_move(src, parent, new_parent, t.sec)?;
        if let (true, Some(d)) = (exchange, dst) {
            self.quota_check_move(d, new_parent, parent, t.sec)?;
        }

        // All checked; now change.
        if exchange {
            let Some(d) = dst else {
                return Err(Errno::ENOENT);
            };
            self.add_entry(parent, name, d, t);
            self.add_entry(new_parent, new_name, src, t);
            self.move_usage(src, parent, new_parent);
            self.move_usage(d, new_parent, parent);
            if moves {
                if src_dir {
                    self.reparent(src, parent, new_parent);
                }
                if dst_dir {
                    self.reparent(d, new_parent, parent);
                }
            }
            self.touch_ctime(d, t);
        } else {
            if let Some(d) = dst {
                self.charge_tree(new_parent, d, false);
                self.remove_entry(new_parent, new_name, t);
                if dst_dir {
                    if let Some(p) = self.nodes.get_mut(&new_parent) {
                        p.nlink = p.nlink.saturating_sub(1);
                    }
                    self.free_inode(d);
                } else {
                    self.drop_link(d, (new_parent, new_name), t);
                }
            }
            self.remove_entry(parent, name, t);
            self.add_entry(new_parent, new_name, src, t);
            self.move_usage(src, parent, new_parent);
            if moves && src_dir {
                self.reparent(src, parent, new_parent);
            }
        }
        self.touch_ctime(src, t);
        Ok(Reply::Ok)
    }

    /// Directory `ino` moves from `from` to `to`: its ".." and the parents'
    /// link counts follow.
    fn reparent(&mut self, ino: Inode, from: Inode, to: Inode) {
        if let Some(super::namespace::NodeData::Dir { parent, .. }) =
            self.nodes.get_mut(&ino).map(|n| &mut n.data)
        {
            *parent = to;
        }
        if let Some(f) = self.nodes.get_mut(&from) {
            f.nlink = f.nlink.saturating_sub(1);
        }
        if let Some(t) = self.nodes.get_mut(&to) {
            t.nlink = t.nlink.saturating_add(1);
        }
    }

    fn touch_ctime(&mut self, ino: Inode, t: Timespec) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.ctime = t;
        }
    }

    /// Set entry `name` of directory `dir` to `ino`; stamp the directory.
    fn add_entry(&mut self, dir: Inode, name: &[u8], ino: Inode, t: Timespec) {
        let mut replaced = None;
        if let Some(d) = self.nodes.get_mut(&dir) {
            if let Some(e) = d.entries_mut() {
                replaced = e.insert(name.to_vec(), ino);
            }
            d.mtime = t;
            d.ctime = t;
        }
        if let Some(old) = replaced {
            self.index_name(dir, old, false);
        }
        self.index_name(dir, ino, true);
    }

    /// Remove entry `name` of directory `dir`; stamp the directory.
    fn remove_entry(&mut self, dir: Inode, name: &[u8], t: Timespec) {
        let mut removed = None;
        if let Some(d) = self.nodes.get_mut(&dir) {
            if let Some(e) = d.entries_mut() {
                removed = e.remove(name);
            }
            d.mtime = t;
            d.ctime = t;
        }
        if let Some(old) = removed {
            self.index_name(dir, old, false);
        }
    }

    /// Name `from` of non-directory `ino` is gone. At its last name, the
    /// inode goes to the trash, is sustained or freed (`unnamed`).
    pub(crate) fn drop_link(&mut self, ino: Inode, from: Place, t: Timespec) {
        let Some(n) = self.nodes.get_mut(&ino) else {
            return;
        };
        n.nlink = n.nlink.saturating_sub(1);
        n.ctime = t;
        if n.nlink == 0 {
            self.unnamed(ino, from.0, from.1, t);
        }
    }

    /// Forget inode `ino`; its chunks lose a reference.
    pub(crate) fn free_inode(&mut self, ino: Inode) {
        self.sustained.remove(&ino);
        self.sustained_paths.remove(&ino);
        self.trash.remove(&ino);
        self.quotas.remove(&ino);
        self.delegations.remove(&ino);
        let Some(node) = self.nodes.remove(&ino) else {
            return;
        };
        if let super::namespace::NodeData::File { chunks } = node.data {
            for id in chunks.into_iter().flatten() {
                self.release_chunk(id);
            }
        }
    }

    /// One reference to chunk `id` is gone; at the last one the chunk is
    /// queued for deletion on the chunkservers.
    pub(crate) fn release_chunk(&mut self, id: ChunkId) {
        let Some(c) = self.chunks.get_mut(&id) else {
            return;
        };
        c.refcount = c.refcount.saturating_sub(1);
        if c.refcount == 0 {
            self.chunks.remove(&id);
            self.versions_ordered.remove(&id);
            self.pending_chunk_deletes.push(id);
        }
    }
}
