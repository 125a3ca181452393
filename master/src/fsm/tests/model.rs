//! Model-based random test: random operations (valid and invalid) go both to
//! the `Namespace` and to a deliberately naive model (a map from path strings
//! to plain objects, written without any namespace code); after each one the
//! errors must be the same errno and the trees the same.

use super::*;
use std::collections::BTreeMap;

// ---- the model ---------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Kind {
    File,
    Dir,
    Symlink(Vec<u8>),
    Fifo,
}

#[derive(Clone, Debug)]
pub(super) struct Obj {
    pub(super) kind: Kind,
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) size: u64,
    pub(super) xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    pub(super) open: u32,
}

#[derive(Clone, Debug)]
pub(super) struct MCred {
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) groups: Vec<u32>,
}

#[derive(Clone, Debug)]
pub(super) enum MOp {
    Mkdir(MCred, usize, Vec<u8>, u32, u32),
    Create(MCred, usize, Vec<u8>, u32, u32, bool),
    Fifo(MCred, usize, Vec<u8>),
    Symlink(MCred, usize, Vec<u8>, Vec<u8>),
    Unlink(MCred, usize, Vec<u8>),
    Rmdir(MCred, usize, Vec<u8>),
    Rename(MCred, usize, Vec<u8>, usize, Vec<u8>, bool, bool),
    Link(MCred, usize, usize, Vec<u8>),
    Chmod(MCred, usize, u32),
    Chown(MCred, usize, Option<u32>, Option<u32>),
    Truncate(MCred, usize, u64),
    SetX(MCred, usize, Vec<u8>, Vec<u8>, bool, bool),
    RmX(MCred, usize, Vec<u8>),
    Open(MCred, usize, bool, bool, bool),
    Release(usize),
}

const R: u32 = 4;
const W: u32 = 2;
const X: u32 = 1;

pub(super) struct Model {
    /// "" is the root, "/a/b" a path.
    pub(super) paths: BTreeMap<Vec<u8>, usize>,
    pub(super) objs: BTreeMap<usize, Obj>,
    pub(super) next: usize,
}

pub(super) fn join(p: &[u8], name: &[u8]) -> Vec<u8> {
    let mut v = p.to_vec();
    v.push(b'/');
    v.extend_from_slice(name);
    v
}

pub(super) fn under(path: &[u8], top: &[u8]) -> bool {
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
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
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
    pub(super) fn new() -> Model {
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

    pub(super) fn dir_path(&self, id: usize) -> Result<Vec<u8>, Errno> {
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

    pub(super) fn children(&self, dir: &[u8]) -> Vec<(Vec<u8>, usize)> {
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

    pub(super) fn names_of(&self, id: usize) -> usize {
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

    fn add(
        &mut self,
        c: &MCred,
        p: usize,
        path: Vec<u8>,
        kind: Kind,
        mode: u32,
        size: u64,
    ) -> usize {
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
    pub(super) fn apply(&mut self, op: &MOp) -> Result<Option<usize>, Errno> {
        match op {
            MOp::Mkdir(c, p, name, mode, umask) => {
                let path = self.may_create(c, *p, name)?;
                Ok(Some(self.add(
                    c,
                    *p,
                    path,
                    Kind::Dir,
                    mode & 0o1777 & !umask,
                    0,
                )))
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
                Ok(Some(self.add(
                    c,
                    *p,
                    path,
                    Kind::Symlink(target.clone()),
                    0o777,
                    size,
                )))
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
            MOp::Chown(c, id, u, g) => {
                let o = self.obj(*id)?;
                if let Some(u) = u {
                    if c.uid != 0 && !(*u == o.uid && c.uid == o.uid) {
                        return Err(Errno::EPERM);
                    }
                }
                if let Some(g) = g {
                    if c.uid != 0 && !(c.uid == o.uid && (*g == o.gid || member(c, *g))) {
                        return Err(Errno::EPERM);
                    }
                }
                if let Some(o) = self.objs.get_mut(id) {
                    o.uid = u.unwrap_or(o.uid);
                    o.gid = g.unwrap_or(o.gid);
                    if o.kind != Kind::Dir && (u.is_some() || g.is_some()) {
                        o.mode &= !0o4000;
                        if o.mode & 0o010 != 0 {
                            o.mode &= !0o2000;
                        }
                    }
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
                if self
                    .objs
                    .get_mut(id)
                    .and_then(|o| o.xattrs.remove(name))
                    .is_none()
                {
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
                let o = self
                    .objs
                    .get_mut(id)
                    .filter(|o| o.open > 0)
                    .ok_or(Errno::EBADF)?;
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
            return Err(if exchange {
                Errno::EINVAL
            } else {
                Errno::ENOTEMPTY
            });
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
    pub(super) fn rows(&self) -> BTreeMap<Vec<u8>, (Row, usize)> {
        // Names per object, and subdirectories per directory path.
        let mut names: BTreeMap<usize, u32> = BTreeMap::new();
        let mut subdirs: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
        for (path, id) in &self.paths {
            *names.entry(*id).or_default() += 1;
            if self.objs[id].kind == Kind::Dir && !path.is_empty() {
                let cut = path.iter().rposition(|&b| b == b'/').unwrap_or(0);
                *subdirs.entry(path[..cut].to_vec()).or_default() += 1;
            }
        }
        let mut out = BTreeMap::new();
        for (path, &id) in &self.paths {
            let o = &self.objs[&id];
            let links = names[&id];
            let (kind, size, nlink) = match &o.kind {
                Kind::Dir => (
                    "dir".to_string(),
                    4096,
                    2 + subdirs.get(path).copied().unwrap_or(0),
                ),
                Kind::File => ("file".to_string(), o.size, links),
                Kind::Fifo => ("fifo".to_string(), 0, links),
                Kind::Symlink(t) => (
                    format!("symlink:{}", String::from_utf8_lossy(t)),
                    t.len() as u64,
                    links,
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
pub(super) struct Row {
    pub(super) kind: String,
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) size: u64,
    pub(super) nlink: u32,
    pub(super) xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}
