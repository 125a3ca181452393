//! POSIX ACLs (getfacl/setfacl), kept as the xattrs
//! `system.posix_acl_access` and `system.posix_acl_default` in Linux's
//! binary form, and enforced by `perm::access`:
//!
//! - the owner gets the owner entry; a named user its entry within the
//!   mask; the owning group and named groups the caller is in grant what
//!   one of them (within the mask) grants; everyone else the other entry;
//! - chmod changes the owner, mask (or group) and other entries; setting
//!   an access ACL changes the mode bits the same way;
//! - a new inode in a directory with a default ACL gets it as its access
//!   ACL (and a new directory as its default too), cut by the mode asked
//!   for, and the umask is not applied.
//!
//! Format (little-endian): u32 version 2, then entries of u16 tag, u16
//! permissions (rwx bits), u32 id (users and groups only).

use super::namespace::{Namespace, Node};
use super::types::{Cred, Errno, FileType, Reply, Timespec};
use mfs_common::ids::Inode;

pub const ACCESS: &[u8] = b"system.posix_acl_access";
pub const DEFAULT: &[u8] = b"system.posix_acl_default";

const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
const NO_ID: u32 = u32::MAX;

/// The xattr value of `(tag, permissions, id)` entries as given: no check,
/// no sorting (tests build good and bad values with it).
pub fn xattr_value(entries: impl IntoIterator<Item = (u16, u16, u32)>) -> Vec<u8> {
    let mut out = VERSION.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

/// One entry: tag, permissions (0..=7), id (users and groups).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    tag: u16,
    perm: u16,
    id: u32,
}

/// A parsed, valid ACL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl {
    entries: Vec<Entry>,
}

impl Acl {
    /// Parses and checks an ACL xattr: EINVAL for a bad version, length,
    /// tag or permission, a missing or repeated base entry, a repeated
    /// user or group, or named entries without a mask.
    pub fn parse(bytes: &[u8]) -> Result<Acl, Errno> {
        let (head, body) = bytes.split_at_checked(4).ok_or(Errno::EINVAL)?;
        if u32::from_le_bytes(head.try_into().map_err(|_| Errno::EINVAL)?) != VERSION
            || body.len() % 8 != 0
        {
            return Err(Errno::EINVAL);
        }
        let mut entries = Vec::with_capacity(body.len() / 8);
        for e in body.chunks_exact(8) {
            let tag = u16::from_le_bytes([e[0], e[1]]);
            let perm = u16::from_le_bytes([e[2], e[3]]);
            let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            if perm & !7 != 0 {
                return Err(Errno::EINVAL);
            }
            entries.push(Entry { tag, perm, id });
        }
        let count = |t: u16| entries.iter().filter(|e| e.tag == t).count();
        let named = count(USER) + count(GROUP);
        let bad_tag = entries
            .iter()
            .any(|e| ![USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER].contains(&e.tag));
        if bad_tag
            || count(USER_OBJ) != 1
            || count(GROUP_OBJ) != 1
            || count(OTHER) != 1
            || count(MASK) > 1
            || (named > 0 && count(MASK) == 0)
        {
            return Err(Errno::EINVAL);
        }
        for t in [USER, GROUP] {
            let mut ids: Vec<u32> = entries
                .iter()
                .filter(|e| e.tag == t)
                .map(|e| e.id)
                .collect();
            ids.sort_unstable();
            if ids.windows(2).any(|w| w[0] == w[1]) {
                return Err(Errno::EINVAL);
            }
        }
        Ok(Acl { entries })
    }

    /// The xattr value, entries sorted as Linux keeps them (by tag, then
    /// id).
    pub fn encode(&self) -> Vec<u8> {
        let mut entries = self.entries.clone();
        entries.sort_by_key(|e| (e.tag, e.id));
        xattr_value(entries.into_iter().map(|e| {
            let id = if matches!(e.tag, USER | GROUP) {
                e.id
            } else {
                NO_ID
            };
            (e.tag, e.perm, id)
        }))
    }

    fn perm_of(&self, tag: u16) -> Option<u16> {
        self.entries.iter().find(|e| e.tag == tag).map(|e| e.perm)
    }

    fn set_perm(&mut self, tag: u16, perm: u16) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.tag == tag) {
            e.perm = perm;
        }
    }

    /// Whether the ACL says no more than the mode bits (owner, group,
    /// other only).
    pub fn is_plain(&self) -> bool {
        self.entries.len() == 3
    }

    /// `posix_acl_permission`: may a caller who is not root and not the
    /// owner (`owner` says whether it is) have `mask` (rwx bits)?
    pub fn permits(&self, cred: &Cred, (owner, gid): (bool, u32), mask: u32) -> bool {
        let ok = |perm: u16| u32::from(perm) & mask == mask;
        let limit = self.perm_of(MASK).unwrap_or(7);
        if owner {
            return self.perm_of(USER_OBJ).is_some_and(ok);
        }
        if let Some(e) = self
            .entries
            .iter()
            .find(|e| e.tag == USER && e.id == cred.uid)
        {
            return ok(e.perm & limit);
        }
        let groups: Vec<u16> = self
            .entries
            .iter()
            .filter(|e| match e.tag {
                GROUP_OBJ => cred.in_group(gid),
                GROUP => cred.in_group(e.id),
                _ => false,
            })
            .map(|e| e.perm)
            .collect();
        if !groups.is_empty() {
            return groups.iter().any(|&p| ok(p & limit));
        }
        self.perm_of(OTHER).is_some_and(ok)
    }

    /// The permission bits (low 9) the ACL stands for: owner, mask (or
    /// owning group), other.
    pub fn mode_bits(&self) -> u32 {
        let p = |t: u16| u32::from(self.perm_of(t).unwrap_or(0));
        let group = self.perm_of(MASK).map_or(p(GROUP_OBJ), u32::from);
        (p(USER_OBJ) << 6) | (group << 3) | p(OTHER)
    }

    /// `posix_acl_chmod`: the entries the mode bits stand for take them.
    pub fn chmod(&mut self, mode: u32) {
        let bits = |shift: u32| ((mode >> shift) & 7) as u16;
        self.set_perm(USER_OBJ, bits(6));
        if self.perm_of(MASK).is_some() {
            self.set_perm(MASK, bits(3));
        } else {
            self.set_perm(GROUP_OBJ, bits(3));
        }
        self.set_perm(OTHER, bits(0));
    }

    /// `posix_acl_create`: a new inode's access ACL from its directory's
    /// default one and the mode asked for (owner, mask or group, other
    /// entries cut by it), and the mode that results (special bits kept).
    pub fn inherit(&self, mode: u32) -> (Acl, u32) {
        let mut acl = self.clone();
        let cut = |acl: &mut Acl, tag: u16, bits: u32| {
            if let Some(p) = acl.perm_of(tag) {
                acl.set_perm(tag, p & (bits & 7) as u16);
            }
        };
        cut(&mut acl, USER_OBJ, mode >> 6);
        if acl.perm_of(MASK).is_some() {
            cut(&mut acl, MASK, mode >> 3);
        } else {
            cut(&mut acl, GROUP_OBJ, mode >> 3);
        }
        cut(&mut acl, OTHER, mode);
        let mode = (mode & 0o7000) | acl.mode_bits();
        (acl, mode)
    }
}

/// The access ACL of `node`, if it has a valid one.
pub fn access_acl(node: &Node) -> Option<Acl> {
    node.xattrs.get(ACCESS).and_then(|v| Acl::parse(v).ok())
}

/// After a chmod of `node`: its access ACL follows the new mode bits.
pub fn follow_mode(node: &mut Node) {
    if let Some(mut a) = access_acl(node) {
        a.chmod(node.mode);
        node.xattrs.insert(ACCESS.to_vec(), a.encode());
    }
}

/// An xattr to give a new inode: name and value.
pub type Xattr = (&'static [u8], Vec<u8>);

/// A new inode of type `ftype` asked with `mode` (its permission and
/// special bits, umask not applied) in a directory whose xattrs are
/// `parent`: with a default ACL there, the inherited ACLs to give it and
/// its mode; `None`: no default ACL (the umask applies).
pub fn inherited(parent: &Node, ftype: FileType, mode: u32) -> Option<(u32, Vec<Xattr>)> {
    if ftype == FileType::Symlink {
        return None;
    }
    let default = Acl::parse(parent.xattrs.get(DEFAULT)?).ok()?;
    let (access, mode) = default.inherit(mode);
    let mut xattrs = Vec::new();
    if !access.is_plain() {
        xattrs.push((ACCESS, access.encode()));
    }
    if ftype == FileType::Directory {
        xattrs.push((DEFAULT, default.encode()));
    }
    Some((mode, xattrs))
}

impl Namespace {
    /// setxattr of an ACL name (the namespace and owner checks done): the
    /// value must parse (EINVAL). An access ACL sets the mode bits it
    /// stands for, and is not kept when it says no more than they do; a
    /// default ACL is for directories only (EACCES).
    pub(crate) fn set_acl(
        &mut self,
        ino: Inode,
        name: &[u8],
        value: &[u8],
        t: Timespec,
    ) -> Result<Reply, Errno> {
        let acl = Acl::parse(value)?;
        let n = self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        if name == DEFAULT {
            if n.ftype != FileType::Directory {
                return Err(Errno::EACCES);
            }
            n.xattrs.insert(DEFAULT.to_vec(), acl.encode());
        } else {
            n.mode = (n.mode & !0o777) | acl.mode_bits();
            if acl.is_plain() {
                n.xattrs.remove(ACCESS);
            } else {
                n.xattrs.insert(ACCESS.to_vec(), acl.encode());
            }
        }
        n.ctime = t;
        Ok(Reply::Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        xattr_value(entries.iter().copied())
    }

    fn sample() -> Acl {
        Acl::parse(&acl(&[
            (USER_OBJ, 7, NO_ID),
            (USER, 6, 1001),
            (GROUP_OBJ, 4, NO_ID),
            (GROUP, 2, 500),
            (MASK, 6, NO_ID),
            (OTHER, 0, NO_ID),
        ]))
        .expect("valid")
    }

    #[test]
    fn bad_acls_are_refused() {
        let base = [
            (USER_OBJ, 7, NO_ID),
            (GROUP_OBJ, 5, NO_ID),
            (OTHER, 5, NO_ID),
        ];
        assert!(Acl::parse(&acl(&base)).is_ok_and(|a| a.is_plain()));
        assert_eq!(Acl::parse(&[1, 0, 0]), Err(Errno::EINVAL));
        assert_eq!(Acl::parse(&acl(&base[..2])), Err(Errno::EINVAL));
        let mut named = base.to_vec();
        named.push((USER, 7, 5));
        assert_eq!(Acl::parse(&acl(&named)), Err(Errno::EINVAL), "no mask");
        named.push((MASK, 7, NO_ID));
        assert!(Acl::parse(&acl(&named)).is_ok());
        named.push((USER, 1, 5));
        assert_eq!(Acl::parse(&acl(&named)), Err(Errno::EINVAL), "user twice");
        let mut bad = acl(&base);
        bad[0] = 3;
        assert_eq!(Acl::parse(&bad), Err(Errno::EINVAL), "version");
        assert_eq!(
            Acl::parse(&acl(&[
                (USER_OBJ, 8, NO_ID),
                (GROUP_OBJ, 5, NO_ID),
                (OTHER, 5, NO_ID)
            ])),
            Err(Errno::EINVAL)
        );
    }

    #[test]
    fn permissions_follow_posix_order() {
        let a = sample();
        let u = |uid: u32, groups: &[u32]| Cred {
            uid,
            gid: 100,
            groups: groups.to_vec(),
        };
        // Owner: its own entry, the mask does not apply.
        assert!(a.permits(&u(1000, &[]), (true, 50), 7));
        // Named user: rw within the mask.
        assert!(a.permits(&u(1001, &[]), (false, 50), 6));
        assert!(!a.permits(&u(1001, &[]), (false, 50), 1));
        // Owning group (r) or named group (w): either may grant.
        assert!(a.permits(&u(7, &[50]), (false, 50), 4));
        assert!(a.permits(&u(7, &[500]), (false, 50), 2));
        assert!(
            !a.permits(&u(7, &[500]), (false, 50), 4),
            "a matching group denies"
        );
        // Other: nothing.
        assert!(!a.permits(&u(7, &[]), (false, 50), 4));
        assert_eq!(a.mode_bits(), 0o760);
        assert_eq!(Acl::parse(&a.encode()), Ok(a));
    }

    #[test]
    fn chmod_and_inheritance() {
        let mut a = sample();
        a.chmod(0o640);
        assert_eq!(a.mode_bits(), 0o640);
        assert_eq!(a.perm_of(MASK), Some(4));
        assert_eq!(
            a.perm_of(GROUP_OBJ),
            Some(4),
            "the group entry keeps its bits"
        );
        let (child, mode) = sample().inherit(0o4666);
        assert_eq!(mode, 0o4660);
        assert_eq!(child.perm_of(USER_OBJ), Some(6));
        assert_eq!(child.perm_of(MASK), Some(6));
        assert_eq!(child.perm_of(OTHER), Some(0));
    }
}
