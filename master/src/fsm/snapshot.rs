//! Snapshots (mfsmakesnapshot): a copy of a file or a whole tree made at
//! once, the files sharing their chunks with the originals (a chunk's
//! `refcount` counts the slots naming it); and the copy-on-write step that
//! gives a file its own chunk before a write or a cut changes a shared one.

use super::namespace::{Namespace, Node, NodeData};
use super::perm::{self, MAY_EXEC, MAY_READ};
use super::types::*;
use mfs_common::ids::{ChunkId, ChunkVersion, Inode};

impl Namespace {
    /// Copies `src` (any type; a directory with everything below it) to
    /// `name` in `parent`. The name's checks are those of create (EEXIST,
    /// EACCES, ...); the caller must be able to read `src` (and search it,
    /// for a directory); a directory copied into itself or below: EINVAL.
    /// Copies keep owners, modes, times, xattrs, goal, trash time and extra
    /// attributes; hard links inside the tree become separate files. Replies
    /// the attributes of the new top.
    pub(crate) fn snapshot(
        &mut self,
        cred: &Cred,
        src: Inode,
        parent: Inode,
        name: &[u8],
        t: Timespec,
    ) -> Result<Reply, Errno> {
        let top = self.node(src)?;
        let mask = if top.is_dir() {
            MAY_READ | MAY_EXEC
        } else {
            MAY_READ
        };
        perm::access(top, cred, mask)?;
        self.may_create(cred, parent, name)?;
        if top.is_dir() && self.is_ancestor(src, parent) {
            return Err(Errno::EINVAL);
        }
        let (nodes, dirs) = self.tree_size(src);
        if self.next_inode.checked_add(nodes).is_none() {
            return Err(Errno::ENOSPC);
        }
        if dirs > 0 && top.is_dir() && self.dir(parent)?.nlink >= u32::MAX - 1 {
            return Err(Errno::EMLINK);
        }
        self.quota_check(&[parent], self.tree_usage(src), t.sec)?;

        // All checked; now copy, parents before children.
        let new_top = self.copy_node(src, parent, t);
        let mut stack = vec![(src, new_top)];
        while let Some((from, to)) = stack.pop() {
            let children: Vec<(Vec<u8>, Inode)> =
                match self.node(from).ok().and_then(|n| n.entries()) {
                    Some(e) => e.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                    None => continue,
                };
            for (child_name, child) in children {
                let copy = self.copy_node(child, to, t);
                if let Some(entries) = self.nodes.get_mut(&to).and_then(|n| n.entries_mut()) {
                    entries.insert(child_name, copy);
                }
                self.index_name(to, copy, true);
                stack.push((child, copy));
            }
        }
        let is_dir = self.node(new_top)?.is_dir();
        let p = self.nodes.get_mut(&parent).ok_or(Errno::ENOENT)?;
        if let Some(entries) = p.entries_mut() {
            entries.insert(name.to_vec(), new_top);
        }
        p.mtime = t;
        p.ctime = t;
        if is_dir {
            p.nlink = p.nlink.saturating_add(1);
        }
        self.index_name(parent, new_top, true);
        self.charge_tree(parent, new_top, true);
        Ok(Reply::Attr(self.node(new_top)?.attr(new_top)))
    }

    /// Inodes in the tree of `ino` and how many of them are directories.
    fn tree_size(&self, ino: Inode) -> (u64, u64) {
        let (mut nodes, mut dirs) = (0u64, 0u64);
        let mut stack = vec![ino];
        while let Some(i) = stack.pop() {
            let Some(n) = self.nodes.get(&i) else {
                continue;
            };
            nodes += 1;
            if let Some(e) = n.entries() {
                dirs += 1;
                stack.extend(e.values().copied());
            }
        }
        (nodes, dirs)
    }

    /// A copy of inode `from` under directory `parent` (entries of a
    /// directory left empty for the caller to fill; the chunks of a file
    /// shared). Its new inode number.
    fn copy_node(&mut self, from: Inode, parent: Inode, t: Timespec) -> Inode {
        let ino = Inode(self.next_inode);
        self.next_inode += 1;
        let Some(orig) = self.nodes.get(&from) else {
            return ino;
        };
        let data = match &orig.data {
            NodeData::Dir { .. } => NodeData::Dir {
                parent,
                entries: Default::default(),
            },
            other => other.clone(),
        };
        let nlink = if orig.is_dir() {
            // 2 + subdirectories, all copied below.
            let subdirs = orig
                .entries()
                .map(|e| {
                    e.values()
                        .filter(|c| self.nodes.get(c).is_some_and(Node::is_dir))
                        .count()
                })
                .unwrap_or(0);
            2u32.saturating_add(u32::try_from(subdirs).unwrap_or(u32::MAX))
        } else {
            1
        };
        let copy = Node {
            nlink,
            ctime: t,
            data,
            ..orig.clone()
        };
        if let NodeData::File { chunks } = &copy.data {
            for id in chunks.iter().flatten() {
                if let Some(c) = self.chunks.get_mut(id) {
                    c.refcount = c.refcount.saturating_add(1);
                }
            }
        }
        self.nodes.insert(ino, copy);
        ino
    }

    /// Internal: slot `index` of `inode`, which names the shared chunk
    /// `old`, names `new` (a reserved id, made from `old` on the
    /// chunkservers, at `version`) instead: `new` enters the chunk table with this file's
    /// goal, `old` loses a reference. EAGAIN if the slot changed meanwhile
    /// or `old` is no longer shared; EEXIST if `new` is taken; an id not
    /// reserved (at or above the counter): EINVAL.
    pub(crate) fn cow_chunk(
        &mut self,
        inode: Inode,
        index: u32,
        old: ChunkId,
        new: ChunkId,
        version: ChunkVersion,
    ) -> Result<Reply, Errno> {
        if self.chunk_slot(inode, index)? != Some(old) {
            return Err(Errno::EAGAIN);
        }
        if new.0 >= self.next_chunk {
            return Err(Errno::EINVAL);
        }
        if self.chunks.contains_key(&new) {
            return Err(Errno::EEXIST);
        }
        if self.chunks.get(&old).is_none_or(|c| c.refcount < 2) {
            return Err(Errno::EAGAIN);
        }
        let reply = self.place_chunk(inode, index, new, version, false)?;
        self.release_chunk(old);
        Ok(reply)
    }
}
