//! POSIX ACLs on a real mount (`-o allow_other`), checked with commands
//! run as other users: an access ACL grants a named user, chmod narrows
//! the mask, a default ACL is inherited by new files whatever the umask,
//! and access(2) (`test -r`) answers by the ACL. ACLs are written as the
//! raw xattrs setfacl writes.
//!
//! Needs root and /dev/fuse; without them it says so and passes.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use mfs_tests::cluster::Cluster;
use mfs_tests::mountpoint::Mount;

use crate::util::{as_user, rpc_count, skip_without_fuse, step};

const NONE: u32 = u32::MAX;

/// An ACL xattr value: (tag, perm, id) entries (1 owner, 2 user, 4 group,
/// 16 mask, 32 other).
fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut out = 2u32.to_le_bytes().to_vec();
    for &(t, p, id) in entries {
        out.extend_from_slice(&t.to_le_bytes());
        out.extend_from_slice(&p.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let path = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid NUL-terminated strings and a buffer of `value.len()`.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setxattr {name:?}: {}",
        std::io::Error::last_os_error()
    );
}

fn cpath(p: &Path) -> std::ffi::CString {
    std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}

/// getxattr(2): the value, or the errno.
fn get_xattr(p: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let (path, name) = (cpath(p), std::ffi::CString::new(name).unwrap());
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid NUL-terminated strings and a buffer of `buf.len()`.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// listxattr(2): the names.
fn list_xattr(p: &Path) -> Vec<String> {
    let path = cpath(p);
    let mut buf = vec![0u8; 65536];
    // SAFETY: a valid NUL-terminated string and a buffer of `buf.len()`.
    let n = unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0, "listxattr: {}", std::io::Error::last_os_error());
    buf.truncate(n as usize);
    buf.split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect()
}

fn remove_xattr(p: &Path, name: &str) {
    let (path, name) = (cpath(p), std::ffi::CString::new(name).unwrap());
    // SAFETY: valid NUL-terminated strings.
    let rc = unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) };
    assert_eq!(rc, 0, "removexattr: {}", std::io::Error::last_os_error());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acls_grant_narrow_and_inherit() {
    if skip_without_fuse() {
        return;
    }
    let mut c = Cluster::start(1, &[]).await.unwrap();
    c.add_chunkservers(1, 1).await.unwrap();
    // Other users must reach the mount point.
    std::fs::set_permissions(c.root(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let m = Mount::start(&c, "mnt", &["-o", "allow_other"]).unwrap();
    let r = m.path();
    let f = r.join("f");
    std::fs::write(&f, b"secret\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();

    step("without an ACL user 2000 cannot read");
    assert!(!as_user(2000, r, "cat f"));
    assert!(!as_user(2000, r, "test -r f"));

    step("user:2000:r-- (mask r--): reads, cannot write; the mode shows the mask");
    let grant = acl(&[
        (1, 6, NONE),
        (2, 4, 2000),
        (4, 0, NONE),
        (16, 4, NONE),
        (32, 0, NONE),
    ]);
    set_xattr(&f, "system.posix_acl_access", &grant);
    // The kernel keeps attributes for up to 1 s (mfsattrcacheto).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(std::fs::metadata(&f).unwrap().mode() & 0o777, 0o640);
    assert!(as_user(2000, r, "cat f >/dev/null"));
    assert!(as_user(2000, r, "test -r f"));
    assert!(!as_user(2000, r, "echo x >> f"));
    assert!(!as_user(3000, r, "cat f"), "other users still get nothing");

    step("chmod 600 empties the mask: user 2000 loses read");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The kernel keeps attributes for up to 1 s; the master decides.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert!(!as_user(2000, r, "cat f"));

    step("a default ACL: new files inherit it whatever the umask");
    let d = r.join("shared");
    std::fs::create_dir(&d).unwrap();
    let default = acl(&[
        (1, 7, NONE),
        (2, 7, 2000),
        (4, 5, NONE),
        (16, 7, NONE),
        (32, 0, NONE),
    ]);
    set_xattr(&d, "system.posix_acl_default", &default);
    let made = Command::new("sh")
        .arg("-c")
        .arg("umask 077; echo hello > new; mkdir sub")
        .current_dir(&d)
        .status()
        .unwrap();
    assert!(made.success());
    let mode = std::fs::metadata(d.join("new")).unwrap().mode() & 0o777;
    assert_eq!(
        mode, 0o660,
        "owner rw, mask rw, other none; the umask ignored"
    );
    assert!(as_user(2000, &d, "cat new >/dev/null && echo more >> new"));
    assert!(!as_user(3000, &d, "cat new"));
    let sub = std::fs::metadata(d.join("sub")).unwrap().mode() & 0o777;
    assert_eq!(sub, 0o770);
    assert!(as_user(2000, &d.join("sub"), "echo x > inside"));
}

/// `ls -l` asks getxattr for the ACLs and the SELinux label of every file:
/// a file without xattrs (the master's `has_xattrs` in its attributes) is
/// answered by the mount. An xattr or ACL set through the mount, or
/// inherited at creation, shows at once. Attributes are cached for 60 s
/// here, so a stale "no xattrs" would show, and a slow `ls` still finds
/// them fresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_l_asks_the_master_nothing_for_files_without_xattrs() {
    if skip_without_fuse() {
        return;
    }
    let c = Cluster::start(1, &[]).await.unwrap();
    let m = Mount::start(&c, "mnt", &["-o", "mfsattrcacheto=60"]).unwrap();
    let master = c.master(1).unwrap();
    let d = m.path().join("many");
    std::fs::create_dir(&d).unwrap();
    for i in 0..50 {
        std::fs::File::create(d.join(format!("f{i:02}"))).unwrap();
    }

    step("ls -l of 50 files");
    let before = rpc_count(master, "GetXattr");
    let out = Command::new("ls").arg("-l").arg(&d).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listed.lines().filter(|l| l.contains(" f")).count(), 50);
    let asked = rpc_count(master, "GetXattr") - before;
    eprintln!("GetXattr calls for ls -l of 50 files: {asked}");
    assert!(asked < 5, "{asked} GetXattr calls for 50 files");

    step("user.x set through the mount is seen at once, and its removal");
    let f = d.join("f07");
    assert_eq!(get_xattr(&f, "user.x"), Err(libc::ENODATA));
    set_xattr(&f, "user.x", b"1");
    let before = rpc_count(master, "GetXattr");
    assert_eq!(get_xattr(&f, "user.x"), Ok(b"1".to_vec()));
    assert_eq!(
        rpc_count(master, "GetXattr"),
        before + 1,
        "read from the master (and the counter is read right)"
    );
    assert_eq!(list_xattr(&f), ["user.x"]);
    remove_xattr(&f, "user.x");
    assert_eq!(get_xattr(&f, "user.x"), Err(libc::ENODATA));
    assert!(list_xattr(&f).is_empty());
    set_xattr(&f, "user.x", b"2");
    assert_eq!(get_xattr(&f, "user.x"), Ok(b"2".to_vec()));

    step("an access ACL set through the mount is seen at once");
    let g = d.join("f08");
    assert_eq!(get_xattr(&g, "system.posix_acl_access"), Err(libc::ENODATA));
    let grant = acl(&[
        (1, 6, NONE),
        (2, 4, 2000),
        (4, 0, NONE),
        (16, 4, NONE),
        (32, 0, NONE),
    ]);
    set_xattr(&g, "system.posix_acl_access", &grant);
    assert_eq!(get_xattr(&g, "system.posix_acl_access"), Ok(grant));

    step("a file made under a default ACL has its ACL at once");
    let sub = d.join("sub");
    std::fs::create_dir(&sub).unwrap();
    assert_eq!(
        get_xattr(&sub, "system.posix_acl_default"),
        Err(libc::ENODATA)
    );
    let default = acl(&[
        (1, 7, NONE),
        (2, 7, 2000),
        (4, 5, NONE),
        (16, 7, NONE),
        (32, 0, NONE),
    ]);
    set_xattr(&sub, "system.posix_acl_default", &default);
    assert_eq!(get_xattr(&sub, "system.posix_acl_default"), Ok(default));
    let new = sub.join("new");
    std::fs::File::create(&new).unwrap();
    let inherited = get_xattr(&new, "system.posix_acl_access");
    assert!(inherited.is_ok(), "inherited access ACL: {inherited:?}");
    assert_eq!(list_xattr(&new), ["system.posix_acl_access"]);
}

/// A directory the mount holds (write-back creates) with an access ACL:
/// the ACL decides who may make and remove names in it, not the mode bits
/// the mount sees. User 2000 is in the directory's group (rwx by the mode)
/// but a named entry gives it r-x only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_acl_decides_creates_in_a_held_directory() {
    if skip_without_fuse() {
        return;
    }
    let c = Cluster::start(1, &[]).await.unwrap();
    std::fs::set_permissions(c.root(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let m = Mount::start(&c, "mnt", &["-o", "allow_other"]).unwrap();
    let master = c.master(1).unwrap();
    let d = m.path().join("d");
    std::fs::create_dir(&d).unwrap();
    std::os::unix::fs::chown(&d, Some(0), Some(2000)).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o775)).unwrap();
    let narrow = acl(&[
        (1, 7, NONE),
        (2, 5, 2000),
        (4, 7, NONE),
        (16, 7, NONE),
        (32, 5, NONE),
    ]);
    set_xattr(&d, "system.posix_acl_access", &narrow);

    step("root makes files in d: the mount holds it");
    let asked = rpc_count(master, "Delegate");
    for i in 0..20 {
        crate::writeback::create_new(&d.join(format!("f{i}"))).unwrap();
    }
    assert!(rpc_count(master, "Delegate") > asked, "d was not delegated");

    step("user 2000 may not make, remove or rename names in d");
    let refused = |script: &str| {
        let full = format!("{script} 2>&1 | grep -q 'Permission denied'");
        assert!(as_user(2000, &d, &full), "user 2000 was let: {script}");
    };
    refused("touch x");
    refused("mkdir y");
    refused("rm -f f1");
    refused("mv f2 f3");
    let names: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 20, "names in d: {names:?}");
    assert!(!d.join("x").exists() && !d.join("y").exists());
    assert!(as_user(2000, &d, "ls f0 >/dev/null"), "r-x still lists");
}
