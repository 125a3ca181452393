//! POSIX ACLs through the operations: enforcement by every permission
//! check, chmod and the mask, inheritance of default ACLs, bad values.

use super::*;

const R: Inode = Inode::ROOT;
const ACCESS: &str = "system.posix_acl_access";
const DEFAULT: &str = "system.posix_acl_default";

/// An ACL xattr value from (tag, perm, id) entries.
fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    crate::fsm::acl::xattr_value(entries.iter().copied())
}

const NONE: u32 = u32::MAX;

/// owner rwx, user 2000 rw-, group r--, mask rw-, other ---.
fn bob_rw() -> Vec<u8> {
    acl(&[
        (0x01, 7, NONE),
        (0x02, 6, 2000),
        (0x04, 4, NONE),
        (0x10, 6, NONE),
        (0x20, 0, NONE),
    ])
}

#[test]
fn an_access_acl_grants_a_named_user_and_follows_chmod() {
    let mut h = H::new();
    h.ok(chmod(&root(), R, 0o777));
    let alice = user(1000);
    let bob = user(2000);
    let f = h.create(&alice, R, "f", 0o600);
    h.ok(Op::Release { inode: f.inode });
    let open_w = |c: &Cred| open(c, f.inode, OpenMode::Write, false);
    assert_eq!(h.err(open_w(&bob)), Errno::EACCES);
    // Only the owner may set it.
    assert_eq!(
        h.err(setxattr(&bob, f.inode, ACCESS, bob_rw())),
        Errno::EPERM
    );
    h.ok(setxattr(&alice, f.inode, ACCESS, bob_rw()));
    assert_eq!(
        h.ns.getattr(f.inode).map(|a| a.mode),
        Ok(0o760),
        "mode from the ACL"
    );
    h.ok(open_w(&bob));
    h.ok(Op::Release { inode: f.inode });
    assert_eq!(h.err(open_w(&user(3000))), Errno::EACCES);
    // chmod g-w narrows the mask: bob loses write.
    h.ok(chmod(&alice, f.inode, 0o740));
    assert_eq!(h.err(open_w(&bob)), Errno::EACCES);
    h.ok(open(&bob, f.inode, OpenMode::Read, false));
    let stored =
        h.ns.getxattr(&alice, f.inode, ACCESS.as_bytes())
            .expect("kept");
    assert_eq!(
        &stored[4 + 3 * 8 + 2..4 + 3 * 8 + 4],
        &4u16.to_le_bytes(),
        "mask r--"
    );
    // A plain ACL is the mode: not kept.
    let plain = acl(&[(0x01, 6, NONE), (0x04, 4, NONE), (0x20, 4, NONE)]);
    h.ok(setxattr(&alice, f.inode, ACCESS, plain));
    assert_eq!(h.ns.getattr(f.inode).map(|a| a.mode), Ok(0o644));
    assert_eq!(
        h.ns.getxattr(&alice, f.inode, ACCESS.as_bytes()),
        Err(Errno::ENODATA)
    );
    assert_eq!(
        h.err(setxattr(&alice, f.inode, ACCESS, vec![2, 0, 0, 0, 1])),
        Errno::EINVAL
    );
}

#[test]
fn a_default_acl_is_inherited_without_the_umask() {
    let mut h = H::new();
    let d = h.mkdir(&root(), R, "d", 0o755);
    let f0 = h.create(&root(), R, "plain", 0o644);
    assert_eq!(
        h.err(setxattr(&root(), f0.inode, DEFAULT, bob_rw())),
        Errno::EACCES
    );
    h.ok(setxattr(&root(), d.inode, DEFAULT, bob_rw()));
    // create(0666) with umask 022: the ACL decides, not the umask.
    let f = h.attr(Op::Create {
        cred: root(),
        parent: d.inode,
        name: b"f".to_vec(),
        mode: 0o666,
        umask: 0o022,
        exclusive: true,
    });
    assert_eq!(f.mode, 0o660, "owner rw- (asked), mask rw-, other ---");
    assert!(h.ns.getxattr(&root(), f.inode, ACCESS.as_bytes()).is_ok());
    assert_eq!(
        h.ns.getxattr(&root(), f.inode, DEFAULT.as_bytes()),
        Err(Errno::ENODATA),
        "files get no default ACL"
    );
    let sub = h.attr(Op::Mkdir {
        cred: root(),
        parent: d.inode,
        name: b"sub".to_vec(),
        mode: 0o777,
        umask: 0o022,
    });
    assert_eq!(sub.mode, 0o760);
    assert_eq!(
        h.ns.getxattr(&root(), sub.inode, DEFAULT.as_bytes()),
        Ok(bob_rw()),
        "directories inherit the default ACL"
    );
    // Bob (not in any group) may write the new file through the ACL.
    h.ok(open(&user(2000), f.inode, OpenMode::Write, false));
    // Without a default ACL the umask applies.
    let g = h.attr(Op::Create {
        cred: root(),
        parent: R,
        name: b"g".to_vec(),
        mode: 0o666,
        umask: 0o022,
        exclusive: true,
    });
    assert_eq!(g.mode, 0o644);
}
