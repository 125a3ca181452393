//! Permission cases: classes, sticky directories, chmod/chown rules, SGID
//! inheritance, utimens, EACCES against EPERM.

use super::*;

const R: Inode = Inode::ROOT;

/// A namespace whose root is writable by everyone (0777).
fn open_root() -> H {
    let mut h = H::new();
    h.ok(chmod(&root(), R, 0o777));
    h
}

fn alice() -> Cred {
    user(1000)
}

fn bob() -> Cred {
    user(2000)
}

#[test]
fn search_and_write_permission_on_parent() {
    let mut h = open_root();
    let d = h.mkdir(&alice(), R, "d", 0o700);
    assert_eq!(h.ns.lookup(&bob(), d.inode, b"x"), Err(Errno::EACCES));
    assert_eq!(h.ns.lookup(&alice(), d.inode, b"x"), Err(Errno::ENOENT));
    assert_eq!(
        h.ns.readdir(&bob(), d.inode, b"", 10, false),
        Err(Errno::EACCES)
    );
    assert_eq!(h.err(mkdir(&bob(), d.inode, "x", 0o755)), Errno::EACCES);
    h.ok(chmod(&alice(), d.inode, 0o711));
    h.create(&alice(), d.inode, "f", 0o644);
    // Search allowed, write not: EEXIST wins over EACCES, as Linux.
    assert_eq!(h.err(mkdir(&bob(), d.inode, "f", 0o755)), Errno::EEXIST);
    assert_eq!(h.err(mkdir(&bob(), d.inode, "g", 0o755)), Errno::EACCES);
    assert_eq!(h.err(unlink(&bob(), d.inode, "nope")), Errno::ENOENT);
    assert_eq!(h.err(unlink(&bob(), d.inode, "f")), Errno::EACCES);
    assert!(h.ns.lookup(&bob(), d.inode, b"f").is_ok());
    // Root passes everything.
    h.ok(chmod(&alice(), d.inode, 0o000));
    h.mkdir(&root(), d.inode, "r", 0o755);
}

#[test]
fn owner_class_wins_over_group_and_supplementary_groups_count() {
    let mut h = open_root();
    let d = h.mkdir(&alice(), R, "d", 0o077);
    // Alice is the owner: owner bits (none) apply, though group bits allow.
    assert_eq!(h.err(mkdir(&alice(), d.inode, "x", 0o755)), Errno::EACCES);
    h.ok(chown(&root(), d.inode, None, Some(50)));
    let carol = Cred {
        uid: 3000,
        gid: 3000,
        groups: vec![50],
    };
    h.ok(chmod(&root(), d.inode, 0o070));
    h.mkdir(&carol, d.inode, "x", 0o755);
    assert_eq!(h.err(mkdir(&bob(), d.inode, "y", 0o755)), Errno::EACCES);
}

#[test]
fn sticky_directory() {
    let mut h = open_root();
    let tmp = h.mkdir(&root(), R, "tmp", 0o1777);
    let f = h.create(&alice(), tmp.inode, "f", 0o666);
    assert_eq!(h.err(unlink(&bob(), tmp.inode, "f")), Errno::EPERM);
    assert_eq!(
        h.err(rename(&bob(), tmp.inode, "f", tmp.inode, "g")),
        Errno::EPERM
    );
    h.create(&bob(), tmp.inode, "b", 0o666);
    assert_eq!(
        h.err(rename(&bob(), tmp.inode, "b", tmp.inode, "f")),
        Errno::EPERM,
        "replacing alice's file"
    );
    h.ok(rename(&alice(), tmp.inode, "f", tmp.inode, "g"));
    h.ok(unlink(&alice(), tmp.inode, "g"));
    // The directory's owner may remove anything in it.
    let mine = h.mkdir(&bob(), R, "mine", 0o1777);
    let _ = f;
    h.create(&alice(), mine.inode, "a", 0o644);
    h.ok(unlink(&bob(), mine.inode, "a"));
    h.create(&alice(), mine.inode, "a", 0o644);
    h.ok(unlink(&root(), mine.inode, "a"));
    // user.* xattrs of a sticky directory: owner only.
    assert_eq!(
        h.err(setxattr(&alice(), mine.inode, "user.x", b"1")),
        Errno::EPERM
    );
    h.ok(setxattr(&bob(), mine.inode, "user.x", b"1"));
}

#[test]
fn chmod_rules() {
    let mut h = open_root();
    let f = h.create(&alice(), R, "f", 0o644);
    assert_eq!(h.err(chmod(&bob(), f.inode, 0o777)), Errno::EPERM);
    h.ok(chmod(&alice(), f.inode, 0o4755));
    assert_eq!(h.ns.getattr(f.inode).map(|a| a.mode), Ok(0o4755));
    // Setting SGID on a file of a group one is not in: silently dropped.
    h.ok(chown(&root(), f.inode, None, Some(50)));
    h.ok(chmod(&alice(), f.inode, 0o2755));
    assert_eq!(h.ns.getattr(f.inode).map(|a| a.mode), Ok(0o0755));
    h.ok(chmod(&root(), f.inode, 0o2755));
    assert_eq!(h.ns.getattr(f.inode).map(|a| a.mode), Ok(0o2755));
    h.ok(chmod(&alice(), f.inode, 0o17777));
    assert_eq!(
        h.ns.getattr(f.inode).map(|a| a.mode),
        Ok(0o5777),
        "high bits masked, SGID dropped"
    );
}

#[test]
fn chown_rules() {
    let mut h = open_root();
    let mut a = alice();
    a.groups = vec![60];
    let f = h.create(&a, R, "f", 0o6755);
    assert_eq!(f.gid, 1000);
    assert_eq!(h.err(chown(&a, f.inode, Some(2000), None)), Errno::EPERM);
    assert_eq!(
        h.err(chown(&bob(), f.inode, None, Some(2000))),
        Errno::EPERM
    );
    assert_eq!(h.err(chown(&a, f.inode, None, Some(70))), Errno::EPERM);
    // "Changing" the owner to itself is allowed.
    h.ok(chown(&a, f.inode, Some(1000), None));
    // SUID always dropped on chown of a non-directory, SGID (group exec) too.
    assert_eq!(h.ns.getattr(f.inode).map(|a| a.mode), Ok(0o0755));
    h.ok(chmod(&a, f.inode, 0o6745));
    h.ok(chown(&a, f.inode, None, Some(60)));
    let at = h.ns.getattr(f.inode).expect("f");
    assert_eq!(
        (at.gid, at.mode),
        (60, 0o2745),
        "SGID without group exec is mandatory locking: kept"
    );
    h.ok(chmod(&root(), f.inode, 0o6755));
    h.ok(chown(&root(), f.inode, Some(2000), Some(0)));
    let at = h.ns.getattr(f.inode).expect("f");
    assert_eq!(
        (at.uid, at.gid, at.mode),
        (2000, 0, 0o0755),
        "root's chown clears too"
    );
    // Directories keep their bits.
    let d = h.mkdir(&root(), R, "d", 0o755);
    h.ok(chmod(&root(), d.inode, 0o6755));
    h.ok(chown(&root(), d.inode, Some(1000), None));
    assert_eq!(h.ns.getattr(d.inode).map(|a| a.mode), Ok(0o6755));
}

#[test]
fn truncate_and_open_need_permission() {
    let mut h = open_root();
    let f = h.create(&alice(), R, "f", 0o644);
    assert_eq!(h.err(truncate(&bob(), f.inode, 0)), Errno::EACCES);
    h.ok(truncate(&alice(), f.inode, 5));
    assert_eq!(
        h.err(open(&bob(), f.inode, OpenMode::Write, false)),
        Errno::EACCES
    );
    assert_eq!(
        h.err(open(&bob(), f.inode, OpenMode::Read, true)),
        Errno::EACCES
    );
    h.ok(open(&bob(), f.inode, OpenMode::Read, false));
    h.ok(chmod(&alice(), f.inode, 0o200));
    assert_eq!(
        h.err(open(&alice(), f.inode, OpenMode::ReadWrite, false)),
        Errno::EACCES
    );
    h.ok(open(&alice(), f.inode, OpenMode::Write, false));
    h.ok(open(&root(), f.inode, OpenMode::ReadWrite, false));
    // A new file is opened for its creator whatever its mode.
    h.create(&bob(), R, "ro", 0o000);
}

#[test]
fn utimens_rules() {
    let mut h = open_root();
    let f = h.create(&alice(), R, "f", 0o666);
    let now = Some(TimeSet::Now);
    let at = Some(TimeSet::At(ts(7)));
    assert_eq!(
        h.err(utimens(&bob(), f.inode, at, None)),
        Errno::EPERM,
        "explicit: owner only"
    );
    h.ok(utimens(&bob(), f.inode, now, now));
    h.ok(chmod(&alice(), f.inode, 0o644));
    assert_eq!(h.err(utimens(&bob(), f.inode, now, now)), Errno::EACCES);
    h.ok(utimens(&alice(), f.inode, at, at));
    h.ok(utimens(&root(), f.inode, at, now));
    let a = h.ns.getattr(f.inode).expect("f");
    assert_eq!((a.atime, a.mtime), (ts(7), ts(h.now)));
}

#[test]
fn sgid_directories_pass_their_group_on() {
    let mut h = open_root();
    let d = h.mkdir(&root(), R, "shared", 0o777);
    h.ok(chown(&root(), d.inode, None, Some(50)));
    h.ok(chmod(&root(), d.inode, 0o2777));
    let sub = h.mkdir(&alice(), d.inode, "sub", 0o755);
    assert_eq!((sub.gid, sub.mode), (50, 0o2755));
    let f = h.create(&alice(), d.inode, "f", 0o2755);
    assert_eq!(
        (f.gid, f.mode),
        (50, 0o0755),
        "not in group 50: SGID dropped"
    );
    let mut member = bob();
    member.groups = vec![50];
    let g = h.create(&member, d.inode, "g", 0o2755);
    assert_eq!((g.gid, g.mode), (50, 0o2755));
    let plain = h.create(&alice(), R, "plain", 0o644);
    assert_eq!(plain.gid, 1000);
}

#[test]
fn umask_applies() {
    let mut h = open_root();
    let a = h.attr(Op::Mkdir {
        cred: alice(),
        parent: R,
        name: b"d".to_vec(),
        mode: 0o7777,
        umask: 0o027,
    });
    assert_eq!(a.mode, 0o1750, "mkdir keeps only rwx and sticky");
    let f = h.attr(Op::Create {
        cred: alice(),
        parent: R,
        name: b"f".to_vec(),
        mode: 0o666,
        umask: 0o022,
        exclusive: true,
    });
    assert_eq!((f.mode, f.uid, f.gid), (0o644, 1000, 1000));
}

#[test]
fn moving_a_directory_needs_write_on_it() {
    let mut h = open_root();
    let a = h.mkdir(&alice(), R, "a", 0o777);
    let b = h.mkdir(&alice(), R, "b", 0o777);
    h.mkdir(&alice(), a.inode, "d", 0o755);
    assert_eq!(
        h.err(rename(&bob(), a.inode, "d", b.inode, "d")),
        Errno::EACCES
    );
    h.ok(rename(&bob(), a.inode, "d", a.inode, "e"));
    h.ok(rename(&alice(), a.inode, "e", b.inode, "d"));
}

#[test]
fn xattr_permissions() {
    let mut h = open_root();
    let f = h.create(&alice(), R, "f", 0o644);
    assert_eq!(
        h.err(setxattr(&bob(), f.inode, "user.x", b"1")),
        Errno::EACCES
    );
    h.ok(setxattr(&alice(), f.inode, "user.x", b"1"));
    assert_eq!(h.ns.getxattr(&bob(), f.inode, b"user.x"), Ok(b"1".to_vec()));
    h.ok(chmod(&alice(), f.inode, 0o600));
    assert_eq!(
        h.ns.getxattr(&bob(), f.inode, b"user.x"),
        Err(Errno::EACCES)
    );
    assert_eq!(
        h.err(setxattr(&bob(), f.inode, "security.x", b"1")),
        Errno::EPERM
    );
    h.ok(setxattr(&alice(), f.inode, "security.x", b"1"));
    assert_eq!(h.err(removexattr(&bob(), f.inode, "user.x")), Errno::EACCES);
}
