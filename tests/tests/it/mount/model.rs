//! The model-based test: random metadata operations on the mount and on a
//! local directory must agree, errno and tree, after every step.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use mfs_tests::cluster::Cluster;
use mfs_tests::mountpoint::Mount;

use super::skip_without_fuse;
use super::sys::*;
use crate::util::step;

/// What the model compares of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    kind: char,
    mode: u32,
    /// Regular files and symlinks only (a directory's size is the file
    /// system's business).
    size: Option<u64>,
    nlink: u64,
    target: Option<PathBuf>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

/// Every node under `root`, by relative path; the xattrs of files and
/// directories too when `with_xattrs`.
fn tree(root: &Path, with_xattrs: bool) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let r = rel.join(e.file_name());
            let p = root.join(&r);
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let ft = m.file_type();
            let kind = if ft.is_dir() {
                'd'
            } else if ft.is_symlink() {
                'l'
            } else if ft.is_file() {
                'f'
            } else {
                'p'
            };
            if ft.is_dir() {
                stack.push(r.clone());
            }
            out.insert(
                r.to_string_lossy().into_owned(),
                Node {
                    kind,
                    mode: m.mode() & 0o7777,
                    size: (kind == 'f' || kind == 'l').then_some(m.size()),
                    nlink: m.nlink(),
                    target: ft
                        .is_symlink()
                        .then(|| std::fs::read_link(&p).unwrap_or_default()),
                    xattrs: if with_xattrs && (kind == 'f' || kind == 'd') {
                        xattrs(&p)
                    } else {
                        BTreeMap::new()
                    },
                },
            );
        }
    }
    out
}

/// A small deterministic generator (xorshift64*), seeded per run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

const NAMES: &[&str] = &["a", "b", "c"];

/// A path: an existing one (from the local tree) most of the time, else a
/// random one of depth 1 to 3.
fn some_path(rng: &mut Rng, existing: &[String]) -> String {
    if !existing.is_empty() && rng.below(10) < 6 {
        let base = rng.pick(existing).clone();
        if rng.below(3) == 0 {
            return format!("{base}/{}", rng.pick(NAMES));
        }
        return base;
    }
    let depth = 1 + rng.below(3);
    (0..depth)
        .map(|_| *rng.pick(NAMES))
        .collect::<Vec<_>>()
        .join("/")
}

/// One random operation, applied to a root; returns its description and
/// its outcome.
fn apply(op: &Op, root: &Path) -> Res {
    let p = |s: &str| root.join(s);
    match op {
        Op::Mkdir(a, m) => mkdir(&p(a), *m),
        Op::Create(a, m) => create_excl(&p(a), *m),
        Op::Rename(a, b, f) => rename2(&p(a), &p(b), *f),
        Op::Link(a, b) => io_res(std::fs::hard_link(p(a), p(b))),
        Op::Unlink(a) => io_res(std::fs::remove_file(p(a))),
        Op::Rmdir(a) => io_res(std::fs::remove_dir(p(a))),
        Op::Chmod(a, m) => io_res(std::fs::set_permissions(
            p(a),
            std::fs::Permissions::from_mode(*m),
        )),
        Op::Symlink(t, b) => io_res(std::os::unix::fs::symlink(t, p(b))),
        Op::SetXattr(a, n, v, f) => setxattr(&p(a), n, v, *f),
        Op::RemoveXattr(a, n) => removexattr(&p(a), n),
        Op::Mkfifo(a, m) => mkfifo(&p(a), *m),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Mkdir(String, u32),
    Create(String, u32),
    Rename(String, String, u32),
    Link(String, String),
    Unlink(String),
    Rmdir(String),
    Chmod(String, u32),
    Symlink(String, String),
    SetXattr(String, String, Vec<u8>, i32),
    RemoveXattr(String, String),
    Mkfifo(String, u32),
}

impl Op {
    /// The paths the operation names (a symlink's target is not one).
    fn paths(&self) -> Vec<&str> {
        match self {
            Op::Rename(a, b, _) | Op::Link(a, b) => vec![a, b],
            Op::Symlink(_, b) => vec![b],
            Op::Mkdir(a, _)
            | Op::Create(a, _)
            | Op::Unlink(a)
            | Op::Rmdir(a)
            | Op::Chmod(a, _)
            | Op::SetXattr(a, ..)
            | Op::RemoveXattr(a, _)
            | Op::Mkfifo(a, _) => vec![a],
        }
    }
}

fn random_op(rng: &mut Rng, local: &BTreeMap<String, Node>) -> Op {
    let existing: Vec<String> = local.keys().cloned().collect();
    let a = some_path(rng, &existing);
    let b = some_path(rng, &existing);
    let modes = [0o755, 0o700, 0o644, 0o600, 0o1777, 0o2755, 0o4755];
    let mode = *rng.pick(&modes);
    // xattrs only on files and directories (Linux refuses user.* on the
    // rest with EPERM, a detail outside this model).
    let xattr_ok = local
        .get(&a)
        .is_some_and(|n| n.kind == 'f' || n.kind == 'd');
    let xname = format!("user.k{}", rng.below(2));
    // Keep the tree small (the walk after each step is the slow part):
    // past 30 nodes, only remove and move.
    let choice = if local.len() >= 30 {
        *rng.pick(&[4, 6, 7])
    } else {
        rng.below(12)
    };
    match choice {
        0 | 1 => Op::Mkdir(a, mode),
        2 | 3 => Op::Create(a, mode),
        4 => {
            let flags = *rng.pick(&[0, 0, libc::RENAME_NOREPLACE, libc::RENAME_EXCHANGE]);
            Op::Rename(a, b, flags)
        }
        5 => Op::Link(a, b),
        6 => Op::Unlink(a),
        7 => Op::Rmdir(a),
        8 => Op::Chmod(a, mode),
        9 => Op::Symlink(rng.pick(&["a", "../b", "c/d", "/x"]).to_string(), b),
        10 if xattr_ok => {
            let v = format!("v{}", rng.below(100)).into_bytes();
            let f = *rng.pick(&[0, libc::XATTR_CREATE, libc::XATTR_REPLACE]);
            Op::SetXattr(a, xname, v, f)
        }
        11 if xattr_ok => Op::RemoveXattr(a, xname),
        _ => Op::Mkfifo(a, mode),
    }
}

fn describe_diff(m: &BTreeMap<String, Node>, l: &BTreeMap<String, Node>) -> String {
    let mut out = String::new();
    for (k, v) in l {
        match m.get(k) {
            None => out.push_str(&format!("  missing on the mount: {k} {v:?}\n")),
            Some(mv) if mv != v => {
                out.push_str(&format!("  {k}: mount {mv:?}\n  {k}: local {v:?}\n"))
            }
            _ => {}
        }
    }
    for k in m.keys().filter(|k| !l.contains_key(*k)) {
        out.push_str(&format!("  only on the mount: {k} {:?}\n", m[k]));
    }
    out
}

/// Random metadata operations (mkdir, create, rename with flags, link,
/// unlink, rmdir, chmod, symlink, mkfifo, xattrs) run on the mount and on a
/// local directory give the same errno each time and the same tree (names,
/// types, modes, sizes, link counts, targets, xattrs) after every step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_metadata_ops_match_local_fs() {
    if skip_without_fuse() {
        return;
    }
    let steps: usize = std::env::var("MFS_MODEL_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let seed: u64 = std::env::var("MFS_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    step(&format!(
        "start 1 master and a mount; {steps} steps, MFS_MODEL_SEED={seed}"
    ));
    let c = Cluster::start(1, &[]).await.unwrap();
    // Entries cached by the kernel for 1 s (every change goes through this
    // mount, so the kernel's own invalidation must keep them right); the
    // walk after each step then costs readdirs and xattr calls only.
    let m = Mount::start(&c, "mnt", &["-o", "mfsentrycacheto=1"]).unwrap();
    let local = c.root().join("local");
    std::fs::create_dir_all(&local).unwrap();
    let mut rng = Rng(seed);
    let mut local_tree = tree(&local, true);
    let t = Instant::now();
    for i in 0..steps {
        let op = random_op(&mut rng, &local_tree);
        let got = apply(&op, m.path());
        let want = apply(&op, &local);
        assert_eq!(
            got, want,
            "step {i} (seed {seed}): {op:?}: errno on the mount vs local"
        );
        // The whole tree after every step; the xattrs of every node every
        // 50 steps, and of the paths the operation named after each.
        let full = i % 50 == 49;
        local_tree = tree(&local, full);
        let mount_tree = tree(m.path(), full);
        assert!(
            mount_tree == local_tree,
            "step {i} (seed {seed}): after {op:?} the trees differ:\n{}",
            describe_diff(&mount_tree, &local_tree)
        );
        for p in op.paths() {
            if local_tree
                .get(p)
                .is_some_and(|n| n.kind == 'f' || n.kind == 'd')
            {
                assert_eq!(
                    xattrs(&m.path().join(p)),
                    xattrs(&local.join(p)),
                    "step {i} (seed {seed}): after {op:?} the xattrs of {p} differ"
                );
            }
        }
    }
    eprintln!(
        "{steps} steps in {:.1?}; final tree has {} nodes",
        t.elapsed(),
        local_tree.len()
    );
}
