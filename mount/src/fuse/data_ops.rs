//! The file operations of [`super::fs::MfsFs`]: open/create (counted by the
//! master for the session, so an unlinked open file lives on), data through
//! [`crate::io::FileIo`], and flush/fsync/release committing what was
//! written before they answer.

use std::sync::atomic::Ordering;

use fuser::{
    Errno, FileHandle, FopenFlags, Generation, INodeNo, OpenAccMode, OpenFlags, ReplyCreate,
    ReplyData, ReplyEmpty, ReplyOpen, ReplyWrite,
};
use mfs_proto::v1::{CreateRequest, Credentials, OpenMode, OpenRequest, SetAttrRequest};

use super::convert::errno;
use super::fs::Shared;
use super::meta_ops::check_name;

impl Shared {
    fn writes_allowed(&self) -> Result<(), Errno> {
        if self.settings.read_only {
            Err(Errno::EROFS)
        } else {
            Ok(())
        }
    }

    pub(crate) async fn open(
        &self,
        cred: Credentials,
        ino: INodeNo,
        flags: OpenFlags,
        reply: ReplyOpen,
    ) {
        let inode = self.map.to_master(ino);
        let acc = flags.acc_mode();
        let writable = acc != OpenAccMode::O_RDONLY;
        let truncate = flags.0 & libc::O_TRUNC != 0;
        if writable || truncate {
            if let Err(e) = self.writes_allowed() {
                return reply.error(e);
            }
        }
        let mode = match acc {
            OpenAccMode::O_RDONLY => OpenMode::Read,
            OpenAccMode::O_WRONLY => OpenMode::Write,
            OpenAccMode::O_RDWR => OpenMode::ReadWrite,
        };
        let req = |mode: OpenMode| OpenRequest {
            id: None,
            cred: Some(cred.clone()),
            inode,
            mode: mode as i32,
            truncate,
            // The first write after the cut needs the new first chunk's
            // lease: given with the open.
            lease_first_chunk: truncate && writable,
        };
        if truncate {
            self.wb.changed(&self.master, inode);
            // Commit earlier writes first, so that they cannot land after
            // the cut.
            if let Err(e) = self.io.flush(inode).await {
                return reply.error(errno(&e));
            }
        } else if let Err(e) = self.settle(inode).await {
            return reply.error(e);
        }
        // With the writeback cache the kernel reads pages it fills partly,
        // also through a write-only handle: open for reading as well when
        // the caller may read.
        let mut r = Err(crate::ClientError::BadReply(String::new()));
        let mut answered_here = false;
        if mode == OpenMode::Read && !truncate && self.io.settled(inode) {
            // A file made here and known: opened without a call.
            if let Some(here) = self.wb.open_here(&self.master, inode, &cred) {
                r = Ok(here);
                answered_here = true;
            }
        }
        if r.is_err() && mode == OpenMode::Write && self.writeback.load(Ordering::Relaxed) {
            r = self.master.open_for_reading(req(OpenMode::ReadWrite)).await;
        }
        if r.is_err() {
            r = self.master.open_for_reading(req(mode)).await;
        }
        match r {
            Ok((attr, _)) if writable && appends_only(&attr, flags.0) => {
                self.releases.push(inode);
                reply.error(Errno::EPERM)
            }
            Ok((attr, first_chunk)) => {
                let open_here = self.handles.is_open(inode);
                let mtime = attr.mtime.unwrap_or_default();
                let keep = !truncate
                    && self.handles.may_keep_cache(
                        inode,
                        open_here,
                        (mtime.sec, mtime.nsec, attr.size),
                    );
                if truncate {
                    self.sizes.set(inode, 0);
                }
                // The kernel drops the file's pages at this reply: no block
                // read before may be stored after (see `pages`).
                let _no_store = (!keep).then(|| self.pages_writer(inode));
                if truncate || !(open_here || answered_here) {
                    // Cut, or nothing of ours is open: forget cached
                    // locations, so what other clients wrote is read afresh.
                    // (Not for a file only this mount wrote: answered here,
                    // its blocks are what it wrote.)
                    self.io.invalidate(inode);
                }
                match first_chunk {
                    // A truncating writer's: the write lease of the new
                    // first chunk.
                    Some(loc) if truncate && writable => self.io.adopt_lease(inode, 0, loc),
                    Some(loc) => self.io.note_location(inode, 0, loc),
                    None => {}
                }
                if writable {
                    self.io.set_credentials(inode, cred);
                    // Released at the handle's release.
                    self.pages_writer_in(inode);
                }
                let fh = self.handles.add_file(inode, writable, false);
                let flags = if keep {
                    FopenFlags::FOPEN_KEEP_CACHE
                } else {
                    FopenFlags::empty()
                };
                reply.opened(FileHandle(fh), flags);
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn create(
        &self,
        cred: Credentials,
        parent: INodeNo,
        name: Vec<u8>,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        if let Err(e) = self.writes_allowed().and_then(|_| check_name(&name)) {
            return reply.error(e);
        }
        let dir = self.map.to_master(parent);
        let exclusive = flags & libc::O_EXCL != 0;
        let mut fetched = self.no_xattrs.fetch();
        let here = self
            .wb
            .create(
                &self.master,
                &cred,
                dir,
                &name,
                mode & 0o7777,
                umask,
                exclusive,
            )
            .await;
        let mut attr = match here {
            Some(Ok(a)) => {
                self.wb.refill(&self.master, dir).await;
                a
            }
            Some(Err(e)) => return reply.error(e),
            None => {
                let req = CreateRequest {
                    id: None,
                    cred: Some(cred.clone()),
                    parent: dir,
                    name: name.clone(),
                    mode: mode & 0o7777,
                    umask,
                    exclusive,
                };
                match self.master.create(req).await {
                    Ok(a) => {
                        self.wb.note(dir, &name, Some(&a));
                        a
                    }
                    Err(e) => return reply.error(errno(&e)),
                }
            }
        };
        let inode = attr.inode;
        if flags & libc::O_ACCMODE != libc::O_RDONLY && appends_only(&attr, flags) {
            self.releases.push(inode);
            return reply.error(Errno::EPERM);
        }
        if flags & libc::O_TRUNC != 0 && attr.size > 0 {
            // An existing file was opened (a race with another client's
            // create): O_TRUNC still applies.
            let cut = SetAttrRequest {
                id: None,
                cred: Some(cred.clone()),
                inode,
                size: Some(0),
                ..Default::default()
            };
            fetched = self.no_xattrs.fetch();
            match self.master.setattr(cut).await {
                Ok(a) => attr = a,
                Err(e) => {
                    self.releases.push(inode);
                    return reply.error(errno(&e));
                }
            }
            self.io.invalidate(inode);
        }
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        if writable {
            self.pages_writer_in(inode);
            self.io.set_credentials(inode, cred);
            // Its maker's chmod and utimes before close ride on the commit.
            self.io.hold(inode);
        }
        // A file just made has no xattrs: spare the kernel's capability
        // check before each write a call to the master. (An existing file
        // opened here has equal ctime and mtime only if no xattr was set
        // since its content last changed.)
        if flags & libc::O_EXCL != 0 || (attr.ctime == attr.mtime && attr.ctime.is_some()) {
            self.no_caps.remember(inode);
        }
        let fh = self.handles.add_file(inode, writable, writable);
        let ttl = self
            .entry_ttl(self.map.to_master(parent), &attr, self.settings.entry_ttl)
            .min(self.attr_ttl(&attr));
        reply.created(
            &ttl,
            &self.attr_of(&attr, fetched),
            Generation(self.generation(&attr)),
            FileHandle(fh),
            FopenFlags::FOPEN_KEEP_CACHE,
        );
    }

    pub(crate) async fn read(&self, ino: INodeNo, offset: u64, size: u32, reply: ReplyData) {
        match self
            .io
            .read_bytes(self.map.to_master(ino), offset, size)
            .await
        {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(&e)),
        }
    }

    pub(crate) async fn write(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: Vec<u8>,
        reply: ReplyWrite,
    ) {
        if let Err(e) = self.writes_allowed() {
            return reply.error(e);
        }
        let Ok(len) = u32::try_from(data.len()) else {
            return reply.error(Errno::EINVAL);
        };
        let inode = self.map.to_master(ino);
        // (A file made here stays known: its commit says what it is then.)
        // Writeback pages may come through any handle of the inode (or a
        // handle already released): mark the one given when it is ours.
        if let Some(f) = self.handles.file(fh.0) {
            f.dirty.store(true, Ordering::Relaxed);
        }
        // The kernel's length is at least the end of what it writes.
        self.sizes.grow(inode, offset + u64::from(len));
        match self.io.write_bytes(inode, offset, data.into()).await {
            Ok(()) => reply.written(len),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// close(2) of one descriptor: commit what was written, so an error
    /// reaches close and other clients see the data once close returns.
    pub(crate) async fn flush(&self, fh: FileHandle, reply: ReplyEmpty) {
        let Some(f) = self.handles.file(fh.0) else {
            return reply.ok();
        };
        if !f.writable {
            return reply.ok();
        }
        f.dirty.store(false, Ordering::Relaxed);
        match self.io.flush(f.inode).await {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    pub(crate) async fn fsync(&self, ino: INodeNo, reply: ReplyEmpty) {
        let r = self.io.fsync(self.map.to_master(ino)).await;
        // The file's create, and the length commit the fsync made, may be
        // in the write-back queue.
        self.master.queue_barrier().await;
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// The last close of an open file: commit, then tell the master (an
    /// unlinked file goes away when no session holds it any more), in a
    /// batch with other releases (see `releases`).
    pub(crate) async fn release(&self, fh: FileHandle, reply: ReplyEmpty) {
        let Some(f) = self.handles.remove(fh.0) else {
            return reply.ok();
        };
        let mut result = Ok(());
        if f.writable {
            result = self.io.flush(f.inode).await;
        }
        if f.held {
            self.io.unhold(f.inode);
        }
        if f.writable {
            self.pages_writer_out(f.inode);
        }
        self.releases.push(f.inode);
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

impl Shared {
    /// A writable handle of `inode` opens here: no block of it goes to the
    /// kernel's pages until its release (see `pages`).
    fn pages_writer_in(&self, inode: u64) {
        if let Some(p) = &self.pages {
            p.writer_in(inode);
        }
    }

    /// The release of a handle counted by [`Shared::pages_writer_in`].
    fn pages_writer_out(&self, inode: u64) {
        if let Some(p) = &self.pages {
            p.writer_out(inode);
        }
    }

    /// No block of `inode` goes to the kernel's pages while the guard
    /// lives (see `pages`).
    pub(crate) fn pages_writer(&self, inode: u64) -> Option<super::pages::Writer<'_>> {
        self.pages.as_ref().map(|p| p.writer(inode))
    }
}

/// A write open without O_APPEND of an `appendonly` file: Linux's may_open
/// refuses it (EPERM); the master refuses truncates and removals itself.
fn appends_only(attr: &mfs_proto::v1::Attr, flags: i32) -> bool {
    flags & libc::O_APPEND == 0 && super::meta_ops::has_eattr(attr, mfs_common::eattr::APPENDONLY)
}
