//! POSIX ACLs on a real mount (`-o allow_other`), checked with commands
//! run as other users: an access ACL grants a named user, chmod narrows
//! the mask, a default ACL is inherited by new files whatever the umask,
//! and access(2) (`test -r`) answers by the ACL. ACLs are written as the
//! raw xattrs setfacl writes.
//!
//! Needs root and /dev/fuse; without them it says so and passes.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use mfs_tests::cluster::Cluster;
use mfs_tests::mountpoint::Mount;

use crate::util::{skip_without_fuse, step};

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

/// Runs `script` with sh as uid/gid `id` (no supplementary groups) in
/// `dir`; whether it succeeded.
fn as_user(id: u32, dir: &Path, script: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .uid(id)
        .gid(id)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
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
