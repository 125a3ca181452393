//! Tests of the state machine: a model-based random test (`model`),
//! determinism and images (`determinism`), exactly-once sessions, and targeted
//! POSIX cases (`posix`, `perms`).

mod acls;
mod chunks;
mod delegations;
mod determinism;
mod extra_attrs;
mod model;
mod model_run;
mod perms;
mod posix;
mod quotas;
mod rights;
mod snapshots;
mod trash;

use super::*;

pub fn root() -> Cred {
    Cred::root()
}

pub fn user(uid: u32) -> Cred {
    Cred::user(uid, uid)
}

pub fn ts(sec: i64) -> Timespec {
    Timespec::new(sec, 0)
}

/// Rights as an export line `rw,maproot=999:999,mingoal=1,maxgoal=3` on
/// the root, from 127.0.0.1, would give.
pub fn exported() -> Rights {
    Rights {
        root: Inode::ROOT,
        read_only: false,
        admin: false,
        meta: false,
        maproot: Some((999, 999)),
        mapall: None,
        from: Some(std::net::IpAddr::from([127, 0, 0, 1])),
        goal: (1, 3),
        trash_time: (0, u32::MAX),
        line: 1,
    }
}

/// A namespace with one registered session, sending requests with
/// increasing sequence numbers and a clock that ticks one second per request.
pub struct H {
    pub ns: Namespace,
    pub sid: SessionId,
    pub seq: u64,
    pub now: i64,
}

impl H {
    pub fn new() -> H {
        let mut ns = Namespace::new();
        let reply = ns.apply(&Request {
            session: SessionId(0),
            seq: 0,
            acked: 0,
            time: ts(1000),
            op: Op::SetClusterId { id: "test".into() },
        });
        assert_eq!(reply, Reply::Ok);
        let reply = ns.apply(&Request {
            session: SessionId(0),
            seq: 0,
            acked: 0,
            time: ts(1000),
            op: Op::RegisterSession {
                info: "test mount".into(),
            },
        });
        let Reply::Session { id } = reply else {
            panic!("register: {reply:?}")
        };
        // Deleted files are freed at once unless a test sets a trash time.
        let reply = ns.apply(&Request {
            session: SessionId(0),
            seq: 0,
            acked: 0,
            time: ts(1000),
            op: Op::SetTrashTime {
                cred: root(),
                inode: Inode::ROOT,
                trash_time: 0,
                recursive: false,
            },
        });
        assert!(matches!(reply, Reply::Tree { .. }), "{reply:?}");
        // A quota on the root that never refuses: every test then checks
        // (in `check`, after each request) that quota usage follows every
        // change. Tests of quotas remove it.
        let unlimited = Limits {
            inodes: Some(u64::MAX),
            ..Limits::default()
        };
        let reply = ns.apply(&Request {
            session: SessionId(0),
            seq: 0,
            acked: 0,
            time: ts(1000),
            op: Op::SetQuota {
                cred: root(),
                inode: Inode::ROOT,
                setting: Some(QuotaSetting {
                    soft: Limits::default(),
                    hard: unlimited,
                    grace: DEFAULT_GRACE,
                }),
            },
        });
        assert_eq!(reply, Reply::Ok);
        H {
            ns,
            sid: id,
            seq: 0,
            now: 1000,
        }
    }

    /// The next request of the session (not applied).
    pub fn next_req(&mut self, op: Op) -> Request {
        self.seq += 1;
        self.now += 1;
        Request {
            session: self.sid,
            seq: self.seq,
            acked: self.seq - 1,
            time: ts(self.now),
            op,
        }
    }

    pub fn run(&mut self, op: Op) -> Reply {
        let req = self.next_req(op);
        let reply = self.ns.apply(&req);
        if let Err(e) = self.ns.check() {
            panic!("invariant broken after {:?}: {e}", req.op);
        }
        reply
    }

    /// Run `op`, expecting attributes back.
    pub fn attr(&mut self, op: Op) -> Attr {
        match self.run(op.clone()) {
            Reply::Attr(a) => a,
            r => panic!("{op:?} -> {r:?}"),
        }
    }

    pub fn ok(&mut self, op: Op) {
        match self.run(op.clone()) {
            Reply::Ok | Reply::Attr(_) => {}
            r => panic!("{op:?} -> {r:?}"),
        }
    }

    /// Run `op`, expecting an error; the namespace must not change (the
    /// session's reply cache aside: compared through a clone without it).
    pub fn err(&mut self, op: Op) -> Errno {
        let before = self.tree_hash();
        let r = self.run(op.clone());
        assert_eq!(
            before,
            self.tree_hash(),
            "{op:?} failed but changed the namespace"
        );
        match r {
            Reply::Err(e) => e,
            r => panic!("{op:?} -> {r:?}, expected an error"),
        }
    }

    /// Hash of everything but the session reply caches.
    pub fn tree_hash(&self) -> u64 {
        let mut ns = self.ns.clone();
        for s in ns.sessions.values_mut() {
            s.replies.clear();
            s.acked = 0;
            s.last_seen = Timespec::default();
        }
        ns.image_hash()
    }

    pub fn mkdir(&mut self, cred: &Cred, parent: Inode, name: &str, mode: u32) -> Attr {
        self.attr(mkdir(cred, parent, name, mode))
    }

    pub fn create(&mut self, cred: &Cred, parent: Inode, name: &str, mode: u32) -> Attr {
        self.attr(create(cred, parent, name, mode))
    }

    pub fn lookup(&self, parent: Inode, name: &str) -> Result<Attr, Errno> {
        self.ns.lookup(&root(), parent, name.as_bytes())
    }
}

pub fn mkdir(cred: &Cred, parent: Inode, name: impl AsRef<[u8]>, mode: u32) -> Op {
    Op::Mkdir {
        cred: cred.clone(),
        parent,
        name: name.as_ref().to_vec(),
        mode,
        umask: 0,
    }
}

pub fn create(cred: &Cred, parent: Inode, name: impl AsRef<[u8]>, mode: u32) -> Op {
    Op::Create {
        cred: cred.clone(),
        parent,
        name: name.as_ref().to_vec(),
        mode,
        umask: 0,
        exclusive: true,
    }
}

pub fn mknod(cred: &Cred, parent: Inode, name: impl AsRef<[u8]>, ftype: FileType) -> Op {
    Op::Mknod {
        cred: cred.clone(),
        parent,
        name: name.as_ref().to_vec(),
        ftype,
        mode: 0o644,
        umask: 0,
        rdev: 0x0801,
    }
}

pub fn unlink(cred: &Cred, parent: Inode, name: impl AsRef<[u8]>) -> Op {
    Op::Unlink {
        cred: cred.clone(),
        parent,
        name: name.as_ref().to_vec(),
    }
}

pub fn rmdir(cred: &Cred, parent: Inode, name: impl AsRef<[u8]>) -> Op {
    Op::Rmdir {
        cred: cred.clone(),
        parent,
        name: name.as_ref().to_vec(),
    }
}

pub fn rename(cred: &Cred, p: Inode, n: impl AsRef<[u8]>, np: Inode, nn: impl AsRef<[u8]>) -> Op {
    Op::Rename {
        cred: cred.clone(),
        parent: p,
        name: n.as_ref().to_vec(),
        new_parent: np,
        new_name: nn.as_ref().to_vec(),
        noreplace: false,
        exchange: false,
    }
}

pub fn rename_flags(op: Op, noreplace: bool, exchange: bool) -> Op {
    match op {
        Op::Rename {
            cred,
            parent,
            name,
            new_parent,
            new_name,
            ..
        } => Op::Rename {
            cred,
            parent,
            name,
            new_parent,
            new_name,
            noreplace,
            exchange,
        },
        other => other,
    }
}

pub fn link(cred: &Cred, inode: Inode, np: Inode, nn: impl AsRef<[u8]>) -> Op {
    Op::Link {
        cred: cred.clone(),
        inode,
        new_parent: np,
        new_name: nn.as_ref().to_vec(),
    }
}

pub fn symlink(cred: &Cred, parent: Inode, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Op {
    Op::Symlink {
        cred: cred.clone(),
        parent,
        name: name.as_ref().to_vec(),
        target: target.as_ref().to_vec(),
    }
}

/// A SetAttr changing nothing; fill the fields wanted.
pub fn setattr(cred: &Cred, inode: Inode) -> Op {
    Op::SetAttr {
        cred: cred.clone(),
        inode,
        mode: None,
        uid: None,
        gid: None,
        size: None,
        atime: None,
        mtime: None,
    }
}

pub fn chmod(cred: &Cred, inode: Inode, m: u32) -> Op {
    with_setattr(setattr(cred, inode), |mode, _, _, _| *mode = Some(m))
}

pub fn chown(cred: &Cred, inode: Inode, u: Option<u32>, g: Option<u32>) -> Op {
    with_setattr(setattr(cred, inode), |_, uid, gid, _| {
        *uid = u;
        *gid = g;
    })
}

pub fn truncate(cred: &Cred, inode: Inode, s: u64) -> Op {
    with_setattr(setattr(cred, inode), |_, _, _, size| *size = Some(s))
}

pub fn utimens(cred: &Cred, inode: Inode, a: Option<TimeSet>, m: Option<TimeSet>) -> Op {
    match setattr(cred, inode) {
        Op::SetAttr {
            cred,
            inode,
            mode,
            uid,
            gid,
            size,
            ..
        } => Op::SetAttr {
            cred,
            inode,
            mode,
            uid,
            gid,
            size,
            atime: a,
            mtime: m,
        },
        other => other,
    }
}

fn with_setattr(
    mut op: Op,
    f: impl FnOnce(&mut Option<u32>, &mut Option<u32>, &mut Option<u32>, &mut Option<u64>),
) -> Op {
    if let Op::SetAttr {
        mode,
        uid,
        gid,
        size,
        ..
    } = &mut op
    {
        f(mode, uid, gid, size);
    }
    op
}

pub fn setxattr(cred: &Cred, inode: Inode, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Op {
    Op::SetXattr {
        cred: cred.clone(),
        inode,
        name: name.as_ref().to_vec(),
        value: value.as_ref().to_vec(),
        create_only: false,
        replace_only: false,
    }
}

pub fn removexattr(cred: &Cred, inode: Inode, name: impl AsRef<[u8]>) -> Op {
    Op::RemoveXattr {
        cred: cred.clone(),
        inode,
        name: name.as_ref().to_vec(),
    }
}

pub fn open(cred: &Cred, inode: Inode, mode: OpenMode, truncate: bool) -> Op {
    Op::Open {
        cred: cred.clone(),
        inode,
        mode,
        truncate,
    }
}
