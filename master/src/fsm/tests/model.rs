//! Model-based random test: random operations (valid and invalid) go both to
//! the `Namespace` and to a deliberately naive model (a map from path strings
//! to plain objects, written without any namespace code); after each one the
//! errors must be the same errno and the trees the same.

use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

// ---- the model ---------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    File,
    Dir,
    Symlink(Vec<u8>),
    Fifo,
}

#[derive(Clone, Debug)]
struct Obj {
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    open: u32,
}

#[derive(Clone, Debug)]
struct MCred {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
}

#[derive(Clone, Debug)]
enum MOp {
    Mkdir(MCred, usize, Vec<u8>, u32, u32),
    Create(MCred, usize, Vec<u8>, u32, u32, bool),
    Fifo(MCred, usize, Vec<u8>),
    Symlink(MCred, usize, Vec<u8>, Vec<u8>),
    Unlink(MCred, usize, Vec<u8>),
    Rmdir(MCred, usize, Vec<u8>),
    Rename(MCred, usize, Vec<u8>, usize, Vec<u8>, bool, bool),
    Link(MCred, usize, usize, Vec<u8>),
    Chmod(MCred, usize, u32),
    Truncate(MCred, usize, u64),
    SetX(MCred, usize, Vec<u8>, Vec<u8>, bool, bool),
    RmX(MCred, usize, Vec<u8>),
    Open(MCred, usize, bool, bool, bool),
    Release(usize),
}

const R: u32 = 4;
const W: u32 = 2;
const X: u32 = 1;

struct Model {
    /// "" is the root, "/a/b" a path.
    paths: BTreeMap<Vec<u8>, usize>,
    objs: BTreeMap<usize, Obj>,
    next: usize,
}

fn join(p: &[u8], name: &[u8]) -> Vec<u8> {
    let mut v = p.to_vec();
    v.push(b'/');
    v.extend_from_slice(name);
    v
}

fn under(path: &[u8], top: &[u8]) -> bool {
    path == top || (path.len() > top.len() && path.starts_with(top) && path[top.len()] == b'/')
}

fn member(c: &MCred, gid: u32) -> bool {
    c.gid == gid || c.groups.contains(&gid)
}

fn allowed(o: &Obj, c: &MCred, want: u32) -> bool {
    if c.uid == 0 {
        return want & X == 0 || o.kind == Kind::Dir || o.mode & 0o111 != 0;
    }
    let shift = if c.uid == o.uid {
        6
    } else if member(c, o.gid) {
        3
    } else {
        0
    };
    (o.mode >> shift) & want == want
}

fn need(o: &Obj, c: &MCred, want: u32) -> Result<(), Errno> {
    if allowed(o, c, want) {
        Ok(())
    } else {
        Err(Errno::EACCES)
    }
}

fn name_ok(name: &[u8]) -> Result<(), Errno> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0) {
        return Err(Errno::EINVAL);
    }
    if name.len() > 255 {
        return Err(Errno::ENAMETOOLONG);
    }
    Ok(())
}

fn sticky_ok(dir: &Obj, victim: &Obj, c: &MCred) -> Result<(), Errno> {
    if dir.mode & 0o1000 != 0 && c.uid != 0 && c.uid != victim.uid && c.uid != dir.uid {
        return Err(Errno::EPERM);
    }
    Ok(())
}

impl Model {
    fn new() -> Model {
        let root = Obj {
            kind: Kind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            size: 0,
            xattrs: BTreeMap::new(),
            open: 0,
        };
        Model {
            paths: BTreeMap::from([(Vec::new(), 0)]),
            objs: BTreeMap::from([(0, root)]),
            next: 1,
        }
    }

    fn obj(&self, id: usize) -> Result<&Obj, Errno> {
        self.objs.get(&id).ok_or(Errno::ENOENT)
    }

    fn dir_path(&self, id: usize) -> Result<Vec<u8>, Errno> {
        if self.obj(id)?.kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        self.paths
            .iter()
            .find(|(_, &v)| v == id)
            .map(|(k, _)| k.clone())
            .ok_or(Errno::ENOENT)
    }

    fn at(&self, path: &[u8]) -> Option<usize> {
        self.paths.get(path).copied()
    }

    fn children(&self, dir: &[u8]) -> Vec<(Vec<u8>, usize)> {
        self.paths
            .iter()
            .filter(|(k, _)| {
                k.len() > dir.len() + 1
                    && k.starts_with(dir)
                    && k[dir.len()] == b'/'
                    && !k[dir.len() + 1..].contains(&b'/')
            })
            .map(|(k, &v)| (k[dir.len() + 1..].to_vec(), v))
            .collect()
    }

    fn names_of(&self, id: usize) -> usize {
        self.paths.values().filter(|&&v| v == id).count()
    }

    fn forget_if_unused(&mut self, id: usize) {
        if self.names_of(id) == 0 && self.objs.get(&id).is_some_and(|o| o.open == 0) {
            self.objs.remove(&id);
        }
    }

    /// Shared start of every creation: parent, name, search, exists, write.
    fn may_create(&self, c: &MCred, p: usize, name: &[u8]) -> Result<Vec<u8>, Errno> {
        let pp = self.dir_path(p)?;
        name_ok(name)?;
        let po = self.obj(p)?;
        need(po, c, X)?;
        if self.at(&join(&pp, name)).is_some() {
            return Err(Errno::EEXIST);
        }
        need(po, c, W | X)?;
        Ok(join(&pp, name))
    }

    fn add(&mut self, c: &MCred, p: usize, path: Vec<u8>, kind: Kind, mode: u32, size: u64) -> usize {
        let parent = self.objs[&p].clone();
        let mut mode = mode;
        let mut gid = c.gid;
        if parent.mode & 0o2000 != 0 {
            gid = parent.gid;
            if kind == Kind::Dir {
                mode |= 0o2000;
            } else if mode & 0o2010 == 0o2010 && c.uid != 0 && !member(c, gid) {
                mode &= !0o2000;
            }
        }
        let id = self.next;
        self.next += 1;
        let obj = Obj {
            kind,
            mode,
            uid: c.uid,
            gid,
            size,
            xattrs: BTreeMap::new(),
            open: 0,
        };
        self.objs.insert(id, obj);
        self.paths.insert(path, id);
        id
    }

    /// Find the victim of a removal: parent, name, search, absent.
    fn victim(&self, c: &MCred, p: usize, name: &[u8]) -> Result<(Vec<u8>, usize), Errno> {
        let pp = self.dir_path(p)?;
        name_ok(name)?;
        need(self.obj(p)?, c, X)?;
        let path = join(&pp, name);
        let v = self.at(&path).ok_or(Errno::ENOENT)?;
        Ok((path, v))
    }

    fn may_delete(&self, c: &MCred, p: usize, v: usize, want_dir: bool) -> Result<(), Errno> {
        let (po, vo) = (self.obj(p)?, self.obj(v)?);
        need(po, c, W | X)?;
        sticky_ok(po, vo, c)?;
        let is_dir = vo.kind == Kind::Dir;
        if want_dir && !is_dir {
            return Err(Errno::ENOTDIR);
        }
        if !want_dir && is_dir {
            return Err(Errno::EISDIR);
        }
        Ok(())
    }

    /// The namespace prefix of a valid xattr name.
    fn xattr_name(name: &[u8]) -> Result<&'static [u8], Errno> {
        if name.is_empty() || name.len() > 255 {
            return Err(Errno::ERANGE);
        }
        let ns = [&b"user."[..], b"trusted.", b"security.", b"system."]
            .into_iter()
            .find(|p| name.starts_with(p))
            .ok_or(Errno::EOPNOTSUPP)?;
        if name.len() == ns.len() {
            return Err(Errno::EINVAL);
        }
        Ok(ns)
    }

    /// May `c` write xattrs of namespace `ns` on `id`?
    fn xattr_write(&self, c: &MCred, id: usize, ns: &[u8]) -> Result<(), Errno> {
        let o = self.obj(id)?;
        let owner = c.uid == 0 || c.uid == o.uid;
        match ns {
            b"trusted." if c.uid != 0 => Err(Errno::EPERM),
            b"trusted." => Ok(()),
            b"user." => {
                if o.kind != Kind::File && o.kind != Kind::Dir {
                    return Err(Errno::EPERM);
                }
                if o.kind == Kind::Dir && o.mode & 0o1000 != 0 && !owner {
                    return Err(Errno::EPERM);
                }
                need(o, c, W)
            }
            _ if !owner => Err(Errno::EPERM),
            _ => Ok(()),
        }
    }

    /// Apply; Ok(Some(id)) names the object created or opened.
    fn apply(&mut self, op: &MOp) -> Result<Option<usize>, Errno> {
        match op {
            MOp::Mkdir(c, p, name, mode, umask) => {
                let path = self.may_create(c, *p, name)?;
                Ok(Some(self.add(c, *p, path, Kind::Dir, mode & 0o1777 & !umask, 0)))
            }
            MOp::Fifo(c, p, name) => {
                let path = self.may_create(c, *p, name)?;
                Ok(Some(self.add(c, *p, path, Kind::Fifo, 0o644, 0)))
            }
            MOp::Symlink(c, p, name, target) => {
                if target.is_empty() {
                    return Err(Errno::ENOENT);
                }
                let path = self.may_create(c, *p, name)?;
                let size = target.len() as u64;
                Ok(Some(self.add(c, *p, path, Kind::Symlink(target.clone()), 0o777, size)))
            }
            MOp::Create(c, p, name, mode, umask, excl) => {
                let pp = self.dir_path(*p)?;
                name_ok(name)?;
                need(self.obj(*p)?, c, X)?;
                let path = join(&pp, name);
                let id = match self.at(&path) {
                    Some(_) if *excl => return Err(Errno::EEXIST),
                    Some(e) => {
                        let o = self.obj(e)?;
                        match o.kind {
                            Kind::Dir => return Err(Errno::EISDIR),
                            Kind::File => need(o, c, W)?,
                            _ => return Err(Errno::EEXIST),
                        }
                        e
                    }
                    None => {
                        need(self.obj(*p)?, c, W | X)?;
                        self.add(c, *p, path, Kind::File, mode & 0o7777 & !umask, 0)
                    }
                };
                if let Some(o) = self.objs.get_mut(&id) {
                    o.open += 1;
                }
                Ok(Some(id))
            }
            MOp::Unlink(c, p, name) => {
                let (path, v) = self.victim(c, *p, name)?;
                self.may_delete(c, *p, v, false)?;
                self.paths.remove(&path);
                self.forget_if_unused(v);
                Ok(None)
            }
            MOp::Rmdir(c, p, name) => {
                let (path, v) = self.victim(c, *p, name)?;
                self.may_delete(c, *p, v, true)?;
                if !self.children(&path).is_empty() {
                    return Err(Errno::ENOTEMPTY);
                }
                self.paths.remove(&path);
                self.objs.remove(&v);
                Ok(None)
            }
            MOp::Link(c, id, np, nn) => {
                self.obj(*id)?;
                let path = self.may_create(c, *np, nn)?;
                if self.obj(*id)?.kind == Kind::Dir {
                    return Err(Errno::EPERM);
                }
                if self.names_of(*id) == 0 {
                    return Err(Errno::ENOENT);
                }
                self.paths.insert(path, *id);
                Ok(None)
            }
            MOp::Rename(c, p, name, np, nn, noreplace, exchange) => {
                self.rename(c, (*p, name), (*np, nn), *noreplace, *exchange)?;
                Ok(None)
            }
            MOp::Chmod(c, id, mode) => {
                let o = self.obj(*id)?;
                if c.uid != 0 && c.uid != o.uid {
                    return Err(Errno::EPERM);
                }
                let mut m = mode & 0o7777;
                if c.uid != 0 && !member(c, o.gid) {
                    m &= !0o2000;
                }
                if let Some(o) = self.objs.get_mut(id) {
                    o.mode = m;
                }
                Ok(None)
            }
            MOp::Truncate(c, id, size) => {
                let o = self.obj(*id)?;
                match o.kind {
                    Kind::File => {}
                    Kind::Dir => return Err(Errno::EISDIR),
                    _ => return Err(Errno::EINVAL),
                }
                if *size > i64::MAX as u64 {
                    return Err(Errno::EFBIG);
                }
                need(o, c, W)?;
                if let Some(o) = self.objs.get_mut(id) {
                    o.size = *size;
                }
                Ok(None)
            }
            MOp::SetX(c, id, name, value, co, ro) => {
                self.obj(*id)?;
                if *co && *ro {
                    return Err(Errno::EINVAL);
                }
                let ns = Self::xattr_name(name)?;
                if value.len() > 65536 {
                    return Err(Errno::E2BIG);
                }
                self.xattr_write(c, *id, ns)?;
                let exists = self.obj(*id)?.xattrs.contains_key(name);
                if *co && exists {
                    return Err(Errno::EEXIST);
                }
                if *ro && !exists {
                    return Err(Errno::ENODATA);
                }
                if let Some(o) = self.objs.get_mut(id) {
                    o.xattrs.insert(name.clone(), value.clone());
                }
                Ok(None)
            }
            MOp::RmX(c, id, name) => {
                self.obj(*id)?;
                let ns = Self::xattr_name(name)?;
                self.xattr_write(c, *id, ns)?;
                if self.objs.get_mut(id).and_then(|o| o.xattrs.remove(name)).is_none() {
                    return Err(Errno::ENODATA);
                }
                Ok(None)
            }
            MOp::Open(c, id, read, write, trunc) => {
                let o = self.obj(*id)?;
                match o.kind {
                    Kind::Dir if *write || *trunc => return Err(Errno::EISDIR),
                    Kind::Symlink(_) => return Err(Errno::ELOOP),
                    _ => {}
                }
                let mut want = 0;
                if *read {
                    want |= R;
                }
                if *write || *trunc {
                    want |= W;
                }
                need(o, c, want)?;
                let o = self.objs.get_mut(id).ok_or(Errno::ENOENT)?;
                if *trunc && o.kind == Kind::File {
                    o.size = 0;
                }
                if o.kind != Kind::Dir {
                    o.open += 1;
                }
                Ok(None)
            }
            MOp::Release(id) => {
                let o = self.objs.get_mut(id).filter(|o| o.open > 0).ok_or(Errno::EBADF)?;
                o.open -= 1;
                self.forget_if_unused(*id);
                Ok(None)
            }
        }
    }

    fn rename(
        &mut self,
        c: &MCred,
        (p, name): (usize, &[u8]),
        (np, nn): (usize, &[u8]),
        noreplace: bool,
        exchange: bool,
    ) -> Result<(), Errno> {
        if noreplace && exchange {
            return Err(Errno::EINVAL);
        }
        let pp = self.dir_path(p)?;
        let npp = self.dir_path(np)?;
        name_ok(name)?;
        name_ok(nn)?;
        need(self.obj(p)?, c, X)?;
        need(self.obj(np)?, c, X)?;
        let (sp, dp) = (join(&pp, name), join(&npp, nn));
        let src = self.at(&sp).ok_or(Errno::ENOENT)?;
        let dst = self.at(&dp);
        if exchange && dst.is_none() {
            return Err(Errno::ENOENT);
        }
        if noreplace && dst.is_some() {
            return Err(Errno::EEXIST);
        }
        let src_dir = self.obj(src)?.kind == Kind::Dir;
        let dst_dir = dst.is_some_and(|d| self.objs.get(&d).is_some_and(|o| o.kind == Kind::Dir));
        if src_dir && under(&npp, &sp) {
            return Err(Errno::EINVAL);
        }
        if dst_dir && under(&pp, &dp) {
            return Err(if exchange { Errno::EINVAL } else { Errno::ENOTEMPTY });
        }
        if dst == Some(src) {
            return Ok(());
        }
        self.may_delete(c, p, src, src_dir)?;
        match dst {
            None => need(self.obj(np)?, c, W | X)?,
            Some(d) => self.may_delete(c, np, d, if exchange { dst_dir } else { src_dir })?,
        }
        if p != np && src_dir {
            need(self.obj(src)?, c, W)?;
        }
        if let (true, true, true, Some(d)) = (p != np, exchange, dst_dir, dst) {
            need(self.obj(d)?, c, W)?;
        }
        if !exchange && dst_dir && !self.children(&dp).is_empty() {
            return Err(Errno::ENOTEMPTY);
        }
        let take = |m: &mut Model, top: &[u8]| -> Vec<(Vec<u8>, usize)> {
            let keys: Vec<Vec<u8>> = m.paths.keys().filter(|k| under(k, top)).cloned().collect();
            keys.into_iter()
                .filter_map(|k| m.paths.remove(&k).map(|v| (k[top.len()..].to_vec(), v)))
                .collect()
        };
        let a = take(self, &sp);
        if exchange {
            let b = take(self, &dp);
            for (rest, v) in b {
                self.paths.insert([&sp[..], &rest[..]].concat(), v);
            }
        } else if let Some(d) = dst {
            self.paths.remove(&dp);
            self.forget_if_unused(d);
        }
        for (rest, v) in a {
            self.paths.insert([&dp[..], &rest[..]].concat(), v);
        }
        Ok(())
    }

    /// Path -> (kind, mode, uid, gid, size, nlink, xattrs, object).
    fn rows(&self) -> BTreeMap<Vec<u8>, (Row, usize)> {
        let mut out = BTreeMap::new();
        for (path, &id) in &self.paths {
            let o = &self.objs[&id];
            let (kind, size, nlink) = match &o.kind {
                Kind::Dir => {
                    let subdirs = self
                        .children(path)
                        .iter()
                        .filter(|(_, c)| self.objs[c].kind == Kind::Dir)
                        .count();
                    ("dir".to_string(), 4096, 2 + subdirs as u32)
                }
                Kind::File => ("file".to_string(), o.size, self.names_of(id) as u32),
                Kind::Fifo => ("fifo".to_string(), 0, self.names_of(id) as u32),
                Kind::Symlink(t) => (
                    format!("symlink:{}", String::from_utf8_lossy(t)),
                    t.len() as u64,
                    self.names_of(id) as u32,
                ),
            };
            let row = Row {
                kind,
                mode: o.mode,
                uid: o.uid,
                gid: o.gid,
                size,
                nlink,
                xattrs: o.xattrs.clone(),
            };
            out.insert(path.clone(), (row, id));
        }
        out
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Row {
    kind: String,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    nlink: u32,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

// ---- reading the namespace's tree ----------------------------------------------

fn ns_rows(ns: &Namespace, page: usize) -> BTreeMap<Vec<u8>, (Row, Inode)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(Vec::new(), Inode::ROOT)];
    let c = root();
    while let Some((path, ino)) = stack.pop() {
        let a = ns.getattr(ino).expect("listed inode has attributes");
        let kind = match a.ftype {
            FileType::Directory => "dir".to_string(),
            FileType::Regular => "file".to_string(),
            FileType::Fifo => "fifo".to_string(),
            FileType::Symlink => {
                let t = ns.readlink(ino).expect("symlink target");
                format!("symlink:{}", String::from_utf8_lossy(&t))
            }
            other => format!("{other:?}"),
        };
        let mut xattrs = BTreeMap::new();
        for name in ns.listxattr(&c, ino).expect("listxattr") {
            let v = ns.getxattr(&c, ino, &name).expect("getxattr of a listed name");
            xattrs.insert(name, v);
        }
        let row = Row {
            kind,
            mode: a.mode,
            uid: a.uid,
            gid: a.gid,
            size: a.size,
            nlink: a.nlink,
            xattrs,
        };
        out.insert(path.clone(), (row, ino));
        if a.ftype != FileType::Directory {
            continue;
        }
        let mut after = Vec::new();
        loop {
            let (entries, more) = ns.readdir(&c, ino, &after, page, true).expect("readdir");
            for e in &entries {
                assert!(e.name > after, "readdir out of order");
                let looked = ns.lookup(&c, ino, &e.name).expect("lookup of a listed name");
                assert_eq!(Some(&looked), e.attr.as_ref(), "readdir plus vs lookup");
                assert_eq!(looked.inode, e.inode);
                after = e.name.clone();
                stack.push((join(&path, &e.name), e.inode));
            }
            if !more {
                break;
            }
        }
    }
    out
}

// ---- the driver ------------------------------------------------------------------

fn cred(rng: &mut StdRng) -> MCred {
    match rng.random_range(0..10) {
        0..5 => MCred { uid: 0, gid: 0, groups: vec![] },
        5..8 => MCred { uid: 1000, gid: 1000, groups: vec![] },
        _ => MCred { uid: 2000, gid: 2000, groups: vec![1000] },
    }
}

fn to_cred(c: &MCred) -> Cred {
    Cred {
        uid: c.uid,
        gid: c.gid,
        groups: c.groups.clone(),
    }
}

fn name(rng: &mut StdRng) -> Vec<u8> {
    match rng.random_range(0..100) {
        0..88 => vec![b"abcdef"[rng.random_range(0..6)]],
        88..91 => vec![b'y'; 255],
        91..93 => Vec::new(),
        93..95 => if rng.random_bool(0.5) { b".".to_vec() } else { b"..".to_vec() },
        95..97 => b"a/b".to_vec(),
        97..98 => b"a\0b".to_vec(),
        _ => vec![b'x'; 256],
    }
}

/// Ids that point nowhere useful: dead objects, or one never created.
const NOWHERE: usize = usize::MAX;

struct Driver {
    rng: StdRng,
    model: Model,
    h: H,
    inos: BTreeMap<usize, Inode>,
}

impl Driver {
    fn ino(&self, id: usize) -> Inode {
        self.inos.get(&id).copied().unwrap_or(Inode(1 << 50))
    }

    fn any_obj(&mut self) -> usize {
        if self.rng.random_range(0..100) < 5 {
            let dead: Vec<usize> = self.inos.keys().filter(|k| !self.model.objs.contains_key(k)).copied().collect();
            if dead.is_empty() || self.rng.random_bool(0.3) {
                return NOWHERE;
            }
            return dead[self.rng.random_range(0..dead.len())];
        }
        let ids: Vec<usize> = self.model.objs.keys().copied().collect();
        ids[self.rng.random_range(0..ids.len())]
    }

    fn dir_obj(&mut self) -> usize {
        if self.rng.random_range(0..100) < 12 {
            return self.any_obj();
        }
        let dirs: Vec<usize> = self.model.objs.iter().filter(|(_, o)| o.kind == Kind::Dir).map(|(&k, _)| k).collect();
        dirs[self.rng.random_range(0..dirs.len())]
    }

    /// A parent and a name, the name often one that exists there.
    fn entry(&mut self) -> (usize, Vec<u8>) {
        let p = self.dir_obj();
        if self.rng.random_range(0..100) < 70 {
            if let Ok(pp) = self.model.dir_path(p) {
                let kids = self.model.children(&pp);
                if !kids.is_empty() {
                    return (p, kids[self.rng.random_range(0..kids.len())].0.clone());
                }
            }
        }
        (p, name(&mut self.rng))
    }

    fn gen(&mut self) -> MOp {
        let c = cred(&mut self.rng);
        let r = &mut self.rng;
        let umask = [0, 0o022, 0o077][r.random_range(0..3)];
        match self.rng.random_range(0..100) {
            0..12 => {
                let mode = [0o755, 0o777, 0o700, 0o1777, 0o2775, 0o555][self.rng.random_range(0..6)];
                let (p, n) = (self.dir_obj(), name(&mut self.rng));
                MOp::Mkdir(c, p, n, mode, umask)
            }
            12..24 => {
                let mode = [0o644, 0o666, 0o600, 0o755, 0o2755, 0o4755][self.rng.random_range(0..6)];
                let excl = self.rng.random_bool(0.5);
                let (p, n) = self.entry();
                MOp::Create(c, p, n, mode, umask, excl)
            }
            24..27 => {
                let (p, n) = (self.dir_obj(), name(&mut self.rng));
                MOp::Fifo(c, p, n)
            }
            27..32 => {
                let target = match self.rng.random_range(0..10) {
                    0 => Vec::new(),
                    _ => b"some/where".to_vec(),
                };
                let (p, n) = (self.dir_obj(), name(&mut self.rng));
                MOp::Symlink(c, p, n, target)
            }
            32..42 => {
                let (p, n) = self.entry();
                MOp::Unlink(c, p, n)
            }
            42..49 => {
                let (p, n) = self.entry();
                MOp::Rmdir(c, p, n)
            }
            49..64 => {
                let (p, n) = self.entry();
                let (np, nn) = self.entry();
                let (nr, ex) = match self.rng.random_range(0..10) {
                    0..6 => (false, false),
                    6..8 => (true, false),
                    8 => (false, true),
                    _ => (true, true),
                };
                MOp::Rename(c, p, n, np, nn, nr, ex)
            }
            64..70 => {
                let id = self.any_obj();
                let (np, nn) = (self.dir_obj(), name(&mut self.rng));
                MOp::Link(c, id, np, nn)
            }
            70..78 => {
                let modes = [0o755, 0o700, 0o777, 0o1777, 0o644, 0o600, 0o555, 0o000, 0o2775, 0o4755];
                let m = modes[self.rng.random_range(0..modes.len())];
                MOp::Chmod(c, self.any_obj(), m)
            }
            78..83 => {
                let sizes = [0, 1, 100, 1 << 20, 1 << 40, i64::MAX as u64 + 1];
                let s = sizes[self.rng.random_range(0..sizes.len())];
                MOp::Truncate(c, self.any_obj(), s)
            }
            83..89 | 89..92 => {
                let names: [&[u8]; 9] =
                    [b"user.a", b"user.b", b"trusted.t", b"security.s", b"system.x", b"bad.x", b"user.", b"", &[b'u'; 256]];
                let n = names[self.rng.random_range(0..names.len())].to_vec();
                let id = self.any_obj();
                if self.rng.random_range(0..3) == 0 {
                    return MOp::RmX(c, id, n);
                }
                let value = if self.rng.random_range(0..50) == 0 { vec![7u8; 65537] } else { b"v1".to_vec() };
                let (co, ro) = (self.rng.random_bool(0.2), self.rng.random_bool(0.2));
                MOp::SetX(c, id, n, value, co, ro)
            }
            92..95 => {
                let (read, write) = match self.rng.random_range(0..3) {
                    0 => (true, false),
                    1 => (false, true),
                    _ => (true, true),
                };
                let trunc = self.rng.random_bool(0.2);
                MOp::Open(c, self.any_obj(), read, write, trunc)
            }
            _ => {
                let open: Vec<usize> = self.model.objs.iter().filter(|(_, o)| o.open > 0).map(|(&k, _)| k).collect();
                if !open.is_empty() && self.rng.random_range(0..10) < 8 {
                    MOp::Release(open[self.rng.random_range(0..open.len())])
                } else {
                    MOp::Release(self.any_obj())
                }
            }
        }
    }

    fn to_op(&self, m: &MOp) -> Op {
        let n = |v: &Vec<u8>| v.clone();
        match m {
            MOp::Mkdir(c, p, name, mode, umask) => Op::Mkdir {
                cred: to_cred(c),
                parent: self.ino(*p),
                name: n(name),
                mode: *mode,
                umask: *umask,
            },
            MOp::Create(c, p, name, mode, umask, excl) => Op::Create {
                cred: to_cred(c),
                parent: self.ino(*p),
                name: n(name),
                mode: *mode,
                umask: *umask,
                exclusive: *excl,
            },
            MOp::Fifo(c, p, name) => Op::Mknod {
                cred: to_cred(c),
                parent: self.ino(*p),
                name: n(name),
                ftype: FileType::Fifo,
                mode: 0o644,
                umask: 0,
                rdev: 0,
            },
            MOp::Symlink(c, p, name, t) => symlink(&to_cred(c), self.ino(*p), name, t),
            MOp::Unlink(c, p, name) => unlink(&to_cred(c), self.ino(*p), name),
            MOp::Rmdir(c, p, name) => rmdir(&to_cred(c), self.ino(*p), name),
            MOp::Rename(c, p, name, np, nn, nr, ex) => rename_flags(
                rename(&to_cred(c), self.ino(*p), name, self.ino(*np), nn),
                *nr,
                *ex,
            ),
            MOp::Link(c, id, np, nn) => link(&to_cred(c), self.ino(*id), self.ino(*np), nn),
            MOp::Chmod(c, id, m) => chmod(&to_cred(c), self.ino(*id), *m),
            MOp::Truncate(c, id, s) => truncate(&to_cred(c), self.ino(*id), *s),
            MOp::SetX(c, id, name, v, co, ro) => Op::SetXattr {
                cred: to_cred(c),
                inode: self.ino(*id),
                name: n(name),
                value: n(v),
                create_only: *co,
                replace_only: *ro,
            },
            MOp::RmX(c, id, name) => removexattr(&to_cred(c), self.ino(*id), name),
            MOp::Open(c, id, r, w, t) => {
                let mode = match (r, w) {
                    (true, false) => OpenMode::Read,
                    (false, true) => OpenMode::Write,
                    _ => OpenMode::ReadWrite,
                };
                open(&to_cred(c), self.ino(*id), mode, *t)
            }
            MOp::Release(id) => Op::Release { inode: self.ino(*id) },
        }
    }

    fn compare(&self, step: usize) {
        let page = 1 + step % 4;
        let got = ns_rows(&self.h.ns, page);
        let want = self.model.rows();
        let gk: Vec<_> = got.keys().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
        let wk: Vec<_> = want.keys().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
        assert_eq!(gk, wk, "step {step}: paths differ");
        for (path, (row, ino)) in &got {
            let (mrow, id) = &want[path];
            assert_eq!(row, mrow, "step {step}: {}", String::from_utf8_lossy(path));
            assert_eq!(Some(ino), self.inos.get(id), "step {step}: identity of {}", String::from_utf8_lossy(path));
        }
        let sustained: Vec<Inode> = self.h.ns.sustained().collect();
        let mut unnamed: Vec<Inode> =
            self.model.objs.keys().filter(|&&id| self.model.names_of(id) == 0).map(|id| self.inos[id]).collect();
        unnamed.sort();
        assert_eq!(sustained, unnamed, "step {step}: sustained files");
        for ino in sustained {
            assert_eq!(self.h.ns.getattr(ino).map(|a| a.nlink), Ok(0));
        }
    }

    fn step(&mut self, step: usize) {
        let mop = self.gen();
        let op = self.to_op(&mop);
        let expected = self.model.apply(&mop);
        let req = self.h.next_req(op.clone());
        let reply = self.h.ns.apply(&req);
        if let Err(e) = self.h.ns.check() {
            panic!("step {step}: invariant broken after {op:?}: {e}");
        }
        match (&expected, &reply) {
            (Err(e), Reply::Err(g)) => assert_eq!(e, g, "step {step}: {op:?}"),
            (Ok(_), Reply::Err(g)) => panic!("step {step}: {op:?} failed with {g}, model succeeded"),
            (Err(e), r) => panic!("step {step}: {op:?} -> {r:?}, model says {e}"),
            (Ok(Some(id)), Reply::Attr(a)) => {
                if let Some(&prev) = self.inos.get(id) {
                    assert_eq!(prev, a.inode, "step {step}: reopened another inode");
                }
                self.inos.insert(*id, a.inode);
            }
            (Ok(_), _) => {}
        }
        // Now and then the client retries: same reply, no change.
        if self.rng.random_range(0..20) == 0 {
            let before = self.h.ns.image_hash();
            assert_eq!(self.h.ns.apply(&req), reply, "step {step}: retry answered differently");
            assert_eq!(before, self.h.ns.image_hash(), "step {step}: retry changed the state");
        }
        self.compare(step);
    }
}

fn run_model(seed: u64, steps: usize) {
    let mut d = Driver {
        rng: StdRng::seed_from_u64(seed),
        model: Model::new(),
        h: H::new(),
        inos: BTreeMap::from([(0, Inode::ROOT)]),
    };
    for step in 0..steps {
        d.step(step);
        if step % 500 == 499 {
            let image = d.h.ns.to_image(b"x");
            let (back, extra) = Namespace::from_image(&image).expect("image loads");
            assert_eq!(back, d.h.ns);
            assert_eq!(extra, b"x");
        }
    }
    let st = d.h.ns.statfs();
    assert_eq!(st.inodes, d.model.objs.len() as u64);
}

#[test]
fn model_seed_1() {
    run_model(1, 3000);
}

#[test]
fn model_seed_2() {
    run_model(2, 3000);
}

#[test]
fn model_seed_3() {
    run_model(0xdead_beef, 3000);
}

#[test]
fn model_seed_4() {
    run_model(42, 3000);
}
