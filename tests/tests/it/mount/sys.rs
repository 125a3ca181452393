//! System calls on a path, each giving Ok or the errno: the operations the
//! mount tests run on the mount and on a local directory.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub(super) fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

/// The errno of the last failed libc call.
pub(super) fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Ok, or the errno.
pub(super) type Res = Result<(), i32>;

pub(super) fn rc(r: i32) -> Res {
    if r == 0 {
        Ok(())
    } else {
        Err(last_errno())
    }
}

pub(super) fn io_res<T>(r: std::io::Result<T>) -> Res {
    r.map(|_| ()).map_err(|e| e.raw_os_error().unwrap_or(-1))
}

// ---- the operations, as system calls on a path ----

pub(super) fn mkdir(p: &Path, mode: u32) -> Res {
    // SAFETY: valid C string.
    rc(unsafe { libc::mkdir(cpath(p).as_ptr(), mode) })
}

pub(super) fn create_excl(p: &Path, mode: u32) -> Res {
    // SAFETY: valid C string; the descriptor is closed right away.
    let fd = unsafe {
        libc::open(
            cpath(p).as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
            mode,
        )
    };
    if fd < 0 {
        return Err(last_errno());
    }
    // SAFETY: fd is ours.
    rc(unsafe { libc::close(fd) })
}

pub(super) fn rename2(a: &Path, b: &Path, flags: u32) -> Res {
    // SAFETY: valid C strings; renameat2 through syscall(2).
    rc(unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            cpath(a).as_ptr(),
            libc::AT_FDCWD,
            cpath(b).as_ptr(),
            flags,
        ) as i32
    })
}

pub(super) fn setxattr(p: &Path, name: &str, value: &[u8], flags: i32) -> Res {
    let n = CString::new(name).unwrap_or_default();
    // SAFETY: valid C strings and buffer.
    rc(unsafe {
        libc::lsetxattr(
            cpath(p).as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
}

pub(super) fn removexattr(p: &Path, name: &str) -> Res {
    let n = CString::new(name).unwrap_or_default();
    // SAFETY: valid C strings.
    rc(unsafe { libc::lremovexattr(cpath(p).as_ptr(), n.as_ptr()) })
}

pub(super) fn mkfifo(p: &Path, mode: u32) -> Res {
    // SAFETY: valid C string.
    rc(unsafe { libc::mkfifo(cpath(p).as_ptr(), mode) })
}

/// The user.* extended attributes of `p` (not following symlinks).
pub(super) fn xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let c = cpath(p);
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: buffer of the given length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return out;
    }
    for name in buf[..n as usize]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
    {
        let name_s = String::from_utf8_lossy(name).into_owned();
        if !name_s.starts_with("user.") {
            continue;
        }
        let cn = CString::new(name).unwrap_or_default();
        let mut val = vec![0u8; 64 * 1024];
        // SAFETY: buffer of the given length.
        let m =
            unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), val.as_mut_ptr().cast(), val.len()) };
        val.truncate(m.max(0) as usize);
        out.insert(name_s, val);
    }
    out
}
