//! The driver of the model-based test: generates random operations, sends
//! them to the model and to the namespace, compares.

use super::model::*;
use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

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
            let v = ns
                .getxattr(&c, ino, &name)
                .expect("getxattr of a listed name");
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
                let looked = ns
                    .lookup(&c, ino, &e.name)
                    .expect("lookup of a listed name");
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
        0..5 => MCred {
            uid: 0,
            gid: 0,
            groups: vec![],
        },
        5..8 => MCred {
            uid: 1000,
            gid: 1000,
            groups: vec![],
        },
        _ => MCred {
            uid: 2000,
            gid: 2000,
            groups: vec![1000],
        },
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
        93..95 => {
            if rng.random_bool(0.5) {
                b".".to_vec()
            } else {
                b"..".to_vec()
            }
        }
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
            let dead: Vec<usize> = self
                .inos
                .keys()
                .filter(|k| !self.model.objs.contains_key(k))
                .copied()
                .collect();
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
        let dirs: Vec<usize> = self
            .model
            .objs
            .iter()
            .filter(|(_, o)| o.kind == Kind::Dir)
            .map(|(&k, _)| k)
            .collect();
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
                let mode = [0o755, 0o777, 0o700, 0o1777, 0o2775, 0o555, 0o2777]
                    [self.rng.random_range(0..7)];
                let (p, n) = (self.dir_obj(), name(&mut self.rng));
                MOp::Mkdir(c, p, n, mode, umask)
            }
            12..24 => {
                let mode =
                    [0o644, 0o666, 0o600, 0o755, 0o2755, 0o4755][self.rng.random_range(0..6)];
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
                let modes = [
                    0o755, 0o700, 0o777, 0o1777, 0o644, 0o600, 0o555, 0o000, 0o2775, 0o4755,
                    0o2777, 0o2755,
                ];
                let m = modes[self.rng.random_range(0..modes.len())];
                MOp::Chmod(c, self.any_obj(), m)
            }
            78..80 => {
                let ids = [None, Some(0), Some(1000), Some(2000)];
                let u = if self.rng.random_range(0..3) == 0 {
                    ids[self.rng.random_range(0..4)]
                } else {
                    None
                };
                let gids = [None, Some(0), Some(1000), Some(2000), Some(3000)];
                let g = gids[self.rng.random_range(0..5)];
                MOp::Chown(c, self.any_obj(), u, g)
            }
            80..83 => {
                let sizes = [0, 1, 100, 1 << 20, 1 << 40, i64::MAX as u64 + 1];
                let s = sizes[self.rng.random_range(0..sizes.len())];
                MOp::Truncate(c, self.any_obj(), s)
            }
            83..92 => {
                let names: [&[u8]; 9] = [
                    b"user.a",
                    b"user.b",
                    b"trusted.t",
                    b"security.s",
                    b"system.x",
                    b"bad.x",
                    b"user.",
                    b"",
                    &[b'u'; 256],
                ];
                let n = names[self.rng.random_range(0..names.len())].to_vec();
                let id = self.any_obj();
                if self.rng.random_range(0..3) == 0 {
                    return MOp::RmX(c, id, n);
                }
                let value = if self.rng.random_range(0..50) == 0 {
                    vec![7u8; 65537]
                } else {
                    b"v1".to_vec()
                };
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
                let open: Vec<usize> = self
                    .model
                    .objs
                    .iter()
                    .filter(|(_, o)| o.open > 0)
                    .map(|(&k, _)| k)
                    .collect();
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
            MOp::Chown(c, id, u, g) => chown(&to_cred(c), self.ino(*id), *u, *g),
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
            MOp::Release(id) => Op::Release {
                inode: self.ino(*id),
            },
        }
    }

    fn compare(&self, step: usize) {
        let page = 1 + step % 4;
        let got = ns_rows(&self.h.ns, page);
        let want = self.model.rows();
        if !got.keys().eq(want.keys()) {
            let show = |k: &Vec<u8>| String::from_utf8_lossy(k).into_owned();
            let gk: Vec<_> = got.keys().map(show).collect();
            let wk: Vec<_> = want.keys().map(show).collect();
            assert_eq!(gk, wk, "step {step}: paths differ");
        }
        for (path, (row, ino)) in &got {
            let (mrow, id) = &want[path];
            assert_eq!(row, mrow, "step {step}: {}", String::from_utf8_lossy(path));
            assert_eq!(
                Some(ino),
                self.inos.get(id),
                "step {step}: identity of {}",
                String::from_utf8_lossy(path)
            );
        }
        let sustained: Vec<Inode> = self.h.ns.sustained().collect();
        let named: std::collections::BTreeSet<usize> = self.model.paths.values().copied().collect();
        let mut unnamed: Vec<Inode> = self
            .model
            .objs
            .keys()
            .filter(|id| !named.contains(id))
            .map(|id| self.inos[id])
            .collect();
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
            (Ok(_), Reply::Err(g)) => {
                panic!("step {step}: {op:?} failed with {g}, model succeeded")
            }
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
            assert_eq!(
                self.h.ns.apply(&req),
                reply,
                "step {step}: retry answered differently"
            );
            assert_eq!(
                before,
                self.h.ns.image_hash(),
                "step {step}: retry changed the state"
            );
        }
        // Compare the whole trees after every step while they are small,
        // then every third step (debug builds are slow).
        if step < 800 || step % 3 == 2 {
            self.compare(step);
        }
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

/// Many more seeds: `cargo test -p mfs-master --lib model_many -- --ignored`.
#[test]
#[ignore]
fn model_many_seeds() {
    for seed in 100..140 {
        run_model(seed, 5000);
    }
}
