//! Snapshots share chunks; copy-on-write gives a file its own.

use super::chunks::internal;
use super::posix::give_chunks;
use super::*;

const R: Inode = Inode::ROOT;

fn snapshot(cred: &Cred, src: Inode, parent: Inode, name: &str) -> Op {
    Op::Snapshot {
        cred: cred.clone(),
        src,
        parent,
        name: name.as_bytes().to_vec(),
    }
}

fn chunks_of(h: &H, ino: Inode) -> Vec<Option<ChunkId>> {
    h.ns.file_chunks(ino).expect("a file").to_vec()
}

#[test]
fn a_tree_copy_shares_chunks() {
    let mut h = H::new();
    let c = root();
    let d = h.mkdir(&c, R, "d", 0o750);
    let sub = h.mkdir(&c, d.inode, "sub", 0o700);
    let f = h.create(&c, d.inode, "f", 0o640);
    let g = h.create(&c, sub.inode, "g", 0o600);
    h.ok(symlink(&c, d.inode, "l", "f"));
    give_chunks(&mut h.ns, f.inode, &[10, 11]);
    give_chunks(&mut h.ns, g.inode, &[12]);
    h.ok(setxattr(&c, f.inode, "user.k", "v"));

    let top = h.attr(snapshot(&c, d.inode, R, "snap"));
    h.ns.check().expect("invariants after the snapshot");
    assert_eq!(top.mode, 0o750);
    assert_eq!(top.nlink, 3, "2 + one subdirectory");
    let f2 = h.lookup(top.inode, "f").expect("f copied");
    assert_ne!(f2.inode, f.inode);
    let size = h.ns.getattr(f.inode).expect("f").size;
    assert_eq!((f2.mode, f2.size), (0o640, size));
    assert_eq!(chunks_of(&h, f2.inode), chunks_of(&h, f.inode));
    assert_eq!(h.ns.chunk(ChunkId(10)).map(|c| c.refcount), Some(2));
    let sub2 = h.lookup(top.inode, "sub").expect("sub copied");
    let g2 = h.lookup(sub2.inode, "g").expect("g copied");
    assert_eq!(chunks_of(&h, g2.inode), vec![Some(ChunkId(12))]);
    assert!(h.lookup(top.inode, "l").is_ok());
    assert_eq!(h.ns.getxattr(&c, f2.inode, b"user.k"), Ok(b"v".to_vec()));

    // mfsdirinfo of the root: every name, each shared chunk once.
    let st = h.ns.dir_stats(R).expect("stats");
    let one = h.ns.dir_stats(d.inode).expect("stats");
    assert_eq!((st.inodes, st.dirs, st.files), (11, 5, 4));
    assert_eq!((one.chunks, st.chunks), (3, 3));
    assert_eq!((st.size, st.realsize), (one.size, one.realsize));
    assert_eq!(st.length, 2 * one.length);
    assert_eq!(one.size, 3 * CHUNK_SIZE);

    // Removing either side keeps the chunks for the other.
    h.ok(unlink(&c, d.inode, "f"));
    h.ok(Op::Release { inode: f.inode });
    assert_eq!(h.ns.chunk(ChunkId(10)).map(|c| c.refcount), Some(1));
    assert!(h.ns.pending_chunk_deletes().is_empty());
    h.ok(unlink(&c, top.inode, "f"));
    assert_eq!(h.ns.pending_chunk_deletes(), &[ChunkId(10), ChunkId(11)]);
}

#[test]
fn bad_snapshots_change_nothing() {
    let mut h = H::new();
    let c = root();
    let d = h.mkdir(&c, R, "d", 0o755);
    let inner = h.mkdir(&c, d.inode, "inner", 0o755);
    let secret = h.create(&c, R, "secret", 0o600);
    let before = h.tree_hash();
    assert_eq!(
        h.err(snapshot(&c, d.inode, inner.inode, "x")),
        Errno::EINVAL
    );
    assert_eq!(h.err(snapshot(&c, d.inode, d.inode, "x")), Errno::EINVAL);
    assert_eq!(h.err(snapshot(&c, d.inode, R, "d")), Errno::EEXIST);
    assert_eq!(h.err(snapshot(&c, Inode(999), R, "x")), Errno::ENOENT);
    assert_eq!(
        h.err(snapshot(&user(5), secret.inode, R, "x")),
        Errno::EACCES
    );
    assert_eq!(h.tree_hash(), before);
}

#[test]
fn copy_on_write_gives_a_file_its_own_chunk() {
    let mut h = H::new();
    let c = root();
    let f = h.create(&c, R, "f", 0o644);
    give_chunks(&mut h.ns, f.inode, &[10]);
    let s = h.attr(snapshot(&c, f.inode, R, "s"));
    let Reply::Chunk { id: new, .. } = internal(&mut h.ns, Op::ReserveChunkIds { count: 1 }) else {
        panic!("no id reserved")
    };
    let cow = |inode: Inode, old: u64, new: ChunkId| Op::CowChunk {
        inode,
        index: 0,
        old: ChunkId(old),
        new,
        version: ChunkVersion(1),
    };
    // A chunk id not reserved, or a slot naming another chunk: refused.
    assert_eq!(
        internal(&mut h.ns, cow(s.inode, 10, ChunkId(new.0 + 5))),
        Reply::Err(Errno::EINVAL)
    );
    assert_eq!(
        internal(&mut h.ns, cow(s.inode, 11, new)),
        Reply::Err(Errno::EAGAIN)
    );
    assert!(matches!(
        internal(&mut h.ns, cow(s.inode, 10, new)),
        Reply::Chunk { .. }
    ));
    assert_eq!(chunks_of(&h, s.inode), vec![Some(new)]);
    assert_eq!(chunks_of(&h, f.inode), vec![Some(ChunkId(10))]);
    assert_eq!(h.ns.chunk(ChunkId(10)).map(|c| c.refcount), Some(1));
    // No longer shared: a second copy-on-write is refused.
    let Reply::Chunk { id: other, .. } = internal(&mut h.ns, Op::ReserveChunkIds { count: 1 })
    else {
        panic!("no id reserved")
    };
    assert_eq!(
        internal(&mut h.ns, cow(f.inode, 10, other)),
        Reply::Err(Errno::EAGAIN)
    );
}
