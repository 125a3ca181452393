//! The trash: a regular file whose last name goes while its trash time is
//! above 0 is kept, chunks and all, until the trash time is over; the meta
//! mount lists it (`trash/`), puts it back where it was (`trash/undel/`),
//! lets a new path be written into it, or removes it for good. A file whose
//! last name goes while open and with trash time 0, or that leaves the
//! trash while open, is sustained until its last release.
//!
//! The path kept is the one the file had when its last name went (relative
//! to the root, no leading '/'), found by walking up the directories; it is
//! where undelete puts the file back, making missing directories.

use super::namespace::{check_name, Namespace, NodeData};
use super::types::*;
use mfs_common::ids::Inode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A file in the trash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrashEntry {
    /// Where the file was (and goes back to), relative to the root.
    pub path: Vec<u8>,
    /// When it leaves the trash for good (seconds, the leader's clock).
    pub expires: i64,
}

/// A trashed or sustained file, as listed for the meta mount.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedFile {
    pub inode: Inode,
    pub path: Vec<u8>,
    /// When it leaves the trash (0 for a sustained file).
    pub expires: i64,
    pub attr: Attr,
}

/// Most components a kept path has (deeper trees keep the last ones).
const MAX_PATH_DEPTH: usize = 4096;

impl Namespace {
    /// The path of name `name` in directory `parent`, relative to the root.
    pub(crate) fn path_of(&self, parent: Inode, name: &[u8]) -> Vec<u8> {
        let mut path = self.dir_path(parent);
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(name);
        path
    }

    /// The path of directory `dir` relative to the root ("" for the root).
    /// Costs one scan of each ancestor's entries (directories know their
    /// parent, not their name).
    pub(crate) fn dir_path(&self, dir: Inode) -> Vec<u8> {
        let mut parts: Vec<&[u8]> = Vec::new();
        let mut dir = dir;
        while dir != Inode::ROOT && parts.len() < MAX_PATH_DEPTH {
            let Some(up) = self.nodes.get(&dir).and_then(|n| n.dir_parent()) else {
                break;
            };
            let Some(entries) = self.nodes.get(&up).and_then(|n| n.entries()) else {
                break;
            };
            match entries.iter().find(|(_, &c)| c == dir) {
                Some((n, _)) => parts.push(n),
                None => break,
            }
            dir = up;
        }
        parts.reverse();
        parts.join(&b'/')
    }

    /// The last name of file `ino` went (from `parent`/`name`, already
    /// removed): to the trash (regular file, trash time above 0), sustained
    /// (open), or freed.
    pub(crate) fn unnamed(&mut self, ino: Inode, parent: Inode, name: &[u8], t: Timespec) {
        let Some(n) = self.nodes.get(&ino) else {
            return;
        };
        let trash_time = n.trash_time;
        let regular = n.ftype == FileType::Regular;
        if regular && trash_time > 0 {
            let path = self.path_of(parent, name);
            let expires = t.sec.saturating_add(i64::from(trash_time));
            self.trash.insert(ino, TrashEntry { path, expires });
        } else if self.open_refs.contains_key(&ino) {
            let path = self.path_of(parent, name);
            self.sustained.insert(ino);
            self.sustained_paths.insert(ino, path);
        } else {
            self.free_inode(ino);
        }
    }

    /// File `ino` leaves the trash for good: sustained while open, else
    /// freed with its chunks.
    fn purge(&mut self, ino: Inode) {
        let Some(entry) = self.trash.remove(&ino) else {
            return;
        };
        if self.open_refs.contains_key(&ino) {
            self.sustained.insert(ino);
            self.sustained_paths.insert(ino, entry.path);
        } else {
            self.free_inode(ino);
        }
    }

    /// Internal: the listed files whose trash time is over at `t` leave the
    /// trash (the others, undeleted or not yet due meanwhile, stay).
    pub(crate) fn purge_trash(&mut self, inodes: &[Inode], t: Timespec) -> Reply {
        for &ino in inodes {
            if self.trash.get(&ino).is_some_and(|e| e.expires <= t.sec) {
                self.purge(ino);
            }
        }
        Reply::Ok
    }

    /// The trash entry of `ino` for a change by `cred`: ENOENT when not in
    /// the trash, EPERM unless root or the owner.
    fn trash_entry(&self, cred: &Cred, ino: Inode) -> Result<&TrashEntry, Errno> {
        let e = self.trash.get(&ino).ok_or(Errno::ENOENT)?;
        let n = self.node(ino)?;
        if !cred.is_root() && cred.uid != n.uid {
            return Err(Errno::EPERM);
        }
        Ok(e)
    }

    /// rm in the meta mount's trash: the file leaves the trash now.
    pub(crate) fn trash_delete(&mut self, cred: &Cred, ino: Inode) -> Result<Reply, Errno> {
        self.trash_entry(cred, ino)?;
        self.purge(ino);
        Ok(Reply::Ok)
    }

    /// A path written into a trashed file: where undelete puts it. EINVAL
    /// for an empty path or a bad component ("." , "..", too long).
    pub(crate) fn set_trash_path(
        &mut self,
        cred: &Cred,
        ino: Inode,
        path: &[u8],
    ) -> Result<Reply, Errno> {
        self.trash_entry(cred, ino)?;
        let parts = split_path(path)?;
        let path = parts.join(&b'/');
        if let Some(e) = self.trash.get_mut(&ino) {
            e.path = path;
        }
        Ok(Reply::Ok)
    }

    /// mv into the meta mount's `trash/undel/`: the file goes back to its
    /// path, with any missing directory made (mode 0755, the file's owner);
    /// EEXIST when the name is taken, ENOTDIR when a component is not a
    /// directory, EPERM when the directory that gets a new entry is
    /// immutable. Replies the file's attributes.
    pub(crate) fn undelete(
        &mut self,
        cred: &Cred,
        ino: Inode,
        t: Timespec,
    ) -> Result<Reply, Errno> {
        let path = self.trash_entry(cred, ino)?.path.clone();
        let parts = split_path(&path)?;
        let Some((last, dirs)) = parts.split_last() else {
            return Err(Errno::EINVAL);
        };
        // Check first: how far the path exists, and that the name is free.
        let mut dir = Inode::ROOT;
        let mut existing = 0;
        for part in dirs {
            let d = self.dir(dir)?;
            match Self::child(d, part) {
                Some(c) if self.node(c)?.is_dir() => {
                    dir = c;
                    existing += 1;
                }
                Some(_) => return Err(Errno::ENOTDIR),
                None => break,
            }
        }
        let d = self.dir(dir)?;
        if existing == dirs.len() && Self::child(d, last).is_some() {
            return Err(Errno::EEXIST);
        }
        if d.eattr & eattr::IMMUTABLE != 0 {
            return Err(Errno::EPERM);
        }
        let missing = super::quota::Usage {
            inodes: (dirs.len() - existing) as u64,
            ..Default::default()
        };
        let file = self.node(ino).map(super::quota::contrib)?;
        self.quota_check(&[dir], file.plus(missing), t.sec)?;
        let owner = {
            let n = self.node(ino)?;
            Cred::user(n.uid, n.gid)
        };
        // Then change: missing directories, the name, the link count.
        for part in &dirs[existing..] {
            let data = NodeData::Dir {
                parent: dir,
                entries: BTreeMap::new(),
            };
            let node = self.new_child(&owner, dir, FileType::Directory, 0o755, 0, data, t)?;
            dir = self.insert_child(dir, part, node, t)?.inode;
        }
        self.trash.remove(&ino);
        let p = self.nodes.get_mut(&dir).ok_or(Errno::ENOENT)?;
        if let Some(e) = p.entries_mut() {
            e.insert(last.to_vec(), ino);
        }
        p.mtime = t;
        p.ctime = t;
        let n = self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        n.nlink = 1;
        n.ctime = t;
        let attr = n.attr(ino);
        self.index_name(dir, ino, true);
        self.charge_tree(dir, ino, true);
        Ok(Reply::Attr(attr))
    }

    /// Files in the trash (or, with `sustained`, the sustained ones) with
    /// inode numbers above `after`, at most `limit`.
    pub fn removed_files(&self, sustained: bool, after: Inode, limit: usize) -> Vec<RemovedFile> {
        let range = (std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded);
        let mut out = Vec::new();
        let mut add = |ino: Inode, path: &[u8], expires: i64| {
            if let Some(n) = self.nodes.get(&ino) {
                out.push(RemovedFile {
                    inode: ino,
                    path: path.to_vec(),
                    expires,
                    attr: n.attr(ino),
                });
            }
        };
        if sustained {
            for &ino in self.sustained.range(range).take(limit) {
                let path = self.sustained_paths.get(&ino).map_or(&[][..], |p| p);
                add(ino, path, 0);
            }
        } else {
            for (&ino, e) in self.trash.range(range).take(limit) {
                add(ino, &e.path, e.expires);
            }
        }
        out
    }

    /// Up to `limit` files whose trash time is over at `now_sec`.
    pub fn expired_trash(&self, now_sec: i64, limit: usize) -> Vec<Inode> {
        self.trash
            .iter()
            .filter(|(_, e)| e.expires <= now_sec)
            .map(|(&ino, _)| ino)
            .take(limit)
            .collect()
    }

    /// Files and bytes in the trash.
    pub fn trash_usage(&self) -> (u64, u64) {
        let (files, bytes, _) = self.trash_usage_after(None, usize::MAX);
        (files, bytes)
    }

    /// Files and bytes of at most `limit` trashed files, those numbered
    /// after `after` (all: `None`), and the last one counted, when any is
    /// left: a caller counts a big trash in parts, letting the master
    /// apply changes between them.
    pub fn trash_usage_after(
        &self,
        after: Option<Inode>,
        limit: usize,
    ) -> (u64, u64, Option<Inode>) {
        let from = match after {
            Some(i) => std::ops::Bound::Excluded(i),
            None => std::ops::Bound::Unbounded,
        };
        let (mut files, mut bytes, mut last) = (0u64, 0u64, None);
        for ino in self
            .trash
            .range((from, std::ops::Bound::Unbounded))
            .map(|(i, _)| *i)
        {
            if files as usize == limit {
                return (files, bytes, last);
            }
            files += 1;
            bytes = bytes.saturating_add(self.nodes.get(&ino).map_or(0, |n| n.size));
            last = Some(ino);
        }
        (files, bytes, None)
    }

    /// The trash's and sustained paths' invariants, for `check`.
    pub(crate) fn check_trash(&self) -> Result<(), String> {
        for ino in self.trash.keys() {
            let n = self.nodes.get(ino).ok_or("absent trashed inode")?;
            if n.nlink != 0 || n.ftype != FileType::Regular || self.sustained.contains(ino) {
                return Err(format!(
                    "trashed {ino} has links, is no file or is sustained"
                ));
            }
        }
        if self
            .sustained_paths
            .keys()
            .any(|i| !self.sustained.contains(i))
        {
            return Err("path kept for an inode that is not sustained".into());
        }
        Ok(())
    }
}

/// The components of a trash path ('/'-separated, empty ones skipped), each
/// a valid name; EINVAL for none or a bad one.
fn split_path(path: &[u8]) -> Result<Vec<&[u8]>, Errno> {
    let parts: Vec<&[u8]> = path
        .split(|&b| b == b'/')
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        return Err(Errno::EINVAL);
    }
    for p in &parts {
        check_name(p)?;
    }
    Ok(parts)
}
