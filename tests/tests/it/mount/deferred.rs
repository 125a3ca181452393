//! Attribute changes a mount keeps for the commit of a file it is writing
//! (tar's futimens, fchown and fchmod before close): what the writer, the
//! same mount and another mount see, before and after close, and the
//! changes that must not wait.

use std::fs::{File, FileTimes, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use mfs_tests::cluster::Cluster;
use mfs_tests::mountpoint::Mount;

use crate::util::{as_user, rpc_count, skip_without_fuse, step};

fn create_new(p: &Path, mode: u32) -> File {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(p)
        .unwrap()
}

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o7777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_while_writing_are_committed_at_close() {
    if skip_without_fuse() {
        return;
    }
    let mut c = Cluster::start(1, &[]).await.unwrap();
    c.add_chunkservers(2, 1).await.unwrap();
    std::fs::set_permissions(c.root(), Permissions::from_mode(0o711)).unwrap();
    // Without the kernel's writeback cache the data reaches the mount at
    // write(2), so a commit of the file while it sits idle (after 1 s, as
    // on a loaded machine) is a WriteChunkEnd, not a SetAttr the counts
    // below would see.
    let a = Mount::start(&c, "a", &["-o", "allow_other,mfswritebackcache=0"]).unwrap();
    let b = Mount::start(&c, "b", &["-o", "mfsattrcacheto=0"]).unwrap();
    std::fs::set_permissions(a.path(), Permissions::from_mode(0o777)).unwrap();
    let leader = c.wait_leader(Duration::from_secs(10)).await.unwrap();
    let m = c.master(leader).unwrap();

    step("tar's order: create 0600, write, futimens, fchown, fchmod 0644");
    let p = a.path().join("t");
    let mut f = create_new(&p, 0o600);
    f.write_all(b"data").unwrap();
    let mtime = UNIX_EPOCH + Duration::new(1_500_000_000, 123_456_789);
    let atime = UNIX_EPOCH + Duration::from_secs(1_400_000_000);
    f.set_times(FileTimes::new().set_modified(mtime).set_accessed(atime))
        .unwrap();
    let getattrs = rpc_count(m, "GetAttr");
    std::os::unix::fs::fchown(&f, Some(0), Some(0)).unwrap();
    assert_eq!(
        rpc_count(m, "GetAttr"),
        getattrs,
        "the kernel's look before a chown is answered by the mount"
    );
    let mut setattrs = rpc_count(m, "SetAttr");
    f.set_permissions(Permissions::from_mode(0o644)).unwrap();
    let meta = f.metadata().unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o644, "the writer sees its chmod");
    assert_eq!(
        (meta.mtime(), meta.mtime_nsec()),
        (1_500_000_000, 123_456_789)
    );
    assert_eq!(mode_of(&p), 0o644, "so does the writer's mount");

    step("a change by someone else does not wait: a non-owner's chmod is refused");
    assert!(!as_user(2000, a.path(), "chmod 777 t"));
    assert_eq!(rpc_count(m, "SetAttr"), setattrs + 1, "asked of the master");
    setattrs += 1;
    assert_eq!(mode_of(&p), 0o644);

    step("close commits data, mode and times at once; another mount sees them");
    drop(f);
    assert_eq!(rpc_count(m, "SetAttr"), setattrs, "no SetAttr of their own");
    let q = b.path().join("t");
    let meta = std::fs::metadata(&q).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o644);
    assert_eq!(
        (meta.mtime(), meta.mtime_nsec()),
        (1_500_000_000, 123_456_789)
    );
    assert_eq!(meta.atime(), 1_400_000_000);
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    assert_eq!(std::fs::read(&q).unwrap(), b"data");

    step("no data written: the kept chmod is one SetAttr at close");
    let p = a.path().join("empty");
    let f = create_new(&p, 0o600);
    f.set_permissions(Permissions::from_mode(0o640)).unwrap();
    drop(f);
    assert_eq!(mode_of(&b.path().join("empty")), 0o640);

    step("SUID does not wait: another mount sees it before close");
    let p = a.path().join("s");
    let mut f = create_new(&p, 0o700);
    f.write_all(b"#!/bin/sh\n").unwrap();
    f.set_permissions(Permissions::from_mode(0o4755)).unwrap();
    assert_eq!(mode_of(&b.path().join("s")), 0o4755);
    drop(f);
    assert_eq!(mode_of(&b.path().join("s")), 0o4755);

    step("a user's own file: its chmod waits for close too, and holds");
    assert!(as_user(
        2000,
        a.path(),
        "exec 3>u && printf x >&3 && chmod 604 u && exec 3>&- && test -s u"
    ));
    let meta = std::fs::metadata(b.path().join("u")).unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.len()),
        (0o604, 2000, 1)
    );

    step("a chmod kept while writing, then a rename: all committed at close");
    let p = a.path().join("r1");
    let mut f = create_new(&p, 0o600);
    f.write_all(b"x").unwrap();
    f.set_permissions(Permissions::from_mode(0o664)).unwrap();
    std::fs::rename(&p, a.path().join("r2")).unwrap();
    f.flush().unwrap();
    drop(f);
    assert_eq!(mode_of(&b.path().join("r2")), 0o664);
}
