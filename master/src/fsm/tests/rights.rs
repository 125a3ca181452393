//! Sessions registered through an export: their rights in the namespace,
//! images, and which inodes are within a session's directory.

use super::*;

const R: Inode = Inode::ROOT;

fn register_with(h: &mut H, rights: Rights) -> SessionId {
    let r = h.ns.apply(&Request {
        session: SessionId(0),
        seq: 0,
        acked: 0,
        time: ts(h.now),
        op: Op::RegisterSessionWith {
            info: "exported mount".into(),
            rights,
        },
    });
    let Reply::Session { id } = r else {
        panic!("RegisterSessionWith: {r:?}")
    };
    id
}

fn close(h: &mut H, sid: SessionId) {
    let r = h.ns.apply(&Request {
        session: sid,
        seq: 1,
        acked: 0,
        time: ts(h.now),
        op: Op::CloseSession,
    });
    assert_eq!(r, Reply::Ok);
}

#[test]
fn rights_are_kept_with_the_session_in_images_and_go_with_it() {
    let mut h = H::new();
    let mut rights = exported();
    rights.read_only = true;
    let sid = register_with(&mut h, rights.clone());
    assert_eq!(h.ns.session_rights(sid), Some(&rights));
    // A session registered without an export has none.
    assert_eq!(h.ns.session_rights(h.sid), None);
    h.ns.check().expect("consistent");
    let (back, _) = Namespace::from_image(&h.ns.to_image(b"")).expect("image");
    assert_eq!(back.session_rights(sid), Some(&rights));
    assert_eq!(back, h.ns);
    close(&mut h, sid);
    assert_eq!(h.ns.session_rights(sid), None);
    h.ns.check().expect("consistent after close");
    // Expiry drops them too.
    let other = register_with(&mut h, exported());
    let r = h.ns.apply(&Request {
        session: SessionId(0),
        seq: 0,
        acked: 0,
        time: ts(h.now),
        op: Op::ExpireSessions { ids: vec![other] },
    });
    assert_eq!(r, Reply::Ok);
    assert_eq!(h.ns.session_rights(other), None);
    h.ns.check().expect("consistent after expiry");
}

#[test]
fn maproot_maps_root_only_and_mapall_maps_everyone() {
    let r = exported();
    assert_eq!(r.map(root()), Cred::user(999, 999));
    assert_eq!(r.map(user(1000)), user(1000));
    let all = Rights {
        mapall: Some((5, 6)),
        ..exported()
    };
    assert_eq!(all.map(root()), Cred::user(5, 6));
    let member = Cred {
        groups: vec![7],
        ..user(1000)
    };
    assert_eq!(all.map(member), Cred::user(5, 6));
}

#[test]
fn what_is_within_a_directory() {
    let mut h = H::new();
    let top = h.mkdir(&root(), R, "top", 0o755).inode;
    let sub = h.mkdir(&root(), top, "sub", 0o755).inode;
    let inner = h.create(&root(), sub, "f", 0o644).inode;
    let outside = h.create(&root(), R, "g", 0o644).inode;
    let other = h.mkdir(&root(), R, "other", 0o755).inode;
    // A file with names in and out of `top` is within through either.
    h.ok(link(&root(), outside, sub, "g-link"));
    // The test's session holds what it created open: ask as another.
    let s = register_with(&mut h, exported());
    assert_eq!(h.ns.is_within(top, top, s), Ok(true));
    assert_eq!(h.ns.is_within(top, sub, s), Ok(true));
    assert_eq!(h.ns.is_within(top, inner, s), Ok(true));
    assert_eq!(h.ns.is_within(top, outside, s), Ok(true));
    assert_eq!(h.ns.is_within(top, R, s), Ok(false));
    assert_eq!(h.ns.is_within(top, other, s), Ok(false));
    assert_eq!(h.ns.is_within(sub, top, s), Ok(false));
    assert_eq!(h.ns.is_within(R, other, s), Ok(true));
    assert_eq!(h.ns.is_within(top, Inode(9999), s), Err(Errno::ENOENT));
    h.ok(unlink(&root(), sub, "g-link"));
    assert_eq!(h.ns.is_within(top, outside, s), Ok(false));
    // A file unlinked while a session holds it open stays that session's.
    h.ok(unlink(&root(), sub, "f"));
    assert_eq!(h.ns.is_within(top, inner, h.sid), Ok(true));
    assert_eq!(h.ns.is_within(top, inner, s), Ok(false));
}
