//! Applying requests: the session layer (exactly once), and the operations
//! that create inodes or open them (attributes: `attrs`).
//!
//! Every operation first checks everything (no change yet), then changes the
//! state in steps that cannot fail. So an error leaves the namespace as it was.

use super::attrs::AttrChange;
use super::chunks::TreeSetting;
use super::namespace::{check_name, Namespace, Node, NodeData, Session};
use super::perm::{self, MAY_EXEC, MAY_READ, MAY_WRITE};
use super::types::*;
use mfs_common::ids::{ChunkId, Inode, SessionId};
use std::collections::BTreeMap;

/// Longest session description kept, in bytes.
const SESSION_INFO_MAX: usize = 4096;

impl Namespace {
    /// Apply one committed request; the only way the state changes.
    ///
    /// Exactly once: for a request of session `s != 0`,
    /// - `s` unknown: `Err(UNKNOWN_SESSION)` (ESTALE), nothing changes;
    /// - `seq` already answered and not yet acknowledged: the stored reply,
    ///   nothing changes;
    /// - `seq <= acked` of the session: `Err(STALE_SEQ)` (EBADR), nothing
    ///   changes;
    /// - otherwise the operation is applied, replies of sequence numbers up to
    ///   `min(req.acked, seq - 1)` are forgotten and this reply is stored.
    ///
    /// Session 0 is not deduplicated (internal operations, tools, tests);
    /// opens made with it are not tracked.
    pub fn apply(&mut self, req: &Request) -> Reply {
        let t = req.time;
        if let Op::RegisterSession { info } = &req.op {
            return self.register_session(info, t).into();
        }
        if let Op::RegisterSessionWith { info, rights } = &req.op {
            let r = self.register_session(info, t);
            if let Ok(Reply::Session { id }) = &r {
                self.session_rights.insert(*id, rights.clone());
            }
            return r.into();
        }
        if req.session == SessionId::NONE {
            return self.execute(None, t, &req.op).into();
        }
        let sid = req.session;
        let Some(s) = self.sessions.get(&sid) else {
            return Reply::Err(Errno::UNKNOWN_SESSION);
        };
        if let Some(r) = s.replies.get(&req.seq) {
            return r.clone();
        }
        if req.seq <= s.acked {
            return Reply::Err(Errno::STALE_SEQ);
        }
        if req.op == Op::CloseSession {
            self.drop_session(sid);
            return Reply::Ok;
        }
        let reply: Reply = if req.op.is_internal() {
            Reply::Err(Errno::EPERM)
        } else {
            self.execute(Some(sid), t, &req.op).into()
        };
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.last_seen = s.last_seen.max(t);
            let acked = req.acked.min(req.seq - 1);
            if acked > s.acked {
                s.acked = acked;
                s.replies = s.replies.split_off(&(acked + 1));
            }
            s.replies.insert(req.seq, reply.clone());
            while s.replies.len() > MAX_CACHED_REPLIES {
                match s.replies.pop_first() {
                    Some((seq, _)) => s.acked = s.acked.max(seq),
                    None => break,
                }
            }
        }
        reply
    }

    /// One open of an `Opens` entry, applied as its own request would be;
    /// its errno (0: done).
    fn apply_logged_open(&mut self, req: &Request) -> i32 {
        let plain_open = matches!(
            req.op,
            Op::Open {
                truncate: false,
                ..
            }
        );
        if !plain_open || req.session == SessionId::NONE {
            return Errno::EINVAL.0;
        }
        match self.apply(req) {
            Reply::Err(e) => e.0,
            _ => 0,
        }
    }

    fn execute(&mut self, sid: Option<SessionId>, t: Timespec, op: &Op) -> Result<Reply, Errno> {
        let r = self.execute_op(sid, t, op);
        if !self.quotas.is_empty() {
            self.update_soft_times(t.sec);
        }
        r
    }

    fn execute_op(&mut self, sid: Option<SessionId>, t: Timespec, op: &Op) -> Result<Reply, Errno> {
        match op {
            // Handled in `apply`; reaching here means session 0.
            Op::RegisterSession { .. } | Op::RegisterSessionWith { .. } | Op::CloseSession => {
                Err(Errno::UNKNOWN_SESSION)
            }
            Op::ExpireSessions { ids } => {
                for &id in ids {
                    self.drop_session(id);
                }
                Ok(Reply::Ok)
            }
            Op::SetClusterId { id } => self.set_cluster_id(id, t),
            Op::Mkdir {
                cred,
                parent,
                name,
                mode,
                umask,
            } => {
                self.may_create(cred, *parent, name)?;
                let data = NodeData::Dir {
                    parent: *parent,
                    entries: BTreeMap::new(),
                };
                let node =
                    self.new_child(cred, *parent, FileType::Directory, *mode, *umask, data, t)?;
                Ok(Reply::Attr(self.insert_child(*parent, name, node, t)?))
            }
            Op::Mknod {
                cred,
                parent,
                name,
                ftype,
                mode,
                umask,
                rdev,
            } => self.mknod(cred, *parent, name, *ftype, *mode, *umask, *rdev, t),
            Op::Create {
                cred,
                parent,
                name,
                mode,
                umask,
                exclusive,
            } => self.create(sid, cred, *parent, name, *mode, *umask, *exclusive, t),
            Op::Open {
                cred,
                inode,
                mode,
                truncate,
            } => self.open(sid, cred, *inode, *mode, *truncate, t),
            Op::OpenLeased {
                cred,
                inode,
                mode,
                chunk,
                version,
            } => {
                let opened = self.open(sid, cred, *inode, *mode, true, t)?;
                // A slot that cannot take it leaves the open alone: the
                // opener then asks for the lease with WriteChunk.
                let _ = self.logged_new_chunk(sid, cred, *inode, 0, *chunk, *version);
                Ok(opened)
            }
            Op::Release { inode } => {
                self.release(sid.ok_or(Errno::EBADF)?, *inode)?;
                Ok(Reply::Ok)
            }
            Op::SetEattr {
                cred,
                inode,
                set,
                clear,
                recursive,
            } => self.set_tree(
                cred,
                *inode,
                TreeSetting::Eattr {
                    set: *set,
                    clear: *clear,
                },
                *recursive,
                t,
            ),
            Op::Snapshot {
                cred,
                src,
                parent,
                name,
            } => self.snapshot(cred, *src, *parent, name, t),
            Op::ReserveChunkIds { count } => self.reserve_chunk_ids(*count),
            Op::WriteNewChunk {
                cred,
                inode,
                index,
                chunk,
                version,
            } => self.logged_new_chunk(sid, cred, *inode, *index, *chunk, *version),
            Op::CowChunk {
                inode,
                index,
                old,
                new,
                version,
            } => self.cow_chunk(*inode, *index, *old, *new, *version),
            Op::ReleaseMany { inodes } => {
                let sid = sid.ok_or(Errno::EBADF)?;
                for &inode in inodes {
                    // A release of an inode not held changes nothing.
                    let _ = self.release(sid, inode);
                }
                Ok(Reply::Ok)
            }
            Op::AssertOpens { opens } => {
                let sid = sid.ok_or(Errno::EBADF)?;
                for &(inode, count) in opens {
                    self.assert_opens(sid, inode, count);
                }
                Ok(Reply::Ok)
            }
            Op::SetAttr {
                cred,
                inode,
                mode,
                uid,
                gid,
                size,
                atime,
                mtime,
            } => {
                let change = AttrChange {
                    mode: *mode,
                    uid: *uid,
                    gid: *gid,
                    size: *size,
                    atime: *atime,
                    mtime: *mtime,
                };
                self.setattr(cred, *inode, &change, t)
            }
            Op::SetAttrAt {
                cred,
                inode,
                mode,
                uid,
                gid,
                atime,
                mtime,
                time,
            } => {
                let change = AttrChange {
                    mode: *mode,
                    uid: *uid,
                    gid: *gid,
                    size: None,
                    atime: *atime,
                    mtime: *mtime,
                };
                self.setattr(
                    cred,
                    *inode,
                    &change,
                    super::delegations::client_time(*time, t),
                )
            }
            Op::Unlink { cred, parent, name } => self.unlink(cred, *parent, name, t),
            Op::Rmdir { cred, parent, name } => self.rmdir(cred, *parent, name, t),
            Op::Rename {
                cred,
                parent,
                name,
                new_parent,
                new_name,
                noreplace,
                exchange,
            } => {
                let flags = (*noreplace, *exchange);
                self.rename(cred, (*parent, name), (*new_parent, new_name), flags, t)
            }
            Op::Link {
                cred,
                inode,
                new_parent,
                new_name,
            } => self.link(cred, *inode, *new_parent, new_name, t),
            Op::Symlink {
                cred,
                parent,
                name,
                target,
            } => self.symlink(cred, *parent, name, target, t),
            Op::SetXattr {
                cred,
                inode,
                name,
                value,
                create_only,
                replace_only,
            } => self.setxattr(cred, *inode, name, value, (*create_only, *replace_only), t),
            Op::RemoveXattr { cred, inode, name } => self.removexattr(cred, *inode, name, t),
            Op::AllocChunk { inode, index } => self.alloc_chunk(*inode, *index),
            Op::SetChunkVersion { chunk, version } => self.set_chunk_version(*chunk, *version),
            Op::OrderChunkVersion { chunk, version } => self.order_chunk_version(*chunk, *version),
            Op::WriteChunk {
                cred,
                inode,
                index,
                chunk,
                version,
            } => self.grant_write(sid, cred, *inode, *index, *chunk, *version),
            Op::WriteChunkEnd {
                inode,
                index,
                chunk,
                length,
            } => self.write_end(*inode, *index, *chunk, *length, (t, t)),
            Op::WriteChunkEndAt {
                inode,
                index,
                chunk,
                length,
                mtime,
            } => self.write_end(*inode, *index, *chunk, *length, (*mtime, t)),
            Op::WriteChunkEndTimed {
                inode,
                index,
                chunk,
                length,
                mtime,
                ctime,
            } => {
                let ctime = super::delegations::client_time(*ctime, t);
                let times = (mtime.unwrap_or(ctime), ctime);
                self.write_end(*inode, *index, *chunk, *length, times)
            }
            Op::WriteChunkEndUnmade { end } => {
                let (inode, index, chunk) = end.write_end_target().ok_or(Errno::EINVAL)?;
                let fresh = self.chunks.get(&chunk).is_some_and(|c| c.fresh);
                let ended = self.execute_op(sid, t, end)?;
                if !fresh {
                    return Ok(ended);
                }
                self.drop_unmade_chunk(inode, index, chunk)
            }
            Op::ChunksDeleted { ids } => Ok(self.chunks_deleted(ids)),
            Op::SetGoal {
                cred,
                inode,
                goal,
                recursive,
            } => self.set_tree(cred, *inode, TreeSetting::Goal(*goal), *recursive, t),
            Op::SetTrashTime {
                cred,
                inode,
                trash_time,
                recursive,
            } => self.set_tree(
                cred,
                *inode,
                TreeSetting::TrashTime(*trash_time),
                *recursive,
                t,
            ),
            Op::SetLock {
                inode,
                owner,
                kind,
                ltype,
                start,
                end,
                pid,
            } => {
                let r = super::locks::LockRequest {
                    inode: *inode,
                    owner: *owner,
                    kind: *kind,
                    ltype: *ltype,
                    start: *start,
                    end: *end,
                    pid: *pid,
                };
                self.set_lock(sid.ok_or(Errno::EBADF)?, &r)
            }
            Op::PurgeTrash { inodes } => Ok(self.purge_trash(inodes, t)),
            Op::TrashDelete { cred, inode } => self.trash_delete(cred, *inode),
            Op::Undelete { cred, inode } => self.undelete(cred, *inode, t),
            Op::SetTrashPath { cred, inode, path } => self.set_trash_path(cred, *inode, path),
            Op::SetQuota {
                cred,
                inode,
                setting,
            } => self.set_quota(cred, *inode, *setting),
            Op::PunchChunks {
                cred,
                inode,
                first,
                count,
            } => self.punch_chunks(cred, *inode, (*first, *count), t),
            Op::Delegate { dir, inodes } => self.delegate(sid, *dir, *inodes),
            Op::Undelegate { dir, holder } => {
                self.undelegate(sid, *dir, *holder);
                Ok(Reply::Ok)
            }
            Op::CreateAt(m) => self.make_at(sid, m, t, false),
            Op::MkdirAt(m) => self.make_at(sid, m, t, true),
            Op::Batch { ops } => self.batch(ops, |ns, op| ns.execute_op(sid, t, op)),
            Op::Opens { opens } => Ok(Reply::Batch(
                opens.iter().map(|r| self.apply_logged_open(r)).collect(),
            )),
            Op::HoldChunks { count, give_back } => self.hold_chunks(sid, *count, give_back),
            Op::AttachChunk {
                cred,
                inode,
                index,
                chunk,
            } => self.attach_chunk(sid, cred, *inode, *index, *chunk),
            Op::WriteChunkEndWith {
                cred,
                inode,
                index,
                chunk,
                length,
                mtime,
                mode,
                atime,
            } => {
                let end = (*inode, *index, *chunk, *length, *mtime);
                self.write_end_with(cred, end, (*mode, *atime), t)
            }
            Op::WriteChunkEndWithTimed {
                cred,
                inode,
                index,
                chunk,
                length,
                mtime,
                mode,
                atime,
                ctime,
            } => {
                let end = (*inode, *index, *chunk, *length, *mtime);
                let ctime = super::delegations::client_time(*ctime, t);
                self.write_end_with(cred, end, (*mode, *atime), ctime)
            }
        }
    }

    /// A length commit (`end`: inode, slot, chunk, length, mtime) with the
    /// writer's kept changes (mode, atime) at time `t`.
    fn write_end_with(
        &mut self,
        cred: &Cred,
        (inode, index, chunk, length, mtime): (Inode, u32, ChunkId, u64, Option<Timespec>),
        (mode, atime): (Option<u32>, Option<Timespec>),
        t: Timespec,
    ) -> Result<Reply, Errno> {
        let ended = self.write_end(inode, index, chunk, length, (mtime.unwrap_or(t), t))?;
        let change = AttrChange {
            mode,
            atime: atime.map(TimeSet::At),
            ..AttrChange::default()
        };
        if change.is_empty() {
            return Ok(ended);
        }
        // A change the writer may not make is left out; the write stands
        // either way.
        Ok(self.setattr(cred, inode, &change, t).unwrap_or(ended))
    }

    // ---- sessions -----------------------------------------------------------

    fn register_session(&mut self, info: &str, t: Timespec) -> Result<Reply, Errno> {
        if info.len() > SESSION_INFO_MAX {
            return Err(Errno::EINVAL);
        }
        let id = SessionId(self.next_session);
        self.next_session = self.next_session.checked_add(1).ok_or(Errno::ENOSPC)?;
        self.sessions.insert(
            id,
            Session {
                info: info.to_owned(),
                open: BTreeMap::new(),
                replies: BTreeMap::new(),
                acked: 0,
                last_seen: t,
            },
        );
        Ok(Reply::Session { id })
    }

    /// Forget a session: release its open files, drop its replies. Unknown
    /// ids are ignored (the session may have closed meanwhile).
    fn drop_session(&mut self, sid: SessionId) {
        let Some(s) = self.sessions.remove(&sid) else {
            return;
        };
        self.session_rights.remove(&sid);
        self.drop_session_delegations(sid);
        self.drop_session_locks(sid);
        for (ino, count) in s.open {
            self.drop_opens(ino, count);
        }
    }

    fn set_cluster_id(&mut self, id: &str, t: Timespec) -> Result<Reply, Errno> {
        if id.is_empty() || id.len() > SESSION_INFO_MAX {
            return Err(Errno::EINVAL);
        }
        match &self.cluster_id {
            Some(cur) if cur == id => return Ok(Reply::Ok),
            Some(_) => return Err(Errno::EINVAL),
            None => {}
        }
        self.cluster_id = Some(id.to_owned());
        // The root of a new cluster is born with the cluster.
        if let Some(root) = self.nodes.get_mut(&Inode::ROOT) {
            if root.ctime == Timespec::default() {
                root.atime = t;
                root.mtime = t;
                root.ctime = t;
            }
        }
        Ok(Reply::Ok)
    }

    // ---- open files -----------------------------------------------------------

    /// Count one more open of `ino` by `sid` (nothing for session 0 or
    /// directories). Checked first with `can_track_open`.
    pub(crate) fn track_open(&mut self, sid: Option<SessionId>, ino: Inode) {
        let Some(sid) = sid else { return };
        if self.nodes.get(&ino).is_none_or(Node::is_dir) {
            return;
        }
        if let Some(s) = self.sessions.get_mut(&sid) {
            *s.open.entry(ino).or_default() += 1;
            *self.open_refs.entry(ino).or_default() += 1;
        }
    }

    /// `sid` holds `ino` open at least `count` times (see
    /// `Op::AssertOpens`).
    fn assert_opens(&mut self, sid: SessionId, ino: Inode, count: u32) {
        if self.nodes.get(&ino).is_none_or(Node::is_dir) {
            return;
        }
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let held = s.open.get(&ino).copied().unwrap_or(0);
        if count <= held {
            return;
        }
        let refs = self.open_refs.entry(ino).or_default();
        let more = (count - held).min(u32::MAX - *refs);
        *refs += more;
        *s.open.entry(ino).or_default() += more;
    }

    fn can_track_open(&self, ino: Inode) -> Result<(), Errno> {
        if self.open_refs.get(&ino).is_some_and(|&c| c == u32::MAX) {
            return Err(Errno::EMFILE);
        }
        Ok(())
    }

    fn release(&mut self, sid: SessionId, ino: Inode) -> Result<(), Errno> {
        let s = self.sessions.get_mut(&sid).ok_or(Errno::UNKNOWN_SESSION)?;
        let count = s.open.get_mut(&ino).ok_or(Errno::EBADF)?;
        *count -= 1;
        if *count == 0 {
            s.open.remove(&ino);
            self.drop_inode_locks(sid, ino);
        }
        self.drop_opens(ino, 1);
        Ok(())
    }

    /// `count` opens of `ino` are gone; free a sustained inode at the last.
    fn drop_opens(&mut self, ino: Inode, count: u32) {
        let Some(total) = self.open_refs.get_mut(&ino) else {
            return;
        };
        *total = total.saturating_sub(count);
        if *total == 0 {
            self.open_refs.remove(&ino);
            if self.sustained.remove(&ino) {
                self.free_inode(ino);
            }
        }
    }

    // ---- creating ---------------------------------------------------------------

    /// `may_create` and its lookup, in Linux's order: parent (ENOENT,
    /// ENOTDIR), name (EINVAL, ENAMETOOLONG), search permission (EACCES),
    /// existing name (EEXIST), write permission (EACCES).
    pub(crate) fn may_create(&self, cred: &Cred, parent: Inode, name: &[u8]) -> Result<(), Errno> {
        let dir = self.dir(parent)?;
        check_name(name)?;
        perm::access(dir, cred, MAY_EXEC)?;
        if Self::child(dir, name).is_some() {
            return Err(Errno::EEXIST);
        }
        perm::access(dir, cred, MAY_WRITE | MAY_EXEC)
    }

    /// A new inode for `parent`: mode filtered by umask, owner from `cred`,
    /// group (and SGID of directories) from a SGID parent, goal and trash time
    /// inherited. Fails only if inode numbers ran out or the parent can take
    /// no more subdirectories.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new_child(
        &self,
        cred: &Cred,
        parent: Inode,
        ftype: FileType,
        mode: u32,
        umask: u32,
        data: NodeData,
        t: Timespec,
    ) -> Result<Node, Errno> {
        let p = self.dir(parent)?;
        if self.next_inode == u64::MAX {
            return Err(Errno::ENOSPC);
        }
        let one = super::quota::Usage {
            inodes: 1,
            ..Default::default()
        };
        self.quota_check(&[parent], one, t.sec)?;
        let is_dir = ftype == FileType::Directory;
        if is_dir && p.nlink >= u32::MAX - 1 {
            return Err(Errno::EMLINK);
        }
        let mut node = Node::new(ftype, data, t);
        let keep = if is_dir { 0o1777 } else { MODE_MASK };
        node.mode = mode & keep & !umask;
        if let Some((m, xattrs)) = super::acl::inherited(p, ftype, mode & keep) {
            node.mode = m;
            for (k, v) in xattrs {
                node.xattrs.insert(k.to_vec(), v);
            }
        }
        node.uid = cred.uid;
        node.gid = cred.gid;
        if p.mode & S_ISGID != 0 {
            node.gid = p.gid;
            if is_dir {
                node.mode |= S_ISGID;
            } else if node.mode & (S_ISGID | S_IXGRP) == (S_ISGID | S_IXGRP)
                && !cred.is_root()
                && !cred.in_group(node.gid)
            {
                node.mode &= !S_ISGID;
            }
        }
        if is_dir {
            node.nlink = 2;
        }
        node.goal = p.goal;
        node.trash_time = p.trash_time;
        Ok(node)
    }

    /// Give `node` the next inode number and the name `name` in `parent`.
    /// Call only after `may_create` and `new_child` succeeded.
    pub(crate) fn insert_child(
        &mut self,
        parent: Inode,
        name: &[u8],
        node: Node,
        t: Timespec,
    ) -> Result<Attr, Errno> {
        let ino = Inode(self.next_inode);
        let attr = self.insert_child_at(parent, name, node, t, ino)?;
        self.next_inode += 1;
        Ok(attr)
    }

    /// [`Namespace::insert_child`] with inode number `ino`, which must be
    /// free and below `next_inode` (reserved earlier).
    pub(crate) fn insert_child_at(
        &mut self,
        parent: Inode,
        name: &[u8],
        node: Node,
        t: Timespec,
        ino: Inode,
    ) -> Result<Attr, Errno> {
        let is_dir = node.is_dir();
        let attr = node.attr(ino);
        let p = self.nodes.get_mut(&parent).ok_or(Errno::ENOENT)?;
        let entries = p.entries_mut().ok_or(Errno::ENOTDIR)?;
        entries.insert(name.to_vec(), ino);
        p.mtime = t;
        p.ctime = t;
        if is_dir {
            p.nlink = p.nlink.saturating_add(1);
        }
        self.nodes.insert(ino, node);
        self.index_name(parent, ino, true);
        self.charge_tree(parent, ino, true);
        Ok(attr)
    }

    #[allow(clippy::too_many_arguments)]
    fn mknod(
        &mut self,
        cred: &Cred,
        parent: Inode,
        name: &[u8],
        ftype: FileType,
        mode: u32,
        umask: u32,
        rdev: u32,
        t: Timespec,
    ) -> Result<Reply, Errno> {
        match ftype {
            FileType::Directory => return Err(Errno::EPERM),
            FileType::Symlink => return Err(Errno::EINVAL),
            _ => {}
        }
        self.may_create(cred, parent, name)?;
        let is_dev = matches!(ftype, FileType::BlockDev | FileType::CharDev);
        if is_dev && !cred.is_root() {
            return Err(Errno::EPERM);
        }
        let data = match ftype {
            FileType::Regular => NodeData::File { chunks: Vec::new() },
            _ => NodeData::Special,
        };
        let mut node = self.new_child(cred, parent, ftype, mode, umask, data, t)?;
        node.rdev = if is_dev { rdev } else { 0 };
        Ok(Reply::Attr(self.insert_child(parent, name, node, t)?))
    }

    fn symlink(
        &mut self,
        cred: &Cred,
        parent: Inode,
        name: &[u8],
        target: &[u8],
        t: Timespec,
    ) -> Result<Reply, Errno> {
        if target.is_empty() {
            return Err(Errno::ENOENT);
        }
        if target.len() > SYMLINK_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        if target.contains(&0) {
            return Err(Errno::EINVAL);
        }
        self.may_create(cred, parent, name)?;
        let data = NodeData::Symlink {
            target: target.to_vec(),
        };
        let mut node = self.new_child(cred, parent, FileType::Symlink, 0o777, 0, data, t)?;
        node.size = target.len() as u64;
        Ok(Reply::Attr(self.insert_child(parent, name, node, t)?))
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        sid: Option<SessionId>,
        cred: &Cred,
        parent: Inode,
        name: &[u8],
        mode: u32,
        umask: u32,
        exclusive: bool,
        t: Timespec,
    ) -> Result<Reply, Errno> {
        let dir = self.dir(parent)?;
        check_name(name)?;
        perm::access(dir, cred, MAY_EXEC)?;
        if let Some(existing) = Self::child(dir, name) {
            if exclusive {
                return Err(Errno::EEXIST);
            }
            return match self.node(existing)?.ftype {
                FileType::Directory => Err(Errno::EISDIR),
                FileType::Regular => self.open(sid, cred, existing, OpenMode::Write, false, t),
                _ => Err(Errno::EEXIST),
            };
        }
        perm::access(dir, cred, MAY_WRITE | MAY_EXEC)?;
        let data = NodeData::File { chunks: Vec::new() };
        let node = self.new_child(cred, parent, FileType::Regular, mode, umask, data, t)?;
        let attr = self.insert_child(parent, name, node, t)?;
        self.track_open(sid, attr.inode);
        Ok(Reply::Attr(attr))
    }

    /// open(2) of an existing inode: EISDIR to write a directory, ELOOP for a
    /// symlink, EACCES without the permission the mode (and truncate) needs.
    /// `truncate` empties a regular file and stamps mtime and ctime.
    fn open(
        &mut self,
        sid: Option<SessionId>,
        cred: &Cred,
        ino: Inode,
        mode: OpenMode,
        truncate: bool,
        t: Timespec,
    ) -> Result<Reply, Errno> {
        let node = self.open_checks(cred, ino, mode, truncate)?;
        if truncate && node.ftype == FileType::Regular {
            self.set_file_size(ino, 0);
            if let Some(n) = self.nodes.get_mut(&ino) {
                n.mtime = t;
                n.ctime = t;
            }
        }
        self.track_open(sid, ino);
        self.getattr(ino).map(Reply::Attr)
    }

    /// Everything `open` checks before it changes anything.
    fn open_checks(
        &self,
        cred: &Cred,
        ino: Inode,
        mode: OpenMode,
        truncate: bool,
    ) -> Result<&Node, Errno> {
        let node = self.node(ino)?;
        match node.ftype {
            FileType::Directory if mode.writes() || truncate => return Err(Errno::EISDIR),
            FileType::Symlink => return Err(Errno::ELOOP),
            _ => {}
        }
        let mut mask = 0;
        if mode.reads() {
            mask |= MAY_READ;
        }
        if mode.writes() || truncate {
            mask |= MAY_WRITE;
        }
        perm::access(node, cred, mask)?;
        if truncate {
            perm::may_change(node)?;
        }
        self.can_track_open(ino)?;
        Ok(node)
    }

    /// The attributes `apply(req)` would answer now, without changing
    /// anything, when `req` is an open without truncation of a client
    /// session that `apply` would carry out and that would succeed. Its
    /// only lasting effect is the open count, which matters to requests
    /// logged after it: so the leader may answer it from this and log it
    /// without waiting for the commit (see `MasterNode::open_before_commit`).
    /// `None` for anything else (retries, errors, other operations).
    pub fn preview_open(&self, req: &Request) -> Option<Attr> {
        let Op::Open {
            cred,
            inode,
            mode,
            truncate: false,
        } = &req.op
        else {
            return None;
        };
        let s = self.sessions.get(&req.session)?;
        if req.session == SessionId::NONE || req.seq <= s.acked || s.replies.contains_key(&req.seq)
        {
            return None;
        }
        // Opens answered from a preview and not yet applied do not count
        // here: keep far from the limit they could reach.
        if self
            .open_refs
            .get(inode)
            .is_some_and(|&c| c >= u32::MAX / 2)
        {
            return None;
        }
        let node = self.open_checks(cred, *inode, *mode, false).ok()?;
        Some(node.attr(*inode))
    }
}
