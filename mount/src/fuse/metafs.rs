//! [`MetaFs`]: the meta file system of `mfsmount -m`, as MooseFS's:
//!
//! ```text
//! /trash/              files in the trash, named "%08X|path" (inode in hex,
//!                      the path they had with '/' as '|'); reading one
//!                      gives its path; writing a path into one changes
//!                      where it goes back to; rm removes it for good
//! /trash/undel/        mv a file of trash/ here to put it back at its path
//! /sustained/          files deleted while open, until their last close
//! ```
//!
//! Only root enters (the directories are mode 0700 and the kernel checks
//! permissions); the master also lets a file's owner undelete or remove it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use mfs_proto::v1::{Credentials, RemovedFile};

use super::convert::{errno, file_attr, InodeMap, BLKSIZE, NAME_MAX};
use crate::master::MasterClient;

const ROOT: u64 = 1;
const TRASH: u64 = 2;
const UNDEL: u64 = 3;
const SUSTAINED: u64 = 4;
/// Kernel inode of a file: the master's inode plus this.
const FILE_BASE: u64 = 16;
/// The directories' attributes are fixed: the kernel may keep them.
const DIR_TTL: Duration = Duration::from_secs(60);
/// Files come and go with every delete: the kernel asks each time.
const FILE_TTL: Duration = Duration::ZERO;

/// The name of a trashed or sustained file: "%08X|path", '/' as '|', cut
/// to NAME_MAX bytes (lookups read only the inode).
pub fn entry_name(f: &RemovedFile) -> Vec<u8> {
    let mut name = format!("{:08X}|", f.inode).into_bytes();
    name.extend(f.path.iter().map(|&b| if b == b'/' { b'|' } else { b }));
    name.truncate(NAME_MAX);
    name
}

/// The inode a file's name starts with (hex up to '|').
pub fn inode_of_name(name: &[u8]) -> Option<u64> {
    let hex = name.split(|&b| b == b'|').next()?;
    let hex = std::str::from_utf8(hex).ok()?;
    u64::from_str_radix(hex, 16).ok().filter(|&i| i > 0)
}

/// What a listing of one directory holds (taken at opendir).
type Listing = Vec<(INodeNo, FileType, Vec<u8>)>;

/// The state every task of the meta file system shares.
#[derive(Debug)]
struct Shared {
    master: MasterClient,
    /// Listings per open directory handle.
    listings: Mutex<HashMap<u64, Arc<Listing>>>,
    next_fh: AtomicU64,
}

/// The fuser file system of a meta mount.
#[derive(Debug)]
pub struct MetaFs {
    shared: Arc<Shared>,
    rt: tokio::runtime::Handle,
}

fn dir_attr(ino: u64, mode: u16, nlink: u32) -> FileAttr {
    let now = SystemTime::now();
    FileAttr {
        ino: INodeNo(ino),
        size: 0,
        blocks: 0,
        atime: now,
        mtime: now,
        ctime: now,
        crtime: UNIX_EPOCH,
        kind: FileType::Directory,
        perm: mode,
        nlink,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: BLKSIZE,
        flags: 0,
    }
}

/// The fixed directories: (inode, parent, name, mode).
const DIRS: [(u64, u64, &str, u16); 3] = [
    (TRASH, ROOT, "trash", 0o700),
    (UNDEL, TRASH, "undel", 0o700),
    (SUSTAINED, ROOT, "sustained", 0o500),
];

fn fixed_attr(ino: u64) -> Option<FileAttr> {
    match ino {
        ROOT => Some(dir_attr(ROOT, 0o555, 4)),
        _ => DIRS
            .iter()
            .find(|d| d.0 == ino)
            .map(|d| dir_attr(d.0, d.3, 2 + u32::from(d.0 == TRASH))),
    }
}

fn cred(req: &Request) -> Credentials {
    Credentials {
        uid: req.uid(),
        gid: req.gid(),
        groups: Vec::new(),
    }
}

fn file_attr_of(f: &RemovedFile) -> Option<FileAttr> {
    let a = f.attr.as_ref()?;
    let mut attr = file_attr(a, &InodeMap::new(1), None);
    attr.ino = INodeNo(f.inode + FILE_BASE);
    Some(attr)
}

impl Shared {
    /// The trashed (`TRASH`) or sustained (`SUSTAINED`) file of kernel
    /// inode `ino`; without `dir`, either.
    async fn file(&self, ino: u64, dir: Option<u64>) -> Result<RemovedFile, Errno> {
        let inode = ino.checked_sub(FILE_BASE).filter(|&i| i > 0);
        let inode = inode.ok_or(Errno::ENOENT)?;
        for (d, sustained) in [(TRASH, false), (SUSTAINED, true)] {
            if dir.is_some_and(|x| x != d) {
                continue;
            }
            match self.master.removed_file(sustained, inode).await {
                Ok(Some(f)) => return Ok(f),
                Ok(None) => {}
                Err(e) => return Err(errno(&e)),
            }
        }
        Err(Errno::ENOENT)
    }

    async fn lookup(&self, parent: u64, name: Vec<u8>, reply: ReplyEntry) {
        if let Some(d) = DIRS
            .iter()
            .find(|d| d.1 == parent && d.2.as_bytes() == name)
        {
            if let Some(a) = fixed_attr(d.0) {
                return reply.entry(&DIR_TTL, &a, Generation(0));
            }
        }
        if parent != TRASH && parent != SUSTAINED {
            return reply.error(Errno::ENOENT);
        }
        let Some(inode) = inode_of_name(&name) else {
            return reply.error(Errno::ENOENT);
        };
        match self.file(inode + FILE_BASE, Some(parent)).await {
            Ok(f) => match file_attr_of(&f) {
                Some(a) => reply.entry(&FILE_TTL, &a, Generation(0)),
                None => reply.error(Errno::EIO),
            },
            Err(e) => reply.error(e),
        }
    }

    async fn getattr(&self, ino: u64, reply: ReplyAttr) {
        if let Some(a) = fixed_attr(ino) {
            return reply.attr(&DIR_TTL, &a);
        }
        match self.file(ino, None).await {
            Ok(f) => match file_attr_of(&f) {
                Some(a) => reply.attr(&FILE_TTL, &a),
                None => reply.error(Errno::EIO),
            },
            Err(e) => reply.error(e),
        }
    }

    async fn opendir(&self, ino: u64, reply: ReplyOpen) {
        let mut list: Listing = vec![
            (INodeNo(ino), FileType::Directory, b".".to_vec()),
            (
                INodeNo(if ino == UNDEL { TRASH } else { ROOT }),
                FileType::Directory,
                b"..".to_vec(),
            ),
        ];
        for d in DIRS.iter().filter(|d| d.1 == ino) {
            list.push((INodeNo(d.0), FileType::Directory, d.2.as_bytes().to_vec()));
        }
        let files = match ino {
            TRASH => Some(false),
            SUSTAINED => Some(true),
            ROOT | UNDEL => None,
            _ => return reply.error(Errno::ENOTDIR),
        };
        if let Some(sustained) = files {
            match self.master.list_removed_all(sustained).await {
                Ok(fs) => list.extend(fs.iter().map(|f| {
                    (
                        INodeNo(f.inode + FILE_BASE),
                        FileType::RegularFile,
                        entry_name(f),
                    )
                })),
                Err(e) => return reply.error(errno(&e)),
            }
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut l) = self.listings.lock() {
            l.insert(fh, Arc::new(list));
        }
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn readdir(&self, fh: u64, offset: u64, mut reply: ReplyDirectory) {
        let list = self.listings.lock().ok().and_then(|l| l.get(&fh).cloned());
        let Some(list) = list else {
            return reply.error(Errno::EBADF);
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (ino, kind, name)) in list.iter().enumerate().skip(start) {
            use std::os::unix::ffi::OsStrExt;
            if reply.add(*ino, i as u64 + 1, *kind, OsStr::from_bytes(name)) {
                break;
            }
        }
        reply.ok();
    }

    async fn read(&self, ino: u64, offset: u64, size: u32, reply: ReplyData) {
        match self.file(ino, None).await {
            Ok(f) => {
                let mut text = f.path;
                text.push(b'\n');
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(text.len());
                let end = start.saturating_add(size as usize).min(text.len());
                reply.data(&text[start..end]);
            }
            Err(e) => reply.error(e),
        }
    }

    async fn write(
        &self,
        cred: Credentials,
        ino: u64,
        offset: u64,
        data: Vec<u8>,
        reply: ReplyWrite,
    ) {
        if offset != 0 {
            return reply.error(Errno::EINVAL);
        }
        let Some(inode) = ino.checked_sub(FILE_BASE) else {
            return reply.error(Errno::EPERM);
        };
        let path: Vec<u8> = {
            let end = data
                .iter()
                .rposition(|&b| b != b'\n' && b != 0)
                .map_or(0, |p| p + 1);
            data[..end].to_vec()
        };
        match self.master.set_trash_path(&cred, inode, path).await {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }

    async fn rename(&self, cred: Credentials, from: (u64, Vec<u8>), to: u64, reply: ReplyEmpty) {
        if from.0 != TRASH || to != UNDEL {
            return reply.error(Errno::EPERM);
        }
        let Some(inode) = inode_of_name(&from.1) else {
            return reply.error(Errno::ENOENT);
        };
        match self.master.undelete(&cred, inode).await {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    async fn unlink(&self, cred: Credentials, parent: u64, name: Vec<u8>, reply: ReplyEmpty) {
        if parent != TRASH {
            return reply.error(Errno::EPERM);
        }
        let Some(inode) = inode_of_name(&name) else {
            return reply.error(Errno::ENOENT);
        };
        match self.master.trash_delete(&cred, inode).await {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    async fn statfs(&self, reply: ReplyStatfs) {
        match self.master.statfs().await {
            Ok(s) => super::convert::reply_statfs(&s, reply),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

impl MetaFs {
    /// A meta file system over `master` (which holds a session); tasks run
    /// on `rt`.
    pub fn new(master: MasterClient, rt: tokio::runtime::Handle) -> MetaFs {
        MetaFs {
            shared: Arc::new(Shared {
                master,
                listings: Mutex::new(HashMap::new()),
                next_fh: AtomicU64::new(1),
            }),
            rt,
        }
    }

    fn spawn<F, Fut>(&self, f: F)
    where
        F: FnOnce(Arc<Shared>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.rt.spawn(f(Arc::clone(&self.shared)));
    }
}

fn bytes(name: &OsStr) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    name.as_bytes().to_vec()
}

impl Filesystem for MetaFs {
    fn init(&mut self, _req: &Request, _config: &mut KernelConfig) -> std::io::Result<()> {
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = bytes(name);
        self.spawn(move |s| async move { s.lookup(parent.0, name, reply).await });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.spawn(move |s| async move { s.getattr(ino.0, reply).await });
    }

    /// Only a cut to zero (a shell's `>` before writing a new path) is
    /// taken, and changes nothing.
    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if mode.is_some() || uid.is_some() || gid.is_some() || size.is_some_and(|s| s != 0) {
            return reply.error(Errno::EPERM);
        }
        self.spawn(move |s| async move { s.getattr(ino.0, reply).await });
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (cred, name) = (cred(req), bytes(name));
        self.spawn(move |s| async move { s.unlink(cred, parent.0, name, reply).await });
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (cred, name) = (cred(req), bytes(name));
        self.spawn(
            move |s| async move { s.rename(cred, (parent.0, name), newparent.0, reply).await },
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino.0 < FILE_BASE {
            return reply.error(Errno::EISDIR);
        }
        // Direct I/O: the content (the path) is not as long as the size
        // shown (the file's).
        reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
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
        self.spawn(move |s| async move { s.read(ino.0, offset, size, reply).await });
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let (cred, data) = (cred(req), data.to_vec());
        self.spawn(move |s| async move { s.write(cred, ino.0, offset, data, reply).await });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.spawn(move |s| async move { s.opendir(ino.0, reply).await });
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        self.shared.readdir(fh.0, offset, reply);
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        if let Ok(mut l) = self.shared.listings.lock() {
            l.remove(&fh.0);
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.spawn(move |s| async move { s.statfs(reply).await });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_inode_and_the_path() {
        let f = RemovedFile {
            inode: 0x8e1a,
            path: b"tdir/sub/f1".to_vec(),
            expires: 0,
            attr: None,
        };
        assert_eq!(entry_name(&f), b"00008E1A|tdir|sub|f1".to_vec());
        assert_eq!(inode_of_name(b"00008E1A|tdir|sub|f1"), Some(0x8e1a));
        assert_eq!(inode_of_name(b"1234ABCDEF|x"), Some(0x1234abcdef));
        assert_eq!(inode_of_name(b"zz|x"), None);
        assert_eq!(inode_of_name(b"00000000|x"), None);
        let long = RemovedFile {
            path: vec![b'a'; 400],
            ..f
        };
        let name = entry_name(&long);
        assert_eq!(name.len(), NAME_MAX);
        assert_eq!(inode_of_name(&name), Some(0x8e1a));
    }
}
