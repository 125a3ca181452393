//! Write-back creates: directories delegated to one session, the inode
//! numbers a session holds, and the batches its mount sends.
//!
//! A mount that makes many files in one directory asks for it
//! (`Delegate`). While it holds the directory, no other session changes
//! or reads it: the leader recalls it first (the service's admission), and
//! the mount sends what it queued before it gives it back. So the mount
//! knows every name there and may answer a create itself: it picks an
//! inode number from those it holds and queues a `CreateAt`, which the
//! master applies later, in order, in a `Batch` (so too its unlinks,
//! rmdirs and renames of names there, and the length commits of files it
//! made there). What the mount answered
//! is what the apply does, because the master delegates only directories
//! where a create's outcome needs nothing the mount does not see (no
//! default ACL, no extra attributes, no SGID, no quota).
//!
//! Delegations and held numbers are part of the namespace (image format
//! 7): a new leader knows them. They end with the session.

use super::namespace::{Namespace, NodeData};
use super::types::*;
use mfs_common::ids::{ChunkId, ChunkVersion, Inode, SessionId};

/// Ranges of inode numbers a session holds at most (the oldest go first).
const MAX_RANGES: usize = 4;
/// Inode numbers one `Delegate` gives at most.
pub const MAX_INODES_PER_GRANT: u32 = 65_536;
/// Operations one `Batch` may carry.
pub const MAX_BATCH: usize = 4096;
/// Chunk ids a session holds at most (`HoldChunks`).
pub const MAX_HELD_CHUNKS: usize = 4096;
/// How far (seconds) a `CreateAt`'s time may be from the request's.
const CLOCK_SLACK: i64 = 60;

/// A time a mount gave for its change (its clock as it answered), or the
/// request's `t` when more than [`CLOCK_SLACK`] away from it.
pub(crate) fn client_time(time: Timespec, t: Timespec) -> Timespec {
    if (time.sec - t.sec).abs() > CLOCK_SLACK {
        t
    } else {
        time
    }
}

impl Namespace {
    /// The session holding `dir`, if delegated.
    pub fn delegated_to(&self, dir: Inode) -> Option<SessionId> {
        self.delegations.get(&dir).copied()
    }

    /// Whether any directory is delegated (a quick test before a lookup
    /// per request).
    pub fn has_delegations(&self) -> bool {
        !self.delegations.is_empty()
    }

    /// Every delegated directory.
    pub fn delegated_dirs(&self) -> impl Iterator<Item = Inode> + '_ {
        self.delegations.keys().copied()
    }

    /// How many inode numbers `sid` holds.
    pub fn reserved_count(&self, sid: SessionId) -> u64 {
        self.reserved
            .get(&sid)
            .map_or(0, |r| r.iter().map(|(a, b)| b - a).sum())
    }

    pub(crate) fn delegate(
        &mut self,
        sid: Option<SessionId>,
        dir: Inode,
        inodes: u32,
    ) -> Result<Reply, Errno> {
        let sid = sid.ok_or(Errno::EBADF)?;
        if self.delegations.get(&dir).is_some_and(|&h| h != sid) {
            return Err(Errno::EBUSY);
        }
        if !self.foreseeable(dir)? {
            return Err(Errno::EBUSY);
        }
        let want = u64::from(inodes.min(MAX_INODES_PER_GRANT));
        let held = self.reserved_count(sid);
        let (first, count) = if held >= want || want == 0 {
            (0, 0)
        } else {
            let first = self.next_inode;
            let end = first.checked_add(want).ok_or(Errno::ENOSPC)?;
            if end == u64::MAX {
                return Err(Errno::ENOSPC);
            }
            self.next_inode = end;
            let ranges = self.reserved.entry(sid).or_default();
            ranges.push((first, end));
            if ranges.len() > MAX_RANGES {
                ranges.remove(0);
            }
            (first, want as u32)
        };
        self.delegations.insert(dir, sid);
        Ok(Reply::Delegated { first, count })
    }

    /// Whether what a create in `dir` does needs nothing a mount holding
    /// it does not see: no extra attributes, SGID, default ACL or quota.
    fn foreseeable(&self, dir: Inode) -> Result<bool, Errno> {
        let d = self.dir(dir)?;
        Ok(d.eattr == 0
            && d.mode & S_ISGID == 0
            && !d.xattrs.contains_key(super::acl::DEFAULT)
            && self.quotas_above(dir).is_empty())
    }

    pub(crate) fn undelegate(&mut self, sid: Option<SessionId>, dir: Inode, holder: SessionId) {
        let holder = sid.unwrap_or(holder);
        if self.delegations.get(&dir) == Some(&holder) {
            self.delegations.remove(&dir);
        }
    }

    /// Where `ino` is among the numbers `sid` holds: (range index);
    /// EINVAL when not held or already in use.
    fn held_range(&self, sid: SessionId, ino: Inode) -> Result<usize, Errno> {
        let ranges = self.reserved.get(&sid).ok_or(Errno::EINVAL)?;
        let i = ranges
            .iter()
            .position(|&(a, b)| (a..b).contains(&ino.0))
            .ok_or(Errno::EINVAL)?;
        if self.nodes.contains_key(&ino) {
            return Err(Errno::EINVAL);
        }
        Ok(i)
    }

    /// Takes `ino` (in range `i`, from [`Namespace::held_range`]); the
    /// numbers below it in its range are given up: a mount uses them in
    /// order.
    fn take_held(&mut self, sid: SessionId, i: usize, ino: Inode) {
        let Some(ranges) = self.reserved.get_mut(&sid) else {
            return;
        };
        ranges[i].0 = ino.0 + 1;
        if ranges[i].0 == ranges[i].1 {
            ranges.remove(i);
        }
        if ranges.is_empty() {
            self.reserved.remove(&sid);
        }
    }

    /// `CreateAt` (a regular file, opened for the session) or, with
    /// `dir`, `MkdirAt` (a directory, delegated to the session when it
    /// could be asked for: it inherits what made its parent foreseeable).
    pub(crate) fn make_at(
        &mut self,
        sid: Option<SessionId>,
        m: &MakeAt,
        t: Timespec,
        dir: bool,
    ) -> Result<Reply, Errno> {
        let (cred, parent, name, ino) = (&m.cred, m.parent, &m.name, m.inode);
        let s = sid.ok_or(Errno::EBADF)?;
        self.may_create(cred, parent, name)?;
        let range = self.held_range(s, ino)?;
        let time = client_time(m.time, t);
        let (ftype, data) = if dir {
            let entries = std::collections::BTreeMap::new();
            (FileType::Directory, NodeData::Dir { parent, entries })
        } else {
            (FileType::Regular, NodeData::File { chunks: Vec::new() })
        };
        let node = self.new_child(cred, parent, ftype, m.mode, m.umask, data, time)?;
        self.take_held(s, range, ino);
        let attr = self.insert_child_at(parent, name, node, time, ino)?;
        if !dir {
            self.track_open(sid, ino);
        } else if self.foreseeable(ino)? {
            self.delegations.insert(ino, s);
        }
        Ok(Reply::Attr(attr))
    }

    /// Whether some session holds chunk id `id` (its copies may exist
    /// before the namespace names it: no orphan).
    pub fn chunk_held(&self, id: ChunkId) -> bool {
        self.held_chunks.values().any(|s| s.contains(&id))
    }

    /// Every chunk id some session holds.
    pub fn held_chunk_ids(&self) -> impl Iterator<Item = ChunkId> + '_ {
        self.held_chunks.values().flatten().copied()
    }

    pub(crate) fn hold_chunks(
        &mut self,
        sid: Option<SessionId>,
        count: u32,
        give_back: &[ChunkId],
    ) -> Result<Reply, Errno> {
        let sid = sid.ok_or(Errno::EBADF)?;
        let held = self.held_chunks.entry(sid).or_default();
        let back = give_back.iter().filter(|id| held.contains(id)).count();
        if held.len() - back + count as usize > MAX_HELD_CHUNKS {
            return Err(Errno::EBUSY);
        }
        for id in give_back {
            held.remove(id);
        }
        if count == 0 {
            if held.is_empty() {
                self.held_chunks.remove(&sid);
            }
            return Ok(Reply::Chunk {
                id: ChunkId(0),
                version: ChunkVersion(1),
                length: 0,
            });
        }
        let first = self.next_chunk;
        self.next_chunk = first.checked_add(u64::from(count)).ok_or(Errno::ENOSPC)?;
        self.held_chunks
            .entry(sid)
            .or_default()
            .extend((first..first + u64::from(count)).map(ChunkId));
        Ok(Reply::Chunk {
            id: ChunkId(first),
            version: ChunkVersion(1),
            length: 0,
        })
    }

    pub(crate) fn attach_chunk(
        &mut self,
        sid: Option<SessionId>,
        cred: &Cred,
        inode: Inode,
        index: u32,
        chunk: ChunkId,
    ) -> Result<Reply, Errno> {
        let sid = sid.ok_or(Errno::EBADF)?;
        if !self
            .held_chunks
            .get(&sid)
            .is_some_and(|s| s.contains(&chunk))
        {
            return Err(Errno::EINVAL);
        }
        let r = self.write_new_chunk(Some(sid), cred, inode, index, chunk, ChunkVersion(1))?;
        if let Some(s) = self.held_chunks.get_mut(&sid) {
            s.remove(&chunk);
            if s.is_empty() {
                self.held_chunks.remove(&sid);
            }
        }
        Ok(r)
    }

    /// Applies a mount's batch (see `Op::Batch`); `one` applies each op.
    pub(crate) fn batch(
        &mut self,
        ops: &[Op],
        mut one: impl FnMut(&mut Namespace, &Op) -> Result<Reply, Errno>,
    ) -> Result<Reply, Errno> {
        let allowed = |op: &Op| {
            matches!(
                op,
                Op::CreateAt(_)
                    | Op::MkdirAt(_)
                    | Op::Release { .. }
                    | Op::ReleaseMany { .. }
                    | Op::Unlink { .. }
                    | Op::Rmdir { .. }
                    | Op::Rename { .. }
                    | Op::WriteChunkEnd { .. }
                    | Op::WriteChunkEndAt { .. }
                    | Op::WriteChunkEndWith { .. }
                    | Op::WriteChunkEndTimed { .. }
                    | Op::WriteChunkEndWithTimed { .. }
                    | Op::WriteChunkEndUnmade { .. }
                    | Op::WriteNewChunk { .. }
                    | Op::Open {
                        truncate: false,
                        ..
                    }
                    | Op::AttachChunk { .. }
                    | Op::SetAttrAt { .. }
            )
        };
        if ops.len() > MAX_BATCH || !ops.iter().all(allowed) {
            return Err(Errno::EINVAL);
        }
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            out.push(match one(self, op) {
                Ok(_) => 0,
                Err(e) => e.0,
            });
        }
        Ok(Reply::Batch(out))
    }

    pub(crate) fn drop_session_delegations(&mut self, sid: SessionId) {
        self.delegations.retain(|_, s| *s != sid);
        self.reserved.remove(&sid);
        self.held_chunks.remove(&sid);
    }

    /// Invariants: delegations name directories and live sessions; held
    /// ranges are non-empty, below `next_inode`, of live sessions.
    pub(crate) fn check_delegations(&self) -> Result<(), String> {
        for (dir, sid) in &self.delegations {
            if !self.sessions.contains_key(sid) {
                return Err(format!(
                    "directory {dir} delegated to session {sid}, which is gone"
                ));
            }
            if !self.nodes.get(dir).is_some_and(|n| n.is_dir()) {
                return Err(format!("delegated inode {dir} is not a directory"));
            }
        }
        for (sid, ranges) in &self.reserved {
            if !self.sessions.contains_key(sid) {
                return Err(format!("inodes held for session {sid}, which is gone"));
            }
            for &(a, b) in ranges {
                if a >= b || b > self.next_inode {
                    return Err(format!("session {sid} holds a bad range {a}..{b}"));
                }
            }
        }
        for (sid, ids) in &self.held_chunks {
            if !self.sessions.contains_key(sid) || ids.is_empty() {
                return Err(format!("chunk ids held for session {sid}: gone or none"));
            }
            if let Some(id) = ids
                .iter()
                .find(|id| id.0 == 0 || id.0 >= self.next_chunk || self.chunks.contains_key(id))
            {
                return Err(format!("session {sid} holds chunk id {id}, not free"));
            }
        }
        Ok(())
    }
}
