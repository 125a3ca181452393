//! The mount's changes in the directories it holds: removals and renames
//! answered here, its own other changes keeping the listing true (or giving
//! the directory back) and changes of attributes (see the parent module).

use fuser::Errno;
use mfs_proto::v1::{batch_op, Attr, BatchOp, Credentials};
use mfs_proto::v1::{RenameRequest, RmdirRequest, SetAttrAtOp, SetAttrRequest};
use mfs_proto::v1::{Timespec, UnlinkRequest};

use super::{may_write_dir, now_ts, Entry, Names, WriteBack};
use crate::master::MasterClient;

/// Whether `c` may remove or rename any name in directory `d` as the
/// mount sees it: write and search permission, and no sticky bit unless
/// `c` owns the directory (else the master decides).
fn may_remove_in(d: &Attr, c: &Credentials) -> bool {
    may_write_dir(d, c) && (d.mode & 0o1000 == 0 || c.uid == 0 || c.uid == d.uid)
}

impl WriteBack {
    /// This mount changes `inode`: a held directory's attributes or
    /// extended attributes (creates there were checked against them as
    /// they were: it is given back), a file's data, attributes or links
    /// (its attributes are the master's again).
    pub(crate) fn changed(&self, master: &MasterClient, inode: u64) {
        if !self.enabled {
            return;
        }
        let held = {
            let mut st = self.lock();
            if let Some(m) = st.made.get_mut(&inode) {
                m.known = false;
            }
            st.dirs.remove(&inode)
        };
        if let Some(d) = held {
            let dropped = self.unhold(inode, d);
            self.send_back(master, inode, dropped);
        }
    }

    /// A change of `inode`'s attributes by this mount starts. A held
    /// directory answers nothing here until the change is done (creates
    /// are checked against its attributes), then goes on with the new
    /// ones, or is given back if the master could no longer foresee a
    /// create there (SGID, extra attributes). (A file made here is the
    /// master's again once a change is sent: [`WriteBack::unknown`].)
    pub(crate) fn attr_change<'a>(
        &'a self,
        master: &'a MasterClient,
        inode: u64,
    ) -> AttrChange<'a> {
        let mut grant = None;
        if self.enabled {
            let mut st = self.lock();
            if let Some(d) = st.dirs.get_mut(&inode) {
                d.changing += 1;
                grant = Some(d.grant);
            }
        }
        AttrChange {
            wb: self,
            master,
            inode,
            grant,
        }
    }

    fn attr_changed(&self, master: &MasterClient, inode: u64, grant: u64, now: Option<&Attr>) {
        let keep = {
            let mut st = self.lock();
            let Some(d) = st.dirs.get_mut(&inode).filter(|d| d.grant == grant) else {
                return;
            };
            d.changing = d.changing.saturating_sub(1);
            match now {
                Some(a) if a.mode & 0o2000 != 0 || a.eattr != 0 => false,
                Some(a) => {
                    // (The master's, after every queued op on it.)
                    d.attr = *a;
                    d.times_known = true;
                    true
                }
                None => true,
            }
        };
        if !keep {
            self.give_back(master, inode);
        }
    }

    /// A change of the attributes of `req.inode`, a directory held here:
    /// answered here and queued (a `setattr` op for the master) when the
    /// master takes such ops and the outcome is plain: the owner or root
    /// changing the permission bits (no SUID/SGID, no ACL to follow them),
    /// the times, or owner and group to what they are (root: to anything),
    /// with the directory's times known here or set by the change. Its
    /// attributes after the change, exact; None: ask the master.
    pub(crate) fn set_attr_here(
        &self,
        master: &MasterClient,
        req: &SetAttrRequest,
    ) -> Option<Attr> {
        if !self.enabled || req.size.is_some() || !master.queues_attributes() || !self.live() {
            return None;
        }
        let cred = req.cred.as_ref()?;
        let sid = master.session_id();
        let mut st = self.lock();
        let d = st.dirs.get_mut(&req.inode).filter(|d| d.usable(sid))?;
        let a = d.attr;
        let root = cred.uid == 0;
        let setid = 0o6000;
        let sets_mtime = req.mtime.is_some() || req.mtime_now;
        let changes = req.mode.is_some()
            || req.uid.is_some()
            || req.gid.is_some()
            || req.atime.is_some()
            || req.atime_now
            || sets_mtime;
        let valid = |t: &Option<Timespec>| t.is_none_or(|t| t.nsec < 1_000_000_000);
        let plain = changes
            && valid(&req.atime)
            && valid(&req.mtime)
            && (root || cred.uid == a.uid)
            && a.mode & setid == 0
            && a.eattr == 0
            && (d.times_known || sets_mtime)
            && req
                .mode
                .is_none_or(|m| m & setid == 0 && a.has_xattrs == Some(false))
            && req.uid.is_none_or(|u| root || u == a.uid)
            && req.gid.is_none_or(|g| root || g == a.gid);
        if !plain {
            return None;
        }
        let t = now_ts();
        let mut new = a;
        if let Some(m) = req.mode {
            new.mode = m & 0o7777;
        }
        new.uid = req.uid.unwrap_or(a.uid);
        new.gid = req.gid.unwrap_or(a.gid);
        let at = |now: bool, given: Option<Timespec>, was: Option<Timespec>| {
            if now {
                Some(t)
            } else {
                given.or(was)
            }
        };
        new.atime = at(req.atime_now, req.atime, a.atime);
        new.mtime = at(req.mtime_now, req.mtime, a.mtime);
        new.ctime = Some(t);
        new.nlink = d.nlink();
        d.attr = new;
        d.times_known = true;
        let op = SetAttrAtOp {
            cred: Some(cred.clone()),
            inode: req.inode,
            mode: req.mode,
            uid: req.uid,
            gid: req.gid,
            atime: req.atime,
            mtime: req.mtime,
            atime_now: req.atime_now,
            mtime_now: req.mtime_now,
            time: Some(t),
        };
        let op = BatchOp {
            op: Some(batch_op::Op::Setattr(op)),
        };
        master.queue_op(op);
        Some(new)
    }

    /// A hard link to `inode` is being made: other names may reach it.
    pub(crate) fn linked(&self, inode: u64) {
        if self.enabled {
            self.lock().made.remove(&inode);
        }
    }

    /// An unlink (rmdir when `dir`) of `name` in `parent`: answered here
    /// when the mount holds `parent` (taken now when removals come in a
    /// stream) and, for rmdir, the directory removed, empty; None: ask the
    /// master.
    pub(crate) async fn unlink(
        &self,
        master: &MasterClient,
        cred: &Credentials,
        parent: u64,
        name: &[u8],
        dir: bool,
    ) -> Option<Result<(), Errno>> {
        let here = || {
            let sid = master.session_id();
            let mut st = self.lock();
            let st = &mut *st;
            let d = st.dirs.get(&parent).filter(|d| d.usable(sid))?;
            if !may_remove_in(&d.attr, cred) {
                return None;
            }
            let Some(&e) = d.names.get(name) else {
                return Some(Err(Errno::ENOENT));
            };
            if !e.plain {
                return None;
            }
            match (dir, e.dir) {
                (true, false) => return Some(Err(Errno::ENOTDIR)),
                (false, true) => return Some(Err(Errno::EISDIR)),
                // Empty for sure only when held here too.
                (true, true) => st
                    .dirs
                    .get(&e.inode)
                    .filter(|c| c.session == sid && c.names.is_empty())
                    .map(|_| ())?,
                (false, false) => {}
            }
            if let Some(d) = st.dirs.get_mut(&parent) {
                d.names.remove(name);
                d.given.remove(name);
                // The master's time of the removal.
                d.times_known = false;
            }
            if dir {
                // (Empty: the kernel keeps no name there.)
                st.dirs.remove(&e.inode);
            }
            // Its attributes (nlink) are the master's again.
            st.made.remove(&e.inode);
            let (cred, name) = (Some(cred.clone()), name.to_vec());
            let op = if dir {
                batch_op::Op::Rmdir(RmdirRequest {
                    id: None,
                    cred,
                    parent,
                    name,
                })
            } else {
                batch_op::Op::Unlink(UnlinkRequest {
                    id: None,
                    cred,
                    parent,
                    name,
                })
            };
            master.queue_op_reaching(BatchOp { op: Some(op) }, &[parent, e.inode]);
            Some(Ok(()))
        };
        self.here_or_take(master, cred, Some(parent), here).await
    }

    /// A rename of `from` to `to` (directory, name): answered here when
    /// the mount holds both directories and the outcome is plain (no
    /// exchange, nothing replaced but a file by a file, a directory only
    /// renamed within its parent); a directory where names are renamed
    /// in a stream is taken now. None: ask the master.
    pub(crate) async fn rename(
        &self,
        master: &MasterClient,
        cred: &Credentials,
        from: (u64, &[u8]),
        to: (u64, &[u8]),
        noreplace: bool,
        exchange: bool,
    ) -> Option<Result<(), Errno>> {
        if exchange || from == to {
            return None;
        }
        let here = || {
            let sid = master.session_id();
            let mut st = self.lock();
            let st = &mut *st;
            let held = |p: u64| {
                st.dirs
                    .get(&p)
                    .filter(|d| d.usable(sid) && may_remove_in(&d.attr, cred))
            };
            let (src_dir, dst_dir) = (held(from.0)?, held(to.0)?);
            let Some(&src) = src_dir.names.get(from.1) else {
                return Some(Err(Errno::ENOENT));
            };
            let dst = dst_dir.names.get(to.1).copied();
            if let Some(dst) = dst {
                if noreplace {
                    return Some(Err(Errno::EEXIST));
                }
                if dst.dir || src.dir || !dst.plain || dst.inode == src.inode {
                    return None;
                }
            }
            if !src.plain || (src.dir && from.0 != to.0) {
                return None;
            }
            // The kernel moves its entry, with the time it was given.
            let given = st.dirs.get_mut(&from.0).is_some_and(|d| {
                d.names.remove(from.1);
                d.times_known = false;
                d.given.remove(from.1)
            });
            if let Some(d) = st.dirs.get_mut(&to.0) {
                d.times_known = false;
                d.names.insert(to.1.to_vec(), src);
                if given {
                    d.given.insert(to.1.to_vec());
                }
            }
            if let Some(dst) = dst {
                st.made.remove(&dst.inode);
            }
            if let Some(d) = st.dirs.get_mut(&src.inode) {
                // A directory renamed takes the master's time as its ctime.
                d.times_known = false;
            }
            let grant = st.dirs.get(&to.0).map_or(0, |d| d.grant);
            if let Some(m) = st.made.get_mut(&src.inode) {
                m.parent = to.0;
                m.grant = grant;
                m.attr.ctime = Some(now_ts());
            }
            let replaced = dst.map_or(0, |d| d.inode);
            let reach = [from.0, to.0, src.inode, replaced];
            master.queue_op_reaching(
                BatchOp {
                    op: Some(batch_op::Op::Rename(RenameRequest {
                        id: None,
                        cred: Some(cred.clone()),
                        parent: from.0,
                        name: from.1.to_vec(),
                        new_parent: to.0,
                        new_name: to.1.to_vec(),
                        noreplace,
                        exchange: false,
                    })),
                },
                &reach,
            );
            Some(Ok(()))
        };
        // Only a rename within one directory takes it.
        let take = (from.0 == to.0).then_some(from.0);
        self.here_or_take(master, cred, take, here).await
    }

    /// This mount's own change of a name in `parent` went through: the
    /// file `made` is there now, or nothing (`None`).
    pub(crate) fn note(&self, parent: u64, name: &[u8], made: Option<&Attr>) {
        if !self.enabled {
            return;
        }
        let mut st = self.lock();
        let gone = st.dirs.get_mut(&parent).and_then(|d| {
            d.times_known = false;
            match made {
                Some(a) => d.names.insert(name.to_vec(), Entry::of(a)),
                None => {
                    d.given.remove(name);
                    d.names.remove(name)
                }
            }
        });
        if let Some(e) = gone {
            st.made.remove(&e.inode);
        }
    }

    /// A rename by this mount went through.
    pub(crate) fn note_rename(
        &self,
        master: &MasterClient,
        from: (u64, &[u8]),
        to: (u64, &[u8]),
        exchange: bool,
    ) {
        if !self.enabled {
            return;
        }
        let mut st = self.lock();
        // The master's time is now the ctime of both directories and of
        // what it moved (both ways for an exchange).
        let moving = [from, to]
            .iter()
            .filter_map(|(p, n)| st.dirs.get(p).and_then(|d| d.names.get(*n)))
            .map(|e| e.inode)
            .collect::<Vec<_>>();
        for dir in [from.0, to.0].into_iter().chain(moving) {
            if let Some(d) = st.dirs.get_mut(&dir) {
                d.times_known = false;
            }
        }
        let (moved, given) = match st.dirs.get_mut(&from.0) {
            Some(d) => (d.names.remove(from.1), d.given.remove(from.1)),
            None => (None, false),
        };
        let mut replaced = None;
        // The kernel moved its entry with the time it was given: noted in
        // the directory it went to when held here, else dropped.
        let mut lost = Names::new();
        let followed = match (moved, st.dirs.get_mut(&to.0)) {
            (_, None) => {
                if given {
                    lost.push((to.0, to.1.to_vec()));
                }
                !exchange || !st.dirs.contains_key(&from.0)
            }
            (Some(e), Some(d)) if !exchange => {
                replaced = d.names.insert(to.1.to_vec(), e);
                if given {
                    d.given.insert(to.1.to_vec());
                }
                true
            }
            _ => {
                if given {
                    lost.push((to.0, to.1.to_vec()));
                }
                false
            }
        };
        if exchange {
            // The other entry went the other way.
            if let Some(d) = st.dirs.get_mut(&to.0) {
                if d.given.remove(to.1) {
                    lost.push((from.0, from.1.to_vec()));
                }
            }
        }
        // The master changed their ctime (and link count).
        for e in moved.iter().chain(replaced.iter()) {
            st.made.remove(&e.inode);
        }
        drop(st);
        self.drop_later(lost);
        if !followed {
            self.give_back(master, from.0);
            self.give_back(master, to.0);
        }
    }
}

/// A change of attributes in flight (see [`WriteBack::attr_change`]).
pub(crate) struct AttrChange<'a> {
    wb: &'a WriteBack,
    master: &'a MasterClient,
    inode: u64,
    /// The delegation of the directory changed, if held.
    grant: Option<u64>,
}

impl AttrChange<'_> {
    /// The change went through: the attributes now.
    pub(crate) fn done(mut self, now: &Attr) {
        if let Some(g) = self.grant.take() {
            self.wb.attr_changed(self.master, self.inode, g, Some(now));
        }
    }
}

impl Drop for AttrChange<'_> {
    /// Failed or answered without the master: the attributes are as
    /// they were.
    fn drop(&mut self) {
        if let Some(g) = self.grant.take() {
            self.wb.attr_changed(self.master, self.inode, g, None);
        }
    }
}
