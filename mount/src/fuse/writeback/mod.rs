//! Write-back metadata, the mount's side (the master's rules are in its
//! `fsm::delegations`).
//!
//! When a directory sees changes of names in a stream (a second create,
//! unlink, rmdir or rename within [`STREAM`]), the mount asks the master
//! to delegate it and reads all its names. While it holds the directory,
//! no other client reads or changes it before the master recalled it from
//! this mount, so changes there are answered here and queued for the
//! master (`master::queue`), which every later call of this mount waits
//! for: a create (the name checked against the listing, the permission
//! against the directory's attributes, an inode number from those the
//! session holds), and, in `changes`, unlinks, rmdirs, renames and the
//! length commits of files made here. A lookup of a name the directory
//! does not have, and the attributes of a file made here and not changed
//! since, are answered here too.
//!
//! Delegations are used only while the recall stream is open (a message
//! within [`ALIVE`]): a mount that cannot hear recalls answers nothing
//! itself. A recall takes the directory out of use at once, then gives it
//! back after the queue. The mount's own other changes in the directory
//! (mkdir, symlink, link, ...) keep the listing true; those it cannot
//! follow (a rename into it from elsewhere, SGID or extended attributes on
//! the directory) give the directory back.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use fuser::Errno;
use mfs_proto::v1::{batch_op, Attr, BatchOp, ChunkLocation, CreateAtOp, Credentials};
use mfs_proto::v1::{FileType, OpenMode, OpenRequest, Timespec, WriteChunkEndRequest};

mod changes;
mod chunks;
pub(crate) use chunks::IoQueue;

use super::entries::{Entries, Names};
use super::fs::Shared;
use crate::master::MasterClient;

/// Two changes in a directory this close together make a stream.
const STREAM: Duration = Duration::from_secs(2);
/// A directory refused or recalled is not asked for again for this long.
const BACKOFF: Duration = Duration::from_secs(10);
/// The recall stream counts as open for this long after its last message.
const ALIVE: Duration = Duration::from_secs(3);
/// Inode numbers asked for at a time, and the count below which more are
/// asked for.
const GRANT: u32 = 4096;
const LOW: u64 = 256;
/// Directories with more names than this are not taken.
const MAX_NAMES: usize = 1_000_000;
/// Listing page size.
const PAGE: u32 = 10_000;
/// Files made here whose attributes are kept at most.
const MAX_MADE: usize = 100_000;
/// A chunk token known here is used for reads while it lasts this long
/// yet (seconds).
const TOKEN_MARGIN: u64 = 60;

#[derive(Debug)]
pub(crate) struct WriteBack {
    enabled: bool,
    /// The mount's runtime (calls may run on a FUSE thread's own).
    rt: tokio::runtime::Handle,
    state: Mutex<State>,
    alive: Mutex<Option<Instant>>,
    /// Drops names given a long entry time from the kernel (see
    /// `fuse::entries`); none are given without it.
    entries: Option<Entries>,
}

#[derive(Debug, Default)]
struct State {
    dirs: HashMap<u64, Dir>,
    /// Inode numbers held: ranges [start, end), and the session they are
    /// for.
    inos: VecDeque<(u64, u64)>,
    inos_session: u64,
    /// Files created here: nobody else can name them until the master
    /// answered their create, nor after while the mount holds their
    /// directory; their attributes, while the mount changed nothing of
    /// them.
    made: HashMap<u64, Made>,
    /// The last change sent to the master per directory (a stream?).
    last_change: HashMap<u64, Instant>,
    /// Directories not to ask for until then.
    not_before: HashMap<u64, Instant>,
    /// Bumped at every recall: a delegation granted while one came is not
    /// used.
    recalls: u64,
    /// Delegations taken so far (their ids).
    grants: u64,
    /// Chunk ids the session holds for the data of files made here.
    held: chunks::Held,
}

#[derive(Debug)]
struct Dir {
    session: u64,
    /// Which delegation of the directory this is (files made under an
    /// earlier one are not known any more).
    grant: u64,
    /// Changes of its attributes by this mount in flight: nothing is
    /// answered here meanwhile.
    changing: u32,
    attr: Attr,
    /// Whether `attr`'s mtime and ctime are what the master will have
    /// once the queue is applied: its names changed since only through
    /// creates made here (at their own time). nlink is counted from
    /// `names`.
    times_known: bool,
    names: HashMap<Vec<u8>, Entry>,
    /// Names the kernel was given with a long entry time (dropped from it
    /// when the directory stops being held here).
    given: HashSet<Vec<u8>>,
}

/// A file created here.
#[derive(Debug)]
struct Made {
    /// Its create's queue ticket.
    ticket: u64,
    parent: u64,
    /// The directory's delegation it was made (or renamed to) under.
    grant: u64,
    attr: Attr,
    /// Whether `attr` holds once the mount's writes are committed: it
    /// changed nothing of the file but through writes whose commits it
    /// queued (with its time).
    known: bool,
    /// Slots whose lease was asked through the queue (a new chunk each).
    leased: Vec<u32>,
    /// Where its first chunk is (the lease its last queued commit was
    /// for), to read it without asking.
    first: Option<ChunkLocation>,
}

impl Made {
    /// The length commit `req` of the writes under `loc` is queued with
    /// the mount's time `now`: the attributes the master gives the file
    /// when it applies it.
    fn committed(&mut self, req: &WriteChunkEndRequest, loc: &ChunkLocation, now: Timespec) {
        let a = &mut self.attr;
        // Changes kept for the commit: the mount deferred only those the
        // master applies (see `defer_setattr`).
        if let Some(m) = req.mode {
            a.mode = (a.mode & !0o7777) | (m & 0o7777);
        }
        a.atime = req.atime.or(a.atime);
        a.size = a.size.max(req.file_length);
        a.blocks_bytes = a.size.div_ceil(512).saturating_mul(512);
        a.mtime = Some(req.mtime.unwrap_or(now));
        a.ctime = Some(now);
        if req.index == 0 {
            self.first = Some(ChunkLocation {
                create: false,
                ..loc.clone()
            });
        }
        if let Some(f) = &mut self.first {
            f.file_length = a.size;
        }
    }
}

/// A name in a listing and the attributes of what it names.
pub(crate) type Named = (Vec<u8>, Attr);

/// A name of a held directory.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Entry {
    inode: u64,
    dir: bool,
    /// Without extra attributes (immutable, undeletable, ... make the
    /// master refuse a removal): its removal and rename may be answered
    /// here. (A change of them by another client recalls every
    /// delegation.)
    plain: bool,
}

/// A create or mkdir the mount answers itself.
struct MakeHere<'a> {
    parent: u64,
    name: &'a [u8],
    cred: &'a Credentials,
    mode: u32,
    umask: u32,
    dir: bool,
}

impl State {
    /// Makes `m` here when its parent is held by `sid` and the caller may
    /// write there: an inode number held, the attributes the master will
    /// give (a held directory has no SGID nor default ACL to pass on), the
    /// name in the listing, the op queued. Its attributes and queue
    /// ticket; `Err(EEXIST)` when the name is taken and `refuse_taken`;
    /// None: ask the master.
    fn make_here(
        &mut self,
        master: &MasterClient,
        sid: u64,
        m: &MakeHere<'_>,
        refuse_taken: bool,
    ) -> Option<Result<(Attr, u64), Errno>> {
        let d = self.dirs.get(&m.parent).filter(|d| d.usable(sid))?;
        if d.names.contains_key(m.name) {
            return refuse_taken.then_some(Err(Errno::EEXIST));
        }
        if !may_write_dir(&d.attr, m.cred) || self.inos_session != sid {
            return None;
        }
        let (goal, trash_time) = (d.attr.goal, d.attr.trash_time);
        let inode = self.next_ino()?;
        let t = now_ts();
        let (ftype, keep, nlink, size) = if m.dir {
            (FileType::Directory, 0o1777, 2, 4096)
        } else {
            (FileType::Regular, 0o7777, 1, 0)
        };
        let attr = Attr {
            inode,
            r#type: ftype as i32,
            mode: m.mode & keep & !m.umask,
            uid: m.cred.uid,
            gid: m.cred.gid,
            nlink,
            size,
            atime: Some(t),
            mtime: Some(t),
            ctime: Some(t),
            rdev: 0,
            goal,
            trash_time,
            blocks_bytes: size,
            eattr: 0,
            has_xattrs: Some(false),
        };
        if let Some(d) = self.dirs.get_mut(&m.parent) {
            d.names.insert(m.name.to_vec(), Entry::of(&attr));
            // The master takes the create's time as the directory's.
            d.attr.mtime = Some(t);
            d.attr.ctime = Some(t);
        }
        let op = CreateAtOp {
            cred: Some(m.cred.clone()),
            parent: m.parent,
            name: m.name.to_vec(),
            mode: m.mode,
            umask: m.umask,
            inode,
            time: Some(t),
        };
        let op = if m.dir {
            batch_op::Op::Mkdir(op)
        } else {
            batch_op::Op::Create(op)
        };
        let ticket = master.queue_op(BatchOp { op: Some(op) });
        Some(Ok((attr, ticket)))
    }

    /// The attributes of `inode` if it is a directory held here by `sid`
    /// whose times are known: exact, as nobody else can change it
    /// meanwhile (see `Dir::times_known`).
    fn known_dir(&self, inode: u64, sid: u64) -> Option<Attr> {
        let d = self
            .dirs
            .get(&inode)
            .filter(|d| d.usable(sid) && d.times_known)?;
        Some(Attr {
            nlink: d.nlink(),
            ..d.attr
        })
    }

    /// The next inode number held (they are used in order).
    fn next_ino(&mut self) -> Option<u64> {
        let range = self.inos.front_mut()?;
        let inode = range.0;
        range.0 += 1;
        if range.0 == range.1 {
            self.inos.pop_front();
        }
        Some(inode)
    }

    /// Whether `m`'s directory is still held by session `sid` under the
    /// delegation the file was made (or renamed to) under.
    fn still_held(&self, m: &Made, sid: u64) -> bool {
        self.dirs
            .get(&m.parent)
            .is_some_and(|d| d.session == sid && d.grant == m.grant)
    }
}

impl Dir {
    /// Whether creates and removals may be answered from it now.
    fn usable(&self, sid: u64) -> bool {
        self.session == sid && self.changing == 0
    }

    /// Its link count: one per subdirectory, its name and ".".
    fn nlink(&self) -> u32 {
        let subdirs = self.names.values().filter(|e| e.dir).count();
        2 + u32::try_from(subdirs).unwrap_or(u32::MAX - 2)
    }
}

impl Entry {
    fn of(a: &Attr) -> Entry {
        Entry {
            inode: a.inode,
            dir: a.r#type == FileType::Directory as i32,
            plain: a.eattr == 0,
        }
    }
}

/// What the mount knows of a name without asking.
pub(crate) enum Local {
    /// Not a held directory: ask the master.
    Ask,
    /// The held directory has no such name.
    Absent,
    /// A file made here (see [`WriteBack::made_attr`]) or a directory held
    /// here whose times are known: its attributes, and whether the kernel
    /// may keep the name long (it is noted).
    Made(Attr, bool),
}

/// Whether `c` may make and remove names in directory `d`: by its mode
/// alone (one with an ACL or other extended attributes is left to the
/// master: a named entry of an access ACL can narrow what the group bits,
/// its mask, show).
fn may_write_dir(d: &Attr, c: &Credentials) -> bool {
    d.has_xattrs == Some(false) && dir_allows(d, c, 0o3)
}

/// Whether `c` may list directory `d`: by its mode alone (one with an ACL
/// or other extended attributes is left to the master).
pub(crate) fn may_read_dir(d: &Attr, c: &Credentials) -> bool {
    d.has_xattrs == Some(false) && dir_allows(d, c, 0o4)
}

/// Whether the permission bits of `d` give `c` all of `want` (rwx bits).
fn dir_allows(d: &Attr, c: &Credentials, want: u32) -> bool {
    if c.uid == 0 {
        return true;
    }
    let bits = if c.uid == d.uid {
        d.mode >> 6
    } else if c.gid == d.gid || c.groups.contains(&d.gid) {
        d.mode >> 3
    } else {
        d.mode
    };
    bits & want == want
}

fn now_ts() -> Timespec {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Timespec {
        sec: d.as_secs() as i64,
        nsec: d.subsec_nanos(),
    }
}

impl WriteBack {
    pub(crate) fn new(
        enabled: bool,
        rt: tokio::runtime::Handle,
        entries: Option<Entries>,
    ) -> WriteBack {
        WriteBack {
            enabled,
            rt,
            state: Default::default(),
            alive: Default::default(),
            entries,
        }
    }

    /// Has the kernel drop `names` (none waits for it).
    fn drop_later(&self, names: Names) {
        if let Some(e) = &self.entries {
            e.drop_later(names);
        }
    }

    /// `dir` stopped being held: the names the kernel was given with a
    /// long entry time there go; the answer comes once they are gone.
    fn unhold(&self, dir: u64, d: Dir) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let e = self.entries.as_ref()?;
        Some(e.drop_names(d.given.into_iter().map(|n| (dir, n)).collect()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn live(&self) -> bool {
        self.alive
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() < ALIVE)
    }

    fn set_alive(&self, yes: bool) {
        *self.alive.lock().unwrap_or_else(|p| p.into_inner()) = yes.then(Instant::now);
        if !yes {
            // Recalls cannot be heard: the master may take the directories
            // back without this mount, so the kernel keeps no name long.
            let mut names = Names::new();
            for (dir, d) in self.lock().dirs.iter_mut() {
                names.extend(d.given.drain().map(|n| (*dir, n)));
            }
            self.drop_later(names);
        }
    }

    /// Whether this mount holds directory `dir` now (no other client can
    /// change its names meanwhile).
    pub(crate) fn holds(&self, master: &MasterClient, dir: u64) -> bool {
        if !self.enabled || !self.live() {
            return false;
        }
        let sid = master.session_id();
        self.lock().dirs.get(&dir).is_some_and(|d| d.session == sid)
    }

    /// A lookup of `name` in `parent` (master inode numbers) by `cred`,
    /// answered here only when the directory's mode bits let `cred` search
    /// it (one with extended attributes is left to the master).
    pub(crate) fn lookup(
        &self,
        master: &MasterClient,
        cred: &Credentials,
        parent: u64,
        name: &[u8],
    ) -> Local {
        if !self.enabled {
            return Local::Ask;
        }
        let mut st = self.lock();
        if st.dirs.is_empty() {
            return Local::Ask;
        }
        let sid = master.session_id();
        let searchable =
            |d: &Dir| d.attr.has_xattrs == Some(false) && dir_allows(&d.attr, cred, 0o1);
        let Some(d) = st
            .dirs
            .get(&parent)
            .filter(|d| d.session == sid && searchable(d))
        else {
            return Local::Ask;
        };
        let live = self.live();
        let e = match d.names.get(name) {
            None if live => return Local::Absent,
            None => return Local::Ask,
            Some(e) => *e,
        };
        let attr = match st.made.get(&e.inode) {
            Some(m) if m.known && m.parent == parent && st.still_held(m, sid) => Some(m.attr),
            _ if e.dir && live => st.known_dir(e.inode, sid),
            _ => None,
        };
        let Some(attr) = attr else {
            return Local::Ask;
        };
        let long = live && self.entries.as_ref().is_some_and(|e| e.ready());
        if long {
            if let Some(d) = st.dirs.get_mut(&parent) {
                d.given.insert(name.to_vec());
            }
        }
        Local::Made(attr, long)
    }

    /// The attributes of `inode` if it is a directory held here whose
    /// times are known (see `Dir::times_known`): exact, as nobody else can
    /// change it meanwhile. (`rm -rf` and `find` stat each directory
    /// after reading it, which makes the kernel ask for its atime.)
    pub(crate) fn dir_attr(&self, master: &MasterClient, inode: u64) -> Option<Attr> {
        if !self.enabled || !self.live() {
            return None;
        }
        self.lock().known_dir(inode, master.session_id())
    }

    /// The listing of `dir`, a directory held here, with the attributes
    /// of everything in it, when the mount knows them all exactly: its
    /// own and each subdirectory's (held here, times known), each file's
    /// (made here and known, as [`WriteBack::made_attr`]). Sorted by name,
    /// as the master lists. None: ask the master.
    pub(crate) fn listing(&self, master: &MasterClient, dir: u64) -> Option<(Attr, Vec<Named>)> {
        if !self.enabled || !self.live() {
            return None;
        }
        let (sid, done) = (master.session_id(), master.queue_done());
        let st = self.lock();
        let own = st.known_dir(dir, sid)?;
        let d = st.dirs.get(&dir)?;
        let mut out = Vec::with_capacity(d.names.len());
        for (name, e) in &d.names {
            let a = if e.dir {
                st.known_dir(e.inode, sid)?
            } else {
                let m = st
                    .made
                    .get(&e.inode)
                    .filter(|m| m.known && m.parent == dir)?;
                (m.ticket > done || st.still_held(m, sid)).then_some(m.attr)?
            };
            out.push((name.clone(), a));
        }
        out.sort_unstable_by(|x, y| x.0.cmp(&y.0));
        Some((own, out))
    }

    /// The attributes of `inode` if it is a file made here, and the
    /// master has not answered its create yet or the mount still holds
    /// its directory: nobody else can name it then, and what this mount
    /// does to it besides a rename here ([`WriteBack::changed`],
    /// [`WriteBack::attr_change`]) makes it the master's again.
    pub(crate) fn made_attr(&self, master: &MasterClient, inode: u64) -> Option<Attr> {
        if !self.enabled {
            return None;
        }
        let (sid, done) = (master.session_id(), master.queue_done());
        let st = self.lock();
        let m = st.made.get(&inode).filter(|m| m.known)?;
        (m.ticket > done || st.still_held(m, sid)).then_some(m.attr)
    }

    /// A read open of `inode` answered here: a file made here whose
    /// attributes are known, in a directory the mount still holds (nobody
    /// else can unlink it before the master recalled the directory, and a
    /// recall's return comes after the open queued here), readable by
    /// `cred` whatever the master maps it to (world-readable, or its
    /// owner's, not root, with the owner's read bit). The open is queued,
    /// so the master counts it before anything after it (the release
    /// too). Its attributes, and where its first chunk is when that is
    /// known here and its token lasts a while yet (a hole for an empty
    /// file).
    pub(crate) fn open_here(
        &self,
        master: &MasterClient,
        inode: u64,
        cred: &Credentials,
    ) -> Option<(Attr, Option<ChunkLocation>)> {
        if !self.enabled || !self.live() {
            return None;
        }
        let sid = master.session_id();
        let st = self.lock();
        let m = st.made.get(&inode)?;
        if !m.known || !st.still_held(m, sid) {
            return None;
        }
        let a = m.attr;
        let owner = cred.uid != 0 && cred.uid == a.uid && a.mode & 0o400 != 0;
        if a.mode & 0o004 == 0 && !owner {
            return None;
        }
        let first = if a.size == 0 {
            Some(ChunkLocation::default())
        } else {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let lasts = |l: &ChunkLocation| {
                mfs_proto::secret::token_expires(&l.token).is_none_or(|e| e > now + TOKEN_MARGIN)
            };
            m.first.clone().filter(lasts)
        };
        master.queue_op(BatchOp {
            op: Some(batch_op::Op::Open(OpenRequest {
                id: None,
                cred: Some(cred.clone()),
                inode,
                mode: OpenMode::Read as i32,
                truncate: false,
                lease_first_chunk: false,
            })),
        });
        Some((a, first))
    }

    /// The attributes of `inode`, if made here, are the master's again
    /// (a change sent to it).
    pub(crate) fn unknown(&self, inode: u64) {
        if self.enabled {
            if let Some(m) = self.lock().made.get_mut(&inode) {
                m.known = false;
            }
        }
    }

    /// A create of a regular file: answered here when `parent` is held
    /// (or taken now, when creates come in a stream); None: ask the
    /// master.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn create(
        &self,
        master: &MasterClient,
        cred: &Credentials,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        exclusive: bool,
    ) -> Option<Result<Attr, Errno>> {
        let sid = master.session_id();
        let here = || {
            let done = master.queue_done();
            let mut st = self.lock();
            let st = &mut *st;
            let m = MakeHere {
                parent,
                name,
                cred,
                mode,
                umask,
                dir: false,
            };
            // Without O_EXCL, the master opens a file already there.
            let (attr, ticket) = match st.make_here(master, sid, &m, exclusive)? {
                Ok(made) => made,
                Err(e) => return Some(Err(e)),
            };
            let grant = st.dirs.get(&parent)?.grant;
            if st.made.len() >= MAX_MADE {
                let dirs = &st.dirs;
                st.made.retain(|_, m| {
                    m.ticket > done || dirs.get(&m.parent).is_some_and(|d| d.grant == m.grant)
                });
                if st.made.len() >= MAX_MADE {
                    st.made.clear();
                }
            }
            let made = Made {
                ticket,
                parent,
                grant,
                attr,
                known: true,
                leased: Vec::new(),
                first: None,
            };
            st.made.insert(attr.inode, made);
            Some(Ok(attr))
        };
        self.here_or_take(master, cred, Some(parent), here).await
    }

    /// A mkdir answered here when `parent` is held (or taken now, as for
    /// a create): queued as `MkdirAt`, whose apply delegates the new
    /// directory to this session, so it is held here at once, empty. As a
    /// create, it returns at once: another session that names the new
    /// directory (a lookup in its parent, a subfolder mount's path) recalls
    /// the parent first, and so sees it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn mkdir(
        &self,
        master: &MasterClient,
        cred: &Credentials,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
    ) -> Option<Result<Attr, Errno>> {
        let sid = master.session_id();
        let here = || {
            let mut st = self.lock();
            let st = &mut *st;
            let m = MakeHere {
                parent,
                name,
                cred,
                mode,
                umask,
                dir: true,
            };
            let (attr, _) = match st.make_here(master, sid, &m, true)? {
                Ok(made) => made,
                Err(e) => return Some(Err(e)),
            };
            st.grants += 1;
            let grant = st.grants;
            // (A new directory: nothing held under its number before.)
            st.dirs.insert(
                attr.inode,
                Dir {
                    session: sid,
                    grant,
                    changing: 0,
                    attr,
                    times_known: true,
                    names: HashMap::new(),
                    given: HashSet::new(),
                },
            );
            Some(Ok(attr))
        };
        self.here_or_take(master, cred, Some(parent), here).await
    }

    /// `here()`, or when it cannot answer because `take` (a directory) is
    /// not held and changes come there in a stream: asks for it, then
    /// `here()` again.
    async fn here_or_take<T>(
        &self,
        master: &MasterClient,
        cred: &Credentials,
        take: Option<u64>,
        here: impl Fn() -> Option<T>,
    ) -> Option<T> {
        if !self.enabled || !self.live() {
            return None;
        }
        if let Some(r) = here() {
            return Some(r);
        }
        let dir = take?;
        let sid = master.session_id();
        let held = self.lock().dirs.get(&dir).is_some_and(|d| d.session == sid);
        if held || !self.worth_asking(dir) {
            return None;
        }
        self.take(master, cred, dir, sid).await;
        here()
    }

    /// Whether to ask for `parent` now: the second change (create,
    /// removal, rename) in it within [`STREAM`], and not refused or
    /// recalled lately.
    fn worth_asking(&self, parent: u64) -> bool {
        let now = Instant::now();
        let mut st = self.lock();
        if st.not_before.get(&parent).is_some_and(|&t| now < t) {
            return false;
        }
        let streaming = st
            .last_change
            .insert(parent, now)
            .is_some_and(|t| now - t < STREAM);
        if st.last_change.len() > 4096 {
            st.last_change.retain(|_, t| now - *t < STREAM);
            st.not_before.retain(|_, t| now < *t);
        }
        streaming
    }

    /// Asks for `parent` and reads its names; on any failure the
    /// directory is left alone for [`BACKOFF`].
    async fn take(&self, master: &MasterClient, cred: &Credentials, parent: u64, sid: u64) {
        let recalls = self.lock().recalls;
        let backoff = |wb: &WriteBack| {
            wb.lock()
                .not_before
                .insert(parent, Instant::now() + BACKOFF);
        };
        let granted = match master.delegate(parent, GRANT).await {
            Ok(g) => g,
            Err(e) => {
                tracing::debug!(parent, error = %e, "no delegation");
                return backoff(self);
            }
        };
        let Some(attr) = granted.dir else {
            return backoff(self);
        };
        let names = match self.names(master, cred, parent).await {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(parent, error = %e, "a delegated directory could not be listed; giving it back");
                backoff(self);
                return self.send_back(master, parent, None);
            }
        };
        let mut st = self.lock();
        if st.inos_session != sid {
            st.inos.clear();
            st.inos_session = sid;
        }
        if granted.count > 0 {
            let first = granted.first_inode;
            st.inos.push_back((first, first + u64::from(granted.count)));
        }
        if st.recalls != recalls {
            // A recall came meanwhile; it gives the directory back.
            return;
        }
        st.grants += 1;
        let grant = st.grants;
        let old = st.dirs.insert(
            parent,
            Dir {
                session: sid,
                grant,
                changing: 0,
                attr,
                times_known: true,
                names,
                given: HashSet::new(),
            },
        );
        drop(st);
        if let Some(old) = old {
            self.unhold(parent, old);
        }
    }

    async fn names(
        &self,
        master: &MasterClient,
        cred: &Credentials,
        dir: u64,
    ) -> Result<HashMap<Vec<u8>, Entry>, String> {
        let (entries, _) = master
            .readdir_all(cred, dir, true, PAGE)
            .await
            .map_err(|e| e.to_string())?;
        if entries.len() > MAX_NAMES {
            return Err(format!("more than {MAX_NAMES} names"));
        }
        let dir = FileType::Directory as i32;
        Ok(entries
            .into_iter()
            .map(|e| {
                let entry = Entry {
                    inode: e.inode,
                    dir: e.r#type == dir,
                    plain: e.attr.is_some_and(|a| a.eattr == 0),
                };
                (e.name, entry)
            })
            .collect())
    }

    /// Refills the inode numbers when few are left (one call while the
    /// directory is held).
    pub(crate) async fn refill(&self, master: &MasterClient, parent: u64) {
        let low = {
            let st = self.lock();
            st.dirs.contains_key(&parent) && st.inos.iter().map(|(a, b)| b - a).sum::<u64>() < LOW
        };
        if !low {
            return;
        }
        if let Ok(g) = master.delegate(parent, GRANT).await {
            let mut st = self.lock();
            if g.count > 0 && st.inos_session == master.session_id() {
                let first = g.first_inode;
                st.inos.push_back((first, first + u64::from(g.count)));
            }
        }
    }

    /// `dir` goes out of use now and is given back after the queue (a
    /// change of its attributes, a rename the listing cannot follow).
    fn give_back(&self, master: &MasterClient, dir: u64) {
        if !self.enabled {
            return;
        }
        let held = self.lock().dirs.remove(&dir);
        if let Some(d) = held {
            let dropped = self.unhold(dir, d);
            self.send_back(master, dir, dropped);
        }
    }

    /// A recall from the master: out of use now, given back after the
    /// queue (also when not held: a grant may be on its way here).
    fn recall(&self, master: &MasterClient, dir: u64) {
        let held = {
            let mut st = self.lock();
            st.recalls += 1;
            st.not_before.insert(dir, Instant::now() + BACKOFF);
            st.dirs.remove(&dir)
        };
        let dropped = held.and_then(|d| self.unhold(dir, d));
        self.send_back(master, dir, dropped);
    }

    /// `ReturnDelegation` of `dir`, on the mount's runtime (it waits for
    /// the queue), once the names the kernel kept long there are dropped
    /// (`dropped`).
    fn send_back(
        &self,
        master: &MasterClient,
        dir: u64,
        dropped: Option<tokio::sync::oneshot::Receiver<()>>,
    ) {
        let master = master.clone();
        self.rt.spawn(async move {
            if let Some(d) = dropped {
                let _ = d.await;
            }
            if let Err(e) = master.return_delegation(dir).await {
                tracing::warn!(dir, error = %e, "giving a delegated directory back failed");
            }
        });
    }

    /// A create or mkdir the master refused: the name goes from the
    /// listing (and the directory from those held).
    pub(crate) fn refused(&self, parent: u64, name: &[u8], inode: u64) {
        let mut st = self.lock();
        st.made.remove(&inode);
        let made = st.dirs.remove(&inode);
        if let Some(d) = st.dirs.get_mut(&parent) {
            if d.names.get(name).is_some_and(|e| e.inode == inode) {
                d.names.remove(name);
                d.given.remove(name);
                d.times_known = false;
            }
        }
        drop(st);
        if let Some(d) = made {
            self.unhold(inode, d);
        }
    }
}

/// Keeps the recall stream open and answers recalls, while the file
/// system lives.
pub(crate) async fn recall_loop(shared: Weak<Shared>, wb: Arc<WriteBack>) {
    loop {
        let Some(master) = shared.upgrade().map(|s| s.master.clone()) else {
            return;
        };
        match master.recalls().await {
            Ok(mut stream) => {
                while let Ok(Some(r)) = stream.message().await {
                    wb.set_alive(true);
                    if r.dir != 0 {
                        wb.recall(&master, r.dir);
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "recall stream"),
        }
        wb.set_alive(false);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
