//! Extra attributes (mfsseteattr) and what each refuses.

use super::*;

const R: Inode = Inode::ROOT;

fn seteattr(cred: &Cred, inode: Inode, set: u8, clear: u8, recursive: bool) -> Op {
    Op::SetEattr {
        cred: cred.clone(),
        inode,
        set,
        clear,
        recursive,
    }
}

/// Runs a SetEattr, expecting its counts back.
fn tree(h: &mut H, op: Op) {
    match h.run(op.clone()) {
        Reply::Tree { .. } => {}
        r => panic!("{op:?} -> {r:?}"),
    }
}

#[test]
fn set_clear_recursive_and_counted() {
    let mut h = H::new();
    let c = root();
    let d = h.mkdir(&c, R, "d", 0o777);
    let f = h.create(&c, d.inode, "f", 0o644);
    let u = h.create(&user(7), d.inode, "u", 0o644);
    let reply = h.run(seteattr(&user(7), d.inode, eattr::NOATTRCACHE, 0, true));
    assert_eq!(
        reply,
        Reply::Tree {
            changed: 1,
            not_changed: 0,
            not_permitted: 2
        }
    );
    tree(&mut h, seteattr(&c, d.inode, eattr::UNDELETABLE, 0, true));
    assert_eq!(h.ns.getattr(f.inode).unwrap().eattr, eattr::UNDELETABLE);
    assert_eq!(
        h.ns.getattr(u.inode).unwrap().eattr,
        eattr::UNDELETABLE | eattr::NOATTRCACHE
    );
    tree(&mut h, seteattr(&c, d.inode, 0, eattr::UNDELETABLE, true));
    assert_eq!(h.ns.getattr(f.inode).unwrap().eattr, 0);
    assert_eq!(h.err(seteattr(&c, f.inode, 0x08, 0, false)), Errno::EINVAL);
}

#[test]
fn immutable_refuses_every_change_even_to_root() {
    let mut h = H::new();
    let c = root();
    let d = h.mkdir(&c, R, "d", 0o777);
    let f = h.create(&c, d.inode, "f", 0o666);
    tree(&mut h, seteattr(&c, f.inode, eattr::IMMUTABLE, 0, false));
    assert_eq!(h.err(truncate(&c, f.inode, 0)), Errno::EPERM);
    assert_eq!(h.err(chmod(&c, f.inode, 0o600)), Errno::EPERM);
    assert_eq!(h.err(setxattr(&c, f.inode, "user.a", "1")), Errno::EPERM);
    assert_eq!(
        h.err(open(&c, f.inode, OpenMode::Write, false)),
        Errno::EPERM
    );
    assert_eq!(h.err(unlink(&c, d.inode, "f")), Errno::EPERM);
    assert_eq!(h.err(rename(&c, d.inode, "f", R, "g")), Errno::EPERM);
    assert_eq!(h.err(link(&c, f.inode, R, "l")), Errno::EPERM);
    assert_eq!(
        h.ns.may_write_data(h.sid, &c, f.inode),
        Err(Errno::EPERM),
        "no write lease even through a descriptor opened before"
    );
    h.ok(open(&c, f.inode, OpenMode::Read, false));
    // An immutable directory takes no new names and loses none.
    tree(&mut h, seteattr(&c, d.inode, eattr::IMMUTABLE, 0, false));
    assert_eq!(h.err(create(&c, d.inode, "new", 0o644)), Errno::EPERM);
    assert_eq!(h.err(mkdir(&c, d.inode, "sub", 0o755)), Errno::EPERM);
    // Taken off, everything works again.
    tree(&mut h, seteattr(&c, d.inode, 0, eattr::IMMUTABLE, false));
    tree(&mut h, seteattr(&c, f.inode, 0, eattr::IMMUTABLE, false));
    h.ok(truncate(&c, f.inode, 0));
    h.ok(unlink(&c, d.inode, "f"));
}

#[test]
fn appendonly_and_undeletable() {
    let mut h = H::new();
    let c = root();
    let d = h.mkdir(&c, R, "d", 0o777);
    let f = h.create(&c, d.inode, "f", 0o666);
    tree(&mut h, seteattr(&c, f.inode, eattr::APPENDONLY, 0, false));
    assert_eq!(h.err(truncate(&c, f.inode, 0)), Errno::EPERM);
    assert_eq!(
        h.err(open(&c, f.inode, OpenMode::Write, true)),
        Errno::EPERM
    );
    h.ok(open(&c, f.inode, OpenMode::Write, false));
    assert_eq!(h.ns.may_write_data(h.sid, &c, f.inode), Ok(()));
    h.ok(utimens(&c, f.inode, Some(TimeSet::Now), Some(TimeSet::Now)));
    assert_eq!(
        h.err(utimens(&c, f.inode, None, Some(TimeSet::At(ts(5))))),
        Errno::EPERM
    );
    assert_eq!(h.err(unlink(&c, d.inode, "f")), Errno::EPERM);
    // An append-only directory takes names and keeps them.
    tree(&mut h, seteattr(&c, d.inode, eattr::APPENDONLY, 0, false));
    let g = h.create(&c, d.inode, "g", 0o644);
    assert_eq!(h.err(unlink(&c, d.inode, "g")), Errno::EPERM);
    tree(&mut h, seteattr(&c, d.inode, 0, eattr::APPENDONLY, false));
    tree(&mut h, seteattr(&c, g.inode, eattr::UNDELETABLE, 0, false));
    assert_eq!(h.err(unlink(&c, d.inode, "g")), Errno::EPERM);
    assert_eq!(h.err(rename(&c, d.inode, "g", R, "g2")), Errno::EPERM);
    h.ok(truncate(&c, g.inode, 10));
    h.ok(chmod(&c, g.inode, 0o600));
    tree(&mut h, seteattr(&c, g.inode, 0, eattr::UNDELETABLE, false));
    h.ok(unlink(&c, d.inode, "g"));
}

#[test]
fn noowner_makes_everyone_the_owner() {
    let mut h = H::new();
    let c = root();
    let f = h.create(&c, R, "f", 0o600);
    let u = user(1234);
    assert_eq!(h.err(chmod(&u, f.inode, 0o644)), Errno::EPERM);
    assert_eq!(
        h.err(open(&u, f.inode, OpenMode::Read, false)),
        Errno::EACCES
    );
    tree(&mut h, seteattr(&c, f.inode, eattr::NOOWNER, 0, false));
    h.ok(open(&u, f.inode, OpenMode::ReadWrite, false));
    h.ok(chmod(&u, f.inode, 0o644));
}
