//! The metadata operations of [`super::fs::MfsFs`], each run as a task: ask
//! the master, answer the kernel.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuser::{
    Errno, FileHandle, FopenFlags, Generation, INodeNo, RenameFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, TimeOrNow,
};
use mfs_proto::v1::{
    Attr, Credentials, FileType, LinkRequest, MkdirRequest, MknodRequest, RenameRequest,
    RmdirRequest, SetAttrRequest, SymlinkRequest, UnlinkRequest,
};

use super::convert::{self, errno, file_attr, NAME_MAX};
use super::fs::Shared;
use super::handles::{Entry, Listing};
use super::xattrs::Fetch;
use crate::error::ClientError;
use crate::io::Deferred;
use mfs_common::eattr;

/// The changes of one setattr call.
#[derive(Debug, Clone)]
pub struct AttrChange {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeOrNow>,
    pub mtime: Option<TimeOrNow>,
    /// The ctime the kernel keeps (sent with its time write-back).
    pub ctime: Option<std::time::SystemTime>,
}

/// Entries asked of the master per Readdir page.
const PAGE: u32 = 1000;

/// Checks a name the kernel hands over for a new or looked-up entry.
pub(crate) fn check_name(name: &[u8]) -> Result<(), Errno> {
    if name.len() > NAME_MAX {
        Err(Errno::ENAMETOOLONG)
    } else if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        Err(Errno::EINVAL)
    } else {
        Ok(())
    }
}

impl Shared {
    pub(crate) fn ro(&self) -> Result<(), Errno> {
        if self.settings.read_only {
            Err(Errno::EROFS)
        } else {
            Ok(())
        }
    }

    /// The kernel's attributes of `a`, from the reply to a call sent at
    /// `f` (which also tells whether the inode has xattrs: see `xattrs`).
    pub(crate) fn attr_of(&self, a: &Attr, f: Fetch) -> fuser::FileAttr {
        self.known.note(a);
        self.no_xattrs
            .note(a.inode, a.has_xattrs, self.attr_ttl(a), f);
        if a.r#type == FileType::Directory as i32 {
            self.no_entry_cache
                .note(a.inode, has_eattr(a, eattr::NOENTRYCACHE));
        }
        self.local_attr(a)
    }

    /// The fuser attributes of the master's `a` as this client sees them:
    /// with the length of its uncommitted writes and its kept changes.
    fn local_attr(&self, a: &Attr) -> fuser::FileAttr {
        if a.r#type != FileType::Regular as i32 {
            return file_attr(a, &self.map, None);
        }
        let (local, kept) = self.io.local_view(a.inode);
        let mut a = *a;
        // Changes kept for the commit show here before the master has them.
        if let Some(d) = kept {
            if let Some(m) = d.mode {
                a.mode = (a.mode & !0o7777) | m;
            }
            a.atime = d.atime.or(a.atime);
            a.mtime = d.mtime.or(a.mtime);
        }
        file_attr(&a, &self.map, local)
    }

    /// How long the kernel may keep `a`'s attributes: not at all with the
    /// `noattrcache` extra attribute.
    pub(crate) fn attr_ttl(&self, a: &Attr) -> Duration {
        if has_eattr(a, eattr::NOATTRCACHE) {
            Duration::ZERO
        } else {
            self.settings.attr_ttl
        }
    }

    /// How long the kernel may keep the name of `a` in directory `parent`
    /// (master inode): not at all when either has `noentrycache`.
    pub(crate) fn entry_ttl(&self, parent: u64, a: &Attr, ttl: Duration) -> Duration {
        if has_eattr(a, eattr::NOENTRYCACHE) || self.no_entry_cache.contains(parent) {
            Duration::ZERO
        } else {
            ttl
        }
    }

    /// The generation to give the kernel with an entry of `a` (see
    /// `sizes`): a new one for a file another client changed the length
    /// of, when nothing of it is open here and no write of ours waits.
    pub(crate) fn generation(&self, a: &Attr) -> u64 {
        self.sizes.entry(a, || {
            !self.handles.is_open(a.inode) && self.io.settled(a.inode)
        })
    }

    /// Answers a lookup (or a call that made a name) of `a` in `parent`,
    /// asked of the master at `f`.
    pub(crate) fn reply_entry(
        &self,
        parent: u64,
        r: Result<Attr, ClientError>,
        f: Fetch,
        reply: ReplyEntry,
    ) {
        match r {
            Ok(a) => reply.entry_with_ttls(
                &self.attr_ttl(&a),
                &self.entry_ttl(parent, &a, self.settings.entry_ttl),
                &self.attr_of(&a, f),
                Generation(self.generation(&a)),
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    pub(crate) async fn lookup(
        &self,
        cred: Credentials,
        parent: INodeNo,
        name: Vec<u8>,
        reply: ReplyEntry,
    ) {
        if let Err(e) = check_name(&name) {
            return reply.error(e);
        }
        let parent = self.map.to_master(parent);
        let f = self.no_xattrs.fetch();
        match self.wb.lookup(&self.master, &cred, parent, &name) {
            super::writeback::Local::Absent => return reply.error(Errno::ENOENT),
            // (Unless writes of it wait for their commit.)
            super::writeback::Local::Made(a, long) if self.io.settled(a.inode) => {
                // A name in a directory held here may be kept long (see
                // `entries`).
                let ttl = match long {
                    true => super::entries::HELD_ENTRY_TTL.max(self.settings.entry_ttl),
                    false => self.settings.entry_ttl,
                };
                return reply.entry_with_ttls(
                    &self.attr_ttl(&a),
                    &self.entry_ttl(parent, &a, ttl),
                    &self.attr_of(&a, f),
                    Generation(self.generation(&a)),
                );
            }
            super::writeback::Local::Made(..) | super::writeback::Local::Ask => {}
        }
        let r = self.master.lookup(&cred, parent, &name).await;
        self.reply_entry(parent, r, f, reply);
    }

    pub(crate) async fn getattr(&self, ino: INodeNo, reply: ReplyAttr) {
        let inode = self.map.to_master(ino);
        if self.io.pristine(inode) {
            // A file this mount made and has committed nothing of since:
            // what the master answered within the attribute cache time
            // still holds, with this client's changes on top. (The kernel
            // asks again before a chown, to clear SUID bits; tar chowns
            // every file it makes.) Not to be cached by the kernel.
            let known = self.known.recent(inode, self.settings.attr_ttl);
            if let Some(a) = known.filter(|a| !self.attr_ttl(a).is_zero()) {
                return reply.attr(&Duration::ZERO, &self.local_attr(&a));
            }
        }
        if let Some(a) = self.wb.made_attr(&self.master, inode) {
            return reply.attr(&self.attr_ttl(&a), &self.local_attr(&a));
        }
        let f = self.no_xattrs.fetch();
        if let Some(a) = self.wb.dir_attr(&self.master, inode) {
            return reply.attr(&self.attr_ttl(&a), &self.attr_of(&a, f));
        }
        match self.master.getattr(inode).await {
            Ok(a) => reply.attr(&self.attr_ttl(&a), &self.attr_of(&a, f)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    pub(crate) async fn setattr(
        &self,
        cred: Credentials,
        ino: INodeNo,
        c: AttrChange,
        reply: ReplyAttr,
    ) {
        if let Err(e) = self.ro() {
            return reply.error(e);
        }
        let inode = self.map.to_master(ino);
        let mut req = SetAttrRequest {
            id: None,
            cred: Some(cred),
            inode,
            mode: c.mode.map(|m| m & 0o7777),
            uid: c.uid,
            gid: c.gid,
            size: c.size,
            atime: None,
            mtime: None,
            atime_now: false,
            mtime_now: false,
        };
        match c.atime {
            Some(TimeOrNow::Now) => req.atime_now = true,
            Some(TimeOrNow::SpecificTime(t)) => req.atime = Some(convert::timespec(t)),
            None => {}
        }
        match c.mtime {
            Some(TimeOrNow::Now) => req.mtime_now = true,
            Some(TimeOrNow::SpecificTime(t)) => req.mtime = Some(convert::timespec(t)),
            None => {}
        }
        if let Some(a) = self.wb.set_attr_here(&self.master, &req) {
            // A directory held here: queued for the master.
            let f = self.no_xattrs.fetch();
            return reply.attr(&self.attr_ttl(&a), &self.attr_of(&a, f));
        }
        let change = self.wb.attr_change(&self.master, inode);
        let may_defer = self.io.may_defer(inode);
        if let (Some(mtime), true, false) = (req.mtime, only_mtime(&c), may_defer) {
            // The kernel's time write-back after a rename, link or unlink.
            let fresh = super::known_attrs::FRESH;
            if let Some(a) = self.known.time_writeback(inode, &mtime, c.ctime, fresh) {
                let attr = convert::file_attr(&a, &self.map, None);
                return reply.attr(&Duration::ZERO, &attr);
            }
        }
        if may_defer && c.size.is_none() {
            let ctime = c.ctime.map(convert::timespec);
            if let Some((a, f)) = self.defer_setattr(&req, ctime).await {
                return reply.attr(&self.attr_ttl(&a), &self.attr_of(&a, f));
            }
        }
        if c.size.is_some() || self.io.deferred(inode).is_some() {
            // Commit what was written (and the changes kept with it) first:
            // a late length commit cannot undo the truncate, and the master
            // checks this change against the attributes the caller saw.
            if let Err(e) = self.io.flush(inode).await {
                return reply.error(errno(&e));
            }
        }
        if c.mode.is_some() {
            // A chmod rewrites the mask of an access ACL: forget what is
            // known, the reply says what is there after it.
            self.no_xattrs.changing(inode);
        }
        let f = self.no_xattrs.fetch();
        self.wb.unknown(inode);
        // No block goes to the kernel's pages while the length changes.
        let _writer = c.size.and_then(|_| self.pages_writer(inode));
        let r = self.master.setattr(req).await;
        if c.size.is_some() {
            self.io.invalidate(inode);
        }
        match r {
            Ok(a) => {
                change.done(&a);
                if c.size.is_some() {
                    self.sizes.set(inode, a.size);
                }
                reply.attr(&self.attr_ttl(&a), &self.attr_of(&a, f))
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    pub(crate) async fn readlink(&self, ino: INodeNo, reply: ReplyData) {
        match self.master.readlink(self.map.to_master(ino)).await {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(&e)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn mknod(
        &self,
        cred: Credentials,
        parent: INodeNo,
        name: Vec<u8>,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        if let Err(e) = self.ro().and_then(|_| check_name(&name)) {
            return reply.error(e);
        }
        let Some(kind) = convert::type_of_mode(mode) else {
            return reply.error(Errno::EINVAL);
        };
        let req = MknodRequest {
            id: None,
            cred: Some(cred),
            parent: self.map.to_master(parent),
            name,
            r#type: kind as i32,
            mode: mode & 0o7777,
            umask,
            rdev,
        };
        let f = self.no_xattrs.fetch();
        let named = req.name.clone();
        let r = self.master.mknod(req).await;
        if let Ok(a) = &r {
            self.wb.note(self.map.to_master(parent), &named, Some(a));
        }
        self.reply_entry(self.map.to_master(parent), r, f, reply);
    }

    pub(crate) async fn mkdir(
        &self,
        cred: Credentials,
        parent: INodeNo,
        name: Vec<u8>,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        if let Err(e) = self.ro().and_then(|_| check_name(&name)) {
            return reply.error(e);
        }
        let req = MkdirRequest {
            id: None,
            cred: Some(cred),
            parent: self.map.to_master(parent),
            name,
            mode: mode & 0o7777,
            umask,
        };
        let f = self.no_xattrs.fetch();
        let named = req.name.clone();
        let parent = self.map.to_master(parent);
        if let Some(cred) = &req.cred {
            if let Some(r) = self
                .wb
                .mkdir(&self.master, cred, parent, &named, req.mode, umask)
                .await
            {
                return match r {
                    Ok(a) => self.reply_entry(parent, Ok(a), f, reply),
                    Err(e) => reply.error(e),
                };
            }
        }
        let r = self.master.mkdir(req).await;
        if let Ok(a) = &r {
            self.wb.note(parent, &named, Some(a));
        }
        self.reply_entry(parent, r, f, reply);
    }

    /// unlink, or rmdir when `dir`.
    pub(crate) async fn unlink(
        &self,
        cred: Credentials,
        parent: INodeNo,
        name: Vec<u8>,
        dir: bool,
        reply: ReplyEmpty,
    ) {
        if let Err(e) = self.ro().and_then(|_| check_name(&name)) {
            return reply.error(e);
        }
        let parent = self.map.to_master(parent);
        if let Some(r) = self
            .wb
            .unlink(&self.master, &cred, parent, &name, dir)
            .await
        {
            return match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            };
        }
        let named = name.clone();
        let r = if dir {
            self.master
                .rmdir(RmdirRequest {
                    id: None,
                    cred: Some(cred),
                    parent,
                    name,
                })
                .await
        } else {
            self.master
                .unlink(UnlinkRequest {
                    id: None,
                    cred: Some(cred),
                    parent,
                    name,
                })
                .await
        };
        match r {
            Ok(()) => {
                self.wb.note(parent, &named, None);
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    pub(crate) async fn symlink(
        &self,
        cred: Credentials,
        parent: INodeNo,
        name: Vec<u8>,
        target: Vec<u8>,
        reply: ReplyEntry,
    ) {
        if let Err(e) = self.ro().and_then(|_| check_name(&name)) {
            return reply.error(e);
        }
        if target.len() >= 4096 {
            return reply.error(Errno::ENAMETOOLONG);
        }
        let req = SymlinkRequest {
            id: None,
            cred: Some(cred),
            parent: self.map.to_master(parent),
            name,
            target,
        };
        let f = self.no_xattrs.fetch();
        let named = req.name.clone();
        let r = self.master.symlink(req).await;
        if let Ok(a) = &r {
            self.wb.note(self.map.to_master(parent), &named, Some(a));
        }
        self.reply_entry(self.map.to_master(parent), r, f, reply);
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn rename(
        &self,
        cred: Credentials,
        parent: INodeNo,
        name: Vec<u8>,
        newparent: INodeNo,
        newname: Vec<u8>,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if let Err(e) = self
            .ro()
            .and_then(|_| check_name(&name))
            .and_then(|_| check_name(&newname))
        {
            return reply.error(e);
        }
        let known = RenameFlags::RENAME_NOREPLACE | RenameFlags::RENAME_EXCHANGE;
        if !known.contains(flags) {
            // RENAME_WHITEOUT (overlayfs) and unknown bits.
            return reply.error(Errno::EINVAL);
        }
        let (noreplace, exchange) = (
            flags.contains(RenameFlags::RENAME_NOREPLACE),
            flags.contains(RenameFlags::RENAME_EXCHANGE),
        );
        let (p, np) = (self.map.to_master(parent), self.map.to_master(newparent));
        let here = self
            .wb
            .rename(
                &self.master,
                &cred,
                (p, &name),
                (np, &newname),
                noreplace,
                exchange,
            )
            .await;
        if let Some(r) = here {
            return match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            };
        }
        let req = RenameRequest {
            id: None,
            cred: Some(cred),
            parent: p,
            name,
            new_parent: np,
            new_name: newname,
            noreplace,
            exchange,
        };
        let (from, to, exchange) = (
            (req.parent, req.name.clone()),
            (req.new_parent, req.new_name.clone()),
            req.exchange,
        );
        match self.master.rename(req).await {
            Ok(()) => {
                let (from, to) = ((from.0, &from.1[..]), (to.0, &to.1[..]));
                self.wb.note_rename(&self.master, from, to, exchange);
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    pub(crate) async fn link(
        &self,
        cred: Credentials,
        ino: INodeNo,
        newparent: INodeNo,
        newname: Vec<u8>,
        reply: ReplyEntry,
    ) {
        if let Err(e) = self.ro().and_then(|_| check_name(&newname)) {
            return reply.error(e);
        }
        self.wb.linked(self.map.to_master(ino));
        let req = LinkRequest {
            id: None,
            cred: Some(cred),
            inode: self.map.to_master(ino),
            new_parent: self.map.to_master(newparent),
            new_name: newname,
        };
        let f = self.no_xattrs.fetch();
        let named = req.new_name.clone();
        let r = self.master.link(req).await;
        if let Ok(a) = &r {
            self.wb.note(self.map.to_master(newparent), &named, Some(a));
        }
        self.reply_entry(self.map.to_master(newparent), r, f, reply);
    }

    /// The whole listing of directory `inode`, "." and ".." first.
    async fn listing(
        &self,
        cred: &Credentials,
        ino: INodeNo,
        plus: bool,
    ) -> Result<Arc<Listing>, ClientError> {
        let inode = self.map.to_master(ino);
        let max_age = self.settings.direntry_ttl.min(self.settings.attr_ttl);
        let changes = self.master.changes();
        let held = self.wb.holds(&self.master, inode);
        if held {
            if let Some(l) = self.recent.get(inode, plus, cred, changes, max_age) {
                return Ok(l);
            }
            if let Some(l) = self.listing_here(cred, inode, plus) {
                return Ok(l);
            }
        }
        // Taken before the first page: attributes count as fetched no
        // later than they were.
        let fetched = self.no_xattrs.fetch();
        let at = Instant::now();
        let (entries, dir) = self.master.readdir_all(cred, inode, plus, PAGE).await?;
        let out: Vec<Entry> = entries
            .into_iter()
            .map(|e| Entry {
                name: e.name,
                inode: e.inode,
                kind: e.r#type,
                attr: e.attr,
                fetched,
            })
            .collect();
        // The directory's own attributes came with the last page (as
        // fetched as the entries'), or from a GetAttr of an older master.
        let (dot_attr, fetched) = match (plus, dir) {
            (true, Some(a)) => (Some(a), fetched),
            (true, None) => {
                let f = self.no_xattrs.fetch();
                (Some(self.master.getattr(inode).await?), f)
            }
            (false, _) => (None, fetched),
        };
        let dir = FileType::Directory as i32;
        let mut all = Vec::with_capacity(out.len() + 2);
        for name in [&b"."[..], &b".."[..]] {
            all.push(Entry {
                name: name.to_vec(),
                inode,
                kind: dir,
                attr: dot_attr,
                fetched,
            });
        }
        all.extend(out);
        let all = Arc::new(Listing { entries: all, at });
        if held && self.wb.holds(&self.master, inode) {
            let list = Arc::clone(&all);
            self.recent.put(inode, plus, cred, changes, list, max_age);
        }
        Ok(all)
    }

    /// The listing of `inode`, a directory held here, from what the mount
    /// knows (see [`WriteBack::listing`]), when the caller may read it.
    fn listing_here(&self, cred: &Credentials, inode: u64, plus: bool) -> Option<Arc<Listing>> {
        let fetched = self.no_xattrs.fetch();
        let at = Instant::now();
        let (own, names) = self.wb.listing(&self.master, inode)?;
        if !super::writeback::may_read_dir(&own, cred) {
            return None;
        }
        let dir = FileType::Directory as i32;
        let dots = [&b"."[..], &b".."[..]].map(|name| Entry {
            name: name.to_vec(),
            inode,
            kind: dir,
            attr: plus.then_some(own),
            fetched,
        });
        let entries = dots
            .into_iter()
            .chain(names.into_iter().map(|(name, a)| Entry {
                name,
                inode: a.inode,
                kind: a.r#type,
                attr: plus.then_some(a),
                fetched,
            }));
        Some(Arc::new(Listing {
            entries: entries.collect(),
            at,
        }))
    }

    pub(crate) async fn opendir(&self, cred: Credentials, ino: INodeNo, reply: ReplyOpen) {
        // Read the first listing now, so that open(2) on a directory the
        // caller may not read fails there, as on Linux.
        let fh = self.handles.add_dir();
        let plus = self.plus.load(Ordering::Relaxed);
        match self.listing(&cred, ino, plus).await {
            Ok(list) => {
                if let Some(d) = self.handles.dir(fh) {
                    *d.listing.lock().await = Some(list);
                }
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => {
                self.handles.remove(fh);
                reply.error(errno(&e));
            }
        }
    }

    /// The listing to serve from `offset`: the one read at opendir, or a
    /// fresh one when reading starts over (rewinddir).
    async fn entries_from(
        &self,
        cred: &Credentials,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        plus: bool,
    ) -> Result<Arc<Listing>, Errno> {
        let Some(d) = self.handles.dir(fh.0) else {
            return Err(Errno::EBADF);
        };
        let mut slot = d.listing.lock().await;
        match &*slot {
            Some(list) if offset > 0 || !d.was_read() => {
                d.mark_read();
                Ok(Arc::clone(list))
            }
            _ => {
                let list = self.listing(cred, ino, plus).await.map_err(|e| errno(&e))?;
                *slot = Some(Arc::clone(&list));
                d.mark_read();
                Ok(list)
            }
        }
    }

    pub(crate) async fn readdir(
        &self,
        cred: Credentials,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let list = match self.entries_from(&cred, ino, fh, offset, false).await {
            Ok(l) => l,
            Err(e) => return reply.error(e),
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, e) in list.entries.iter().enumerate().skip(start) {
            let Some(name) = os_name(&e.name) else {
                continue;
            };
            if reply.add(
                self.map.to_kernel(e.inode),
                i as u64 + 1,
                convert::file_type(e.kind),
                &name,
            ) {
                break;
            }
        }
        reply.ok();
    }

    pub(crate) async fn readdirplus(
        &self,
        cred: Credentials,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let list = match self.entries_from(&cred, ino, fh, offset, true).await {
            Ok(l) => l,
            Err(e) => return reply.error(e),
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        // fuser gives a readdirplus entry one time for both its name and
        // its attributes: the shorter of the two caches, so attributes are
        // never kept longer than MFSATTRCACHETO says.
        // (A listing served again: what is left of the time.)
        let ttl = self.settings.direntry_ttl.min(self.settings.attr_ttl);
        let ttl = ttl.saturating_sub(list.at.elapsed());
        let dir = self.map.to_master(ino);
        for (i, e) in list.entries.iter().enumerate().skip(start) {
            let Some(name) = os_name(&e.name) else {
                continue;
            };
            let (attr, fetched) = match &e.attr {
                Some(a) => (*a, e.fetched),
                // A master that left attributes out: fetch them.
                None => {
                    let f = self.no_xattrs.fetch();
                    match self.master.getattr(e.inode).await {
                        Ok(a) => (a, f),
                        Err(_) => continue,
                    }
                }
            };
            if reply.add(
                self.map.to_kernel(e.inode),
                i as u64 + 1,
                &name,
                &self.entry_ttl(dir, &attr, self.attr_ttl(&attr).min(ttl)),
                &self.attr_of(&attr, fetched),
                // The kernel does not take a new generation from a listing
                // of a name it has (a lookup gives one: see `sizes`).
                Generation(self.sizes.generation(e.inode)),
            ) {
                break;
            }
        }
        reply.ok();
    }

    pub(crate) async fn statfs(&self, reply: ReplyStatfs) {
        match self.master.statfs().await {
            Ok(s) => super::convert::reply_statfs(&s, reply),
            Err(e) => reply.error(errno(&e)),
        }
    }

    pub(crate) async fn access(
        &self,
        cred: Credentials,
        ino: INodeNo,
        mask: u32,
        reply: ReplyEmpty,
    ) {
        if mask & (libc::W_OK as u32) != 0 && self.settings.read_only {
            return reply.error(Errno::EROFS);
        }
        if let Err(e) = self.settle(self.map.to_master(ino)).await {
            return reply.error(e);
        }
        match self
            .master
            .access(&cred, self.map.to_master(ino), mask)
            .await
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

impl Shared {
    /// Commits the attribute changes kept for `inode` (see
    /// `defer_setattr`) before a call the master answers from them: an
    /// open, access, an xattr change (an ACL's mask is the mode's group
    /// bits).
    pub(crate) async fn settle(&self, inode: u64) -> Result<(), Errno> {
        if self.io.deferred(inode).is_some() {
            self.io.flush(inode).await.map_err(|e| errno(&e))?;
        }
        Ok(())
    }

    /// Keeps the change `req` for the commit of the file's writes (see
    /// `FileIo::defer_attrs`) when the master would surely accept it: a
    /// regular file, changed by its owner or root, with explicit times (a
    /// time set to now is the master's), no immutable or appendonly flag
    /// (but for a lone mtime, as before a flush), and for a chmod or chown
    /// no ACL or other xattr, no SUID/SGID bit before or after, and owner
    /// and group left as they are (tar's fchown to who made the file:
    /// answered here, nothing to keep). The master's attributes of the
    /// file and when they were asked, or `None`: send it.
    async fn defer_setattr(
        &self,
        req: &SetAttrRequest,
        ctime: Option<mfs_proto::v1::Timespec>,
    ) -> Option<(Attr, Fetch)> {
        if req.atime_now || req.mtime_now || req.size.is_some() {
            return None;
        }
        let carried = req.mode.is_some() || req.atime.is_some();
        if carried && !self.master.commits_attributes() {
            // An older master: only the mtime rides on WriteChunkEnd.
            return None;
        }
        let f = self.no_xattrs.fetch();
        let a = match self.known.recent(req.inode, super::known_attrs::FRESH) {
            Some(a) => a,
            None => self.master.getattr(req.inode).await.ok()?,
        };
        let uid = req.cred.as_ref().map(|c| c.uid)?;
        let owner = uid == 0 || uid == a.uid;
        if a.r#type != FileType::Regular as i32 || !owner {
            return None;
        }
        // The kernel's own mtime before a flush rides on the commit of an
        // appendonly file's writes too (WriteChunkEnd sets it anyway);
        // anything else of such a file is the master's to refuse.
        let locked = has_eattr(&a, eattr::IMMUTABLE) || has_eattr(&a, eattr::APPENDONLY);
        let only_mtime =
            req.mode.is_none() && req.uid.is_none() && req.gid.is_none() && req.atime.is_none();
        if locked && !only_mtime {
            return None;
        }
        if req.mode.is_some() || req.uid.is_some() || req.gid.is_some() {
            let setid = 0o6000;
            if a.has_xattrs != Some(false)
                || a.mode & setid != 0
                || req.mode.is_some_and(|m| m & setid != 0)
                || req.uid.is_some_and(|u| u != a.uid)
                || req.gid.is_some_and(|g| g != a.gid)
            {
                return None;
            }
        }
        let change = Deferred {
            mode: req.mode,
            atime: req.atime,
            mtime: req.mtime,
            cred: req.cred.clone(),
            ctime,
        };
        let same_owner = req.uid.is_some() || req.gid.is_some();
        if change.is_empty() && !same_owner {
            return None;
        }
        (change.is_empty() || self.io.defer_attrs(req.inode, change).await).then_some((a, f))
    }
}

/// A change of the mtime alone (to a given time).
fn only_mtime(c: &AttrChange) -> bool {
    c.mode.is_none()
        && c.uid.is_none()
        && c.gid.is_none()
        && c.size.is_none()
        && c.atime.is_none()
        && matches!(c.mtime, Some(TimeOrNow::SpecificTime(_)))
}

/// Whether `a` carries extra attribute `bit`.
pub(crate) fn has_eattr(a: &Attr, bit: u8) -> bool {
    a.eattr & u32::from(bit) != 0
}

/// A name as the kernel wants it (None: not representable, never the case
/// on Unix).
fn os_name(name: &[u8]) -> Option<std::ffi::OsString> {
    use std::os::unix::ffi::OsStrExt;
    Some(std::ffi::OsStr::from_bytes(name).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_like_linux() {
        assert_eq!(check_name(&[b'a'; 256]), Err(Errno::ENAMETOOLONG));
        assert_eq!(check_name(&[b'a'; 255]), Ok(()));
        assert_eq!(check_name(b"a/b"), Err(Errno::EINVAL));
    }
}
