//! Directory quotas: usage follows every change (also checked in `check`
//! after each request of every test, the harness having a quota on the
//! root), hard and soft limits with grace, the room given to writers.

use super::*;

const R: Inode = Inode::ROOT;

fn limits(inodes: Option<u64>, length: Option<u64>) -> Limits {
    Limits {
        inodes,
        length,
        ..Limits::default()
    }
}

fn set(h: &mut H, dir: Inode, soft: Limits, hard: Limits, grace: u32) {
    h.ok(Op::SetQuota {
        cred: root(),
        inode: dir,
        setting: Some(QuotaSetting { soft, hard, grace }),
    });
}

fn usage(h: &H, dir: Inode) -> Usage {
    h.ns.quota(dir).expect("a quota").usage
}

#[test]
fn hard_inode_limit_refuses_every_way_in() {
    let mut h = H::new();
    let c = root();
    let d = h.mkdir(&c, R, "d", 0o755);
    let other = h.mkdir(&c, R, "other", 0o755);
    h.create(&c, d.inode, "a", 0o644);
    set(
        &mut h,
        d.inode,
        Limits::default(),
        limits(Some(3), None),
        60,
    );
    assert_eq!(usage(&h, d.inode).inodes, 1, "what was there counts");
    h.create(&c, d.inode, "b", 0o644);
    h.mkdir(&c, d.inode, "sub", 0o755);
    assert_eq!(usage(&h, d.inode).inodes, 3);
    assert_eq!(h.err(create(&c, d.inode, "x", 0o644)), Errno::EDQUOT);
    assert_eq!(h.err(mkdir(&c, d.inode, "x", 0o755)), Errno::EDQUOT);
    assert_eq!(h.err(symlink(&c, d.inode, "x", "t")), Errno::EDQUOT);
    let o = h.create(&c, other.inode, "o", 0o644);
    assert_eq!(h.err(link(&c, o.inode, d.inode, "x")), Errno::EDQUOT);
    assert_eq!(
        h.err(rename(&c, other.inode, "o", d.inode, "x")),
        Errno::EDQUOT
    );
    let snap = Op::Snapshot {
        cred: c.clone(),
        src: other.inode,
        parent: d.inode,
        name: b"x".to_vec(),
    };
    assert_eq!(h.err(snap), Errno::EDQUOT);
    // Moves inside the quota and out of it are fine; out frees room.
    h.ok(rename(&c, d.inode, "a", d.inode, "a2"));
    h.ok(rename(&c, d.inode, "a2", other.inode, "a"));
    assert_eq!(usage(&h, d.inode).inodes, 2);
    h.create(&c, d.inode, "c", 0o644);
    // A quota above counts too: d is full, so is its subdirectory.
    let sub = h.lookup(d.inode, "sub").expect("sub").inode;
    assert_eq!(h.err(create(&c, sub, "s", 0o644)), Errno::EDQUOT);
    // A directory with its own quota moved out: both quotas follow.
    set(&mut h, sub, Limits::default(), limits(Some(5), None), 60);
    assert_eq!(usage(&h, sub).inodes, 0);
    h.ok(rename(&c, d.inode, "sub", other.inode, "sub"));
    assert_eq!(usage(&h, d.inode).inodes, 2);
    h.create(&c, sub, "s", 0o644);
    assert_eq!(usage(&h, sub).inodes, 1);
    assert_eq!(usage(&h, d.inode).inodes, 2);
}

#[test]
fn soft_limit_turns_hard_after_the_grace_period() {
    let mut h = H::new();
    let c = root();
    let d = h.mkdir(&c, R, "d", 0o755);
    set(
        &mut h,
        d.inode,
        limits(Some(2), None),
        Limits::default(),
        10,
    );
    h.create(&c, d.inode, "a", 0o644);
    h.create(&c, d.inode, "b", 0o644);
    assert_eq!(h.ns.quota(d.inode).and_then(|q| q.soft_since), None);
    h.create(&c, d.inode, "c", 0o644);
    let since = h.ns.quota(d.inode).and_then(|q| q.soft_since);
    assert_eq!(since, Some(h.now), "over the soft limit from now");
    // Within the grace period: allowed.
    h.create(&c, d.inode, "e", 0o644);
    h.now += 10;
    assert_eq!(h.err(create(&c, d.inode, "f", 0o644)), Errno::EDQUOT);
    // Back under the soft limit: the clock stops.
    for n in ["a", "b", "c"] {
        h.ok(unlink(&c, d.inode, n));
    }
    assert_eq!(h.ns.quota(d.inode).and_then(|q| q.soft_since), None);
    h.create(&c, d.inode, "f", 0o644);
}

#[test]
fn length_limit_gives_writers_their_room() {
    let mut h = H::new();
    let c = root();
    let d = h.mkdir(&c, R, "d", 0o755);
    let f = h.create(&c, d.inode, "f", 0o644);
    h.ok(truncate(&c, f.inode, 300));
    set(
        &mut h,
        d.inode,
        Limits::default(),
        limits(None, Some(1000)),
        60,
    );
    let u = usage(&h, d.inode);
    assert_eq!((u.inodes, u.length, u.size, u.realsize), (1, 300, 512, 512));
    assert_eq!(h.ns.quota_room(f.inode, h.now), Some(700));
    assert_eq!(h.err(truncate(&c, f.inode, 1001)), Errno::EDQUOT);
    h.ok(truncate(&c, f.inode, 1000));
    assert_eq!(h.ns.quota_room(f.inode, h.now), Some(0));
    // A file elsewhere has no limit; a link into d puts it under one.
    let g = h.create(&c, R, "g", 0o644);
    assert_eq!(h.ns.quota_room(g.inode, h.now), None);
    // Shrinking frees room; a quota below usage is allowed, room 0.
    h.ok(truncate(&c, f.inode, 100));
    assert_eq!(h.ns.quota_room(f.inode, h.now), Some(900));
    set(
        &mut h,
        d.inode,
        Limits::default(),
        limits(None, Some(50)),
        60,
    );
    assert_eq!(h.ns.quota_room(f.inode, h.now), Some(0));
    h.ok(link(&c, g.inode, d.inode, "g"));
    assert_eq!(h.ns.quota_room(g.inode, h.now), Some(0));
    // Realsize follows the goal.
    h.run(Op::SetGoal {
        cred: c.clone(),
        inode: f.inode,
        goal: 3,
        recursive: false,
    });
    assert_eq!(usage(&h, d.inode).realsize, 3 * 512);
}

#[test]
fn who_may_set_quotas_and_deleting_them() {
    let mut h = H::new();
    let c = root();
    let d = h.mkdir(&c, R, "d", 0o777);
    let f = h.create(&c, d.inode, "f", 0o644);
    let q = |cred: Cred, inode: Inode| Op::SetQuota {
        cred,
        inode,
        setting: Some(QuotaSetting {
            soft: Limits::default(),
            hard: limits(Some(1), None),
            grace: 5,
        }),
    };
    assert_eq!(h.err(q(user(1000), d.inode)), Errno::EPERM);
    assert_eq!(h.err(q(root(), f.inode)), Errno::ENOTDIR);
    h.ok(q(root(), d.inode));
    assert_eq!(h.err(mkdir(&c, d.inode, "x", 0o755)), Errno::EDQUOT);
    h.ok(Op::SetQuota {
        cred: root(),
        inode: d.inode,
        setting: None,
    });
    assert!(h.ns.quota(d.inode).is_none());
    h.mkdir(&c, d.inode, "x", 0o755);
    // A removed directory takes its quota along.
    let e = h.mkdir(&c, R, "e", 0o755);
    h.ok(q(root(), e.inode));
    h.ok(rmdir(&c, R, "e"));
    assert!(h.ns.quota(e.inode).is_none());
    let listed: Vec<Vec<u8>> = h.ns.quotas().into_iter().map(|(_, p, _)| p).collect();
    assert_eq!(
        listed,
        vec![Vec::<u8>::new()],
        "only the harness's root quota"
    );
}
