//! The namespace state: inodes, directory entries, sessions, open files, the
//! chunk table; and every read-only query on it.
//!
//! Everything is in ordered maps (BTreeMap/BTreeSet) so that the serialized
//! image, and anything iterated during apply, is the same on every replica.

use super::perm::{self, MAY_EXEC, MAY_READ};
use super::types::*;
use mfs_common::ids::{ChunkId, ChunkVersion, Inode, SessionId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

/// One inode. Attributes live here once, whatever the number of names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub ftype: FileType,
    /// Permission bits (low 12 bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    /// Length of a regular file; of a symlink, the target's length.
    pub size: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    pub rdev: u32,
    pub goal: u8,
    pub trash_time: u32,
    /// Extra attributes (`eattr` bits).
    pub eattr: u8,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    pub data: NodeData,
}

/// What an inode holds besides its attributes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeData {
    /// A directory: its parent (the root is its own parent) and its entries
    /// in byte order of names.
    Dir {
        parent: Inode,
        entries: BTreeMap<Vec<u8>, Inode>,
    },
    /// A regular file: chunk `i` holds bytes `[i * CHUNK_SIZE, (i+1) * CHUNK_SIZE)`;
    /// `None` is a hole.
    File {
        chunks: Vec<Option<ChunkId>>,
    },
    Symlink {
        target: Vec<u8>,
    },
    /// Fifo, socket or device.
    Special,
}

impl Node {
    pub(crate) fn new(ftype: FileType, data: NodeData, time: Timespec) -> Node {
        Node {
            ftype,
            mode: 0,
            uid: 0,
            gid: 0,
            nlink: 1,
            size: 0,
            atime: time,
            mtime: time,
            ctime: time,
            rdev: 0,
            goal: DEFAULT_GOAL,
            trash_time: DEFAULT_TRASH_TIME,
            eattr: 0,
            xattrs: BTreeMap::new(),
            data,
        }
    }

    pub fn is_dir(&self) -> bool {
        self.ftype == FileType::Directory
    }

    pub(crate) fn entries(&self) -> Option<&BTreeMap<Vec<u8>, Inode>> {
        match &self.data {
            NodeData::Dir { entries, .. } => Some(entries),
            _ => None,
        }
    }

    pub(crate) fn entries_mut(&mut self) -> Option<&mut BTreeMap<Vec<u8>, Inode>> {
        match &mut self.data {
            NodeData::Dir { entries, .. } => Some(entries),
            _ => None,
        }
    }

    pub(crate) fn dir_parent(&self) -> Option<Inode> {
        match &self.data {
            NodeData::Dir { parent, .. } => Some(*parent),
            _ => None,
        }
    }

    pub(crate) fn attr(&self, inode: Inode) -> Attr {
        let (size, blocks_bytes) = match self.ftype {
            FileType::Regular => (self.size, self.size.div_ceil(512).saturating_mul(512)),
            FileType::Directory => (4096, 4096),
            _ => (self.size, 0),
        };
        Attr {
            inode,
            ftype: self.ftype,
            mode: self.mode & MODE_MASK,
            uid: self.uid,
            gid: self.gid,
            nlink: self.nlink,
            size,
            atime: self.atime,
            mtime: self.mtime,
            ctime: self.ctime,
            rdev: self.rdev,
            goal: self.goal,
            trash_time: self.trash_time,
            blocks_bytes,
            eattr: self.eattr,
        }
    }
}

/// A chunk of the chunk table. Locations are soft state, kept elsewhere.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkInfo {
    pub version: ChunkVersion,
    /// Number of file slots pointing at it (snapshots share chunks).
    pub refcount: u32,
    pub goal: u8,
    /// No write has ended on it yet (allocated for a write in progress): with
    /// no copy anywhere it holds nothing acknowledged, and may be re-created
    /// empty rather than counted missing.
    pub fresh: bool,
}

/// A client session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Session {
    #[serde(with = "str_as_bytes")]
    pub info: String,
    /// Open count per inode.
    pub open: BTreeMap<Inode, u32>,
    /// Replies of requests with seq > acked, for retries.
    pub replies: BTreeMap<u64, Reply>,
    /// Highest sequence number the client has acknowledged.
    pub acked: u64,
    pub last_seen: Timespec,
}

/// The whole metadata state machine. Change it only through
/// [`Namespace::apply`]; read it through the `&self` methods.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    #[serde(with = "opt_str_as_bytes")]
    pub(crate) cluster_id: Option<String>,
    /// Next inode number to hand out; numbers are never reused.
    pub(crate) next_inode: u64,
    /// Next session id to hand out (never 0).
    pub(crate) next_session: u64,
    pub(crate) nodes: BTreeMap<Inode, Node>,
    pub(crate) sessions: BTreeMap<SessionId, Session>,
    /// Total open count per inode, over all sessions.
    pub(crate) open_refs: BTreeMap<Inode, u32>,
    /// Open but unlinked inodes (nlink 0), freed at their last release.
    pub(crate) sustained: BTreeSet<Inode>,
    pub(crate) chunks: BTreeMap<ChunkId, ChunkInfo>,
    /// Chunks no file refers to any more; the data path deletes them from
    /// the chunkservers and then removes them from this list.
    pub(crate) pending_chunk_deletes: Vec<ChunkId>,
    /// Next chunk id to hand out (never 0, never reused).
    pub(crate) next_chunk: u64,
    /// File locks per inode, sorted (see `locks`).
    pub(crate) locks: BTreeMap<Inode, Vec<super::locks::FileLock>>,
    /// Files in the trash (see `trash`). Fields from here on were added
    /// after image format 4: `image` reads older images as if they were
    /// empty.
    pub(crate) trash: BTreeMap<Inode, super::trash::TrashEntry>,
    /// Where each sustained inode was when its last name went.
    pub(crate) sustained_paths: BTreeMap<Inode, Vec<u8>>,
    /// Directory quotas with their usage (see `quota`).
    pub(crate) quotas: BTreeMap<Inode, super::quota::Quota>,
    /// The rights of sessions registered through an export (image format
    /// 6 on).
    pub(crate) session_rights: BTreeMap<SessionId, super::types::Rights>,
    /// Directories delegated to a session for write-back creates (image
    /// format 7 on; see `delegations`).
    pub(crate) delegations: BTreeMap<Inode, SessionId>,
    /// Inode numbers each session holds for its write-back creates:
    /// ranges `[start, end)`, oldest first.
    pub(crate) reserved: BTreeMap<SessionId, Vec<(u64, u64)>>,
    /// Chunk ids each session holds for the first chunks of files its
    /// mount makes in directories it holds (image format 8 on; see
    /// `delegations`).
    pub(crate) held_chunks: BTreeMap<SessionId, BTreeSet<ChunkId>>,
    /// Versions a leader recorded before ordering copies of a chunk to
    /// them, while above the chunk's committed version (image format 9 on;
    /// see `OrderChunkVersion`).
    pub(crate) versions_ordered: BTreeMap<ChunkId, u32>,
    /// (non-directory, directory) → names of it there: derived from the
    /// tree, kept up to date, rebuilt at load (not in images).
    #[serde(skip)]
    pub(crate) file_parents: BTreeMap<(Inode, Inode), u32>,
}

impl Default for Namespace {
    fn default() -> Self {
        Namespace::new()
    }
}

impl Namespace {
    /// A fresh namespace: an empty root directory (mode 0755, owned by root,
    /// times 0 until `SetClusterId` stamps them).
    pub fn new() -> Namespace {
        let mut root = Node::new(
            FileType::Directory,
            NodeData::Dir {
                parent: Inode::ROOT,
                entries: BTreeMap::new(),
            },
            Timespec::default(),
        );
        root.mode = 0o755;
        root.nlink = 2;
        let mut nodes = BTreeMap::new();
        nodes.insert(Inode::ROOT, root);
        Namespace {
            cluster_id: None,
            next_inode: Inode::ROOT.0 + 1,
            next_session: 1,
            nodes,
            sessions: BTreeMap::new(),
            open_refs: BTreeMap::new(),
            sustained: BTreeSet::new(),
            chunks: BTreeMap::new(),
            pending_chunk_deletes: Vec::new(),
            next_chunk: 1,
            locks: BTreeMap::new(),
            trash: BTreeMap::new(),
            sustained_paths: BTreeMap::new(),
            quotas: BTreeMap::new(),
            session_rights: BTreeMap::new(),
            delegations: BTreeMap::new(),
            reserved: BTreeMap::new(),
            held_chunks: BTreeMap::new(),
            versions_ordered: BTreeMap::new(),
            file_parents: BTreeMap::new(),
        }
    }

    pub(crate) fn node(&self, ino: Inode) -> Result<&Node, Errno> {
        self.nodes.get(&ino).ok_or(Errno::ENOENT)
    }

    /// The directory `ino`: ENOENT if absent, ENOTDIR if not a directory.
    pub(crate) fn dir(&self, ino: Inode) -> Result<&Node, Errno> {
        let n = self.node(ino)?;
        if !n.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        Ok(n)
    }

    /// The inode named `name` in directory node `dir`, if any.
    pub(crate) fn child(dir: &Node, name: &[u8]) -> Option<Inode> {
        dir.entries().and_then(|e| e.get(name).copied())
    }

    // ---- reads -------------------------------------------------------------

    pub fn getattr(&self, inode: Inode) -> Result<Attr, Errno> {
        Ok(self.node(inode)?.attr(inode))
    }

    /// Answers without a log entry a SetAttr that changes nothing: each
    /// field of `same` given is the value the inode has, and its ctime moved
    /// less than a second before `now`. That is the kernel writing back the
    /// times it keeps after a rename, link or unlink it has just made, or an
    /// archiver setting the owner a file it has just created already has.
    /// `None` means the change must go through the log: it changes
    /// something (a chown that would clear SUID/SGID does, or a chmod that
    /// would clear SGID), the inode's ctime is older, it is immutable or
    /// append-only, or the caller is not the owner (the apply answers with
    /// EPERM). A missing inode answers ENOENT, as the apply would.
    pub fn setattr_unchanged(
        &self,
        cred: &Cred,
        inode: Inode,
        same: &SameAttrs,
        now: Timespec,
    ) -> Option<Result<Attr, Errno>> {
        let node = match self.node(inode) {
            Ok(n) => n,
            Err(e) => return Some(Err(e)),
        };
        let nanos = |t: Timespec| i128::from(t.sec) * 1_000_000_000 + i128::from(t.nsec);
        let since_ctime = nanos(now) - nanos(node.ctime);
        let recent = (0..1_000_000_000).contains(&since_ctime);
        let chown = same.uid.is_some() || same.gid.is_some();
        let kills_bits = (chown && !node.is_dir() && node.mode & (S_ISUID | S_ISGID) != 0)
            || (same.mode.is_some()
                && node.mode & S_ISGID != 0
                && !cred.is_root()
                && !cred.in_group(node.gid));
        let frozen = node.eattr & (eattr::IMMUTABLE | eattr::APPENDONLY) != 0;
        let unchanged = same
            .mode
            .is_none_or(|m| m & MODE_MASK == node.mode & MODE_MASK)
            && same.uid.is_none_or(|u| u == node.uid)
            && same.gid.is_none_or(|g| g == node.gid)
            && same.mtime.is_none_or(|t| t == node.mtime);
        (unchanged && !kills_bits && !frozen && recent && perm::owner_or_root(node, cred))
            .then(|| Ok(node.attr(inode)))
    }

    /// Look `name` up in `parent` (needs search permission on `parent`).
    /// "." and ".." are answered too (".." of the root is the root).
    pub fn lookup(&self, cred: &Cred, parent: Inode, name: &[u8]) -> Result<Attr, Errno> {
        let dir = self.dir(parent)?;
        perm::access(dir, cred, MAY_EXEC)?;
        let ino = match name {
            b"." => parent,
            b".." => dir.dir_parent().unwrap_or(Inode::ROOT),
            _ => {
                check_name_chars(name)?;
                Self::child(dir, name).ok_or(Errno::ENOENT)?
            }
        };
        self.getattr(ino)
    }

    /// The target of symlink `inode`; EINVAL if it is not a symlink.
    pub fn readlink(&self, inode: Inode) -> Result<Vec<u8>, Errno> {
        match &self.node(inode)?.data {
            NodeData::Symlink { target } => Ok(target.clone()),
            _ => Err(Errno::EINVAL),
        }
    }

    /// Up to `limit` entries of directory `inode` whose names come strictly
    /// after `after` in byte order (`after` empty: from the start), and
    /// whether more follow. "." and ".." are not listed (the mount adds them).
    /// Needs read permission on the directory.
    pub fn readdir(
        &self,
        cred: &Cred,
        inode: Inode,
        after: &[u8],
        limit: usize,
        plus: bool,
    ) -> Result<(Vec<DirEntry>, bool), Errno> {
        let dir = self.dir(inode)?;
        perm::access(dir, cred, MAY_READ)?;
        let entries = dir.entries().ok_or(Errno::ENOTDIR)?;
        let mut out = Vec::new();
        let mut more = false;
        let range = entries.range::<[u8], _>((Bound::Excluded(after), Bound::Unbounded));
        for (name, &child) in range {
            if out.len() >= limit {
                more = true;
                break;
            }
            let Some(node) = self.nodes.get(&child) else {
                continue;
            };
            out.push(DirEntry {
                name: name.clone(),
                inode: child,
                ftype: node.ftype,
                attr: plus.then(|| node.attr(child)),
            });
        }
        Ok((out, more))
    }

    /// Value of extended attribute `name`; ENODATA if absent.
    pub fn getxattr(&self, cred: &Cred, inode: Inode, name: &[u8]) -> Result<Vec<u8>, Errno> {
        let node = self.node(inode)?;
        let ns = perm::xattr_name(name)?;
        perm::xattr_access(node, cred, ns, false)?;
        node.xattrs.get(name).cloned().ok_or(Errno::ENODATA)
    }

    /// Names of the extended attributes of `inode`, in byte order. Like Linux,
    /// no permission is needed; trusted.* names are shown to root only.
    pub fn listxattr(&self, cred: &Cred, inode: Inode) -> Result<Vec<Vec<u8>>, Errno> {
        let node = self.node(inode)?;
        Ok(node
            .xattrs
            .keys()
            .filter(|n| perm::xattr_listable(n, cred))
            .cloned()
            .collect())
    }

    /// Whether `inode` has any extended attribute at all (POSIX ACLs
    /// included, whoever may read them); false for a missing inode.
    pub fn has_xattrs(&self, inode: Inode) -> bool {
        self.nodes.get(&inode).is_some_and(|n| !n.xattrs.is_empty())
    }

    pub fn statfs(&self) -> StatFs {
        let mut s = StatFs {
            inodes: self.nodes.len() as u64,
            sustained: self.sustained.len() as u64,
            chunks: self.chunks.len() as u64,
            ..StatFs::default()
        };
        for node in self.nodes.values() {
            match node.ftype {
                FileType::Directory => s.dirs += 1,
                FileType::Regular => {
                    s.files += 1;
                    s.bytes = s.bytes.saturating_add(node.size);
                }
                _ => s.others += 1,
            }
        }
        s
    }

    /// Inodes in use.
    pub fn inode_count(&self) -> u64 {
        self.nodes.len() as u64
    }

    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    pub fn sessions(&self) -> Vec<SessionSummary> {
        self.sessions
            .iter()
            .map(|(&id, s)| SessionSummary {
                id,
                info: s.info.clone(),
                open_files: s.open.len(),
                last_seen: s.last_seen,
                cached_replies: s.replies.len(),
            })
            .collect()
    }

    /// The rights an export gave session `sid` (None: registered with no
    /// exports file, or unknown).
    pub fn session_rights(&self, sid: SessionId) -> Option<&super::types::Rights> {
        self.session_rights.get(&sid)
    }

    /// Whether `ino` is `top` or below it: a directory whose parents lead
    /// there, another inode with a name in such a directory, or one that
    /// session `sid` holds open (a file unlinked while open has no name).
    /// ENOENT for an unknown inode.
    pub fn is_within(&self, top: Inode, ino: Inode, sid: SessionId) -> Result<bool, Errno> {
        let node = self.node(ino)?;
        if top == Inode::ROOT || ino == top {
            return Ok(true);
        }
        let dir_within = |mut d: Inode| {
            // Each step goes up; the root is its own parent.
            for _ in 0..=self.nodes.len() {
                if d == top {
                    return true;
                }
                match self.nodes.get(&d).and_then(|n| n.dir_parent()) {
                    Some(p) if p != d => d = p,
                    _ => return false,
                }
            }
            false
        };
        if let Some(parent) = node.dir_parent() {
            return Ok(dir_within(parent));
        }
        let named_within = self
            .file_parents
            .range((ino, Inode(0))..=(ino, Inode(u64::MAX)))
            .any(|(&(_, dir), _)| dir_within(dir));
        let held = self
            .sessions
            .get(&sid)
            .is_some_and(|s| s.open.contains_key(&ino));
        Ok(named_within || held)
    }

    /// Open but unlinked inodes.
    pub fn sustained(&self) -> impl Iterator<Item = Inode> + '_ {
        self.sustained.iter().copied()
    }

    /// Chunks waiting to be deleted from the chunkservers.
    pub fn pending_chunk_deletes(&self) -> &[ChunkId] {
        &self.pending_chunk_deletes
    }

    pub fn chunk(&self, id: ChunkId) -> Option<&ChunkInfo> {
        self.chunks.get(&id)
    }

    /// The chunk table after `after` (from the start with `None`), in id
    /// order.
    pub fn chunk_table(
        &self,
        after: Option<ChunkId>,
    ) -> impl Iterator<Item = (ChunkId, &ChunkInfo)> + '_ {
        use std::ops::Bound::{Excluded, Unbounded};
        let from = after.map_or(Unbounded, Excluded);
        self.chunks.range((from, Unbounded)).map(|(id, c)| (*id, c))
    }

    /// The id the next allocated chunk will get: every id below it was
    /// handed out once (a copy of such an id absent from the table and from
    /// the pending deletes is garbage).
    pub fn next_chunk_id(&self) -> ChunkId {
        ChunkId(self.next_chunk)
    }

    /// The reply already given to request `seq` of `session`, if it is
    /// still kept (a retry must get it, and must not act again).
    pub fn cached_reply(&self, session: SessionId, seq: u64) -> Option<&Reply> {
        self.sessions.get(&session)?.replies.get(&seq)
    }

    /// Whether `session` is registered.
    pub fn has_session(&self, session: SessionId) -> bool {
        self.sessions.contains_key(&session)
    }

    /// Whether `session` has `inode` open.
    pub fn session_has_open(&self, session: SessionId, inode: Inode) -> bool {
        self.sessions
            .get(&session)
            .is_some_and(|s| s.open.contains_key(&inode))
    }

    /// Whether no session but `session` holds `inode` open.
    pub fn open_only_by(&self, session: SessionId, inode: Inode) -> bool {
        let all = self.open_refs.get(&inode).copied().unwrap_or(0);
        let own = self
            .sessions
            .get(&session)
            .and_then(|s| s.open.get(&inode))
            .copied()
            .unwrap_or(0);
        all <= own
    }

    /// Whether `cred` may change the size of `inode` (the SetAttr rule).
    /// access(2): may `cred` have `mask` (R=4, W=2, X=1) on `inode`, by
    /// its mode bits, ACL and extra attributes? EACCES, EPERM (immutable)
    /// or ENOENT.
    pub fn access(&self, cred: &Cred, inode: Inode, mask: u32) -> Result<(), Errno> {
        perm::access(self.node(inode)?, cred, mask & 7)
    }

    pub fn may_truncate(&self, cred: &Cred, inode: Inode) -> Result<(), Errno> {
        let node = self.node(inode)?;
        perm::may_change(node)?;
        perm::access(node, cred, perm::MAY_WRITE)
    }

    /// Whether `cred` may write `inode` (its mode bits), or `session` has it
    /// open and `cred` owns it (as a file created read-only stays writable
    /// through the descriptor that created it). The rule of `Op::WriteChunk`.
    pub fn may_write_data(
        &self,
        session: SessionId,
        cred: &Cred,
        inode: Inode,
    ) -> Result<(), Errno> {
        let node = self.node(inode)?;
        if node.eattr & eattr::IMMUTABLE != 0 {
            return Err(Errno::EPERM);
        }
        if perm::access(node, cred, perm::MAY_WRITE).is_ok() {
            return Ok(());
        }
        if self.session_has_open(session, inode) && perm::owner_or_root(node, cred) {
            return Ok(());
        }
        Err(Errno::EACCES)
    }

    /// The chunk list of regular file `inode`.
    pub fn file_chunks(&self, inode: Inode) -> Result<&[Option<ChunkId>], Errno> {
        match &self.node(inode)?.data {
            NodeData::File { chunks } => Ok(chunks),
            NodeData::Dir { .. } => Err(Errno::EISDIR),
            _ => Err(Errno::EINVAL),
        }
    }

    /// Check every structural invariant; a description of the first broken
    /// one. Used by tests after each operation and on a loaded image.
    pub fn check(&self) -> Result<(), String> {
        let root = self.nodes.get(&Inode::ROOT).ok_or("no root")?;
        if let Some(sid) = self
            .session_rights
            .keys()
            .find(|s| !self.sessions.contains_key(s))
        {
            return Err(format!("rights kept for session {sid}, which is gone"));
        }
        self.check_delegations()?;
        if root.dir_parent() != Some(Inode::ROOT) {
            return Err("root is not a directory that is its own parent".into());
        }
        let mut refs: BTreeMap<Inode, u32> = BTreeMap::new();
        let mut chunk_refs: BTreeMap<ChunkId, u32> = BTreeMap::new();
        for (&ino, node) in &self.nodes {
            if ino.0 == 0 || ino.0 >= self.next_inode {
                return Err(format!("inode {ino} out of range"));
            }
            if node.mode & !MODE_MASK != 0 {
                return Err(format!("inode {ino} has mode bits beyond 07777"));
            }
            let kind_ok = match &node.data {
                NodeData::Dir { .. } => node.ftype == FileType::Directory,
                NodeData::File { .. } => node.ftype == FileType::Regular,
                NodeData::Symlink { target } => {
                    node.ftype == FileType::Symlink && node.size == target.len() as u64
                }
                NodeData::Special => !matches!(
                    node.ftype,
                    FileType::Directory | FileType::Regular | FileType::Symlink
                ),
            };
            if !kind_ok {
                return Err(format!("inode {ino}: type and data disagree"));
            }
            if let NodeData::File { chunks } = &node.data {
                for c in chunks.iter().flatten() {
                    *chunk_refs.entry(*c).or_default() += 1;
                }
            }
            let Some(entries) = node.entries() else {
                continue;
            };
            let mut subdirs = 0u32;
            for (name, child) in entries {
                if check_name(name).is_err() {
                    return Err(format!("bad name {name:?} in {ino}"));
                }
                let c = self
                    .nodes
                    .get(child)
                    .ok_or_else(|| format!("entry {name:?} of {ino} points to absent {child}"))?;
                *refs.entry(*child).or_default() += 1;
                if c.is_dir() {
                    subdirs += 1;
                    if c.dir_parent() != Some(ino) {
                        return Err(format!("dir {child} does not point back to {ino}"));
                    }
                }
            }
            if node.nlink != 2 + subdirs {
                return Err(format!("dir {ino}: nlink {} != 2 + {subdirs}", node.nlink));
            }
        }
        for (&ino, node) in &self.nodes {
            let r = refs.get(&ino).copied().unwrap_or(0);
            if node.is_dir() {
                if ino != Inode::ROOT && r != 1 {
                    return Err(format!("dir {ino} has {r} names"));
                }
            } else if node.nlink != r {
                return Err(format!("inode {ino}: nlink {} but {r} names", node.nlink));
            }
            if ino != Inode::ROOT
                && r == 0
                && !self.sustained.contains(&ino)
                && !self.trash.contains_key(&ino)
            {
                return Err(format!("inode {ino} is orphaned"));
            }
        }
        // Directories form a tree hanging from the root (no cycles).
        let mut seen = 0usize;
        let mut stack = vec![Inode::ROOT];
        while let Some(d) = stack.pop() {
            seen += 1;
            if seen > self.nodes.len() {
                return Err("directory cycle".into());
            }
            if let Some(entries) = self.nodes.get(&d).and_then(Node::entries) {
                for child in entries.values() {
                    if self.nodes.get(child).is_some_and(Node::is_dir) {
                        stack.push(*child);
                    }
                }
            }
        }
        if seen != self.nodes.values().filter(|n| n.is_dir()).count() {
            return Err("unreachable directories".into());
        }
        for &ino in &self.sustained {
            let n = self.nodes.get(&ino).ok_or("absent sustained inode")?;
            if n.nlink != 0 || n.is_dir() || !self.open_refs.contains_key(&ino) {
                return Err(format!("sustained {ino} has links or no opener"));
            }
        }
        let mut opens: BTreeMap<Inode, u32> = BTreeMap::new();
        for (&id, s) in &self.sessions {
            if id.0 == 0 || id.0 >= self.next_session {
                return Err(format!("session {id} out of range"));
            }
            if s.replies.keys().any(|&seq| seq <= s.acked) {
                return Err(format!("session {id} keeps acknowledged replies"));
            }
            for (&ino, &c) in &s.open {
                if c == 0 || !self.nodes.contains_key(&ino) {
                    return Err(format!("session {id}: bad open entry {ino}"));
                }
                *opens.entry(ino).or_default() += c;
            }
        }
        if opens != self.open_refs {
            return Err("open_refs disagrees with sessions".into());
        }
        for (id, info) in &self.chunks {
            if id.0 == 0 || id.0 >= self.next_chunk {
                return Err(format!("chunk {id} out of range"));
            }
            if info.version.0 == 0 {
                return Err(format!("chunk {id} has version 0"));
            }
            if chunk_refs.get(id).copied().unwrap_or(0) != info.refcount {
                return Err(format!("chunk {id} refcount wrong"));
            }
        }
        if chunk_refs.keys().any(|id| !self.chunks.contains_key(id)) {
            return Err("file refers to an absent chunk".into());
        }
        self.check_locks()?;
        self.check_trash()?;
        self.check_quotas()?;
        Ok(())
    }
}

/// A name for a new or removed entry: EINVAL if empty, "." or "..", or
/// holding '/' or NUL; ENAMETOOLONG past 255 bytes.
pub fn check_name(name: &[u8]) -> Result<(), Errno> {
    if name == b"." || name == b".." {
        return Err(Errno::EINVAL);
    }
    check_name_chars(name)
}

fn check_name_chars(name: &[u8]) -> Result<(), Errno> {
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return Err(Errno::EINVAL);
    }
    if name.len() > NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    Ok(())
}

/// Strings are stored as byte sequences: serde then decodes them element by
/// element, so a corrupt length cannot make the decoder allocate gigabytes.
mod str_as_bytes {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(s: &str, ser: S) -> Result<S::Ok, S::Error> {
        s.as_bytes().to_vec().serialize(ser)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<String, D::Error> {
        let bytes = Vec::<u8>::deserialize(de)?;
        String::from_utf8(bytes).map_err(serde::de::Error::custom)
    }
}

mod opt_str_as_bytes {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(s: &Option<String>, ser: S) -> Result<S::Ok, S::Error> {
        s.as_ref().map(|s| s.as_bytes().to_vec()).serialize(ser)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
        match Option::<Vec<u8>>::deserialize(de)? {
            None => Ok(None),
            Some(b) => String::from_utf8(b)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}
