//! [`MfsFs`]: the fuser `Filesystem`. A call that ends on its own in one or
//! a few round trips (the metadata operations, small reads, flush, fsync)
//! runs on the FUSE thread that read it, with that thread's own runtime and
//! connections (`crate::inline`): one thread wakes per round trip instead
//! of several. The others (large reads, writes into the cache, lock waits,
//! which may wait for another FUSE call) are handed to a task on the shared
//! tokio runtime, so they never hold up a FUSE thread. Either way the call
//! answers through fuser's reply object. The metadata operations are in
//! `meta_ops`, the file data ones in `data_ops`.

use std::ffi::OsStr;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileHandle, Filesystem, INodeNo, InitFlags, IoctlFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLock, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use mfs_proto::v1::Credentials;

use super::convert::InodeMap;
use super::creds::GroupsCache;
use super::handles::Handles;
use super::locks::LockCall;
use super::releases::Releases;
use crate::io::FileIo;
use crate::master::queue::Refused;
use crate::master::MasterClient;

/// Largest write request the kernel sends (FUSE max_write).
pub const MAX_WRITE: u32 = 1 << 20;

/// Read-ahead asked of the kernel (it may allow less; mfsmount raises the
/// mount's `read_ahead_kb` after mounting).
pub const MAX_READAHEAD: u32 = 4 << 20;

/// Largest read, or write of a file made here, answered on the FUSE
/// thread that received it (see [`crate::inline`]).
const INLINE_IO_MAX: usize = 128 << 10;

/// How the file system behaves (from the mount options).
#[derive(Debug, Clone)]
pub struct FsSettings {
    /// Attribute cache time given to the kernel.
    pub attr_ttl: Duration,
    /// Entry cache time for lookups.
    pub entry_ttl: Duration,
    /// Entry cache time for readdirplus entries (their attributes are kept
    /// for the shorter of this and `attr_ttl`).
    pub direntry_ttl: Duration,
    /// Ask for the kernel's writeback cache.
    pub writeback_cache: bool,
    /// Refuse every change with EROFS (the kernel does too for a `ro`
    /// mount; this covers callers that slip past it).
    pub read_only: bool,
    /// The kernel checks permissions itself (`default_permissions`): then
    /// it is asked to honour POSIX ACLs too (FUSE_POSIX_ACL).
    pub kernel_permissions: bool,
    /// Answer creates in directories delegated to this mount itself
    /// (`mfswritebackcreates`; see `writeback`).
    pub write_back_creates: bool,
    /// Store blocks fetched for small reads in the kernel's page cache
    /// (`mfspagestore`; see `pages`).
    pub page_store: bool,
}

/// The state every task of the file system shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) master: MasterClient,
    pub(crate) io: FileIo,
    pub(crate) map: InodeMap,
    pub(crate) settings: FsSettings,
    pub(crate) groups: GroupsCache,
    pub(crate) handles: Handles,
    /// Whether the kernel agreed to the writeback cache.
    pub(crate) writeback: std::sync::atomic::AtomicBool,
    /// Whether the kernel agreed to readdirplus.
    pub(crate) plus: std::sync::atomic::AtomicBool,
    /// Lock owners per open file (see `locks`).
    pub(crate) lock_owners: super::locks::LockOwners,
    /// Inodes known to have no `security.capability` (see `xattrs`).
    pub(crate) no_caps: super::handles::NoCaps,
    /// Inodes known to have no xattrs at all (see `xattrs`).
    pub(crate) no_xattrs: super::xattrs::NoXattrs,
    /// Releases of closed files not sent to the master yet.
    pub(crate) releases: Arc<Releases>,
    /// Directories whose names the kernel must not cache (`noentrycache`).
    pub(crate) no_entry_cache: super::handles::NoEntryCache,
    /// What the master last said of each inode (see `known_attrs`).
    pub(crate) known: super::known_attrs::KnownAttrs,
    /// Directories delegated to this mount (see `writeback`).
    pub(crate) wb: Arc<super::writeback::WriteBack>,
    /// The kernel's lengths of regular files, and inode generations (see
    /// `sizes`).
    pub(crate) sizes: super::sizes::KernelSizes,
    /// Listings of held directories read lately (see `handles`).
    pub(crate) recent: super::handles::RecentListings,
    /// The kernel page store, and its writers' gate (see `pages`).
    pub(crate) pages: Option<Arc<super::pages::Pages>>,
    /// The session's notifier, for `pages` and `entries`.
    kernel: super::Kernel,
}

/// What the binary keeps to shut the file system down cleanly.
#[derive(Debug, Clone)]
pub struct FsHandle {
    shared: Arc<Shared>,
}

impl FsHandle {
    /// The session's notifier, once it is made: the page store begins, and
    /// names in held directories may be kept long by the kernel.
    pub fn set_notifier(&self, n: fuser::Notifier) {
        let _ = self.shared.kernel.set(n);
    }

    /// Commits every write of files still open, releases them at the master
    /// and closes the session. For unmount; errors are logged.
    pub async fn shutdown(&self) {
        let s = &self.shared;
        for f in s.handles.drain_files() {
            if f.writable {
                if let Err(e) = s.io.flush(f.inode).await {
                    tracing::error!(inode = f.inode, error = %e, "writes to a file still open at unmount could not be committed");
                }
            }
            s.releases.push(f.inode);
        }
        s.releases.send(&s.master).await;
        if let Err(e) = s.master.close_session().await {
            tracing::warn!(error = %e, "closing the session at the master failed (it expires on its own)");
        }
    }
}

/// The fuser file system of one mount.
#[derive(Debug)]
pub struct MfsFs {
    pub(crate) shared: Arc<Shared>,
    rt: tokio::runtime::Handle,
}

impl MfsFs {
    /// A file system over `master` (which holds a session) and `io`, whose
    /// root is master inode `root`; tasks run on `rt`.
    pub fn new(
        master: MasterClient,
        io: FileIo,
        root: u64,
        settings: FsSettings,
        rt: tokio::runtime::Handle,
    ) -> MfsFs {
        let releases = Arc::new(Releases::default());
        rt.spawn(Arc::clone(&releases).run(master.clone()));
        let changes = master.leader_changes();
        let map = InodeMap::new(root);
        let kernel = super::Kernel::default();
        let write_back = settings.write_back_creates && !settings.read_only;
        let entries = match write_back {
            true => super::entries::Entries::start(map, kernel.clone())
                .inspect_err(|e| {
                    tracing::warn!("no entry thread ({e}): names in held directories are kept by the kernel for the usual entry time only")
                })
                .ok(),
            false => None,
        };
        let wb = Arc::new(super::writeback::WriteBack::new(
            write_back,
            rt.clone(),
            entries,
        ));
        if settings.write_back_creates && !settings.read_only {
            rt.spawn(master.clone().run_queue());
            let refused = Arc::downgrade(&wb);
            master.on_queued_refused(Box::new(move |m, r, _| {
                let Some(wb) = refused.upgrade() else {
                    return;
                };
                match r {
                    Refused::Made {
                        parent,
                        name,
                        inode,
                    } => wb.refused(parent, name, inode),
                    Refused::DirAttrs { dir } => wb.changed(m, dir),
                }
            }));
            io.queue_with(Box::new(super::writeback::IoQueue {
                wb: Arc::downgrade(&wb),
                master: master.clone(),
            }));
        }
        let pages = match settings.page_store {
            true => super::pages::Pages::start(map, kernel.clone())
                .inspect_err(|e| {
                    tracing::warn!("no page store thread ({e}): small reads are not stored in the kernel's page cache")
                })
                .ok(),
            false => None,
        };
        if let Some(p) = &pages {
            io.pages_with(p.sink());
        }
        let fs = MfsFs {
            shared: Arc::new(Shared {
                kernel,
                pages,
                wb: wb.clone(),
                releases,
                master,
                io,
                map,
                settings,
                groups: GroupsCache::default(),
                handles: Handles::default(),
                writeback: Default::default(),
                plus: Default::default(),
                lock_owners: Default::default(),
                no_caps: Default::default(),
                no_xattrs: Default::default(),
                no_entry_cache: Default::default(),
                known: Default::default(),
                sizes: Default::default(),
                recent: Default::default(),
            }),
            rt,
        };
        fs.rt.spawn(super::releases::assert_opens_loop(
            Arc::downgrade(&fs.shared),
            changes,
        ));
        if fs.shared.settings.write_back_creates && !fs.shared.settings.read_only {
            fs.rt.spawn(super::writeback::recall_loop(
                Arc::downgrade(&fs.shared),
                wb,
            ));
        }
        fs
    }

    /// What the binary needs at unmount.
    pub fn handle(&self) -> FsHandle {
        FsHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Runs `f` (given the shared state) as a task.
    fn spawn<F, Fut>(&self, f: F)
    where
        F: FnOnce(Arc<Shared>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let fut = f(Arc::clone(&self.shared));
        self.rt.spawn(fut);
    }

    /// Runs `f` on this FUSE thread when it can (see [`crate::inline`]),
    /// else as a task.
    fn inline<F, Fut>(&self, f: F)
    where
        F: FnOnce(Arc<Shared>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        if let Err(fut) = crate::inline::run_caught(f(Arc::clone(&self.shared))) {
            self.rt.spawn(fut);
        }
    }

    fn cred(&self, req: &Request) -> Credentials {
        self.shared
            .groups
            .credentials(req.uid(), req.gid(), req.pid())
    }
}

fn bytes(name: &OsStr) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    name.as_bytes().to_vec()
}

impl Filesystem for MfsFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let s = &self.shared;
        let mut want = InitFlags::FUSE_ASYNC_READ
            | InitFlags::FUSE_BIG_WRITES
            | InitFlags::FUSE_ATOMIC_O_TRUNC
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_ASYNC_DIO
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_MAX_PAGES
            | InitFlags::FUSE_AUTO_INVAL_DATA
            | InitFlags::FUSE_POSIX_LOCKS
            | InitFlags::FUSE_FLOCK_LOCKS
            // The master applies the umask, unless a default ACL decides.
            | InitFlags::FUSE_DONT_MASK;
        if s.settings.kernel_permissions {
            want |= InitFlags::FUSE_POSIX_ACL;
        }
        if s.settings.writeback_cache && !s.settings.read_only {
            want |= InitFlags::FUSE_WRITEBACK_CACHE;
        }
        for flag in want.iter() {
            if config.add_capabilities(flag).is_err() {
                tracing::info!(?flag, "the kernel does not offer this FUSE capability");
            } else if flag == InitFlags::FUSE_WRITEBACK_CACHE {
                s.writeback
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            } else if flag == InitFlags::FUSE_DO_READDIRPLUS {
                s.plus.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        if let Err(max) = config.set_max_write(MAX_WRITE) {
            let _ = config.set_max_write(max);
        }
        if let Err(max) = config.set_max_readahead(MAX_READAHEAD) {
            let _ = config.set_max_readahead(max);
        }
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let cred = self.cred(req);
        let name = bytes(name);
        self.inline(move |s| async move { s.lookup(cred, parent, name, reply).await });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, _nlookup: u64) {
        let inode = self.shared.map.to_master(ino);
        self.shared.known.forget(inode);
        self.shared.sizes.forget(inode);
        if !self.shared.handles.is_open(inode) {
            self.shared.io.forget(inode);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.inline(move |s| async move { s.getattr(ino, reply).await });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let cred = self.cred(req);
        let change = super::meta_ops::AttrChange {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
            ctime,
        };
        self.inline(move |s| async move { s.setattr(cred, ino, change, reply).await });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.inline(move |s| async move { s.readlink(ino, reply).await });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let cred = self.cred(req);
        let name = bytes(name);
        self.inline(
            move |s| async move { s.mknod(cred, parent, name, mode, umask, rdev, reply).await },
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let cred = self.cred(req);
        let name = bytes(name);
        self.inline(move |s| async move { s.mkdir(cred, parent, name, mode, umask, reply).await });
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let cred = self.cred(req);
        let name = bytes(name);
        self.inline(move |s| async move { s.unlink(cred, parent, name, false, reply).await });
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let cred = self.cred(req);
        let name = bytes(name);
        self.inline(move |s| async move { s.unlink(cred, parent, name, true, reply).await });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let cred = self.cred(req);
        let name = bytes(link_name);
        let target = bytes(target.as_os_str());
        self.inline(move |s| async move { s.symlink(cred, parent, name, target, reply).await });
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let cred = self.cred(req);
        let (name, newname) = (bytes(name), bytes(newname));
        self.inline(move |s| async move {
            s.rename(cred, parent, name, newparent, newname, flags, reply)
                .await
        });
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let cred = self.cred(req);
        let newname = bytes(newname);
        self.inline(move |s| async move { s.link(cred, ino, newparent, newname, reply).await });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let cred = self.cred(req);
        self.inline(move |s| async move { s.open(cred, ino, flags, reply).await });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let task = move |s: Arc<Shared>| async move { s.read(ino, offset, size, reply).await };
        // A small read is one round trip: answered from this thread. Large
        // ones (read-ahead) run as tasks, so that several go at once.
        if size as usize <= INLINE_IO_MAX {
            self.inline(task);
        } else {
            self.spawn(task);
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let data_len = data.len();
        let data = data.to_vec();
        let task = move |s: Arc<Shared>| async move { s.write(ino, fh, offset, data, reply).await };
        // The data of a file made here and not committed since (a small
        // file's, sent at its close or chown, which wait for it): one round
        // trip to every copy, from this thread. Other writes run as tasks:
        // sent from the FUSE threads, random 4 KiB writes through the
        // writeback cache went from 14-16k to 10k IOPS (one job) and
        // 12-13k to 7-8k (four).
        if data_len <= INLINE_IO_MAX && self.shared.io.pristine(self.shared.map.to_master(ino)) {
            self.inline(task);
        } else {
            self.spawn(task);
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.inline(move |s| async move {
            s.unlock_on_flush(ino, lock_owner).await;
            s.flush(fh, reply).await
        });
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn(move |s| async move {
            s.unlock_on_release(ino, fh, lock_owner).await;
            s.release(fh, reply).await
        });
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _ds: bool, reply: ReplyEmpty) {
        self.inline(move |s| async move { s.fsync(ino, reply).await });
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let cred = self.cred(req);
        self.inline(move |s| async move { s.opendir(cred, ino, reply).await });
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        let cred = self.cred(req);
        self.inline(move |s| async move { s.readdir(cred, ino, fh, offset, reply).await });
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        let cred = self.cred(req);
        self.inline(move |s| async move { s.readdirplus(cred, ino, fh, offset, reply).await });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.shared.handles.remove(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ds: bool,
        reply: ReplyEmpty,
    ) {
        // Every metadata change is on a quorum of masters' disks before
        // the master answers: only creates answered here (write-back) may
        // be left to send.
        self.inline(move |s| async move {
            s.master.queue_barrier().await;
            reply.ok()
        });
    }

    /// No ioctl is ours. Answered quietly: every `isatty()` on a file here
    /// (Python's `open()` in text mode, for one) asks TCGETS.
    #[allow(clippy::too_many_arguments)]
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.inline(move |s| async move { s.statfs(reply).await });
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let cred = self.cred(req);
        let (name, value) = (bytes(name), value.to_vec());
        self.inline(move |s| async move { s.setxattr(cred, ino, name, value, flags, reply).await });
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let cred = self.cred(req);
        let name = bytes(name);
        self.inline(move |s| async move { s.getxattr(cred, ino, name, size, reply).await });
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let cred = self.cred(req);
        self.inline(move |s| async move { s.listxattr(cred, ino, size, reply).await });
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let cred = self.cred(req);
        let name = bytes(name);
        self.inline(move |s| async move { s.removexattr(cred, ino, name, reply).await });
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let cred = self.cred(req);
        let mask = mask.bits() as u32;
        self.inline(move |s| async move { s.access(cred, ino, mask, reply).await });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let cred = self.cred(req);
        let name = bytes(name);
        self.inline(move |s| async move {
            s.create(cred, parent, name, mode, umask, flags, reply)
                .await
        });
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let cred = self.cred(req);
        self.spawn(
            move |s| async move { s.fallocate(cred, ino, (offset, length), mode, reply).await },
        );
    }

    fn getlk(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: ReplyLock,
    ) {
        let call = LockCall {
            ino,
            fh,
            owner: lock_owner,
            start,
            end,
            typ,
            pid,
            caller: req.pid(),
        };
        self.spawn(move |s| async move { s.getlk(call, reply).await });
    }

    fn setlk(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let call = LockCall {
            ino,
            fh,
            owner: lock_owner,
            start,
            end,
            typ,
            pid,
            caller: req.pid(),
        };
        self.spawn(move |s| async move { s.setlk(call, sleep, reply).await });
    }
}
