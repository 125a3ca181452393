//! Directory quotas (mfssetquota): soft and hard limits of inodes, length,
//! size and realsize of everything below a directory, as MooseFS's.
//!
//! Usage is kept per quota directory and changed with every change below
//! it (`charge`): a new or removed name, a move between directories, a
//! file's length or goal. A file counts once under each of its names, like
//! MooseFS's. What a file adds: 1 inode, its length, its size (the length
//! rounded up to 512 bytes, as `st_blocks`) and realsize (size × goal).
//! The quota directory itself is not counted.
//!
//! Limits: a change that would take a quota above a hard limit gets EDQUOT;
//! so does one above a soft limit that has been exceeded for longer than
//! the grace period. New inodes are checked exactly; file data through the
//! `room` given with each write lease (how far the file may grow), which
//! the mount enforces; a truncate that extends is checked here.
//!
//! To find the quotas above a file, the namespace keeps the parents of
//! every non-directory (`file_parents`, rebuilt at load, not in images).

use super::namespace::{Namespace, Node};
use super::types::*;
use mfs_common::ids::Inode;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Grace period of a soft limit unless set: 7 days, as MooseFS.
pub const DEFAULT_GRACE: u32 = 7 * 86400;

/// What a tree holds, as quotas count it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub inodes: u64,
    pub length: u64,
    pub size: u64,
    pub realsize: u64,
}

impl Usage {
    pub(crate) fn plus(self, o: Usage) -> Usage {
        Usage {
            inodes: self.inodes.saturating_add(o.inodes),
            length: self.length.saturating_add(o.length),
            size: self.size.saturating_add(o.size),
            realsize: self.realsize.saturating_add(o.realsize),
        }
    }

    fn minus(self, o: Usage) -> Usage {
        Usage {
            inodes: self.inodes.saturating_sub(o.inodes),
            length: self.length.saturating_sub(o.length),
            size: self.size.saturating_sub(o.size),
            realsize: self.realsize.saturating_sub(o.realsize),
        }
    }

    fn fields(&self) -> [u64; 4] {
        [self.inodes, self.length, self.size, self.realsize]
    }
}

/// Limits of one kind (soft or hard); `None`: no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub inodes: Option<u64>,
    pub length: Option<u64>,
    pub size: Option<u64>,
    pub realsize: Option<u64>,
}

impl Limits {
    fn fields(&self) -> [Option<u64>; 4] {
        [self.inodes, self.length, self.size, self.realsize]
    }

    pub fn is_empty(&self) -> bool {
        self.fields().iter().all(Option::is_none)
    }

    /// Whether `u` is above any limit.
    fn exceeded_by(&self, u: &Usage) -> bool {
        self.fields()
            .iter()
            .zip(u.fields())
            .any(|(l, v)| l.is_some_and(|l| v > l))
    }
}

/// The quota of one directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    pub soft: Limits,
    pub hard: Limits,
    /// Seconds a soft limit may stay exceeded before it acts as hard.
    pub grace: u32,
    /// When usage went above a soft limit (leader's seconds); `None`: not
    /// above.
    pub soft_since: Option<i64>,
    pub usage: Usage,
}

impl Quota {
    /// The limits in force at `now`: hard ones, and soft ones whose grace
    /// is over.
    fn in_force(&self, now: i64) -> [Option<u64>; 4] {
        let expired = self
            .soft_since
            .is_some_and(|s| s.saturating_add(i64::from(self.grace)) <= now);
        let mut l = self.hard.fields();
        if expired {
            for (h, s) in l.iter_mut().zip(self.soft.fields()) {
                *h = match (*h, s) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        l
    }
}

/// A quota as set by mfssetquota: the limits and grace period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaSetting {
    pub soft: Limits,
    pub hard: Limits,
    pub grace: u32,
}

/// What mfsdirinfo counts below a directory (itself included), each name
/// once, but each chunk once however many files share it (snapshots).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirStats {
    pub inodes: u64,
    pub dirs: u64,
    pub files: u64,
    /// Distinct chunks (holes are none).
    pub chunks: u64,
    /// Sum of the files' lengths.
    pub length: u64,
    /// Bytes one copy of the distinct chunks takes (each chunk's part of
    /// its file, rounded up to 512 bytes).
    pub size: u64,
    /// Size × each chunk's goal.
    pub realsize: u64,
}

/// What one inode adds to the quotas above it.
pub(crate) fn contrib(n: &Node) -> Usage {
    contrib_at(n, n.size)
}

/// What `n` would add with length `length`.
fn contrib_at(n: &Node, length: u64) -> Usage {
    if n.ftype != FileType::Regular {
        return Usage {
            inodes: 1,
            ..Usage::default()
        };
    }
    let size = length.div_ceil(512).saturating_mul(512);
    Usage {
        inodes: 1,
        length,
        size,
        realsize: size.saturating_mul(u64::from(n.goal)),
    }
}

impl Namespace {
    /// The quota directories at or above directory `dir`.
    pub(crate) fn quotas_above(&self, dir: Inode) -> Vec<Inode> {
        let mut out = Vec::new();
        if self.quotas.is_empty() {
            return out;
        }
        let mut cur = dir;
        for _ in 0..=self.nodes.len() {
            if self.quotas.contains_key(&cur) {
                out.push(cur);
            }
            if cur == Inode::ROOT {
                break;
            }
            match self.nodes.get(&cur).and_then(|n| n.dir_parent()) {
                Some(p) => cur = p,
                None => break,
            }
        }
        out
    }

    /// The directories holding names of non-directory `ino`, with how
    /// many names each.
    fn parents_of(&self, ino: Inode) -> Vec<(Inode, u32)> {
        self.file_parents
            .range((ino, Inode(0))..=(ino, Inode(u64::MAX)))
            .map(|(&(_, d), &n)| (d, n))
            .collect()
    }

    /// The quota directories above any name of `ino` (a directory: its own
    /// parent's), each once.
    fn quotas_of(&self, ino: Inode) -> BTreeSet<Inode> {
        let dirs = match self.nodes.get(&ino).and_then(|n| n.dir_parent()) {
            Some(p) => vec![p],
            None => self.parents_of(ino).into_iter().map(|(d, _)| d).collect(),
        };
        dirs.into_iter()
            .flat_map(|d| self.quotas_above(d))
            .collect()
    }

    /// What the tree of `ino` (itself included) adds to the quotas above.
    pub(crate) fn tree_usage(&self, ino: Inode) -> Usage {
        let mut total = Usage::default();
        let mut stack = vec![ino];
        while let Some(i) = stack.pop() {
            let Some(n) = self.nodes.get(&i) else {
                continue;
            };
            total = total.plus(contrib(n));
            if let Some(e) = n.entries() {
                stack.extend(e.values().copied());
            }
        }
        total
    }

    /// A name of `ino` was added to (`add`) or removed from directory
    /// `dir`: the parents index, for non-directories.
    pub(crate) fn index_name(&mut self, dir: Inode, ino: Inode, add: bool) {
        if self.nodes.get(&ino).is_none_or(|n| n.is_dir()) {
            return;
        }
        let key = (ino, dir);
        if add {
            *self.file_parents.entry(key).or_default() += 1;
        } else if let Some(c) = self.file_parents.get_mut(&key) {
            *c -= 1;
            if *c == 0 {
                self.file_parents.remove(&key);
            }
        }
    }

    /// The parents index built from the tree (at load).
    pub(crate) fn rebuild_file_parents(&mut self) {
        self.file_parents = self.scan_file_parents();
    }

    fn scan_file_parents(&self) -> BTreeMap<(Inode, Inode), u32> {
        let mut m: BTreeMap<(Inode, Inode), u32> = BTreeMap::new();
        for (&d, n) in &self.nodes {
            for &c in n.entries().into_iter().flat_map(|e| e.values()) {
                if self.nodes.get(&c).is_some_and(|n| !n.is_dir()) {
                    *m.entry((c, d)).or_default() += 1;
                }
            }
        }
        m
    }

    /// Quotas `qs` lose `sub` and gain `add`.
    fn adjust(&mut self, qs: &[Inode], sub: Usage, add: Usage) {
        for q in qs {
            if let Some(q) = self.quotas.get_mut(q) {
                q.usage = q.usage.minus(sub).plus(add);
            }
        }
    }

    /// The tree of `ino` gained (`add`) or lost a name in `dir`.
    pub(crate) fn charge_tree(&mut self, dir: Inode, ino: Inode, add: bool) {
        let qs = self.quotas_above(dir);
        if qs.is_empty() {
            return;
        }
        let u = self.tree_usage(ino);
        let none = Usage::default();
        if add {
            self.adjust(&qs, none, u);
        } else {
            self.adjust(&qs, u, none);
        }
    }

    /// The tree of `ino` moves from directory `from` to `to`: the quotas
    /// above one and not the other change.
    pub(crate) fn move_usage(&mut self, ino: Inode, from: Inode, to: Inode) {
        if from == to || self.quotas.is_empty() {
            return;
        }
        let (a, b) = (self.quotas_above(from), self.quotas_above(to));
        let lose: Vec<Inode> = a.iter().filter(|q| !b.contains(q)).copied().collect();
        let gain: Vec<Inode> = b.iter().filter(|q| !a.contains(q)).copied().collect();
        if lose.is_empty() && gain.is_empty() {
            return;
        }
        let (u, none) = (self.tree_usage(ino), Usage::default());
        self.adjust(&lose, u, none);
        self.adjust(&gain, none, u);
    }

    /// File `ino`'s length or goal changed from what gave `before`.
    pub(crate) fn recharge(&mut self, ino: Inode, before: Usage) {
        if self.quotas.is_empty() {
            return;
        }
        let Some(after) = self.nodes.get(&ino).map(contrib) else {
            return;
        };
        if after == before {
            return;
        }
        for (d, names) in self.parents_of(ino) {
            let qs = self.quotas_above(d);
            for _ in 0..names {
                self.adjust(&qs, before, after);
            }
        }
    }

    /// mfsdirinfo of `ino` (any type): see [`DirStats`].
    pub fn dir_stats(&self, ino: Inode) -> Result<DirStats, Errno> {
        self.node(ino)?;
        let mut st = DirStats::default();
        // chunk -> bytes of it in use (the most any sharing file covers).
        let mut chunks: BTreeMap<mfs_common::ids::ChunkId, u64> = BTreeMap::new();
        let mut stack = vec![ino];
        while let Some(i) = stack.pop() {
            let Some(n) = self.nodes.get(&i) else {
                continue;
            };
            st.inodes += 1;
            match &n.data {
                super::namespace::NodeData::Dir { entries, .. } => {
                    st.dirs += 1;
                    stack.extend(entries.values().copied());
                }
                super::namespace::NodeData::File { chunks: slots } => {
                    st.files += 1;
                    st.length = st.length.saturating_add(n.size);
                    for (k, c) in slots.iter().enumerate() {
                        let Some(c) = c else { continue };
                        let start = (k as u64).saturating_mul(CHUNK_SIZE);
                        let used = n.size.saturating_sub(start).min(CHUNK_SIZE);
                        let e = chunks.entry(*c).or_default();
                        *e = (*e).max(used);
                    }
                }
                _ => {}
            }
        }
        st.chunks = chunks.len() as u64;
        for (id, used) in chunks {
            let bytes = used.div_ceil(512).saturating_mul(512);
            let goal = self.chunks.get(&id).map_or(1, |c| u64::from(c.goal));
            st.size = st.size.saturating_add(bytes);
            st.realsize = st.realsize.saturating_add(bytes.saturating_mul(goal));
        }
        Ok(st)
    }

    /// EDQUOT if adding `add` under `dirs` would go past a limit in force
    /// at `now` of a quota above them.
    pub(crate) fn quota_check(&self, dirs: &[Inode], add: Usage, now: i64) -> Result<(), Errno> {
        if self.quotas.is_empty() {
            return Ok(());
        }
        let qs: BTreeSet<Inode> = dirs.iter().flat_map(|&d| self.quotas_above(d)).collect();
        for q in qs.iter().filter_map(|q| self.quotas.get(q)) {
            let after = q.usage.plus(add);
            let over = q
                .in_force(now)
                .iter()
                .zip(after.fields().iter().zip(add.fields()))
                .any(|(l, (&v, a))| a > 0 && l.is_some_and(|l| v > l));
            if over {
                return Err(Errno::EDQUOT);
            }
        }
        Ok(())
    }

    /// EDQUOT if moving the tree of `ino` from `from` to `to` would take a
    /// quota it enters past a limit.
    pub(crate) fn quota_check_move(
        &self,
        ino: Inode,
        from: Inode,
        to: Inode,
        now: i64,
    ) -> Result<(), Errno> {
        if from == to || self.quotas.is_empty() {
            return Ok(());
        }
        let a = self.quotas_above(from);
        let gained: Vec<Inode> = self
            .quotas_above(to)
            .into_iter()
            .filter(|q| !a.contains(q))
            .collect();
        if gained.is_empty() {
            return Ok(());
        }
        self.quota_check(&[to], self.tree_usage(ino), now)
    }

    /// EDQUOT if file `ino` growing to `size` bytes would take a quota
    /// above one of its names past a limit.
    pub(crate) fn quota_check_growth(&self, ino: Inode, size: u64, now: i64) -> Result<(), Errno> {
        let Some(n) = self.nodes.get(&ino) else {
            return Ok(());
        };
        let add = contrib_at(n, size).minus(contrib(n));
        let dirs: Vec<Inode> = self.parents_of(ino).into_iter().map(|(d, _)| d).collect();
        self.quota_check(&dirs, add, now)
    }

    /// How many bytes file `ino` may grow by before a limit in force at
    /// `now` of a quota above it is passed (`None`: no limit applies).
    pub fn quota_room(&self, ino: Inode, now: i64) -> Option<u64> {
        if self.quotas.is_empty() {
            return None;
        }
        let goal = u64::from(self.nodes.get(&ino)?.goal.max(1));
        let mut room: Option<u64> = None;
        for q in self
            .quotas_of(ino)
            .iter()
            .filter_map(|q| self.quotas.get(q))
        {
            let [_, length, size, realsize] = q.in_force(now);
            let u = &q.usage;
            let rooms = [
                length.map(|l| l.saturating_sub(u.length)),
                size.map(|l| l.saturating_sub(u.size)),
                realsize.map(|l| l.saturating_sub(u.realsize) / goal),
            ];
            for r in rooms.into_iter().flatten() {
                room = Some(room.map_or(r, |x| x.min(r)));
            }
        }
        room
    }

    /// After a change at `now`: the soft limits' clocks start when usage
    /// goes above one and stop when it is back under all.
    pub(crate) fn update_soft_times(&mut self, now: i64) {
        for q in self.quotas.values_mut() {
            let over = q.soft.exceeded_by(&q.usage);
            match (over, q.soft_since) {
                (true, None) => q.soft_since = Some(now),
                (false, Some(_)) => q.soft_since = None,
                _ => {}
            }
        }
    }

    /// mfssetquota / mfsdelquota (`None`): root only (EPERM), on a
    /// directory (ENOTDIR). A new quota counts what is below at once; a
    /// changed one keeps its usage. Replies `Reply::Ok`.
    pub(crate) fn set_quota(
        &mut self,
        cred: &Cred,
        ino: Inode,
        setting: Option<QuotaSetting>,
    ) -> Result<Reply, Errno> {
        if !cred.is_root() {
            return Err(Errno::EPERM);
        }
        if !self.node(ino)?.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        let Some(s) = setting.filter(|s| !s.soft.is_empty() || !s.hard.is_empty()) else {
            self.quotas.remove(&ino);
            return Ok(Reply::Ok);
        };
        if let Some(q) = self.quotas.get_mut(&ino) {
            q.soft = s.soft;
            q.hard = s.hard;
            q.grace = s.grace;
            return Ok(Reply::Ok);
        }
        let own = self.nodes.get(&ino).map(contrib).unwrap_or_default();
        let usage = self.tree_usage(ino).minus(own);
        self.quotas.insert(
            ino,
            Quota {
                soft: s.soft,
                hard: s.hard,
                grace: s.grace,
                soft_since: None,
                usage,
            },
        );
        Ok(Reply::Ok)
    }

    /// The path of quota directory `ino`.
    pub fn quota_path(&self, ino: Inode) -> Vec<u8> {
        self.dir_path(ino)
    }

    /// ENOENT unless inode `ino` exists.
    pub fn node_exists(&self, ino: Inode) -> Result<(), Errno> {
        self.node(ino).map(|_| ())
    }

    /// The quota of directory `ino`, if it has one.
    pub fn quota(&self, ino: Inode) -> Option<&Quota> {
        self.quotas.get(&ino)
    }

    /// Every quota with its directory's path.
    pub fn quotas(&self) -> Vec<(Inode, Vec<u8>, Quota)> {
        self.quotas
            .iter()
            .map(|(&ino, q)| (ino, self.dir_path(ino), q.clone()))
            .collect()
    }

    /// The quotas' and parents index's invariants, for `check`: usage
    /// equals a count from scratch.
    pub(crate) fn check_quotas(&self) -> Result<(), String> {
        if self.file_parents != self.scan_file_parents() {
            return Err("the parents index disagrees with the tree".into());
        }
        for (&ino, q) in &self.quotas {
            let n = self.nodes.get(&ino).ok_or("quota on an absent inode")?;
            if !n.is_dir() {
                return Err(format!("quota on non-directory {ino}"));
            }
            let want = self.tree_usage(ino).minus(contrib(n));
            if q.usage != want {
                return Err(format!(
                    "quota {ino}: usage {:?}, counted {want:?}",
                    q.usage
                ));
            }
        }
        Ok(())
    }
}
