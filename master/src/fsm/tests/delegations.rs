//! Write-back creates: delegations, held inode numbers, batches.

use super::*;

const R: Inode = Inode::ROOT;

/// A namespace without the root quota (a quota blocks delegations).
fn unquoted() -> H {
    let mut h = H::new();
    h.ok(Op::SetQuota {
        cred: root(),
        inode: R,
        setting: None,
    });
    h
}

fn other_session(h: &mut H) -> SessionId {
    let r = h.ns.apply(&Request {
        session: SessionId(0),
        seq: 0,
        acked: 0,
        time: ts(h.now),
        op: Op::RegisterSession {
            info: "other".into(),
        },
    });
    let Reply::Session { id } = r else {
        panic!("register: {r:?}")
    };
    id
}

fn delegate(dir: Inode, inodes: u32) -> Op {
    Op::Delegate { dir, inodes }
}

fn create_at(parent: Inode, name: &str, inode: u64, sec: i64) -> Op {
    Op::CreateAt(MakeAt {
        cred: user(1000),
        parent,
        name: name.as_bytes().to_vec(),
        mode: 0o666,
        umask: 0o022,
        inode: Inode(inode),
        time: ts(sec),
    })
}

fn granted(r: Reply) -> (u64, u32) {
    match r {
        Reply::Delegated { first, count } => (first, count),
        r => panic!("Delegate -> {r:?}"),
    }
}

#[test]
fn a_delegated_directory_takes_creates_with_held_numbers_and_the_mounts_time() {
    let mut h = unquoted();
    let d = h.mkdir(&root(), R, "d", 0o777).inode;
    let (first, count) = granted(h.run(delegate(d, 100)));
    assert_eq!(count, 100);
    assert_eq!(h.ns.delegated_to(d), Some(h.sid));
    // Held enough: nothing more given.
    assert_eq!(granted(h.run(delegate(d, 100))), (0, 0));
    let t = h.now + 1; // the mount's clock, a second ahead of the master's
    let a = h.attr(create_at(d, "f", first + 3, t + 1));
    assert_eq!(a.inode, Inode(first + 3));
    assert_eq!(a.mode & 0o7777, 0o644);
    assert_eq!((a.uid, a.gid), (1000, 1000));
    assert_eq!(a.mtime, ts(t + 1));
    assert_eq!(h.ns.getattr(d).expect("dir").mtime, ts(t + 1));
    assert_eq!(h.lookup(d, "f").expect("made").inode, Inode(first + 3));
    // Numbers below the one used are given up; the one used is gone.
    assert_eq!(h.ns.reserved_count(h.sid), 100 - 4);
    assert_eq!(h.err(create_at(d, "g", first + 3, t)), Errno::EINVAL);
    assert_eq!(h.err(create_at(d, "g", first + 1, t)), Errno::EINVAL);
    // Not held at all, or a name that exists.
    assert_eq!(h.err(create_at(d, "g", first + 500, t)), Errno::EINVAL);
    assert_eq!(h.err(create_at(d, "f", first + 4, t)), Errno::EEXIST);
    // The create opened the file for the session.
    h.ok(Op::Release { inode: a.inode });
    // A clock a minute or more away is not believed.
    let far = h.attr(create_at(d, "late", first + 4, t - 3600));
    assert_eq!(far.mtime, ts(h.now));
}

#[test]
fn another_session_is_refused_until_the_holder_gives_it_back_or_the_leader_takes_it() {
    let mut h = unquoted();
    let d = h.mkdir(&root(), R, "d", 0o777).inode;
    granted(h.run(delegate(d, 10)));
    let other = other_session(&mut h);
    let req = |seq: u64, op: Op| Request {
        session: other,
        seq,
        acked: seq - 1,
        time: ts(2000),
        op,
    };
    assert_eq!(
        h.ns.apply(&req(1, delegate(d, 10))),
        Reply::Err(Errno::EBUSY)
    );
    // Giving back someone else's delegation changes nothing.
    let back = Op::Undelegate {
        dir: d,
        holder: h.sid,
    };
    assert_eq!(h.ns.apply(&req(2, back.clone())), Reply::Ok);
    assert_eq!(h.ns.delegated_to(d), Some(h.sid));
    // The leader takes it (session 0 names the holder).
    let taken = h.ns.apply(&Request {
        session: SessionId(0),
        seq: 0,
        acked: 0,
        time: ts(2000),
        op: back,
    });
    assert_eq!(taken, Reply::Ok);
    assert_eq!(h.ns.delegated_to(d), None);
    assert!(matches!(
        h.ns.apply(&req(3, delegate(d, 10))),
        Reply::Delegated { count: 10, .. }
    ));
    h.ns.check().expect("consistent");
}

#[test]
fn a_batch_applies_each_op_alone_and_in_order() {
    let mut h = unquoted();
    let d = h.mkdir(&root(), R, "d", 0o777).inode;
    let (first, _) = granted(h.run(delegate(d, 10)));
    let r = h.run(Op::Batch {
        ops: vec![
            create_at(d, "a", first, h.now),
            create_at(d, "a", first + 1, h.now),
            Op::Release {
                inode: Inode(first),
            },
            create_at(d, "b", first + 2, h.now),
            Op::Release {
                inode: Inode(first),
            },
        ],
    });
    assert_eq!(
        r,
        Reply::Batch(vec![0, Errno::EEXIST.0, 0, 0, Errno::EBADF.0])
    );
    assert!(h.lookup(d, "b").is_ok());
    // Only write-back ops may ride in a batch.
    let bad = Op::Batch {
        ops: vec![mkdir(&root(), d, "x", 0o755)],
    };
    assert_eq!(h.err(bad), Errno::EINVAL);
}

#[test]
fn a_batch_carries_unlinks_rmdirs_and_renames_of_a_held_directory() {
    let mut h = unquoted();
    let d = h.mkdir(&root(), R, "d", 0o777).inode;
    let sub = h.mkdir(&user(1000), d, "sub", 0o755).inode;
    let (first, _) = granted(h.run(delegate(d, 10)));
    granted(h.run(delegate(sub, 0)));
    let name = |s: &str| s.as_bytes().to_vec();
    let r = h.run(Op::Batch {
        ops: vec![
            create_at(d, "a", first, h.now),
            create_at(d, "b", first + 1, h.now),
            Op::Rename {
                cred: user(1000),
                parent: d,
                name: name("a"),
                new_parent: d,
                new_name: name("b"),
                noreplace: false,
                exchange: false,
            },
            Op::Unlink {
                cred: user(1000),
                parent: d,
                name: name("a"),
            },
            Op::Rmdir {
                cred: user(1000),
                parent: d,
                name: name("sub"),
            },
            Op::Unlink {
                cred: user(1000),
                parent: d,
                name: name("b"),
            },
        ],
    });
    // The rename replaced b (so a is gone); rmdir took the held sub.
    assert_eq!(r, Reply::Batch(vec![0, 0, 0, Errno::ENOENT.0, 0, 0]));
    assert_eq!(h.lookup(d, "a").err(), Some(Errno::ENOENT));
    assert_eq!(h.lookup(d, "b").err(), Some(Errno::ENOENT));
    assert_eq!(h.ns.delegated_to(sub), None);
    assert_eq!(h.ns.delegated_to(d), Some(h.sid));
    h.ns.check().expect("consistent");
}

#[test]
fn a_batch_carries_changes_of_a_held_directorys_attributes_at_the_mounts_time() {
    let mut h = unquoted();
    let p = h.mkdir(&root(), R, "p", 0o777).inode;
    let d = h.mkdir(&user(1000), p, "d", 0o700).inode;
    granted(h.run(delegate(d, 0)));
    let set_at = |cred: Cred, mode: Option<u32>, mtime: Option<TimeSet>, sec: i64| Op::SetAttrAt {
        cred,
        inode: d,
        mode,
        uid: Some(1000),
        gid: None,
        atime: None,
        mtime,
        time: ts(sec),
    };
    let t = h.now + 5; // the mount's clock, ahead of the master's
    let r = h.run(Op::Batch {
        ops: vec![
            set_at(user(1000), Some(0o755), Some(TimeSet::At(ts(1000))), t),
            // Not the owner: refused as SetAttr refuses it.
            set_at(user(2000), Some(0o777), None, t),
            set_at(user(1000), None, Some(TimeSet::Now), t + 2),
        ],
    });
    assert_eq!(r, Reply::Batch(vec![0, Errno::EPERM.0, 0]));
    let a = h.ns.getattr(d).expect("dir");
    assert_eq!(a.mode & 0o7777, 0o755);
    assert_eq!(a.uid, 1000);
    // "Now" and the ctime are the mount's time.
    assert_eq!((a.mtime, a.ctime), (ts(t + 2), ts(t + 2)));
    // A mount clock more than a minute off gives way to the master's.
    h.ok(set_at(user(1000), None, None, h.now + 3600));
    assert_eq!(h.ns.getattr(d).expect("dir").ctime, ts(h.now));
    h.ns.check().expect("consistent");
}

#[test]
fn no_delegation_where_a_mount_could_not_foresee_a_create() {
    let mut h = H::new(); // with its root quota
    let q = h.mkdir(&root(), R, "q", 0o777).inode;
    assert_eq!(h.err(delegate(q, 10)), Errno::EBUSY);
    let mut h = unquoted();
    let sgid = h.mkdir(&root(), R, "sgid", 0o777).inode;
    h.ok(Op::SetAttr {
        cred: root(),
        inode: sgid,
        mode: Some(0o2777),
        uid: None,
        gid: None,
        size: None,
        atime: None,
        mtime: None,
    });
    assert_eq!(h.err(delegate(sgid, 10)), Errno::EBUSY);
    let e = h.mkdir(&root(), R, "e", 0o777).inode;
    h.run(Op::SetEattr {
        cred: root(),
        inode: e,
        set: mfs_common::eattr::NOOWNER,
        clear: 0,
        recursive: false,
    });
    assert_eq!(h.err(delegate(e, 10)), Errno::EBUSY);
    let f = h.create(&root(), R, "f", 0o644).inode;
    assert_eq!(h.err(delegate(f, 10)), Errno::ENOTDIR);
}

#[test]
fn delegations_go_with_the_session_and_the_directory_and_stay_in_images() {
    let mut h = unquoted();
    let d = h.mkdir(&root(), R, "d", 0o777).inode;
    let e = h.mkdir(&root(), R, "e", 0o777).inode;
    granted(h.run(delegate(d, 10)));
    granted(h.run(delegate(e, 10)));
    let (ns, _) = Namespace::from_image(&h.ns.to_image(b"")).expect("loads");
    assert_eq!(ns, h.ns);
    assert_eq!(ns.delegated_to(d), Some(h.sid));
    h.ok(Op::Rmdir {
        cred: root(),
        parent: R,
        name: b"e".to_vec(),
    });
    assert_eq!(h.ns.delegated_to(e), None);
    h.ok(Op::CloseSession);
    assert_eq!(h.ns.delegated_to(d), None);
    assert_eq!(h.ns.reserved_count(h.sid), 0);
    h.ns.check().expect("consistent");
}

#[test]
fn a_batch_carries_a_create_and_the_first_chunk_of_its_file() {
    let mut h = unquoted();
    let d = h.mkdir(&root(), R, "d", 0o777).inode;
    let (first, _) = granted(h.run(delegate(d, 10)));
    let Reply::Chunk { id, .. } =
        super::chunks::internal(&mut h.ns, Op::ReserveChunkIds { count: 2 })
    else {
        panic!("no ids reserved")
    };
    let new = |inode: u64, chunk: ChunkId, index: u32| Op::WriteNewChunk {
        cred: user(1000),
        inode: Inode(inode),
        index,
        chunk,
        version: ChunkVersion(1),
    };
    let r = h.run(Op::Batch {
        ops: vec![
            create_at(d, "f", first, h.now),
            new(first, id, 0),
            // The slot holds a chunk now: the client asks with WriteChunk.
            new(first, ChunkId(id.0 + 1), 0),
        ],
    });
    assert_eq!(r, Reply::Batch(vec![0, 0, Errno::EEXIST.0]));
    assert_eq!(h.ns.file_chunks(Inode(first)), Ok(&[Some(id)][..]));
    assert!(h.ns.chunk(id).expect("chunk").fresh);
    // Before its create, a file has no slot to fill.
    let r = h.run(Op::Batch {
        ops: vec![
            new(first + 1, ChunkId(id.0 + 1), 0),
            create_at(d, "g", first + 1, h.now),
        ],
    });
    assert_eq!(r, Reply::Batch(vec![Errno::ENOENT.0, 0]));
    h.ns.check().expect("consistent");
}

#[test]
fn held_chunk_ids_are_the_sessions_own_to_attach() {
    let mut h = unquoted();
    let d = h.mkdir(&root(), R, "d", 0o777).inode;
    let (first, _) = granted(h.run(delegate(d, 10)));
    let hold = |count: u32, give_back: Vec<ChunkId>| Op::HoldChunks { count, give_back };
    let Reply::Chunk { id, .. } = h.run(hold(3, vec![])) else {
        panic!("no ids held")
    };
    assert!((0..3).all(|i| h.ns.chunk_held(ChunkId(id.0 + i))));
    let attach = |inode: u64, chunk: ChunkId| Op::AttachChunk {
        cred: user(1000),
        inode: Inode(inode),
        index: 0,
        chunk,
    };
    let r = h.run(Op::Batch {
        ops: vec![
            create_at(d, "f", first, h.now),
            attach(first, id),
            create_at(d, "g", first + 1, h.now),
            // Not held: refused.
            attach(first + 1, ChunkId(id.0 + 3)),
            // Held but the slot is taken now.
            attach(first, ChunkId(id.0 + 1)),
        ],
    });
    assert_eq!(
        r,
        Reply::Batch(vec![0, 0, 0, Errno::EINVAL.0, Errno::EEXIST.0])
    );
    assert_eq!(h.ns.file_chunks(Inode(first)), Ok(&[Some(id)][..]));
    assert!(h.ns.chunk(id).expect("chunk").fresh);
    assert!(!h.ns.chunk_held(id) && h.ns.chunk_held(ChunkId(id.0 + 1)));
    // Another session cannot attach ids this one holds.
    let other = other_session(&mut h);
    let stolen = h.ns.apply(&Request {
        session: other,
        seq: 1,
        acked: 0,
        time: ts(h.now),
        op: attach(first + 1, ChunkId(id.0 + 2)),
    });
    assert_eq!(stolen, Reply::Err(Errno::EINVAL));
    // Given back: no one's; over the limit: EBUSY and nothing changes.
    h.run(hold(0, vec![ChunkId(id.0 + 1)]));
    assert!(!h.ns.chunk_held(ChunkId(id.0 + 1)));
    assert_eq!(
        h.run(hold(
            crate::fsm::delegations::MAX_HELD_CHUNKS as u32,
            vec![]
        )),
        Reply::Err(Errno::EBUSY)
    );
    assert!(h.ns.chunk_held(ChunkId(id.0 + 2)));
    h.ns.check().expect("consistent");
}

#[test]
fn a_directory_made_in_a_batch_is_held_at_once() {
    let mut h = unquoted();
    let d = h.mkdir(&root(), R, "d", 0o777).inode;
    let (first, _) = granted(h.run(delegate(d, 10)));
    let mkdir_at = |parent: Inode, name: &str, inode: u64, sec: i64| {
        Op::MkdirAt(MakeAt {
            cred: user(1000),
            parent,
            name: name.as_bytes().to_vec(),
            mode: 0o3777,
            umask: 0o022,
            inode: Inode(inode),
            time: ts(sec),
        })
    };
    let sub = Inode(first);
    let t0 = h.now - 30;
    let r = h.run(Op::Batch {
        ops: vec![
            mkdir_at(d, "sub", first, t0),
            create_at(sub, "f", first + 1, t0 + 1),
            mkdir_at(d, "sub", first + 2, t0 + 2),
            mkdir_at(d, "other", 12345, t0 + 2),
        ],
    });
    assert_eq!(
        r,
        Reply::Batch(vec![0, 0, Errno::EEXIST.0, Errno::EINVAL.0])
    );
    // What the mount answered: no SGID kept, sticky kept, the umask, the
    // mount's time, nlink 2, the size of every directory.
    let a = h.ns.getattr(sub).unwrap();
    assert_eq!(a.ftype, FileType::Directory);
    assert_eq!((a.mode, a.uid, a.gid, a.nlink), (0o1755, 1000, 1000, 2));
    assert_eq!((a.size, a.blocks_bytes), (4096, 4096));
    assert_eq!((a.atime, a.mtime), (ts(t0), ts(t0 + 1)));
    assert_eq!(h.ns.getattr(d).unwrap().nlink, 3);
    assert!(h.lookup(sub, "f").is_ok());
    assert_eq!(h.ns.delegated_to(sub), Some(h.sid));
    h.ns.check().expect("consistent");
    // Never with a number the session does not hold.
    let stray = mkdir_at(d, "x", 99_999, 80);
    assert_eq!(h.err(stray), Errno::EINVAL);
}

/// A namespace with `d` delegated to the session, 10 inode numbers from
/// `first` held there, and chunk id `id` held.
fn delegated_with_a_chunk() -> (H, Inode, u64, ChunkId) {
    let mut h = unquoted();
    let d = h.mkdir(&root(), R, "d", 0o777).inode;
    let (first, _) = granted(h.run(delegate(d, 10)));
    let Reply::Chunk { id, .. } = h.run(Op::HoldChunks {
        count: 1,
        give_back: vec![],
    }) else {
        panic!("no ids held")
    };
    (h, d, first, id)
}

#[test]
fn a_commit_with_kept_changes_takes_the_mounts_time() {
    let (mut h, d, first, id) = delegated_with_a_chunk();
    let f = Inode(first);
    let t0 = h.now + 5; // the mount's clock, ahead of the master's
    let with = |cred: Cred, mode: u32, ctime: i64| Op::WriteChunkEndWithTimed {
        cred,
        inode: f,
        index: 0,
        chunk: id,
        length: 4000,
        mtime: Some(ts(t0 - 100)),
        mode: Some(mode),
        atime: Some(ts(t0 - 200)),
        ctime: ts(ctime),
    };
    let attach = Op::AttachChunk {
        cred: user(1000),
        inode: f,
        index: 0,
        chunk: id,
    };
    let r = h.run(Op::Batch {
        ops: vec![
            create_at(d, "f", first, t0),
            attach,
            with(user(1000), 0o640, t0 + 1),
        ],
    });
    assert_eq!(r, Reply::Batch(vec![0, 0, 0]));
    // What the mount answered after its commit, to the nanosecond.
    let a = h.ns.getattr(f).unwrap();
    assert_eq!((a.size, a.mode & 0o7777), (4000, 0o640));
    assert_eq!(
        (a.atime, a.mtime, a.ctime),
        (ts(t0 - 200), ts(t0 - 100), ts(t0 + 1))
    );
    // Another user's changes are left out; the length stands.
    let r = h.run(Op::Batch {
        ops: vec![with(user(2000), 0o777, t0 + 2)],
    });
    assert_eq!(r, Reply::Batch(vec![0]));
    let a = h.ns.getattr(f).unwrap();
    assert_eq!((a.mode & 0o7777, a.ctime), (0o640, ts(t0 + 2)));
    h.ns.check().expect("consistent");
}

#[test]
fn a_file_made_in_a_batch_commits_at_the_mounts_time_and_opens_in_the_queue() {
    let (mut h, d, first, id) = delegated_with_a_chunk();
    let f = Inode(first);
    let t0 = h.now - 20;
    let timed = |length: u64, mtime: i64, ctime: i64| Op::WriteChunkEndTimed {
        inode: f,
        index: 0,
        chunk: id,
        length,
        mtime: Some(ts(mtime)),
        ctime: ts(ctime),
    };
    let open = Op::Open {
        cred: user(1000),
        inode: f,
        mode: OpenMode::Read,
        truncate: false,
    };
    let r = h.run(Op::Batch {
        ops: vec![
            create_at(d, "f", first, t0),
            Op::AttachChunk {
                cred: user(1000),
                inode: f,
                index: 0,
                chunk: id,
            },
            timed(4000, t0 + 1, t0 + 2),
            open.clone(),
        ],
    });
    assert_eq!(r, Reply::Batch(vec![0, 0, 0, 0]));
    // What the mount answered after its commit, to the nanosecond.
    let a = h.ns.getattr(f).unwrap();
    assert_eq!((a.size, a.blocks_bytes), (4000, 4096));
    assert_eq!(
        (a.atime, a.mtime, a.ctime),
        (ts(t0), ts(t0 + 1), ts(t0 + 2))
    );
    // A clock more than a minute off gives way to the request's.
    let r = h.run(Op::Batch {
        ops: vec![timed(100, 5, 5)],
    });
    assert_eq!(r, Reply::Batch(vec![0]));
    let a = h.ns.getattr(f).unwrap();
    assert_eq!((a.size, a.mtime, a.ctime), (4000, ts(5), ts(h.now)));
    // The queued open counts: the unlinked file stays until its release.
    let r = h.run(Op::Batch {
        ops: vec![unlink(&user(1000), d, "f")],
    });
    assert_eq!(r, Reply::Batch(vec![0]));
    assert!(h.ns.getattr(f).is_ok(), "sustained while open");
    // (The create opened it too.)
    h.ok(Op::Release { inode: f });
    assert!(h.ns.session_has_open(h.sid, f));
    h.ok(Op::Release { inode: f });
    assert!(!h.ns.session_has_open(h.sid, f));
    // Opens that truncate are not the queue's.
    let r = h.run(Op::Batch {
        ops: vec![Op::Open {
            cred: user(1000),
            inode: d,
            mode: OpenMode::Read,
            truncate: true,
        }],
    });
    assert_eq!(r, Reply::Err(Errno::EINVAL));
    h.ns.check().expect("consistent");
}
