//! Tests of the lock table: ranges split, merge, upgrade, unlock in the
//! middle; conflicts between owners and sessions; release and session end.

use super::super::tests::{root, ts};
use super::super::*;

const MAX: u64 = u64::MAX;

/// A namespace with one regular file opened by two sessions.
struct L {
    ns: Namespace,
    a: SessionId,
    b: SessionId,
    file: Inode,
    seq: u64,
}

impl L {
    fn new() -> L {
        let mut ns = Namespace::new();
        let internal = |op| Request {
            session: SessionId(0),
            seq: 0,
            acked: 0,
            time: ts(1000),
            op,
        };
        ns.apply(&internal(Op::SetClusterId { id: "t".into() }));
        let mut sessions = Vec::new();
        for _ in 0..2 {
            match ns.apply(&internal(Op::RegisterSession { info: "m".into() })) {
                Reply::Session { id } => sessions.push(id),
                r => panic!("register: {r:?}"),
            }
        }
        let mut l = L {
            ns,
            a: sessions[0],
            b: sessions[1],
            file: Inode(0),
            seq: 0,
        };
        let create = Op::Create {
            cred: root(),
            parent: Inode::ROOT,
            name: b"f".to_vec(),
            mode: 0o644,
            umask: 0,
            exclusive: true,
        };
        match l.run(l.a, create) {
            Reply::Attr(a) => l.file = a.inode,
            r => panic!("create: {r:?}"),
        }
        let open = Op::Open {
            cred: root(),
            inode: l.file,
            mode: OpenMode::ReadWrite,
            truncate: false,
        };
        assert!(matches!(l.run(l.b, open), Reply::Attr(_)));
        l
    }

    fn run(&mut self, session: SessionId, op: Op) -> Reply {
        self.seq += 1;
        let r = self.ns.apply(&Request {
            session,
            seq: self.seq,
            acked: 0,
            time: ts(2000),
            op,
        });
        if let Err(e) = self.ns.check() {
            panic!("invariant broken: {e}");
        }
        r
    }

    fn lock(&mut self, s: SessionId, owner: u64, ltype: LockType, start: u64, end: u64) -> Reply {
        self.lock_kind(s, owner, LockKind::Posix, ltype, start, end)
    }

    fn lock_kind(
        &mut self,
        s: SessionId,
        owner: u64,
        kind: LockKind,
        ltype: LockType,
        start: u64,
        end: u64,
    ) -> Reply {
        let op = Op::SetLock {
            inode: self.file,
            owner,
            kind,
            ltype,
            start,
            end,
            pid: 42,
        };
        self.run(s, op)
    }

    /// The locks held, as (session, owner, write, start, end).
    fn held(&self) -> Vec<(SessionId, u64, bool, u64, u64)> {
        self.ns
            .locks_of(self.file)
            .iter()
            .map(|l| (l.session, l.owner, l.write, l.start, l.end))
            .collect()
    }
}

const EAGAIN: Reply = Reply::Err(Errno::EAGAIN);

#[test]
fn unlock_in_the_middle_splits() {
    let mut l = L::new();
    let a = l.a;
    assert_eq!(l.lock(a, 1, LockType::Write, 0, 99), Reply::Ok);
    assert_eq!(l.lock(a, 1, LockType::Unlock, 40, 59), Reply::Ok);
    assert_eq!(l.held(), vec![(a, 1, true, 0, 39), (a, 1, true, 60, 99)]);
    // The hole is free for another session, the rest is not.
    let b = l.b;
    assert_eq!(l.lock(b, 7, LockType::Write, 40, 59), Reply::Ok);
    assert_eq!(l.lock(b, 7, LockType::Read, 39, 39), EAGAIN);
    assert_eq!(l.lock(b, 7, LockType::Read, 60, 60), EAGAIN);
}

#[test]
fn adjacent_and_overlapping_ranges_merge() {
    let mut l = L::new();
    let a = l.a;
    assert_eq!(l.lock(a, 1, LockType::Read, 10, 19), Reply::Ok);
    assert_eq!(l.lock(a, 1, LockType::Read, 30, 39), Reply::Ok);
    assert_eq!(l.lock(a, 1, LockType::Read, 20, 29), Reply::Ok);
    assert_eq!(l.held(), vec![(a, 1, false, 10, 39)]);
    assert_eq!(l.lock(a, 1, LockType::Read, 35, MAX), Reply::Ok);
    assert_eq!(l.held(), vec![(a, 1, false, 10, MAX)]);
}

#[test]
fn upgrade_of_part_of_a_range_splits_by_type() {
    let mut l = L::new();
    let (a, b) = (l.a, l.b);
    assert_eq!(l.lock(a, 1, LockType::Read, 0, 99), Reply::Ok);
    // Another reader is fine; it then blocks an upgrade over its range.
    assert_eq!(l.lock(b, 2, LockType::Read, 90, 95), Reply::Ok);
    assert_eq!(l.lock(a, 1, LockType::Write, 50, 95), EAGAIN);
    assert_eq!(l.held(), vec![(a, 1, false, 0, 99), (b, 2, false, 90, 95)]);
    assert_eq!(l.lock(a, 1, LockType::Write, 20, 29), Reply::Ok);
    assert_eq!(
        l.held(),
        vec![
            (a, 1, false, 0, 19),
            (a, 1, true, 20, 29),
            (a, 1, false, 30, 99),
            (b, 2, false, 90, 95),
        ]
    );
    // Downgrading back merges the three pieces again.
    assert_eq!(l.lock(a, 1, LockType::Read, 20, 29), Reply::Ok);
    assert_eq!(l.held(), vec![(a, 1, false, 0, 99), (b, 2, false, 90, 95)]);
}

#[test]
fn owners_of_one_session_conflict_and_get_lock_reports_the_holder() {
    let mut l = L::new();
    let a = l.a;
    assert_eq!(l.lock(a, 1, LockType::Write, 100, 199), Reply::Ok);
    assert_eq!(l.lock(a, 2, LockType::Read, 150, 150), EAGAIN);
    assert_eq!(l.lock(a, 2, LockType::Write, 200, 300), Reply::Ok);
    let found = l.query(l.b, 9, false, 0, 120).unwrap();
    let found = found.expect("a conflicting lock");
    assert_eq!((found.session, found.owner), (a, 1));
    assert_eq!(
        (found.start, found.end, found.write, found.pid),
        (100, 199, true, 42)
    );
    // The owner's own lock never conflicts with itself.
    let own = l.query(a, 1, true, 0, 150);
    assert_eq!(own, Ok(None));
    let free = l.query(l.b, 9, true, 301, MAX);
    assert_eq!(free, Ok(None));
    assert_eq!(l.query(l.b, 9, true, 5, 4), Err(Errno::EINVAL));
}

#[test]
fn flock_and_posix_are_apart() {
    let mut l = L::new();
    let (a, b) = (l.a, l.b);
    assert_eq!(
        l.lock_kind(a, 1, LockKind::Flock, LockType::Write, 0, MAX),
        Reply::Ok
    );
    assert_eq!(l.lock(b, 2, LockType::Write, 0, MAX), Reply::Ok);
    assert_eq!(
        l.lock_kind(b, 3, LockKind::Flock, LockType::Read, 0, MAX),
        EAGAIN
    );
    assert_eq!(
        l.lock_kind(a, 1, LockKind::Flock, LockType::Unlock, 0, MAX),
        Reply::Ok
    );
    assert_eq!(
        l.lock_kind(b, 3, LockKind::Flock, LockType::Read, 0, MAX),
        Reply::Ok
    );
}

#[test]
fn locks_go_with_the_last_release_and_with_the_session() {
    let mut l = L::new();
    let (a, b, file) = (l.a, l.b, l.file);
    assert_eq!(l.lock(a, 1, LockType::Write, 0, 9), Reply::Ok);
    assert_eq!(l.lock(b, 2, LockType::Write, 10, 19), Reply::Ok);
    assert_eq!(l.run(a, Op::Release { inode: file }), Reply::Ok);
    assert_eq!(l.held(), vec![(b, 2, true, 10, 19)]);
    // Without the file open, a session cannot lock it.
    assert_eq!(l.lock(a, 1, LockType::Read, 0, 0), Reply::Err(Errno::EBADF));
    let expire = Request {
        session: SessionId(0),
        seq: 0,
        acked: 0,
        time: ts(3000),
        op: Op::ExpireSessions { ids: vec![b] },
    };
    assert_eq!(l.ns.apply(&expire), Reply::Ok);
    assert!(l.ns.locks_of(file).is_empty());
    assert!(l.ns.check().is_ok());
}

#[test]
fn bad_requests_change_nothing() {
    let mut l = L::new();
    let a = l.a;
    assert_eq!(l.lock(a, 1, LockType::Write, 5, 10), Reply::Ok);
    let before = l.held();
    assert_eq!(
        l.lock(a, 1, LockType::Write, 10, 5),
        Reply::Err(Errno::EINVAL)
    );
    let op = Op::SetLock {
        inode: Inode(9999),
        owner: 1,
        kind: LockKind::Posix,
        ltype: LockType::Write,
        start: 0,
        end: 1,
        pid: 1,
    };
    assert_eq!(l.run(a, op.clone()), Reply::Err(Errno::ENOENT));
    // Session 0 (tools, internal) holds no locks.
    let op = Op::SetLock {
        inode: l.file,
        owner: 1,
        kind: LockKind::Posix,
        ltype: LockType::Write,
        start: 0,
        end: 1,
        pid: 1,
    };
    let internal = Request {
        session: SessionId(0),
        seq: 0,
        acked: 0,
        time: ts(3000),
        op,
    };
    assert_eq!(l.ns.apply(&internal), Reply::Err(Errno::EBADF));
    assert_eq!(l.held(), before);
}

#[test]
fn too_many_locks_is_enolck() {
    let mut l = L::new();
    let a = l.a;
    for i in 0..MAX_LOCKS_PER_INODE as u64 {
        // Alternate types so no two neighbours merge.
        let t = if i % 2 == 0 {
            LockType::Read
        } else {
            LockType::Write
        };
        assert_eq!(l.lock_fast(a, t, i), Reply::Ok, "lock {i}");
    }
    let n = MAX_LOCKS_PER_INODE as u64;
    assert_eq!(
        l.lock(a, 1, LockType::Write, n + 5, n + 5),
        Reply::Err(Errno::ENOLCK)
    );
}

#[test]
fn locks_survive_an_image_round_trip() {
    let mut l = L::new();
    let a = l.a;
    assert_eq!(l.lock(a, 1, LockType::Write, 0, 9), Reply::Ok);
    let (back, _) = Namespace::from_image(&l.ns.to_image(b"")).unwrap();
    assert_eq!(back, l.ns);
    assert_eq!(back.locks_of(l.file).len(), 1);
}

impl L {
    /// F_GETLK of a POSIX lock on the file.
    fn query(
        &self,
        session: SessionId,
        owner: u64,
        write: bool,
        start: u64,
        end: u64,
    ) -> Result<Option<FileLock>, Errno> {
        self.ns.get_lock(&LockQuery {
            inode: self.file,
            session,
            owner,
            kind: LockKind::Posix,
            write,
            start,
            end,
        })
    }

    /// A lock of owner 1 on byte `at`, without the full invariant check
    /// (for the many-locks test).
    fn lock_fast(&mut self, s: SessionId, ltype: LockType, at: u64) -> Reply {
        self.seq += 1;
        self.ns.apply(&Request {
            session: s,
            seq: self.seq,
            acked: self.seq - 1,
            time: ts(2000),
            op: Op::SetLock {
                inode: self.file,
                owner: 1,
                kind: LockKind::Posix,
                ltype,
                start: at,
                end: at,
                pid: 1,
            },
        })
    }
}
