//! Targeted POSIX cases: errnos, link counts, times, sustained files.

use super::*;
use crate::fsm::namespace::{ChunkInfo, NodeData};
use mfs_common::ids::{ChunkId, ChunkVersion};

const R: Inode = Inode::ROOT;

#[test]
fn bad_names() {
    let mut h = H::new();
    let c = root();
    for bad in [&b""[..], b".", b"..", b"a/b", b"/", b"a\0"] {
        assert_eq!(h.err(mkdir(&c, R, bad, 0o755)), Errno::EINVAL, "{bad:?}");
        assert_eq!(h.err(create(&c, R, bad, 0o644)), Errno::EINVAL, "{bad:?}");
        assert_eq!(h.err(unlink(&c, R, bad)), Errno::EINVAL, "{bad:?}");
        assert_eq!(h.err(rename(&c, R, bad, R, "x")), Errno::EINVAL, "{bad:?}");
    }
    assert_eq!(
        h.err(mkdir(&c, R, vec![b'n'; 256], 0o755)),
        Errno::ENAMETOOLONG
    );
    h.mkdir(&c, R, &"n".repeat(255), 0o755);
    assert_eq!(h.err(symlink(&c, R, "s", b"")), Errno::ENOENT);
    assert_eq!(
        h.err(symlink(&c, R, "s", vec![b't'; 4096])),
        Errno::ENAMETOOLONG
    );
    let s = h.attr(symlink(&c, R, "s", vec![b't'; 4095]));
    assert_eq!(s.size, 4095);
    assert_eq!(s.mode, 0o777);
    assert_eq!(h.ns.readlink(s.inode), Ok(vec![b't'; 4095]));
    assert_eq!(Errno::ENAMETOOLONG.to_string(), "ENAMETOOLONG");
    assert_eq!(Errno(4242).to_string(), "errno 4242");
}

#[test]
fn basic_errnos() {
    let mut h = H::new();
    let c = root();
    let d = h.mkdir(&c, R, "d", 0o755);
    let f = h.create(&c, R, "f", 0o644);
    assert_eq!(h.ns.getattr(Inode(999)), Err(Errno::ENOENT));
    assert_eq!(h.err(mkdir(&c, Inode(999), "x", 0o755)), Errno::ENOENT);
    assert_eq!(h.err(mkdir(&c, f.inode, "x", 0o755)), Errno::ENOTDIR);
    assert_eq!(h.err(mkdir(&c, R, "d", 0o755)), Errno::EEXIST);
    assert_eq!(h.err(mkdir(&c, R, "f", 0o755)), Errno::EEXIST);
    assert_eq!(h.err(create(&c, R, "f", 0o644)), Errno::EEXIST);
    assert_eq!(h.err(mknod(&c, R, "f", FileType::Fifo)), Errno::EEXIST);
    h.create(&c, d.inode, "inner", 0o644);
    assert_eq!(h.err(rmdir(&c, R, "d")), Errno::ENOTEMPTY);
    assert_eq!(h.err(rmdir(&c, R, "f")), Errno::ENOTDIR);
    assert_eq!(h.err(rmdir(&c, R, "nope")), Errno::ENOENT);
    assert_eq!(h.err(unlink(&c, R, "d")), Errno::EISDIR);
    assert_eq!(h.err(unlink(&c, R, "nope")), Errno::ENOENT);
    assert_eq!(h.err(link(&c, d.inode, R, "d2")), Errno::EPERM);
    assert_eq!(h.err(link(&c, Inode(999), R, "d2")), Errno::ENOENT);
    assert_eq!(h.ns.readlink(f.inode), Err(Errno::EINVAL));
    assert_eq!(h.ns.lookup(&c, f.inode, b"x"), Err(Errno::ENOTDIR));
    assert_eq!(
        h.ns.readdir(&c, f.inode, b"", 10, false),
        Err(Errno::ENOTDIR)
    );
    assert_eq!(h.err(mknod(&c, R, "m", FileType::Directory)), Errno::EPERM);
    assert_eq!(h.err(mknod(&c, R, "m", FileType::Symlink)), Errno::EINVAL);
    assert_eq!(
        h.err(mknod(&user(5), R, "m", FileType::CharDev)),
        Errno::EACCES
    );
    let dev = h.attr(mknod(&c, R, "m", FileType::CharDev));
    assert_eq!((dev.ftype, dev.rdev), (FileType::CharDev, 0x0801));
    let fifo = h.attr(mknod(&c, R, "p", FileType::Fifo));
    assert_eq!(fifo.rdev, 0);
    // Create without O_EXCL: opens an existing file, refuses others.
    let mut op = create(&c, R, "f", 0);
    if let Op::Create { exclusive, .. } = &mut op {
        *exclusive = false;
    }
    assert_eq!(h.attr(op.clone()).inode, f.inode);
    if let Op::Create { name, .. } = &mut op {
        *name = b"d".to_vec();
    }
    assert_eq!(h.err(op.clone()), Errno::EISDIR);
    if let Op::Create { name, .. } = &mut op {
        *name = b"p".to_vec();
    }
    assert_eq!(h.err(op), Errno::EEXIST);
    // Open.
    assert_eq!(
        h.err(open(&c, d.inode, OpenMode::Write, false)),
        Errno::EISDIR
    );
    let s = h.attr(symlink(&c, R, "s", b"f"));
    assert_eq!(
        h.err(open(&c, s.inode, OpenMode::Read, false)),
        Errno::ELOOP
    );
    assert_eq!(h.err(Op::Release { inode: d.inode }), Errno::EBADF);
    // Sizes.
    assert_eq!(h.err(truncate(&c, d.inode, 0)), Errno::EISDIR);
    assert_eq!(h.err(truncate(&c, s.inode, 0)), Errno::EINVAL);
    assert_eq!(h.err(truncate(&c, f.inode, u64::MAX)), Errno::EFBIG);
}

#[test]
fn mknod_device_by_user_is_eperm() {
    let mut h = H::new();
    h.ok(chmod(&root(), R, 0o777));
    assert_eq!(
        h.err(mknod(&user(5), R, "m", FileType::BlockDev)),
        Errno::EPERM
    );
    h.ok(mknod(&user(5), R, "s", FileType::Socket));
}

#[test]
fn link_counts_and_shared_attributes() {
    let mut h = H::new();
    let c = root();
    assert_eq!(h.ns.getattr(R).map(|a| a.nlink), Ok(2));
    let d = h.mkdir(&c, R, "d", 0o755);
    assert_eq!(d.nlink, 2);
    assert_eq!(h.ns.getattr(R).map(|a| a.nlink), Ok(3));
    let f = h.create(&c, d.inode, "f", 0o644);
    assert_eq!(f.nlink, 1);
    let l = h.attr(link(&c, f.inode, R, "g"));
    assert_eq!((l.inode, l.nlink), (f.inode, 2));
    h.ok(chmod(&c, f.inode, 0o600));
    assert_eq!(h.lookup(R, "g").map(|a| a.mode), Ok(0o600));
    assert_eq!(h.lookup(d.inode, "f"), h.lookup(R, "g"));
    h.ok(unlink(&c, d.inode, "f"));
    assert_eq!(h.lookup(R, "g").map(|a| a.nlink), Ok(1));
    h.ok(rmdir(&c, R, "d"));
    assert_eq!(h.ns.getattr(R).map(|a| a.nlink), Ok(2));
    assert_eq!(h.ns.getattr(d.inode), Err(Errno::ENOENT));
    // EMLINK at the limit.
    if let Some(n) = h.ns.nodes.get_mut(&f.inode) {
        n.nlink = LINK_MAX;
    }
    let req = h.next_req(link(&c, f.inode, R, "h"));
    let e = h.ns.apply(&req);
    assert_eq!(e, Reply::Err(Errno::EMLINK));
}

#[test]
fn rename_errnos() {
    let mut h = H::new();
    let c = root();
    let a = h.mkdir(&c, R, "a", 0o755);
    let b = h.mkdir(&c, a.inode, "b", 0o755);
    h.create(&c, R, "f", 0o644);
    h.mkdir(&c, R, "empty", 0o755);
    h.mkdir(&c, R, "full", 0o755);
    let full = h.lookup(R, "full").map(|a| a.inode).unwrap_or(R);
    h.create(&c, full, "x", 0o644);
    assert_eq!(h.err(rename(&c, R, "a", R, "f")), Errno::ENOTDIR);
    assert_eq!(h.err(rename(&c, R, "f", R, "a")), Errno::EISDIR);
    assert_eq!(h.err(rename(&c, R, "a", R, "full")), Errno::ENOTEMPTY);
    assert_eq!(h.err(rename(&c, R, "a", a.inode, "z")), Errno::EINVAL);
    assert_eq!(h.err(rename(&c, R, "a", b.inode, "z")), Errno::EINVAL);
    assert_eq!(h.err(rename(&c, a.inode, "b", b.inode, "z")), Errno::EINVAL);
    // Target an ancestor of the source.
    assert_eq!(h.err(rename(&c, a.inode, "b", R, "a")), Errno::ENOTEMPTY);
    let ex = |op| rename_flags(op, false, true);
    assert_eq!(h.err(ex(rename(&c, a.inode, "b", R, "a"))), Errno::EINVAL);
    assert_eq!(h.err(ex(rename(&c, R, "f", R, "nope"))), Errno::ENOENT);
    assert_eq!(
        h.err(rename_flags(rename(&c, R, "f", R, "a"), true, false)),
        Errno::EEXIST
    );
    assert_eq!(
        h.err(rename_flags(rename(&c, R, "f", R, "g"), true, true)),
        Errno::EINVAL
    );
    assert_eq!(h.err(rename(&c, R, "nope", R, "g")), Errno::ENOENT);
    assert_eq!(h.err(rename(&c, Inode(999), "f", R, "g")), Errno::ENOENT);
    // Same inode under both names: success, nothing changes.
    let f = h.lookup(R, "f").map(|a| a.inode).unwrap_or(R);
    h.ok(link(&c, f, R, "f2"));
    let before = h.tree_hash();
    assert_eq!(h.run(rename(&c, R, "f", R, "f2")), Reply::Ok);
    assert_eq!(h.run(rename(&c, R, "a", R, "a")), Reply::Ok);
    assert_eq!(before, h.tree_hash());
    assert!(h.lookup(R, "f").is_ok() && h.lookup(R, "f2").is_ok());
}

#[test]
fn rename_moves_directories_and_stamps_times() {
    let mut h = H::new();
    let c = root();
    let a = h.mkdir(&c, R, "a", 0o755);
    let b = h.mkdir(&c, R, "b", 0o755);
    let d = h.mkdir(&c, a.inode, "d", 0o755);
    h.ok(rename(&c, a.inode, "d", b.inode, "d"));
    let t = ts(h.now);
    let get = |h: &H, i: Inode| h.ns.getattr(i).expect("exists");
    assert_eq!(get(&h, a.inode).nlink, 2);
    assert_eq!(get(&h, b.inode).nlink, 3);
    assert_eq!(h.ns.lookup(&c, d.inode, b".."), Ok(get(&h, b.inode)));
    assert_eq!(get(&h, d.inode).ctime, t);
    for p in [a.inode, b.inode] {
        assert_eq!((get(&h, p).mtime, get(&h, p).ctime), (t, t));
    }
    // Onto an empty directory: replaced, counts right.
    h.mkdir(&c, a.inode, "e", 0o755);
    h.ok(rename(&c, b.inode, "d", a.inode, "e"));
    assert_eq!(get(&h, a.inode).nlink, 3);
    assert_eq!(get(&h, b.inode).nlink, 2);
    assert_eq!(h.lookup(a.inode, "e").map(|x| x.inode), Ok(d.inode));
    // Exchange a file and a directory across parents.
    let f = h.create(&c, b.inode, "f", 0o644);
    h.ok(rename_flags(
        rename(&c, a.inode, "e", b.inode, "f"),
        false,
        true,
    ));
    assert_eq!(h.lookup(a.inode, "e").map(|x| x.inode), Ok(f.inode));
    assert_eq!(h.lookup(b.inode, "f").map(|x| x.inode), Ok(d.inode));
    assert_eq!(get(&h, a.inode).nlink, 2);
    assert_eq!(get(&h, b.inode).nlink, 3);
    assert_eq!(h.ns.lookup(&c, d.inode, b".."), Ok(get(&h, b.inode)));
    assert_eq!(get(&h, f.inode).ctime, ts(h.now));
    // Replacing a file drops its link.
    let g = h.create(&c, R, "g", 0o644);
    h.ok(link(&c, g.inode, R, "g2"));
    h.ok(rename(&c, a.inode, "e", R, "g"));
    assert_eq!(get(&h, g.inode).nlink, 1);
    assert_eq!(get(&h, g.inode).ctime, ts(h.now));
}

#[test]
fn times() {
    let mut h = H::new();
    let c = root();
    let d = h.mkdir(&c, R, "d", 0o755);
    let t = ts(h.now);
    assert_eq!((d.atime, d.mtime, d.ctime), (t, t, t));
    let r = h.ns.getattr(R).expect("root");
    assert_eq!((r.mtime, r.ctime), (t, t));
    let f = h.create(&c, d.inode, "f", 0o644);
    assert_eq!(h.ns.getattr(d.inode).map(|a| a.mtime), Ok(f.ctime));
    h.ok(link(&c, f.inode, R, "l"));
    let a = h.ns.getattr(f.inode).expect("f");
    assert_eq!((a.ctime, a.mtime), (ts(h.now), f.mtime));
    h.ok(truncate(&c, f.inode, 10));
    let a = h.ns.getattr(f.inode).expect("f");
    assert_eq!((a.size, a.mtime, a.ctime), (10, ts(h.now), ts(h.now)));
    assert_eq!(a.blocks_bytes, 512);
    let m = a.mtime;
    h.ok(truncate(&c, f.inode, 10));
    let a = h.ns.getattr(f.inode).expect("f");
    assert_eq!((a.mtime, a.ctime), (m, ts(h.now)), "same size: mtime kept");
    h.ok(utimens(
        &c,
        f.inode,
        Some(TimeSet::At(ts(5))),
        Some(TimeSet::Now),
    ));
    let a = h.ns.getattr(f.inode).expect("f");
    assert_eq!((a.atime, a.mtime, a.ctime), (ts(5), ts(h.now), ts(h.now)));
    h.ok(setxattr(&c, f.inode, "user.x", b"1"));
    assert_eq!(h.ns.getattr(f.inode).map(|a| a.ctime), Ok(ts(h.now)));
    h.ok(unlink(&c, R, "l"));
    assert_eq!(h.ns.getattr(f.inode).map(|a| a.ctime), Ok(ts(h.now)));
    h.ok(open(&c, f.inode, OpenMode::Write, true));
    let a = h.ns.getattr(f.inode).expect("f");
    assert_eq!((a.size, a.mtime), (0, ts(h.now)));
}

#[test]
fn xattrs() {
    let mut h = H::new();
    let c = root();
    let f = h.create(&c, R, "f", 0o666);
    let s = h.attr(symlink(&c, R, "s", b"f"));
    let i = f.inode;
    assert_eq!(h.err(setxattr(&c, i, "foo.x", b"v")), Errno::EOPNOTSUPP);
    assert_eq!(h.err(setxattr(&c, i, "", b"v")), Errno::ERANGE);
    assert_eq!(h.err(setxattr(&c, i, vec![b'u'; 256], b"v")), Errno::ERANGE);
    assert_eq!(h.err(setxattr(&c, i, "user.", b"v")), Errno::EINVAL);
    assert_eq!(
        h.err(setxattr(&c, i, "user.x", vec![0; 65537])),
        Errno::E2BIG
    );
    h.ok(setxattr(&c, i, "user.big", vec![0; 65536]));
    assert_eq!(h.err(setxattr(&c, s.inode, "user.x", b"v")), Errno::EPERM);
    assert_eq!(
        h.err(setxattr(&user(5), i, "trusted.x", b"v")),
        Errno::EPERM
    );
    h.ok(setxattr(&c, i, "trusted.x", b"t"));
    h.ok(setxattr(&c, i, "user.a", b"1"));
    let flags = |op: Op, co: bool, ro: bool| match op {
        Op::SetXattr {
            cred,
            inode,
            name,
            value,
            ..
        } => Op::SetXattr {
            cred,
            inode,
            name,
            value,
            create_only: co,
            replace_only: ro,
        },
        o => o,
    };
    assert_eq!(
        h.err(flags(setxattr(&c, i, "user.a", b"2"), true, false)),
        Errno::EEXIST
    );
    assert_eq!(
        h.err(flags(setxattr(&c, i, "user.b", b"2"), false, true)),
        Errno::ENODATA
    );
    assert_eq!(
        h.err(flags(setxattr(&c, i, "user.b", b"2"), true, true)),
        Errno::EINVAL
    );
    h.ok(flags(setxattr(&c, i, "user.a", b"2"), false, true));
    assert_eq!(h.ns.getxattr(&c, i, b"user.a"), Ok(b"2".to_vec()));
    assert_eq!(h.ns.getxattr(&c, i, b"user.zz"), Err(Errno::ENODATA));
    assert_eq!(
        h.ns.getxattr(&user(5), i, b"trusted.x"),
        Err(Errno::ENODATA)
    );
    assert_eq!(h.ns.getxattr(&c, i, b"bad"), Err(Errno::EOPNOTSUPP));
    let all = h.ns.listxattr(&c, i).expect("list");
    assert_eq!(
        all,
        vec![
            b"trusted.x".to_vec(),
            b"user.a".to_vec(),
            b"user.big".to_vec()
        ]
    );
    let mine = h.ns.listxattr(&user(5), i).expect("list");
    assert_eq!(mine, vec![b"user.a".to_vec(), b"user.big".to_vec()]);
    assert_eq!(h.err(removexattr(&c, i, "user.zz")), Errno::ENODATA);
    h.ok(removexattr(&c, i, "user.a"));
    assert_eq!(h.ns.getxattr(&c, i, b"user.a"), Err(Errno::ENODATA));
    assert_eq!(h.err(removexattr(&c, Inode(999), "user.a")), Errno::ENOENT);
}

#[test]
fn readdir_pages_in_byte_order() {
    let mut h = H::new();
    let c = root();
    for n in ["b", "a", "C", "aa", "\u{e9}"] {
        h.create(&c, R, n, 0o644);
    }
    let (all, more) = h.ns.readdir(&c, R, b"", 100, false).expect("readdir");
    let names: Vec<&[u8]> = all.iter().map(|e| &e.name[..]).collect();
    assert_eq!(
        names,
        vec![&b"C"[..], b"a", b"aa", b"b", "\u{e9}".as_bytes()]
    );
    assert!(!more);
    assert!(all
        .iter()
        .all(|e| e.attr.is_none() && e.ftype == FileType::Regular));
    let (page, more) = h.ns.readdir(&c, R, b"a", 2, true).expect("readdir");
    assert_eq!(page.len(), 2);
    assert!(more);
    assert_eq!(page[0].name, b"aa");
    assert_eq!(page[0].attr, h.lookup(R, "aa").ok());
    let (page, more) = h.ns.readdir(&c, R, b"b", 1, false).expect("readdir");
    assert_eq!((page.len(), more), (1, false));
    assert_eq!(h.ns.lookup(&c, R, b"."), h.ns.getattr(R));
    assert_eq!(h.ns.lookup(&c, R, b".."), h.ns.getattr(R));
    let st = h.ns.statfs();
    assert_eq!((st.inodes, st.files, st.dirs), (6, 5, 1));
    assert_eq!(h.ns.inode_count(), 6);
}

#[test]
fn goal_and_trash_time_are_inherited() {
    let mut h = H::new();
    if let Some(root) = h.ns.nodes.get_mut(&R) {
        root.goal = 3;
        root.trash_time = 7;
    }
    let d = h.mkdir(&root(), R, "d", 0o755);
    let f = h.create(&root(), d.inode, "f", 0o644);
    assert_eq!((d.goal, d.trash_time, f.goal, f.trash_time), (3, 7, 3, 7));
    assert_eq!(
        Namespace::new().getattr(R).map(|a| (a.goal, a.trash_time)),
        Ok((DEFAULT_GOAL, DEFAULT_TRASH_TIME))
    );
}

#[test]
fn running_out_of_inode_numbers() {
    let mut h = H::new();
    h.ns.next_inode = u64::MAX;
    assert_eq!(h.err(mkdir(&root(), R, "d", 0o755)), Errno::ENOSPC);
}

// ---- sustained files and chunks --------------------------------------------------

#[test]
fn unlinked_open_file_lives_until_release() {
    let mut h = H::new();
    let c = root();
    let f = h.create(&c, R, "f", 0o644);
    h.ok(open(&c, f.inode, OpenMode::Read, false));
    h.ok(unlink(&c, R, "f"));
    assert_eq!(h.ns.getattr(f.inode).map(|a| a.nlink), Ok(0));
    assert_eq!(h.ns.sustained().collect::<Vec<_>>(), vec![f.inode]);
    assert_eq!(h.err(link(&c, f.inode, R, "back")), Errno::ENOENT);
    h.ok(truncate(&c, f.inode, 100));
    h.ok(Op::Release { inode: f.inode });
    assert!(h.ns.getattr(f.inode).is_ok(), "still open once");
    h.ok(Op::Release { inode: f.inode });
    assert_eq!(h.ns.getattr(f.inode), Err(Errno::ENOENT));
    assert_eq!(h.ns.sustained().count(), 0);
    assert_eq!(h.err(Op::Release { inode: f.inode }), Errno::EBADF);
}

#[test]
fn opens_logged_together_each_count_once() {
    let mut h = H::new();
    let c = root();
    let f = h.create(&c, R, "f", 0o644);
    let first = h.next_req(open(&c, f.inode, OpenMode::Read, false));
    let mut second = h.next_req(open(&c, f.inode, OpenMode::Read, false));
    // The first's reply not yet delivered: kept for a retry.
    second.acked = first.seq - 1;
    let cut = h.next_req(open(&c, f.inode, OpenMode::Read, true));
    let mut anon = first.clone();
    anon.session = SessionId::NONE;
    let entry = |opens: Vec<Request>| Request {
        session: SessionId::NONE,
        seq: 0,
        acked: 0,
        time: ts(2000),
        op: Op::Opens { opens },
    };
    let all = vec![first.clone(), second, cut, anon];
    // A truncating open and one of no session are refused in their place.
    let r = h.ns.apply(&entry(all));
    assert_eq!(
        r,
        Reply::Batch(vec![0, 0, Errno::EINVAL.0, Errno::EINVAL.0])
    );
    // The first again (a client's retry that went alone): its reply is
    // the session's cached one, the file is not counted open again.
    assert!(matches!(h.ns.apply(&first), Reply::Attr(_)));
    assert_eq!(h.ns.apply(&entry(vec![first])), Reply::Batch(vec![0]));
    h.ok(unlink(&c, R, "f"));
    assert_eq!(h.ns.sustained().collect::<Vec<_>>(), vec![f.inode]);
    // The create's open, then the two logged together.
    for _ in 0..2 {
        h.ok(Op::Release { inode: f.inode });
    }
    assert!(h.ns.getattr(f.inode).is_ok(), "still open once");
    h.ok(Op::Release { inode: f.inode });
    assert_eq!(h.ns.getattr(f.inode), Err(Errno::ENOENT));
    // Not a client's to send.
    assert_eq!(h.err(Op::Opens { opens: Vec::new() }), Errno::EPERM);
}

#[test]
fn releases_in_one_entry() {
    let mut h = H::new();
    let c = root();
    let f = h.create(&c, R, "f", 0o644);
    let g = h.create(&c, R, "g", 0o644);
    h.ok(open(&c, f.inode, OpenMode::Read, false));
    h.ok(unlink(&c, R, "f"));
    h.ok(unlink(&c, R, "g"));
    // f twice (both opens), g once, and an inode not held: skipped.
    h.ok(Op::ReleaseMany {
        inodes: vec![f.inode, Inode(9999), g.inode, f.inode],
    });
    assert_eq!(h.ns.getattr(f.inode), Err(Errno::ENOENT));
    assert_eq!(h.ns.getattr(g.inode), Err(Errno::ENOENT));
    assert_eq!(h.ns.sustained().count(), 0);
}

#[test]
fn asserted_opens_restore_a_lost_open_and_never_lower_a_count() {
    let mut h = H::new();
    let c = root();
    let f = h.create(&c, R, "f", 0o644); // open once (create)
    let g = h.create(&c, R, "g", 0o644); // open once
    h.ok(Op::Release { inode: g.inode }); // g's open "lost"
                                          // f: held 1, asserted 3 (two lost); g: held 0, asserted 1; a directory
                                          // and an unknown inode are skipped; f asserted lower: no change.
    h.ok(Op::AssertOpens {
        opens: vec![(f.inode, 3), (g.inode, 1), (R, 1), (Inode(9999), 2)],
    });
    h.ok(Op::AssertOpens {
        opens: vec![(f.inode, 1)],
    });
    h.ok(unlink(&c, R, "f"));
    h.ok(unlink(&c, R, "g"));
    for _ in 0..2 {
        h.ok(Op::Release { inode: f.inode });
    }
    assert!(h.ns.getattr(f.inode).is_ok(), "f: still open once");
    h.ok(Op::Release { inode: f.inode });
    assert_eq!(h.ns.getattr(f.inode), Err(Errno::ENOENT));
    assert!(h.ns.getattr(g.inode).is_ok(), "g: held again");
    h.ok(Op::Release { inode: g.inode });
    assert_eq!(h.ns.getattr(g.inode), Err(Errno::ENOENT));
    assert_eq!(h.ns.sustained().count(), 0);
    h.ns.check().expect("invariants");
}

#[test]
fn rename_over_an_open_file_sustains_it() {
    let mut h = H::new();
    let c = root();
    let victim = h.create(&c, R, "v", 0o644);
    h.create(&c, R, "new", 0o644);
    h.ok(rename(&c, R, "new", R, "v"));
    assert_eq!(h.ns.getattr(victim.inode).map(|a| a.nlink), Ok(0));
    h.ok(Op::CloseSession);
    assert_eq!(
        h.ns.getattr(victim.inode),
        Err(Errno::ENOENT),
        "freed at close"
    );
    assert!(h.lookup(R, "v").is_ok());
    h.ns.check().expect("invariants");
}

#[test]
fn expired_session_frees_its_sustained_files() {
    let mut h = H::new();
    let f = h.create(&root(), R, "f", 0o644);
    h.ok(unlink(&root(), R, "f"));
    // Another session holds it too.
    let s2 = match h.ns.apply(&Request {
        session: SessionId(0),
        seq: 0,
        acked: 0,
        time: ts(1),
        op: Op::RegisterSession { info: "2".into() },
    }) {
        Reply::Session { id } => id,
        r => panic!("{r:?}"),
    };
    let r = h.ns.apply(&Request {
        session: s2,
        seq: 1,
        acked: 0,
        time: ts(1),
        op: open(&root(), f.inode, OpenMode::Read, false),
    });
    assert!(matches!(r, Reply::Attr(_)));
    let expire = |ns: &mut Namespace, id| {
        ns.apply(&Request {
            session: SessionId(0),
            seq: 0,
            acked: 0,
            time: ts(9),
            op: Op::ExpireSessions { ids: vec![id] },
        })
    };
    expire(&mut h.ns, h.sid);
    assert!(
        h.ns.getattr(f.inode).is_ok(),
        "still held by the second session"
    );
    expire(&mut h.ns, s2);
    assert_eq!(h.ns.getattr(f.inode), Err(Errno::ENOENT));
    h.ns.check().expect("invariants");
}

/// Give regular file `ino` the chunks `ids` (one reference each).
pub(super) fn give_chunks(ns: &mut Namespace, ino: Inode, ids: &[u64]) {
    if let Some(NodeData::File { chunks }) = ns.nodes.get_mut(&ino).map(|n| &mut n.data) {
        *chunks = ids.iter().map(|&i| Some(ChunkId(i))).collect();
    }
    for &i in ids {
        ns.chunks.insert(
            ChunkId(i),
            ChunkInfo {
                version: ChunkVersion(1),
                refcount: 1,
                goal: 1,
                fresh: false,
            },
        );
        ns.next_chunk = ns.next_chunk.max(i + 1);
    }
    if let Some(n) = ns.nodes.get_mut(&ino) {
        let before = crate::fsm::quota::contrib(n);
        n.size = ids.len() as u64 * CHUNK_SIZE;
        ns.recharge(ino, before);
    }
}

#[test]
fn freed_files_queue_their_chunks() {
    let mut h = H::new();
    let c = root();
    let f = h.create(&c, R, "f", 0o644);
    give_chunks(&mut h.ns, f.inode, &[10, 11, 12]);
    h.ns.check().expect("invariants");
    assert_eq!(h.ns.file_chunks(f.inode).map(|c| c.len()), Ok(3));
    h.ok(truncate(&c, f.inode, CHUNK_SIZE + 1));
    assert_eq!(h.ns.pending_chunk_deletes(), &[ChunkId(12)]);
    assert!(h.ns.chunk(ChunkId(12)).is_none());
    h.ok(unlink(&c, R, "f"));
    assert_eq!(
        h.ns.pending_chunk_deletes(),
        &[ChunkId(12)],
        "still open: kept"
    );
    h.ok(Op::Release { inode: f.inode });
    assert_eq!(
        h.ns.pending_chunk_deletes(),
        &[ChunkId(12), ChunkId(10), ChunkId(11)]
    );
    assert_eq!(h.ns.statfs().chunks, 0);
}

fn mt(mtime: Timespec) -> SameAttrs {
    SameAttrs {
        mtime: Some(mtime),
        ..SameAttrs::default()
    }
}

#[test]
fn kernel_time_write_back_needs_no_change() {
    let mut h = H::new();
    let c = root();
    let f = h.create(&c, R, "f", 0o644);
    h.ok(rename(&c, R, "f", R, "g"));
    let a = h.ns.getattr(f.inode).expect("renamed file");
    let soon = Timespec::new(a.ctime.sec, a.ctime.nsec + 5);
    let answer = h.ns.setattr_unchanged(&c, f.inode, &mt(a.mtime), soon);
    assert_eq!(
        answer,
        Some(Ok(a.clone())),
        "same mtime just after the rename"
    );
    // Another mtime, or a ctime a second old, or a caller who may not set
    // times: through the log.
    let other = Timespec::new(a.mtime.sec - 7, 0);
    assert_eq!(h.ns.setattr_unchanged(&c, f.inode, &mt(other), soon), None);
    let later = Timespec::new(a.ctime.sec + 1, a.ctime.nsec);
    assert_eq!(
        h.ns.setattr_unchanged(&c, f.inode, &mt(a.mtime), later),
        None
    );
    assert_eq!(
        h.ns.setattr_unchanged(&user(1000), f.inode, &mt(a.mtime), soon),
        None
    );
    let before = Timespec::new(a.ctime.sec - 1, 0);
    assert_eq!(
        h.ns.setattr_unchanged(&c, f.inode, &mt(a.mtime), before),
        None
    );
    h.ok(unlink(&c, R, "g"));
    h.ok(Op::Release { inode: f.inode });
    assert_eq!(
        h.ns.setattr_unchanged(&c, f.inode, &mt(a.mtime), soon),
        Some(Err(Errno::ENOENT))
    );
}

#[test]
fn chown_and_chmod_to_what_is_there_need_no_change() {
    let mut h = H::new();
    let c = root();
    let f = h.create(&c, R, "f", 0o644);
    let soon = Timespec::new(f.ctime.sec, f.ctime.nsec + 1);
    let same = SameAttrs {
        mode: Some(0o644),
        uid: Some(0),
        gid: Some(0),
        mtime: None,
    };
    assert_eq!(
        h.ns.setattr_unchanged(&c, f.inode, &same, soon),
        Some(Ok(h.ns.getattr(f.inode).unwrap()))
    );
    let other_mode = SameAttrs {
        mode: Some(0o600),
        ..same
    };
    assert_eq!(h.ns.setattr_unchanged(&c, f.inode, &other_mode, soon), None);
    let other_owner = SameAttrs {
        uid: Some(7),
        ..same
    };
    assert_eq!(
        h.ns.setattr_unchanged(&c, f.inode, &other_owner, soon),
        None
    );
    // A chown clears SUID: a change even to the same owner.
    h.ok(chmod(&c, f.inode, 0o4755));
    let a = h.ns.getattr(f.inode).unwrap();
    let soon = Timespec::new(a.ctime.sec, a.ctime.nsec + 1);
    let chown = SameAttrs {
        uid: Some(0),
        ..SameAttrs::default()
    };
    assert_eq!(h.ns.setattr_unchanged(&c, f.inode, &chown, soon), None);
    let chmod_same = SameAttrs {
        mode: Some(0o4755),
        ..SameAttrs::default()
    };
    assert!(h
        .ns
        .setattr_unchanged(&c, f.inode, &chmod_same, soon)
        .is_some());
}

/// An open the leader answers before its commit (`preview_open`) gets the
/// reply its apply then gives, and is declined whenever the apply would
/// fail, is a retry, truncates, or is no open at all.
#[test]
fn preview_open_agrees_with_apply() {
    let mut h = H::new();
    let dir = h.mkdir(&root(), Inode::ROOT, "d", 0o777).inode;
    let mine = h.create(&user(1000), dir, "mine", 0o600).inode;
    let shared = h.create(&root(), dir, "shared", 0o644).inode;
    let link = h.attr(symlink(&root(), dir, "link", "mine")).inode;
    let cases = [
        (open(&user(1000), mine, OpenMode::ReadWrite, false), true),
        (open(&user(2000), mine, OpenMode::Read, false), false),
        (open(&user(2000), shared, OpenMode::Read, false), true),
        (open(&user(2000), shared, OpenMode::Write, false), false),
        (open(&root(), dir, OpenMode::Read, false), true),
        (open(&root(), dir, OpenMode::Write, false), false),
        (open(&root(), link, OpenMode::Read, false), false),
        (open(&root(), Inode(9999), OpenMode::Read, false), false),
        (open(&root(), shared, OpenMode::Write, true), false),
        (Op::Release { inode: shared }, false),
    ];
    for (op, early) in cases {
        let req = h.next_req(op.clone());
        let preview = h.ns.preview_open(&req);
        assert_eq!(preview.is_some(), early, "{op:?}: {preview:?}");
        let reply = h.ns.apply(&req);
        if let Some(a) = preview {
            assert_eq!(reply, Reply::Attr(a), "{op:?}");
            // A retry of the applied open gets the stored reply: no preview.
            assert_eq!(h.ns.preview_open(&req), None, "retry of {op:?}");
        }
        if let Err(e) = h.ns.check() {
            panic!("after {op:?}: {e}");
        }
    }
    // A request of an unknown session is left to the apply.
    let mut req = h.next_req(open(&root(), shared, OpenMode::Read, false));
    req.session = SessionId(4242);
    assert_eq!(h.ns.preview_open(&req), None);
}
