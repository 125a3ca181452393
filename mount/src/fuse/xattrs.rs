//! Extended attributes on the mount. getxattr, setxattr, listxattr and
//! removexattr go to the master, except for inodes known to have no
//! extended attribute at all ([`NoXattrs`]: the master's `Attr.has_xattrs`,
//! MooseFS's "no xattr" flag, kept as long as the attributes may be
//! cached): getxattr answers ENODATA there (where the master would) and
//! listxattr an empty list. `ls -l` asks getxattr for the ACLs and the
//! security label of every file; a file without xattrs costs no master
//! call.
//!
//! A reply saying "none" is believed only if no xattr change of this mount on the inode
//! started since the call that brought it was sent: such a change bumps
//! the inode's epoch before and after it, and each call notes the epoch
//! before it goes out ([`NoXattrs::fetch`]). So a reply that may predate a
//! local setxattr/removexattr never hides its result; changes made by other
//! clients show when the attributes are next fetched, as with the rest of
//! the attributes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fuser::{Errno, INodeNo, ReplyEmpty, ReplyXattr};
use mfs_proto::v1::{Credentials, RemoveXattrRequest, SetXattrRequest};

use super::convert::errno;
use super::fs::Shared;

/// At most this many inodes are remembered (then all are forgotten).
const MAX_ENTRIES: usize = 100_000;

/// When a call that returns attributes was sent: the mount's change epoch
/// and the time.
#[derive(Debug, Clone, Copy)]
pub struct Fetch {
    epoch: u64,
    at: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    /// Inode → until when it is known to have no xattrs.
    none: HashMap<u64, Instant>,
    /// Inode → epoch of this mount's last xattr change on it (its start or
    /// its end).
    changed: HashMap<u64, u64>,
    /// Replies to calls sent before this epoch are not believed (`changed`
    /// was emptied then).
    floor: u64,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct NoXattrs {
    epoch: AtomicU64,
    inner: Mutex<Inner>,
}

impl NoXattrs {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// To take before sending a call whose reply carries attributes.
    pub fn fetch(&self) -> Fetch {
        Fetch {
            epoch: self.epoch.load(Ordering::SeqCst),
            at: Instant::now(),
        }
    }

    /// Notes the `has_xattrs` of `inode` from a reply to a call sent at `f`,
    /// whose attributes may be cached for `ttl`. Unknown (`None`: a master
    /// that does not say) counts as "has some".
    pub fn note(&self, inode: u64, has_xattrs: Option<bool>, ttl: Duration, f: Fetch) {
        let mut g = self.lock();
        if has_xattrs != Some(false) || ttl.is_zero() {
            g.none.remove(&inode);
            return;
        }
        let changed_since = g.changed.get(&inode).is_some_and(|&e| e > f.epoch);
        if changed_since || f.epoch < g.floor {
            return;
        }
        let Some(until) = f.at.checked_add(ttl) else {
            return;
        };
        if g.none.len() >= MAX_ENTRIES {
            g.none.clear();
        }
        g.none.insert(inode, until);
    }

    /// Whether `inode` is known to have no xattrs now.
    pub fn known(&self, inode: u64) -> bool {
        let g = self.lock();
        g.none.get(&inode).is_some_and(|&t| Instant::now() < t)
    }

    /// To call before sending a change of `inode`'s xattrs and again when
    /// it is answered (whatever the answer): forgets what is known and
    /// refuses replies to calls sent before.
    pub fn changing(&self, inode: u64) {
        let mut g = self.lock();
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        g.none.remove(&inode);
        if g.changed.len() >= MAX_ENTRIES {
            g.changed.clear();
            g.floor = epoch;
        }
        g.changed.insert(inode, epoch);
    }
}

impl Shared {
    pub(crate) async fn setxattr(
        &self,
        cred: Credentials,
        ino: INodeNo,
        name: Vec<u8>,
        value: Vec<u8>,
        flags: i32,
        reply: ReplyEmpty,
    ) {
        let inode = self.map.to_master(ino);
        self.wb.changed(&self.master, inode);
        self.no_caps.forget(inode);
        if let Err(e) = self.ro().and_then(|_| xattr_name_ok(&name)) {
            return reply.error(e);
        }
        if let Err(e) = self.settle(inode).await {
            return reply.error(e);
        }
        let req = SetXattrRequest {
            id: None,
            cred: Some(cred),
            inode,
            name,
            value,
            create_only: flags & libc::XATTR_CREATE != 0,
            replace_only: flags & libc::XATTR_REPLACE != 0,
        };
        // Before and after: no reply from before the change is believed.
        self.no_xattrs.changing(inode);
        let r = self.master.setxattr(req).await;
        self.no_xattrs.changing(inode);
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    pub(crate) async fn getxattr(
        &self,
        cred: Credentials,
        ino: INodeNo,
        name: Vec<u8>,
        size: u32,
        reply: ReplyXattr,
    ) {
        if let Err(e) = xattr_name_ok(&name) {
            return reply.error(e);
        }
        let inode = self.map.to_master(ino);
        if self.no_xattrs.known(inode) && absent_is_enodata(&name, &cred) {
            return reply.error(Errno::ENODATA);
        }
        let caps = name == super::handles::NoCaps::NAME;
        if caps && self.no_caps.known(inode, self.settings.attr_ttl) {
            return reply.error(Errno::ENODATA);
        }
        match self.master.getxattr(&cred, inode, &name).await {
            Ok(v) => xattr_reply(&v, size, reply),
            Err(e) => {
                let e = errno(&e);
                if caps && e == Errno::ENODATA {
                    self.no_caps.remember(inode);
                }
                reply.error(e)
            }
        }
    }

    pub(crate) async fn listxattr(
        &self,
        cred: Credentials,
        ino: INodeNo,
        size: u32,
        reply: ReplyXattr,
    ) {
        let inode = self.map.to_master(ino);
        if self.no_xattrs.known(inode) {
            return xattr_reply(&[], size, reply);
        }
        match self.master.listxattr(&cred, inode).await {
            Ok(names) => {
                let mut buf = Vec::new();
                for n in names {
                    buf.extend_from_slice(&n);
                    buf.push(0);
                }
                xattr_reply(&buf, size, reply)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    pub(crate) async fn removexattr(
        &self,
        cred: Credentials,
        ino: INodeNo,
        name: Vec<u8>,
        reply: ReplyEmpty,
    ) {
        let inode = self.map.to_master(ino);
        self.wb.changed(&self.master, inode);
        self.no_caps.forget(inode);
        if let Err(e) = self.ro().and_then(|_| xattr_name_ok(&name)) {
            return reply.error(e);
        }
        if let Err(e) = self.settle(inode).await {
            return reply.error(e);
        }
        let req = RemoveXattrRequest {
            id: None,
            cred: Some(cred),
            inode,
            name,
        };
        self.no_xattrs.changing(inode);
        let r = self.master.removexattr(req).await;
        self.no_xattrs.changing(inode);
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

/// The length of an xattr name (the master checks the rest, POSIX ACL
/// names included).
fn xattr_name_ok(name: &[u8]) -> Result<(), Errno> {
    if name.is_empty() || name.len() > 255 {
        Err(Errno::ERANGE)
    } else {
        Ok(())
    }
}

/// Whether the master answers getxattr of `name` with ENODATA on an inode
/// without xattrs, for the caller `cred`: a valid name of the security,
/// system or trusted namespace (anyone may ask), or of the user namespace
/// when asked by root (others may be refused by the mode bits: EACCES).
/// Anything else is left to the master.
fn absent_is_enodata(name: &[u8], cred: &Credentials) -> bool {
    let open_to_all: [&[u8]; 3] = [b"security.", b"system.", b"trusted."];
    let rest = open_to_all
        .iter()
        .find_map(|p| name.strip_prefix(*p))
        .or_else(|| name.strip_prefix(&b"user."[..]).filter(|_| cred.uid == 0));
    rest.is_some_and(|r| !r.is_empty() && !r.contains(&0))
}

/// Answers getxattr/listxattr: the size when asked with size 0, ERANGE when
/// the buffer is too small, else the value.
fn xattr_reply(value: &[u8], size: u32, reply: ReplyXattr) {
    let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
    if size == 0 {
        reply.size(len)
    } else if len > size {
        reply.error(Errno::ERANGE)
    } else {
        reply.data(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn remembers_none_for_the_ttl() {
        let x = NoXattrs::default();
        assert!(!x.known(5));
        x.note(5, Some(false), TTL, x.fetch());
        assert!(x.known(5));
        x.note(5, Some(true), TTL, x.fetch());
        assert!(!x.known(5), "has some now");
        x.note(5, Some(false), Duration::ZERO, x.fetch());
        assert!(!x.known(5), "noattrcache: nothing kept");
        x.note(5, None, TTL, x.fetch());
        assert!(!x.known(5), "a master that does not say");
        if let Some(at) = Instant::now().checked_sub(TTL) {
            x.note(5, Some(false), TTL, Fetch { epoch: 0, at });
            assert!(!x.known(5), "expired");
        }
    }

    #[test]
    fn a_local_change_wins_over_replies_sent_before_it() {
        let x = NoXattrs::default();
        x.note(7, Some(false), TTL, x.fetch());
        let before = x.fetch();
        x.changing(7);
        assert!(!x.known(7), "forgotten at the change");
        let during = x.fetch();
        x.note(7, Some(false), TTL, before);
        assert!(!x.known(7), "a reply from before the change");
        x.changing(7);
        x.note(7, Some(false), TTL, during);
        assert!(!x.known(7), "a reply from while it was under way");
        x.note(7, Some(false), TTL, x.fetch());
        assert!(x.known(7), "a reply from after it");
        x.note(8, Some(false), TTL, before);
        assert!(x.known(8), "other inodes are not affected");
    }

    #[test]
    fn names_are_checked_like_linux() {
        assert_eq!(xattr_name_ok(b"system.posix_acl_access"), Ok(()));
        assert_eq!(xattr_name_ok(&[b'u'; 256]), Err(Errno::ERANGE));
        assert_eq!(xattr_name_ok(b"user.x"), Ok(()));
    }

    #[test]
    fn local_enodata_only_where_the_master_gives_it() {
        let user = Credentials {
            uid: 1000,
            gid: 1000,
            groups: Vec::new(),
        };
        let root = Credentials {
            uid: 0,
            ..user.clone()
        };
        for name in [
            &b"system.posix_acl_access"[..],
            b"system.posix_acl_default",
            b"security.capability",
            b"security.selinux",
            b"trusted.x",
        ] {
            assert!(absent_is_enodata(name, &user), "{name:?}");
        }
        assert!(absent_is_enodata(b"user.x", &root));
        assert!(!absent_is_enodata(b"user.x", &user), "may be EACCES");
        assert!(!absent_is_enodata(b"user.", &root), "EINVAL");
        assert!(!absent_is_enodata(b"other.x", &root), "EOPNOTSUPP");
    }
}
