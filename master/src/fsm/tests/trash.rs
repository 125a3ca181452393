//! The trash: deleted files kept for their trash time, undelete, a new
//! path, removal for good, and what happens to open files.

use super::*;

const R: Inode = Inode::ROOT;

/// A harness whose new files get trash time `secs`.
fn harness(secs: u32) -> H {
    let mut h = H::new();
    let r = h.run(Op::SetTrashTime {
        cred: root(),
        inode: R,
        trash_time: secs,
        recursive: false,
    });
    assert!(matches!(r, Reply::Tree { changed: 1, .. }), "{r:?}");
    h
}

/// An internal request at time `sec`.
fn internal_at(h: &mut H, sec: i64, op: Op) -> Reply {
    let r = h.ns.apply(&Request {
        session: SessionId(0),
        seq: 0,
        acked: 0,
        time: ts(sec),
        op,
    });
    h.ns.check().expect("invariants");
    r
}

fn trash_paths(h: &H) -> Vec<(Inode, String)> {
    h.ns.removed_files(false, Inode(0), 1000)
        .into_iter()
        .map(|f| (f.inode, String::from_utf8_lossy(&f.path).into_owned()))
        .collect()
}

/// A file of one chunk at `parent`/`name`, not open.
fn file_with_chunk(h: &mut H, parent: Inode, name: &str) -> (Attr, ChunkId) {
    let f = h.create(&root(), parent, name, 0o644);
    h.ok(Op::Release { inode: f.inode });
    let Reply::Chunk { id, .. } = internal_at(
        h,
        1,
        Op::AllocChunk {
            inode: f.inode,
            index: 0,
        },
    ) else {
        panic!("no chunk")
    };
    (f, id)
}

fn undel(cred: &Cred, inode: Inode) -> Op {
    Op::Undelete {
        cred: cred.clone(),
        inode,
    }
}

#[test]
fn a_deleted_file_waits_in_the_trash_with_its_chunks() {
    let mut h = harness(3600);
    let d = h.mkdir(&root(), R, "d", 0o755);
    let sub = h.mkdir(&root(), d.inode, "sub", 0o755);
    let (f, chunk) = file_with_chunk(&mut h, sub.inode, "f");
    h.ok(unlink(&root(), sub.inode, "f"));
    assert_eq!(h.lookup(sub.inode, "f"), Err(Errno::ENOENT));
    assert_eq!(trash_paths(&h), vec![(f.inode, "d/sub/f".to_string())]);
    assert_eq!(h.ns.getattr(f.inode).map(|a| a.nlink), Ok(0));
    assert!(h.ns.chunk(chunk).is_some(), "chunk kept");
    assert!(h.ns.pending_chunk_deletes().is_empty());
    let listed = &h.ns.removed_files(false, Inode(0), 10)[0];
    assert_eq!(listed.expires, h.now + 3600);
    assert_eq!(h.ns.trash_usage().0, 1);

    // Not due yet: stays. Due: freed, its chunk queued for deletion.
    let due = listed.expires;
    assert!(h.ns.expired_trash(due - 1, 10).is_empty());
    internal_at(
        &mut h,
        due - 1,
        Op::PurgeTrash {
            inodes: vec![f.inode],
        },
    );
    assert_eq!(trash_paths(&h).len(), 1);
    assert_eq!(h.ns.expired_trash(due, 10), vec![f.inode]);
    internal_at(
        &mut h,
        due,
        Op::PurgeTrash {
            inodes: vec![f.inode],
        },
    );
    assert!(trash_paths(&h).is_empty());
    assert_eq!(h.ns.getattr(f.inode), Err(Errno::ENOENT));
    assert_eq!(h.ns.pending_chunk_deletes(), &[chunk]);
}

#[test]
fn undelete_puts_the_file_back_and_makes_missing_directories() {
    let mut h = harness(3600);
    let owner = user(1000);
    h.ok(chmod(&root(), R, 0o777));
    let d = h.mkdir(&owner, R, "d", 0o700);
    let sub = h.mkdir(&owner, d.inode, "sub", 0o700);
    let f = h.create(&owner, sub.inode, "f", 0o600);
    h.ok(unlink(&owner, sub.inode, "f"));
    h.ok(rmdir(&owner, d.inode, "sub"));
    h.ok(rmdir(&owner, R, "d"));
    // Someone else may not; the owner may.
    assert_eq!(h.err(undel(&user(1001), f.inode)), Errno::EPERM);
    let back = h.attr(undel(&owner, f.inode));
    assert_eq!((back.inode, back.nlink), (f.inode, 1));
    let d2 = h.lookup(R, "d").expect("d made again");
    assert_eq!((d2.mode, d2.uid, d2.gid), (0o755, 1000, 1000));
    let sub2 = h.lookup(d2.inode, "sub").expect("sub made again");
    assert_eq!(h.lookup(sub2.inode, "f").map(|a| a.inode), Ok(f.inode));
    assert!(trash_paths(&h).is_empty());
    // Not in the trash any more.
    assert_eq!(h.err(undel(&owner, f.inode)), Errno::ENOENT);
}

#[test]
fn undelete_refuses_a_taken_name_and_a_file_on_the_way() {
    let mut h = harness(3600);
    let d = h.mkdir(&root(), R, "d", 0o755);
    let f = h.create(&root(), d.inode, "f", 0o644);
    h.ok(unlink(&root(), d.inode, "f"));
    h.create(&root(), d.inode, "f", 0o644);
    assert_eq!(h.err(undel(&root(), f.inode)), Errno::EEXIST);
    h.ok(unlink(&root(), d.inode, "f"));
    h.ok(rmdir(&root(), R, "d"));
    h.create(&root(), R, "d", 0o644);
    assert_eq!(h.err(undel(&root(), f.inode)), Errno::ENOTDIR);
    // A new path: written into the trashed file.
    let set = |path: &str| Op::SetTrashPath {
        cred: root(),
        inode: f.inode,
        path: path.as_bytes().to_vec(),
    };
    assert_eq!(h.err(set("")), Errno::EINVAL);
    assert_eq!(h.err(set("a/../b")), Errno::EINVAL);
    h.ok(set("/x//y/f2"));
    assert_eq!(trash_paths(&h)[0].1, "x/y/f2");
    h.ok(undel(&root(), f.inode));
    let x = h.lookup(R, "x").expect("x");
    let y = h.lookup(x.inode, "y").expect("y");
    assert_eq!(h.lookup(y.inode, "f2").map(|a| a.inode), Ok(f.inode));
}

#[test]
fn removal_for_good_and_open_files() {
    let mut h = harness(3600);
    let (f, chunk) = file_with_chunk(&mut h, R, "f");
    h.ok(open(&root(), f.inode, OpenMode::Read, false));
    h.ok(unlink(&root(), R, "f"));
    // Open and trashed: in the trash, not sustained.
    assert_eq!(trash_paths(&h).len(), 1);
    assert_eq!(h.ns.sustained().count(), 0);
    assert_eq!(
        h.err(Op::TrashDelete {
            cred: user(5),
            inode: f.inode
        }),
        Errno::EPERM
    );
    h.ok(Op::TrashDelete {
        cred: root(),
        inode: f.inode,
    });
    // Out of the trash but open: sustained, with its path.
    assert!(trash_paths(&h).is_empty());
    let s = h.ns.removed_files(true, Inode(0), 10);
    assert_eq!(s.len(), 1);
    assert_eq!((s[0].inode, &s[0].path[..]), (f.inode, &b"f"[..]));
    assert!(h.ns.chunk(chunk).is_some());
    h.ok(Op::Release { inode: f.inode });
    assert_eq!(h.ns.getattr(f.inode), Err(Errno::ENOENT));
    assert_eq!(h.ns.pending_chunk_deletes(), &[chunk]);
}

#[test]
fn what_goes_to_the_trash() {
    let mut h = harness(60);
    // A file replaced by a rename goes to the trash.
    let old = h.create(&root(), R, "v", 0o644);
    h.create(&root(), R, "new", 0o644);
    h.ok(rename(&root(), R, "new", R, "v"));
    assert_eq!(trash_paths(&h), vec![(old.inode, "v".to_string())]);
    // A file with another name left does not.
    let l = h.create(&root(), R, "l", 0o644);
    h.ok(link(&root(), l.inode, R, "l2"));
    h.ok(unlink(&root(), R, "l"));
    assert_eq!(trash_paths(&h).len(), 1);
    // Symlinks and directories never; files with trash time 0 neither.
    h.ok(symlink(&root(), R, "s", "target"));
    h.ok(unlink(&root(), R, "s"));
    let z = h.create(&root(), R, "z", 0o644);
    h.ok(Op::Release { inode: z.inode });
    h.run(Op::SetTrashTime {
        cred: root(),
        inode: z.inode,
        trash_time: 0,
        recursive: false,
    });
    h.ok(unlink(&root(), R, "z"));
    assert_eq!(h.ns.getattr(z.inode), Err(Errno::ENOENT));
    assert_eq!(trash_paths(&h).len(), 1);
}

#[test]
fn the_trash_survives_an_image_and_older_images_load() {
    let mut h = harness(60);
    h.create(&root(), R, "f", 0o644);
    h.ok(unlink(&root(), R, "f"));
    let image = h.ns.to_image(b"x");
    let (back, extra) = Namespace::from_image(&image).expect("image");
    assert_eq!((back, extra), (h.ns.clone(), b"x".to_vec()));

    // Format 4 to 8 images: the same namespace without the fields added
    // since (empty maps, one zero byte each: trash, sustained paths and
    // quotas from 5, session rights from 6, delegations and held inode
    // numbers from 7, held chunk ids from 8, ordered versions from 9).
    let mut plain = H::new();
    plain.ok(Op::SetQuota {
        cred: root(),
        inode: R,
        setting: None,
    });
    plain.create(&root(), R, "g", 0o644);
    let cur = plain.ns.to_image(b"");
    let n = u64::from_le_bytes(cur[12..20].try_into().expect("8 bytes")) as usize;
    let payload = &cur[20..20 + n];
    assert_eq!(&payload[n - 8..], &[0, 0, 0, 0, 0, 0, 0, 0]);
    for (version, cut) in [(4u32, 8usize), (5, 5), (6, 4), (7, 2), (8, 1)] {
        let mut old = IMAGE_MAGIC.to_vec();
        old.extend_from_slice(&version.to_le_bytes());
        old.extend_from_slice(&((n - cut) as u64).to_le_bytes());
        old.extend_from_slice(&payload[..n - cut]);
        old.extend_from_slice(&0u64.to_le_bytes());
        let crc = crc32fast::hash(&old);
        old.extend_from_slice(&crc.to_le_bytes());
        let (loaded, _) = Namespace::from_image(&old).expect("older image");
        assert_eq!(loaded, plain.ns, "format {version}");
    }
}

/// The trash counted in parts (as `mfscli info` counts it) adds up to the
/// whole, whatever the part.
#[test]
fn the_trash_counted_in_parts_adds_up_to_the_whole() {
    let mut h = harness(3600);
    for i in 0..50u64 {
        let name = format!("f{i}");
        let f = h.create(&root(), R, &name, 0o644);
        h.ok(Op::Release { inode: f.inode });
        let _ = h.run(Op::SetAttr {
            cred: root(),
            inode: f.inode,
            mode: None,
            uid: None,
            gid: None,
            size: Some(i * 1000 + 1),
            atime: None,
            mtime: None,
        });
        h.ok(unlink(&root(), R, &name));
    }
    let whole = h.ns.trash_usage();
    assert_eq!(whole, (50, (0..50u64).map(|i| i * 1000 + 1).sum()));
    for part in [1, 7, 49, 50, 51] {
        let (mut files, mut bytes, mut after) = (0, 0, None);
        loop {
            let (f, b, last) = h.ns.trash_usage_after(after, part);
            assert!(f as usize <= part);
            files += f;
            bytes += b;
            match last {
                Some(l) => after = Some(l),
                None => break,
            }
        }
        assert_eq!((files, bytes), whole, "parts of {part}");
    }
}
