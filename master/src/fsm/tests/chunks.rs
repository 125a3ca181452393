//! The data path's operations: allocation, versions, write leases and ends,
//! deletes done, goal and trash time of trees.

use super::*;
use crate::fsm::namespace::NodeData;

const R: Inode = Inode::ROOT;

/// A harness whose root anyone may create in.
fn harness() -> H {
    let mut h = H::new();
    h.ok(chmod(&root(), R, 0o777));
    h
}

pub(super) fn internal(ns: &mut Namespace, op: Op) -> Reply {
    let r = ns.apply(&Request {
        session: SessionId(0),
        seq: 0,
        acked: 0,
        time: ts(1),
        op,
    });
    if let Err(e) = ns.check() {
        panic!("invariant broken: {e}");
    }
    r
}

fn alloc(h: &mut H, inode: Inode, index: u32) -> Result<ChunkId, Errno> {
    match internal(&mut h.ns, Op::AllocChunk { inode, index }) {
        Reply::Chunk { id, version, .. } => {
            assert_eq!(version, ChunkVersion(1));
            Ok(id)
        }
        Reply::Err(e) => Err(e),
        r => panic!("alloc: {r:?}"),
    }
}

fn write_chunk(cred: &Cred, inode: Inode, index: u32, chunk: ChunkId, v: u32) -> Op {
    Op::WriteChunk {
        cred: cred.clone(),
        inode,
        index,
        chunk,
        version: ChunkVersion(v),
    }
}

/// SetChunkVersion of `chunk` to `v`, as the leader commits it.
fn set_version(ns: &mut Namespace, chunk: ChunkId, v: u32) -> Reply {
    internal(
        ns,
        Op::SetChunkVersion {
            chunk,
            version: ChunkVersion(v),
        },
    )
}

fn write_end(inode: Inode, index: u32, chunk: ChunkId, length: u64) -> Op {
    Op::WriteChunkEnd {
        inode,
        index,
        chunk,
        length,
    }
}

#[test]
fn alloc_fills_holes_with_new_ids() {
    let mut h = harness();
    let f = h.create(&root(), R, "f", 0o644);
    let a = alloc(&mut h, f.inode, 3).expect("alloc");
    assert_eq!(
        h.ns.file_chunks(f.inode).expect("file"),
        &[None, None, None, Some(a)]
    );
    let b = alloc(&mut h, f.inode, 1).expect("alloc");
    assert!(b > a, "ids grow");
    assert_eq!(h.ns.next_chunk_id(), ChunkId(b.0 + 1));
    let info = h.ns.chunk(a).expect("in the table").clone();
    assert_eq!((info.refcount, info.goal, info.fresh), (1, 1, true));
    // A filled slot is not allocated again, nothing changes.
    let before = h.ns.image_hash();
    assert_eq!(alloc(&mut h, f.inode, 3), Err(Errno::EEXIST));
    assert_eq!(h.ns.image_hash(), before);
    // Not a regular file, absent, too far.
    let d = h.mkdir(&root(), R, "d", 0o755);
    assert_eq!(alloc(&mut h, d.inode, 0), Err(Errno::EISDIR));
    assert_eq!(alloc(&mut h, Inode(999), 0), Err(Errno::ENOENT));
    assert_eq!(
        alloc(&mut h, f.inode, MAX_CHUNK_INDEX + 1),
        Err(Errno::EFBIG)
    );
    // Clients cannot allocate.
    assert_eq!(
        h.err(Op::AllocChunk {
            inode: f.inode,
            index: 9
        }),
        Errno::EPERM
    );
    assert_eq!(h.ns.image_hash(), {
        let ns = h.ns.clone();
        ns.check().expect("invariants");
        ns.image_hash()
    });
}

#[test]
fn new_chunks_take_the_file_goal() {
    let mut h = harness();
    let d = h.mkdir(&root(), R, "d", 0o755);
    let r = h.run(Op::SetGoal {
        cred: root(),
        inode: d.inode,
        goal: 3,
        recursive: false,
    });
    assert!(matches!(r, Reply::Tree { changed: 1, .. }), "{r:?}");
    let f = h.create(&root(), d.inode, "f", 0o644);
    assert_eq!(f.goal, 3, "inherited from the directory");
    let id = alloc(&mut h, f.inode, 0).expect("alloc");
    assert_eq!(h.ns.chunk(id).map(|c| c.goal), Some(3));
}

#[test]
fn write_then_end_grows_the_file() {
    let mut h = harness();
    let c = user(1000);
    let f = h.create(&c, R, "f", 0o644);
    let id = alloc(&mut h, f.inode, 1).expect("alloc");
    // Same version (a new chunk), then a bump.
    let r = h.run(write_chunk(&c, f.inode, 1, id, 1));
    assert_eq!(
        r,
        Reply::Chunk {
            id,
            version: ChunkVersion(1),
            length: 0
        }
    );
    h.run(write_chunk(&c, f.inode, 1, id, 2));
    assert_eq!(h.ns.chunk(id).map(|c| c.version), Some(ChunkVersion(2)));
    // An older version than recorded: ask again.
    assert_eq!(h.err(write_chunk(&c, f.inode, 1, id, 1)), Errno::EAGAIN);
    // Another slot, another chunk: ask again.
    assert_eq!(h.err(write_chunk(&c, f.inode, 0, id, 3)), Errno::EAGAIN);
    let end = CHUNK_SIZE + 100;
    let a = h.attr(write_end(f.inode, 1, id, end));
    assert_eq!(a.size, end);
    assert_eq!(a.mtime, ts(h.now));
    assert_eq!(a.ctime, ts(h.now));
    assert!(!h.ns.chunk(id).expect("chunk").fresh);
    // The length never shrinks through a write end.
    let a = h.attr(write_end(f.inode, 1, id, 10));
    assert_eq!(a.size, end);
    // With the writer's mtime: that mtime, ctime the request's time.
    let a = h.attr(Op::WriteChunkEndAt {
        inode: f.inode,
        index: 1,
        chunk: id,
        length: end + 1,
        mtime: ts(77),
    });
    assert_eq!((a.size, a.mtime, a.ctime), (end + 1, ts(77), ts(h.now)));
}

#[test]
fn write_end_with_attribute_changes() {
    let mut h = harness();
    let owner = user(1000);
    let other = user(2000);
    let f = h.create(&owner, R, "f", 0o600);
    let id = alloc(&mut h, f.inode, 0).expect("alloc");
    h.run(write_chunk(&owner, f.inode, 0, id, 1));
    let with = |cred: &Cred, (index, length): (u32, u64), mtime: Option<i64>, mode| {
        Op::WriteChunkEndWith {
            cred: cred.clone(),
            inode: f.inode,
            index,
            chunk: id,
            length,
            mtime: mtime.map(ts),
            mode,
            atime: Some(ts(5)),
        }
    };
    // The owner's chmod and utimes ride on the end of its write.
    let a = h.attr(with(&owner, (0, 100), Some(77), Some(0o644)));
    assert_eq!(a.size, 100);
    assert_eq!(a.mode & 0o7777, 0o644);
    assert_eq!((a.atime, a.mtime, a.ctime), (ts(5), ts(77), ts(h.now)));
    // Without an mtime: the request's time.
    let a = h.attr(with(&owner, (0, 200), None, None));
    assert_eq!((a.size, a.mtime), (200, ts(h.now)));
    // Someone who may not chmod the file: the write ends, the mode and
    // the atime stay as they were.
    h.run(write_chunk(&owner, f.inode, 0, id, 2));
    let a = h.attr(with(&other, (0, 300), Some(88), Some(0o666)));
    assert_eq!(a.size, 300);
    assert_eq!(a.mode & 0o7777, 0o644);
    assert_eq!((a.atime, a.mtime), (ts(5), ts(88)));
    // A write end on a slot the chunk is not in changes nothing at all.
    let e = h.err(with(&owner, (1, 400), Some(99), Some(0o600)));
    assert_eq!(e, Errno::EINVAL);
    let a = h.ns.getattr(f.inode).expect("getattr");
    assert_eq!((a.size, a.mode & 0o7777, a.mtime), (300, 0o644, ts(88)));
}

#[test]
fn write_permission() {
    let mut h = harness();
    let owner = user(1000);
    let other = user(2000);
    let f = h.create(&owner, R, "f", 0o444);
    let id = alloc(&mut h, f.inode, 0).expect("alloc");
    // The owner's session has it open (create): it may write a 0444 file.
    h.run(write_chunk(&owner, f.inode, 0, id, 1));
    assert_eq!(h.err(write_chunk(&other, f.inode, 0, id, 1)), Errno::EACCES);
    h.ok(Op::Release { inode: f.inode });
    assert_eq!(h.err(write_chunk(&owner, f.inode, 0, id, 1)), Errno::EACCES);
    h.ok(chmod(&owner, f.inode, 0o646));
    h.run(write_chunk(&other, f.inode, 0, id, 2));
}

#[test]
fn shared_chunks_are_refused() {
    let mut h = harness();
    let f = h.create(&root(), R, "f", 0o644);
    let id = alloc(&mut h, f.inode, 0).expect("alloc");
    // Share it by hand, as a snapshot will.
    let g = h.create(&root(), R, "g", 0o644);
    if let Some(NodeData::File { chunks }) = h.ns.nodes.get_mut(&g.inode).map(|n| &mut n.data) {
        chunks.push(Some(id));
    }
    if let Some(c) = h.ns.chunks.get_mut(&id) {
        c.refcount = 2;
    }
    h.ns.check().expect("invariants");
    assert_eq!(h.err(write_chunk(&root(), f.inode, 0, id, 2)), Errno::EIO);
}

#[test]
fn write_end_after_truncate_does_not_grow() {
    let mut h = harness();
    let f = h.create(&root(), R, "f", 0o644);
    let id = alloc(&mut h, f.inode, 2).expect("alloc");
    h.ok(truncate(&root(), f.inode, 3 * CHUNK_SIZE));
    h.ok(truncate(&root(), f.inode, 10));
    assert_eq!(h.ns.pending_chunk_deletes(), &[id]);
    assert_eq!(
        h.err(write_end(f.inode, 2, id, 3 * CHUNK_SIZE)),
        Errno::EINVAL
    );
    assert_eq!(h.ns.getattr(f.inode).map(|a| a.size), Ok(10));
    assert_eq!(h.err(write_end(f.inode, 0, id, 1)), Errno::EINVAL);
}

#[test]
fn versions_only_go_up_and_deletes_leave_the_list() {
    let mut h = harness();
    let f = h.create(&root(), R, "f", 0o644);
    let a = alloc(&mut h, f.inode, 0).expect("alloc");
    let b = alloc(&mut h, f.inode, 1).expect("alloc");
    let set = |ns: &mut Namespace, v: u32| set_version(ns, a, v);
    assert!(matches!(set(&mut h.ns, 5), Reply::Chunk { .. }));
    assert_eq!(set(&mut h.ns, 5), Reply::Err(Errno::EINVAL));
    assert_eq!(set(&mut h.ns, 4), Reply::Err(Errno::EINVAL));
    assert_eq!(
        internal(
            &mut h.ns,
            Op::SetChunkVersion {
                chunk: ChunkId(12345),
                version: ChunkVersion(9)
            }
        ),
        Reply::Err(Errno::ENOENT)
    );
    h.ok(unlink(&root(), R, "f"));
    h.ok(Op::Release { inode: f.inode });
    assert_eq!(h.ns.pending_chunk_deletes(), &[a, b]);
    internal(
        &mut h.ns,
        Op::ChunksDeleted {
            ids: vec![b, ChunkId(777)],
        },
    );
    assert_eq!(h.ns.pending_chunk_deletes(), &[a]);
    assert_eq!(
        h.err(Op::ChunksDeleted { ids: vec![a] }),
        Errno::EPERM,
        "internal only"
    );
}

#[test]
fn ordered_versions_are_kept_until_committed_and_go_with_the_chunk() {
    let mut h = harness();
    let f = h.create(&root(), R, "f", 0o644);
    let a = alloc(&mut h, f.inode, 0).expect("alloc");
    let order = |ns: &mut Namespace, v: u32| {
        internal(
            ns,
            Op::OrderChunkVersion {
                chunk: a,
                version: ChunkVersion(v),
            },
        )
    };
    assert_eq!(h.ns.version_ordered(a), 0);
    assert_eq!(order(&mut h.ns, 1), Reply::Err(Errno::EINVAL), "committed");
    assert_eq!(order(&mut h.ns, 3), Reply::Ok);
    assert_eq!(h.ns.version_ordered(a), 3);
    assert_eq!(order(&mut h.ns, 3), Reply::Err(Errno::EINVAL), "not above");
    assert_eq!(order(&mut h.ns, 2), Reply::Err(Errno::EINVAL), "not above");
    // Kept through an image, as every field.
    let (ns, _) = Namespace::from_image(&h.ns.to_image(b"")).expect("loads");
    assert_eq!(ns.version_ordered(a), 3);
    // A commit below keeps it; at or above spends it.
    let set = |ns: &mut Namespace, v: u32| set_version(ns, a, v);
    assert!(matches!(set(&mut h.ns, 2), Reply::Chunk { .. }));
    assert_eq!(h.ns.version_ordered(a), 3);
    assert!(matches!(set(&mut h.ns, 3), Reply::Chunk { .. }));
    assert_eq!(h.ns.version_ordered(a), 0);
    // A write lease's commit spends it too.
    assert_eq!(order(&mut h.ns, 5), Reply::Ok);
    assert!(matches!(
        h.run(write_chunk(&root(), f.inode, 0, a, 5)),
        Reply::Chunk { .. }
    ));
    assert_eq!(h.ns.version_ordered(a), 0);
    // And it goes with the chunk.
    assert_eq!(order(&mut h.ns, 7), Reply::Ok);
    h.ok(unlink(&root(), R, "f"));
    h.ok(Op::Release { inode: f.inode });
    internal(&mut h.ns, Op::ChunksDeleted { ids: vec![a] });
    assert_eq!(h.ns.version_ordered(a), 0);
    assert_eq!(
        h.err(Op::OrderChunkVersion {
            chunk: a,
            version: ChunkVersion(9)
        }),
        Errno::EPERM,
        "internal only"
    );
}

#[test]
fn set_goal_counts_and_recursion() {
    let mut h = harness();
    let owner = user(1000);
    let d = h.mkdir(&owner, R, "d", 0o777);
    let f1 = h.create(&owner, d.inode, "f1", 0o644);
    let sub = h.mkdir(&owner, d.inode, "sub", 0o777);
    let f2 = h.create(&user(2000), sub.inode, "f2", 0o644);
    h.ok(symlink(&owner, sub.inode, "l", "x"));
    let id = alloc(&mut h, f1.inode, 0).expect("alloc");
    let goal = |cred: &Cred, inode: Inode, goal: u8, recursive: bool| Op::SetGoal {
        cred: cred.clone(),
        inode,
        goal,
        recursive,
    };
    let tree = |c, n, p| Reply::Tree {
        changed: c,
        not_changed: n,
        not_permitted: p,
    };
    // d, f1, sub changed; f2 belongs to someone else; the symlink is skipped.
    assert_eq!(h.run(goal(&owner, d.inode, 2, true)), tree(3, 0, 1));
    assert_eq!(h.ns.getattr(f1.inode).map(|a| a.goal), Ok(2));
    assert_eq!(h.ns.getattr(f2.inode).map(|a| a.goal), Ok(1));
    assert_eq!(h.ns.chunk(id).map(|c| c.goal), Some(2));
    assert_eq!(h.run(goal(&root(), d.inode, 2, true)), tree(1, 3, 0));
    assert_eq!(h.run(goal(&root(), d.inode, 5, false)), tree(1, 0, 0));
    assert_eq!(h.ns.getattr(f1.inode).map(|a| a.goal), Ok(2));
    assert_eq!(h.err(goal(&root(), d.inode, 0, true)), Errno::EINVAL);
    assert_eq!(h.err(goal(&root(), d.inode, 10, true)), Errno::EINVAL);
    assert_eq!(h.err(goal(&root(), Inode(999), 1, true)), Errno::ENOENT);
    let l = h.lookup(sub.inode, "l").expect("symlink");
    assert_eq!(h.err(goal(&root(), l.inode, 2, false)), Errno::EINVAL);
    // New entries inherit goal and trash time.
    h.run(Op::SetTrashTime {
        cred: root(),
        inode: d.inode,
        trash_time: 7,
        recursive: false,
    });
    let f3 = h.create(&root(), d.inode, "f3", 0o644);
    let sub2 = h.mkdir(&root(), d.inode, "sub2", 0o755);
    assert_eq!((f3.goal, f3.trash_time), (5, 7));
    assert_eq!((sub2.goal, sub2.trash_time), (5, 7));
    let r = h.run(Op::SetTrashTime {
        cred: owner.clone(),
        inode: d.inode,
        trash_time: 9,
        recursive: true,
    });
    // d, f1, sub changed; f2, f3, sub2 are not the owner's.
    assert_eq!(r, tree(3, 0, 3));
}

#[test]
fn a_new_chunk_in_one_entry() {
    let mut h = harness();
    let c = user(1000);
    let f = h.create(&c, R, "f", 0o644);
    let Reply::Chunk { id: first, .. } = internal(&mut h.ns, Op::ReserveChunkIds { count: 4 })
    else {
        panic!("no ids reserved")
    };
    let new = |chunk: ChunkId, index: u32| Op::WriteNewChunk {
        cred: c.clone(),
        inode: f.inode,
        index,
        chunk,
        version: ChunkVersion(1),
    };
    // An id not reserved: refused.
    assert_eq!(h.err(new(ChunkId(first.0 + 4), 2)), Errno::EINVAL);
    let r = h.run(new(first, 2));
    assert_eq!(
        r,
        Reply::Chunk {
            id: first,
            version: ChunkVersion(1),
            length: 0
        }
    );
    assert_eq!(
        h.ns.file_chunks(f.inode),
        Ok(&[None, None, Some(first)][..])
    );
    assert!(h.ns.chunk(first).expect("chunk").fresh);
    // The slot is taken; the id is in use.
    assert_eq!(h.err(new(ChunkId(first.0 + 1), 2)), Errno::EEXIST);
    assert_eq!(h.err(new(first, 0)), Errno::EINVAL);
    // Somebody without write permission gets none.
    let other = Op::WriteNewChunk {
        cred: user(2000),
        inode: f.inode,
        index: 0,
        chunk: ChunkId(first.0 + 1),
        version: ChunkVersion(1),
    };
    assert_eq!(h.err(other), Errno::EACCES);
    assert_eq!(
        internal(&mut h.ns, Op::ReserveChunkIds { count: 0 }),
        Reply::Err(Errno::EINVAL)
    );
}

#[test]
fn a_truncating_open_places_the_first_new_chunk_in_the_same_entry() {
    let mut h = harness();
    let c = user(1000);
    let f = h.create(&c, R, "f", 0o644);
    // The file has data in two chunks.
    let old = alloc(&mut h, f.inode, 0).expect("alloc");
    alloc(&mut h, f.inode, 1).expect("alloc");
    h.run(write_end(f.inode, 1, ChunkId(old.0 + 1), CHUNK_SIZE + 10));
    let Reply::Chunk { id: first, .. } = internal(&mut h.ns, Op::ReserveChunkIds { count: 2 })
    else {
        panic!("no ids reserved")
    };
    let leased = |cred: &Cred, chunk: ChunkId| Op::OpenLeased {
        cred: cred.clone(),
        inode: f.inode,
        mode: OpenMode::ReadWrite,
        chunk,
        version: ChunkVersion(1),
    };
    // Somebody who may not write: neither the open nor the chunk.
    assert_eq!(h.err(leased(&user(2000), first)), Errno::EACCES);
    let a = h.attr(leased(&c, first));
    assert_eq!(a.size, 0, "truncated");
    assert_eq!(h.ns.file_chunks(f.inode), Ok(&[Some(first)][..]));
    let info = h.ns.chunk(first).expect("placed").clone();
    assert!(info.fresh && info.version == ChunkVersion(1));
    assert!(
        h.ns.chunk(old).is_none(),
        "the old chunks went with the cut"
    );
    // Its write ends as any new chunk's.
    let a = h.attr(write_end(f.inode, 0, first, 4096));
    assert_eq!(a.size, 4096);
    // An id that cannot be placed (not reserved): the open stands alone.
    let a = h.attr(leased(&c, ChunkId(first.0 + 7)));
    assert_eq!(a.size, 0);
    assert_eq!(h.ns.file_chunks(f.inode), Ok(&[][..]));
}

#[test]
fn a_new_chunk_no_write_made_is_a_hole_again_after_its_end() {
    let mut h = harness();
    let c = user(1000);
    let f = h.create(&c, R, "f", 0o644);
    let Reply::Chunk { id: a, .. } = internal(&mut h.ns, Op::ReserveChunkIds { count: 3 }) else {
        panic!("no ids reserved")
    };
    let b = ChunkId(a.0 + 1);
    let new = |chunk: ChunkId, index: u32| Op::WriteNewChunk {
        cred: c.clone(),
        inode: f.inode,
        index,
        chunk,
        version: ChunkVersion(1),
    };
    h.run(new(a, 0));
    h.run(new(b, 1));
    let unmade = |chunk: ChunkId, index: u32, length: u64| Op::WriteChunkEndUnmade {
        end: Box::new(write_end(f.inode, index, chunk, length)),
    };
    // The second chunk's write ended; the first one's writes made nothing.
    h.attr(write_end(f.inode, 1, b, CHUNK_SIZE + 5));
    let attr = h.attr(unmade(a, 0, CHUNK_SIZE + 5));
    assert_eq!(attr.size, CHUNK_SIZE + 5);
    assert_eq!(h.ns.file_chunks(f.inode), Ok(&[None, Some(b)][..]));
    assert!(h.ns.chunk(a).is_none(), "out of the table");
    // A chunk a write ended on stays, whatever the end says.
    h.attr(unmade(b, 1, 0));
    assert_eq!(h.ns.file_chunks(f.inode), Ok(&[None, Some(b)][..]));
    // The last slot emptied: the list is trimmed.
    let g = h.create(&c, R, "g", 0o644);
    h.run(Op::WriteNewChunk {
        cred: c.clone(),
        inode: g.inode,
        index: 0,
        chunk: ChunkId(a.0 + 2),
        version: ChunkVersion(1),
    });
    h.attr(Op::WriteChunkEndUnmade {
        end: Box::new(write_end(g.inode, 0, ChunkId(a.0 + 2), 0)),
    });
    assert_eq!(h.ns.file_chunks(g.inode), Ok(&[][..]));
    // Only around a WriteChunkEnd kind.
    let other = Op::WriteChunkEndUnmade {
        end: Box::new(Op::Release { inode: f.inode }),
    };
    assert_eq!(h.err(other), Errno::EINVAL);
}

#[test]
fn punched_chunks_become_holes() {
    let mut h = harness();
    let c = user(1000);
    let f = h.create(&c, R, "f", 0o644);
    h.ok(Op::Release { inode: f.inode });
    super::posix::give_chunks(&mut h.ns, f.inode, &[10, 11, 12]);
    let punch = |cred: &Cred, inode: Inode, first: u32, count: u32| Op::PunchChunks {
        cred: cred.clone(),
        inode,
        first,
        count,
    };
    assert_eq!(h.err(punch(&user(1001), f.inode, 1, 1)), Errno::EACCES);
    assert_eq!(h.err(punch(&c, R, 0, 1)), Errno::EISDIR);
    let size = h.ns.getattr(f.inode).expect("f").size;
    let a = h.attr(punch(&c, f.inode, 1, 1));
    assert_eq!(a.size, size, "the length stays");
    assert_eq!(
        h.ns.file_chunks(f.inode).expect("f"),
        &[Some(ChunkId(10)), None, Some(ChunkId(12))]
    );
    assert_eq!(h.ns.pending_chunk_deletes(), &[ChunkId(11)]);
    // Past the end and over holes: nothing more to free; a trailing run
    // of holes is dropped from the list.
    h.ok(punch(&c, f.inode, 1, 100));
    assert_eq!(h.ns.file_chunks(f.inode).expect("f"), &[Some(ChunkId(10))]);
    assert_eq!(h.ns.pending_chunk_deletes(), &[ChunkId(11), ChunkId(12)]);
}
