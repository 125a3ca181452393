//! Applying the data path's operations: chunk allocation and versions,
//! write leases and write ends, deletes done on the chunkservers, and the
//! goal and trash time of trees.
//!
//! As everywhere in apply: check everything first, then change in steps that
//! cannot fail. Locations of copies are not here (leader soft state).

use super::namespace::{ChunkInfo, Namespace, NodeData};
use super::perm;
use super::types::*;
use mfs_common::ids::{ChunkId, ChunkVersion, Inode, SessionId};
use std::collections::BTreeSet;

/// What a tree operation sets on each inode.
#[derive(Clone, Copy)]
pub(crate) enum TreeSetting {
    Goal(u8),
    TrashTime(u32),
    /// Extra attribute bits to set and to clear.
    Eattr {
        set: u8,
        clear: u8,
    },
}

impl Namespace {
    /// The chunk in slot `index` of regular file `inode`: ENOENT, EISDIR for
    /// a directory, EINVAL for other types; `None` for a hole or a slot past
    /// the end of the list.
    pub fn chunk_slot(&self, inode: Inode, index: u32) -> Result<Option<ChunkId>, Errno> {
        let chunks = self.file_chunks(inode)?;
        Ok(chunks.get(index as usize).copied().flatten())
    }

    pub(crate) fn alloc_chunk(&mut self, inode: Inode, index: u32) -> Result<Reply, Errno> {
        if self.chunk_slot(inode, index)?.is_some() {
            return Err(Errno::EEXIST);
        }
        if index > MAX_CHUNK_INDEX {
            return Err(Errno::EFBIG);
        }
        if self.next_chunk == u64::MAX {
            return Err(Errno::ENOSPC);
        }
        let id = ChunkId(self.next_chunk);
        let reply = self.place_chunk(inode, index, id, ChunkVersion(1), true)?;
        self.next_chunk += 1;
        Ok(reply)
    }

    /// Puts chunk `id` (new to the table, at `version`, with the file's
    /// goal and one reference) in slot `index` of regular file `inode`,
    /// the chunk list growing with holes as needed. EINVAL for another
    /// type. Replies `Reply::Chunk` with the file's length.
    pub(crate) fn place_chunk(
        &mut self,
        inode: Inode,
        index: u32,
        id: ChunkId,
        version: ChunkVersion,
        fresh: bool,
    ) -> Result<Reply, Errno> {
        let node = self.nodes.get_mut(&inode).ok_or(Errno::ENOENT)?;
        let goal = node.goal;
        let length = node.size;
        let NodeData::File { chunks } = &mut node.data else {
            return Err(Errno::EINVAL);
        };
        let slot = index as usize;
        if chunks.len() <= slot {
            chunks.resize(slot + 1, None);
        }
        chunks[slot] = Some(id);
        self.chunks.insert(
            id,
            ChunkInfo {
                version,
                refcount: 1,
                goal,
                fresh,
            },
        );
        Ok(Reply::Chunk {
            id,
            version,
            length,
        })
    }

    /// Internal: `count` chunk ids (1..=65536, else EINVAL) taken from the
    /// counter for the leader to hand out: new chunks (`WriteNewChunk`)
    /// and copy-on-write duplicates (`CowChunk`). Ids it never uses are
    /// skipped for good. Replies `Reply::Chunk` with the first id.
    pub(crate) fn reserve_chunk_ids(&mut self, count: u32) -> Result<Reply, Errno> {
        if !(1..=65536).contains(&count) {
            return Err(Errno::EINVAL);
        }
        let id = ChunkId(self.next_chunk);
        self.next_chunk = self
            .next_chunk
            .checked_add(u64::from(count))
            .ok_or(Errno::ENOSPC)?;
        Ok(Reply::Chunk {
            id,
            version: ChunkVersion(1),
            length: 0,
        })
    }

    /// A write lease on a new chunk `id` (reserved, made on the chunkservers
    /// at `version`) for the empty slot `index` of `inode`, in one entry:
    /// EEXIST if the slot holds a chunk now (the client asks again), EFBIG
    /// past the last slot, EINVAL for an id not reserved or in use, then
    /// the rule of `WriteChunk` for the permission. The chunk takes the
    /// file's goal and is fresh until a write ends on it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn write_new_chunk(
        &mut self,
        sid: Option<SessionId>,
        cred: &Cred,
        inode: Inode,
        index: u32,
        id: ChunkId,
        version: ChunkVersion,
    ) -> Result<Reply, Errno> {
        if self.chunk_slot(inode, index)?.is_some() {
            return Err(Errno::EEXIST);
        }
        if index > MAX_CHUNK_INDEX {
            return Err(Errno::EFBIG);
        }
        if id.0 == 0 || id.0 >= self.next_chunk || self.chunks.contains_key(&id) {
            return Err(Errno::EINVAL);
        }
        self.may_write_data(sid.unwrap_or(SessionId::NONE), cred, inode)?;
        self.place_chunk(inode, index, id, version, true)
    }

    /// [`Namespace::write_new_chunk`] as a logged `WriteNewChunk` (or an
    /// `OpenLeased`'s chunk) applies it: an id a session holds is that
    /// session's to attach (EINVAL; the leader never names one there).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn logged_new_chunk(
        &mut self,
        sid: Option<SessionId>,
        cred: &Cred,
        inode: Inode,
        index: u32,
        id: ChunkId,
        version: ChunkVersion,
    ) -> Result<Reply, Errno> {
        if self.chunk_held(id) {
            return Err(Errno::EINVAL);
        }
        self.write_new_chunk(sid, cred, inode, index, id, version)
    }

    /// `OrderChunkVersion`: the leader is about to order copies of chunk
    /// `id` to `version`. Kept while above the committed version, so that
    /// no later leader gives that version to other copies (a copy left at
    /// it would pass for one of theirs). Below or at the highest recorded:
    /// nothing changes (EINVAL).
    pub(crate) fn order_chunk_version(
        &mut self,
        id: ChunkId,
        version: ChunkVersion,
    ) -> Result<Reply, Errno> {
        let c = self.chunks.get(&id).ok_or(Errno::ENOENT)?;
        let floor = c.version.0.max(self.version_ordered(id));
        if version.0 <= floor {
            return Err(Errno::EINVAL);
        }
        self.versions_ordered.insert(id, version.0);
        Ok(Reply::Ok)
    }

    /// The highest version recorded for chunk `id` by `OrderChunkVersion`
    /// and not committed yet (0: none).
    pub fn version_ordered(&self, id: ChunkId) -> u32 {
        self.versions_ordered.get(&id).copied().unwrap_or(0)
    }

    /// Chunk `id` committed at `version`: an ordered version at or below it
    /// is spent.
    fn version_committed(&mut self, id: ChunkId, version: ChunkVersion) {
        if self
            .versions_ordered
            .get(&id)
            .is_some_and(|&o| o <= version.0)
        {
            self.versions_ordered.remove(&id);
        }
    }

    pub(crate) fn set_chunk_version(
        &mut self,
        id: ChunkId,
        version: ChunkVersion,
    ) -> Result<Reply, Errno> {
        let c = self.chunks.get_mut(&id).ok_or(Errno::ENOENT)?;
        if version <= c.version {
            return Err(Errno::EINVAL);
        }
        c.version = version;
        self.version_committed(id, version);
        Ok(Reply::Chunk {
            id,
            version,
            length: 0,
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn grant_write(
        &mut self,
        sid: Option<SessionId>,
        cred: &Cred,
        inode: Inode,
        index: u32,
        id: ChunkId,
        version: ChunkVersion,
    ) -> Result<Reply, Errno> {
        if self.chunk_slot(inode, index)? != Some(id) {
            return Err(Errno::EAGAIN);
        }
        self.may_write_data(sid.unwrap_or(SessionId::NONE), cred, inode)?;
        let length = self.node(inode)?.size;
        let c = self.chunks.get_mut(&id).ok_or(Errno::EIO)?;
        if c.refcount > 1 {
            return Err(Errno::EIO);
        }
        if version < c.version {
            return Err(Errno::EAGAIN);
        }
        c.version = version;
        self.version_committed(id, version);
        Ok(Reply::Chunk {
            id,
            version,
            length,
        })
    }

    pub(crate) fn write_end(
        &mut self,
        inode: Inode,
        index: u32,
        id: ChunkId,
        length: u64,
        (mtime, t): (Timespec, Timespec),
    ) -> Result<Reply, Errno> {
        if self.chunk_slot(inode, index)? != Some(id) {
            return Err(Errno::EINVAL);
        }
        if length > i64::MAX as u64 {
            return Err(Errno::EFBIG);
        }
        if let Some(c) = self.chunks.get_mut(&id) {
            c.fresh = false;
        }
        let n = self.nodes.get_mut(&inode).ok_or(Errno::ENOENT)?;
        let before = super::quota::contrib(n);
        n.size = n.size.max(length);
        n.mtime = mtime;
        n.ctime = t;
        let attr = n.attr(inode);
        self.recharge(inode, before);
        Ok(Reply::Attr(attr))
    }

    /// Takes chunk `id`, which no write made, out of slot `index` of
    /// `inode` (a hole again) and out of the table (see
    /// `Op::WriteChunkEndUnmade`). Replies the file's attributes.
    pub(crate) fn drop_unmade_chunk(
        &mut self,
        inode: Inode,
        index: u32,
        id: ChunkId,
    ) -> Result<Reply, Errno> {
        let n = self.nodes.get_mut(&inode).ok_or(Errno::ENOENT)?;
        let before = super::quota::contrib(n);
        let mut gone = None;
        if let NodeData::File { chunks } = &mut n.data {
            if let Some(slot) = chunks.get_mut(index as usize).filter(|s| **s == Some(id)) {
                gone = slot.take();
            }
            while chunks.last().is_some_and(Option::is_none) {
                chunks.pop();
            }
        }
        let attr = n.attr(inode);
        self.recharge(inode, before);
        if let Some(id) = gone {
            self.release_chunk(id);
        }
        Ok(Reply::Attr(attr))
    }

    /// `Op::PunchChunks`: slots `first..first + count` become holes.
    pub(crate) fn punch_chunks(
        &mut self,
        cred: &Cred,
        inode: Inode,
        (first, count): (u32, u32),
        t: Timespec,
    ) -> Result<Reply, Errno> {
        match self.node(inode)?.ftype {
            FileType::Regular => {}
            FileType::Directory => return Err(Errno::EISDIR),
            _ => return Err(Errno::EINVAL),
        }
        self.may_truncate(cred, inode)?;
        let n = self.nodes.get_mut(&inode).ok_or(Errno::ENOENT)?;
        let mut gone = Vec::new();
        if let NodeData::File { chunks } = &mut n.data {
            let start = (first as usize).min(chunks.len());
            let end = (first as usize)
                .saturating_add(count as usize)
                .min(chunks.len());
            gone.extend(chunks[start..end].iter_mut().filter_map(Option::take));
            while chunks.last().is_some_and(Option::is_none) {
                chunks.pop();
            }
        }
        n.mtime = t;
        n.ctime = t;
        let attr = n.attr(inode);
        for id in gone {
            self.release_chunk(id);
        }
        Ok(Reply::Attr(attr))
    }

    pub(crate) fn chunks_deleted(&mut self, ids: &[ChunkId]) -> Reply {
        let done: BTreeSet<ChunkId> = ids.iter().copied().collect();
        self.pending_chunk_deletes.retain(|id| !done.contains(id));
        Reply::Ok
    }

    /// SetGoal / SetTrashTime on `inode`, and below it with `recursive`.
    pub(crate) fn set_tree(
        &mut self,
        cred: &Cred,
        inode: Inode,
        setting: TreeSetting,
        recursive: bool,
        t: Timespec,
    ) -> Result<Reply, Errno> {
        if let TreeSetting::Goal(g) = setting {
            if g == 0 || g > MAX_GOAL {
                return Err(Errno::EINVAL);
            }
        }
        if let TreeSetting::Eattr { set, clear } = setting {
            if (set | clear) & !eattr::ALL != 0 {
                return Err(Errno::EINVAL);
            }
        }
        // Extra attributes go on any inode; goal and trash time on files
        // and directories.
        let any_type = matches!(setting, TreeSetting::Eattr { .. });
        let top = self.node(inode)?;
        if !any_type && !matches!(top.ftype, FileType::Regular | FileType::Directory) {
            return Err(Errno::EINVAL);
        }
        let (mut changed, mut not_changed, mut not_permitted) = (0u64, 0u64, 0u64);
        let mut stack = vec![inode];
        while let Some(ino) = stack.pop() {
            let Some(node) = self.nodes.get(&ino) else {
                continue;
            };
            if recursive {
                if let Some(entries) = node.entries() {
                    // Reversed so that the walk visits names in byte order.
                    stack.extend(entries.values().rev().copied());
                }
            }
            if !any_type && !matches!(node.ftype, FileType::Regular | FileType::Directory) {
                continue;
            }
            if !perm::owner_or_root(node, cred) {
                not_permitted += 1;
                continue;
            }
            let same = match setting {
                TreeSetting::Goal(g) => node.goal == g,
                TreeSetting::TrashTime(s) => node.trash_time == s,
                TreeSetting::Eattr { set, clear } => (node.eattr | set) & !clear == node.eattr,
            };
            if same {
                not_changed += 1;
                continue;
            }
            changed += 1;
            let before = super::quota::contrib(node);
            let Some(n) = self.nodes.get_mut(&ino) else {
                continue;
            };
            n.ctime = t;
            match setting {
                TreeSetting::TrashTime(s) => n.trash_time = s,
                TreeSetting::Eattr { set, clear } => n.eattr = (n.eattr | set) & !clear,
                TreeSetting::Goal(g) => {
                    n.goal = g;
                    if let NodeData::File { chunks } = &n.data {
                        for id in chunks.iter().flatten() {
                            if let Some(c) = self.chunks.get_mut(id) {
                                // A shared chunk keeps the largest goal of
                                // its files (it cannot know the others').
                                c.goal = if c.refcount > 1 { c.goal.max(g) } else { g };
                            }
                        }
                    }
                    self.recharge(ino, before);
                }
            }
        }
        Ok(Reply::Tree {
            changed,
            not_changed,
            not_permitted,
        })
    }
}
