//! `MetaService`: the metadata calls of mounts and tools. Writes become Raft
//! entries (exactly once per (session, seq)); reads are served from the
//! namespace after a linearizable-read barrier.

use std::sync::Arc;

use mfs_proto::v1 as pb;
use mfs_proto::v1::meta_service_server::MetaService;
use tonic::{Request, Response, Status};

use super::access::{ExportsFile, Need};
use super::convert::*;
use super::error::{errno_status, invalid};
use crate::chunks::datapath::ReqId;
use crate::chunks::ChunkManager;
use crate::fsm::{self, Errno, Inode, Op, Reply, SessionId, TimeSet, MAX_GOAL};
use crate::raft::node::now;
use crate::raft::MasterNode;

/// Entries returned by one Readdir page at most.
const READDIR_MAX: usize = 10_000;
/// Inodes one Release call may list.
const MAX_RELEASES: usize = 4096;

pub struct Meta {
    pub node: Arc<MasterNode>,
    /// The leader's chunk management (data path).
    pub chunks: Arc<ChunkManager>,
    /// Who may mount what (`mfsexports.cfg`).
    pub exports: Arc<ExportsFile>,
    /// CLUSTER_SECRET: signs the chunk tokens of the locations given.
    pub secret: mfs_proto::ClusterSecret,
    /// The mounts' recall streams (write-back delegations).
    pub recalls: Arc<super::writeback::Recalls>,
}

pub(super) type R<T> = Result<Response<T>, Status>;

pub(super) fn rid(id: Option<pb::RequestId>) -> Result<pb::RequestId, Status> {
    match id {
        Some(id) if id.session != 0 && id.seq != 0 => Ok(id),
        Some(_) => Err(invalid(
            "RequestId needs a session (from RegisterSession) and a seq > 0",
        )),
        None => Err(invalid("mutating call without a RequestId")),
    }
}

pub(super) fn req_id(id: &pb::RequestId) -> ReqId {
    ReqId {
        session: SessionId(id.session),
        seq: id.seq,
        acked: id.acked,
    }
}

fn tree_reply(r: Reply) -> R<pb::SetTreeReply> {
    match tree_reply_to_pb(&r) {
        Some(t) => Ok(Response::new(t)),
        None => match r {
            Reply::Err(e) => Err(errno_status(e)),
            other => Err(Status::internal(format!("unexpected reply {other:?}"))),
        },
    }
}

pub(super) fn ok_reply(r: Reply) -> R<pb::Empty> {
    match r {
        Reply::Err(e) => Err(errno_status(e)),
        _ => Ok(Response::new(pb::Empty {})),
    }
}

impl Meta {
    /// The attributes of a change's reply, with `has_xattrs` from the
    /// namespace as the change left it (or as later changes did).
    fn attr_reply(&self, r: Reply) -> Result<pb::Attr, Status> {
        match r {
            Reply::Attr(a) => Ok(self.attr_now(&a)),
            Reply::Err(e) => Err(errno_status(e)),
            other => Err(Status::internal(format!("unexpected reply {other:?}"))),
        }
    }

    /// `a` as protobuf, `has_xattrs` read under the namespace's read lock
    /// (never call it while holding that lock: see [`Meta::read`]).
    pub(super) fn attr_now(&self, a: &fsm::Attr) -> pb::Attr {
        attr_to_pb(a, &self.node.shared.ns())
    }

    pub(super) fn attr_response(&self, r: Reply) -> R<pb::AttrReply> {
        Ok(Response::new(pb::AttrReply {
            attr: Some(self.attr_reply(r)?),
        }))
    }

    fn entry(&self, r: Reply) -> R<pb::EntryReply> {
        Ok(Response::new(pb::EntryReply {
            attr: Some(self.attr_reply(r)?),
        }))
    }

    pub(super) async fn mutate(&self, id: Option<pb::RequestId>, op: Op) -> Result<Reply, Status> {
        let req = self.request(id, op)?;
        Ok(self.node.write(req).await?)
    }

    /// `op` as a request of the caller's session, stamped with this
    /// leader's clock.
    fn request(&self, id: Option<pb::RequestId>, op: Op) -> Result<fsm::Request, Status> {
        let id = rid(id)?;
        Ok(fsm::Request {
            session: SessionId(id.session),
            seq: id.seq,
            acked: id.acked,
            time: now(),
            op,
        })
    }

    /// Runs `f` on the namespace after a read barrier, under its read
    /// lock: `f` converts attributes with the `ns` it is given, never
    /// through `attr_now` (a second read lock may wait forever behind a
    /// queued apply).
    pub(super) async fn read<T>(
        &self,
        f: impl FnOnce(&fsm::Namespace) -> Result<T, Errno>,
    ) -> Result<T, Status> {
        self.node.linearize().await?;
        let ns = self.node.shared.ns();
        f(&ns).map_err(errno_status)
    }
}

pub(super) fn time_set(
    now: bool,
    at: Option<pb::Timespec>,
    what: &str,
) -> Result<Option<TimeSet>, Status> {
    if now {
        return Ok(Some(TimeSet::Now));
    }
    Ok(given_time(at, what)?.map(TimeSet::At))
}

/// An explicit time from the wire (INVALID_ARGUMENT naming `what` when its
/// nanoseconds are out of range).
pub(super) fn given_time(
    at: Option<pb::Timespec>,
    what: &str,
) -> Result<Option<fsm::Timespec>, Status> {
    at.map(|t| {
        ts_from_pb(&t).ok_or_else(|| invalid(format!("{what}: nanoseconds must be below 1e9")))
    })
    .transpose()
}

#[tonic::async_trait]
impl MetaService for Meta {
    async fn register_session(
        &self,
        req: Request<pb::RegisterSessionRequest>,
    ) -> R<pb::RegisterSessionReply> {
        self.register(req).await
    }

    async fn challenge(&self, _req: Request<pb::ChallengeRequest>) -> R<pb::ChallengeReply> {
        self.node.ensure_leader()?;
        Ok(Response::new(pb::ChallengeReply {
            nonce: self.exports.challenge().to_vec(),
        }))
    }

    async fn heartbeat(&self, req: Request<pb::HeartbeatRequest>) -> R<pb::Empty> {
        let id = req.into_inner().session;
        self.node.ensure_leader()?;
        let known = self
            .node
            .shared
            .ns()
            .sessions()
            .iter()
            .any(|s| s.id.0 == id);
        if !known {
            return Err(errno_status(Errno::ESTALE));
        }
        self.node.touch_session(id);
        Ok(Response::new(pb::Empty {}))
    }

    async fn close_session(&self, req: Request<pb::CloseSessionRequest>) -> R<pb::Empty> {
        let (_, r) = self.admit(req, Need::Read, |_| vec![]).await?;
        ok_reply(self.mutate(r.id, Op::CloseSession).await?)
    }

    async fn lookup(&self, req: Request<pb::LookupRequest>) -> R<pb::EntryReply> {
        let (c, r) = self
            .admit(req, Need::Read, |r| vec![Inode(r.parent)])
            .await?;
        let cred = c.cred(r.cred);
        let a = self
            .read(|ns| {
                let a = ns.lookup(&cred, Inode(r.parent), &r.name)?;
                if r.name == b".." && c.sees(ns, &[a.inode]).is_err() {
                    // The session's root is its own parent.
                    return ns.getattr(Inode(r.parent)).map(|a| attr_to_pb(&a, ns));
                }
                Ok(attr_to_pb(&a, ns))
            })
            .await?;
        Ok(Response::new(pb::EntryReply { attr: Some(a) }))
    }

    async fn get_attr(&self, req: Request<pb::GetAttrRequest>) -> R<pb::AttrReply> {
        let (_, r) = self
            .admit(req, Need::Read, |r| vec![Inode(r.inode)])
            .await?;
        let ino = Inode(r.inode);
        let a = self
            .read(|ns| ns.getattr(ino).map(|a| attr_to_pb(&a, ns)))
            .await?;
        Ok(Response::new(pb::AttrReply { attr: Some(a) }))
    }

    async fn set_attr(&self, req: Request<pb::SetAttrRequest>) -> R<pb::AttrReply> {
        let (c, r) = self
            .admit(req, Need::Write, |r| vec![Inode(r.inode)])
            .await?;
        let cred = c.cred(r.cred);
        let same = fsm::SameAttrs {
            mode: r.mode,
            uid: r.uid,
            gid: r.gid,
            mtime: r.mtime.as_ref().and_then(ts_from_pb),
        };
        let may_be_same = r.size.is_none()
            && r.atime.is_none()
            && !r.atime_now
            && !r.mtime_now
            && (r.mtime.is_none() || same.mtime.is_some())
            && same != fsm::SameAttrs::default();
        if may_be_same {
            let t = now();
            let same = self
                .read(|ns| {
                    Ok(ns
                        .setattr_unchanged(&cred, Inode(r.inode), &same, t)
                        .map(|a| a.map(|a| attr_to_pb(&a, ns))))
                })
                .await?;
            if let Some(a) = same {
                let a = a.map_err(errno_status)?;
                return Ok(Response::new(pb::AttrReply { attr: Some(a) }));
            }
        }
        if let Some(size) = r.size {
            // Shrinking into the middle of a chunk: its copies are cut first.
            let id = rid(r.id)?;
            self.chunks
                .prepare_truncate(req_id(&id), &cred, Inode(r.inode), size)
                .await?;
        }
        let op = Op::SetAttr {
            cred,
            inode: Inode(r.inode),
            mode: r.mode,
            uid: r.uid,
            gid: r.gid,
            size: r.size,
            atime: time_set(r.atime_now, r.atime, "atime")?,
            mtime: time_set(r.mtime_now, r.mtime, "mtime")?,
        };
        self.attr_response(self.mutate(r.id, op).await?)
    }

    async fn mkdir(&self, req: Request<pb::MkdirRequest>) -> R<pb::EntryReply> {
        let (c, r) = self
            .admit(req, Need::Write, |r| vec![Inode(r.parent)])
            .await?;
        let op = Op::Mkdir {
            cred: c.cred(r.cred),
            parent: Inode(r.parent),
            name: r.name,
            mode: r.mode,
            umask: r.umask,
        };
        self.entry(self.mutate(r.id, op).await?)
    }

    async fn mknod(&self, req: Request<pb::MknodRequest>) -> R<pb::EntryReply> {
        let (c, r) = self
            .admit(req, Need::Write, |r| vec![Inode(r.parent)])
            .await?;
        let ftype = ftype_from_pb(r.r#type).ok_or_else(|| invalid("Mknod: unknown file type"))?;
        let op = Op::Mknod {
            cred: c.cred(r.cred),
            parent: Inode(r.parent),
            name: r.name,
            ftype,
            mode: r.mode,
            umask: r.umask,
            rdev: r.rdev,
        };
        self.entry(self.mutate(r.id, op).await?)
    }

    async fn create(&self, req: Request<pb::CreateRequest>) -> R<pb::EntryReply> {
        let (c, r) = self
            .admit(req, Need::Write, |r| vec![Inode(r.parent)])
            .await?;
        let op = Op::Create {
            cred: c.cred(r.cred),
            parent: Inode(r.parent),
            name: r.name,
            mode: r.mode,
            umask: r.umask,
            exclusive: r.exclusive,
        };
        self.entry(self.mutate(r.id, op).await?)
    }

    async fn open(&self, req: Request<pb::OpenRequest>) -> R<pb::OpenReply> {
        let asked = req.get_ref();
        let need = if asked.mode == pb::OpenMode::Read as i32 && !asked.truncate {
            Need::Read
        } else {
            Need::Write
        };
        let (c, r) = self.admit(req, need, |r| vec![Inode(r.inode)]).await?;
        let (session, inode) = (r.id.as_ref().map_or(0, |i| i.session), r.inode);
        let mode = super::convert::open_mode(r.mode)?;
        let cred = c.cred(r.cred);
        // A truncating writer's first chunk, placed by the same entry: a
        // new id reserved, the slot and the id claimed until it commits.
        // Whatever keeps it from being had leaves the open alone.
        let lease = if r.truncate && r.lease_first_chunk && mode != fsm::OpenMode::Read {
            self.chunks.reserve_new_chunk(Inode(inode), 0).await.ok()
        } else {
            None
        };
        let op = match &lease {
            Some((chunk, _)) => Op::OpenLeased {
                cred,
                inode: Inode(inode),
                mode,
                chunk: *chunk,
                version: fsm::ChunkVersion(1),
            },
            None => Op::Open {
                cred,
                inode: Inode(inode),
                mode,
                truncate: r.truncate,
            },
        };
        // Answered before the commit when nothing else is in flight: an
        // open's only lasting effect is the count later unlinks see.
        let req = self.request(r.id, op)?;
        let attr = self.attr_reply(self.node.open_before_commit(req).await?)?;
        if let Some((chunk, claims)) = lease {
            // The lease when the entry placed the chunk (not when a retry
            // was answered from the reply cache: WriteChunk then).
            let placed = self
                .node
                .shared
                .ns()
                .chunk_slot(Inode(inode), 0)
                .ok()
                .flatten()
                == Some(chunk);
            let loc = placed
                .then(|| self.chunks.batch_lease(SessionId(session), Inode(inode), 0))
                .and_then(Result::ok);
            drop(claims);
            let first_chunk = loc.map(|l| self.write_location(l, Inode(inode)));
            return Ok(Response::new(pb::OpenReply {
                attr: Some(attr),
                first_chunk,
            }));
        }
        // Where a reader will read first, found now: one call less for a
        // small file. Whatever keeps ReadChunk from answering leaves it out.
        let first_chunk = if mode != fsm::OpenMode::Write && attr.size > 0 {
            self.chunks
                .read_chunk(SessionId(session), Inode(inode), 0)
                .await
                .ok()
                .filter(|l| l.id.0 != 0)
                .map(|l| self.with_token(location_to_pb(l), mfs_proto::ChunkAccess::Read))
        } else {
            None
        };
        Ok(Response::new(pb::OpenReply {
            attr: Some(attr),
            first_chunk,
        }))
    }

    async fn release(&self, req: Request<pb::ReleaseRequest>) -> R<pb::Empty> {
        let (_, r) = self.admit(req, Need::Read, |_| vec![]).await?;
        let op = if r.more.is_empty() {
            Op::Release {
                inode: Inode(r.inode),
            }
        } else {
            if r.more.len() >= MAX_RELEASES {
                return Err(invalid(format!(
                    "Release: {} inodes in one call; at most {MAX_RELEASES}",
                    r.more.len() + 1
                )));
            }
            let inodes = std::iter::once(r.inode).chain(r.more).map(Inode);
            Op::ReleaseMany {
                inodes: inodes.collect(),
            }
        };
        ok_reply(self.mutate(r.id, op).await?)
    }

    async fn assert_opens(&self, req: Request<pb::AssertOpensRequest>) -> R<pb::Empty> {
        let n = req.get_ref().opens.len();
        if n > MAX_RELEASES {
            return Err(invalid(format!(
                "AssertOpens: {n} inodes in one call; at most {MAX_RELEASES}"
            )));
        }
        let (_, r) = self
            .admit(req, Need::Read, |r| {
                r.opens.iter().map(|o| Inode(o.inode)).collect()
            })
            .await?;
        let opens = r.opens.iter().map(|o| (Inode(o.inode), o.count)).collect();
        ok_reply(self.mutate(r.id, Op::AssertOpens { opens }).await?)
    }

    async fn unlink(&self, req: Request<pb::UnlinkRequest>) -> R<pb::Empty> {
        let (c, r) = self
            .admit(req, Need::Write, |r| vec![Inode(r.parent)])
            .await?;
        let id = r.id;
        ok_reply(self.mutate(id, unlink_op(&c, r)).await?)
    }

    async fn rmdir(&self, req: Request<pb::RmdirRequest>) -> R<pb::Empty> {
        let (c, r) = self
            .admit(req, Need::Write, |r| vec![Inode(r.parent)])
            .await?;
        let id = r.id;
        ok_reply(self.mutate(id, rmdir_op(&c, r)).await?)
    }

    async fn rename(&self, req: Request<pb::RenameRequest>) -> R<pb::Empty> {
        let (c, r) = self
            .admit(req, Need::Write, |r| {
                vec![Inode(r.parent), Inode(r.new_parent)]
            })
            .await?;
        let id = r.id;
        ok_reply(self.mutate(id, rename_op(&c, r)).await?)
    }

    async fn link(&self, req: Request<pb::LinkRequest>) -> R<pb::EntryReply> {
        let (c, r) = self
            .admit(req, Need::Write, |r| {
                vec![Inode(r.inode), Inode(r.new_parent)]
            })
            .await?;
        let op = Op::Link {
            cred: c.cred(r.cred),
            inode: Inode(r.inode),
            new_parent: Inode(r.new_parent),
            new_name: r.new_name,
        };
        self.entry(self.mutate(r.id, op).await?)
    }

    async fn symlink(&self, req: Request<pb::SymlinkRequest>) -> R<pb::EntryReply> {
        let (c, r) = self
            .admit(req, Need::Write, |r| vec![Inode(r.parent)])
            .await?;
        let op = Op::Symlink {
            cred: c.cred(r.cred),
            parent: Inode(r.parent),
            name: r.name,
            target: r.target,
        };
        self.entry(self.mutate(r.id, op).await?)
    }

    async fn readlink(&self, req: Request<pb::ReadlinkRequest>) -> R<pb::ReadlinkReply> {
        let (_, r) = self
            .admit(req, Need::Read, |r| vec![Inode(r.inode)])
            .await?;
        let ino = Inode(r.inode);
        let target = self.read(|ns| ns.readlink(ino).map(|t| t.to_vec())).await?;
        Ok(Response::new(pb::ReadlinkReply { target }))
    }

    async fn readdir(&self, req: Request<pb::ReaddirRequest>) -> R<pb::ReaddirReply> {
        let (c, r) = self
            .admit(req, Need::Read, |r| vec![Inode(r.inode)])
            .await?;
        let cred = c.cred(r.cred);
        let limit = match r.limit as usize {
            0 => 1000,
            n => n.min(READDIR_MAX),
        };
        let (entries, more, dir) = self
            .read(|ns| {
                let (entries, more) = ns.readdir(&cred, Inode(r.inode), &r.after, limit, r.plus)?;
                let entries = entries
                    .into_iter()
                    .map(|e| pb::DirEntry {
                        attr: e.attr.as_ref().map(|a| attr_to_pb(a, ns)),
                        name: e.name,
                        inode: e.inode.0,
                        r#type: ftype_to_pb(e.ftype) as i32,
                    })
                    .collect();
                let dir = if r.plus && !more {
                    Some(attr_to_pb(&ns.getattr(Inode(r.inode))?, ns))
                } else {
                    None
                };
                Ok((entries, more, dir))
            })
            .await?;
        Ok(Response::new(pb::ReaddirReply { entries, more, dir }))
    }

    async fn statfs(&self, req: Request<pb::StatfsRequest>) -> R<pb::StatfsReply> {
        self.admit(req, Need::Read, |_| vec![]).await?;
        let inodes = self.read(|ns| Ok(ns.inode_count())).await?;
        // Space comes from the chunkservers; until one reports, a nominal
        // 1 PiB keeps tools like df and cp working.
        let (mut total, mut used) = (0u64, 0u64);
        for (s, _) in self.chunks.servers() {
            for d in s.disks.iter().filter(|d| !d.damaged && !d.marked) {
                total = total.saturating_add(d.total);
                used = used.saturating_add(d.used);
            }
        }
        if total == 0 {
            total = 1 << 50;
        }
        let free = total.saturating_sub(used);
        let max_inodes: u64 = 1 << 40;
        Ok(Response::new(pb::StatfsReply {
            total_bytes: total,
            free_bytes: free,
            available_bytes: free,
            total_inodes: max_inodes,
            free_inodes: max_inodes.saturating_sub(inodes),
            block_size: 65536,
            name_max: 255,
        }))
    }

    async fn get_xattr(&self, req: Request<pb::GetXattrRequest>) -> R<pb::GetXattrReply> {
        let (c, r) = self
            .admit(req, Need::Read, |r| vec![Inode(r.inode)])
            .await?;
        let cred = c.cred(r.cred);
        let value = self
            .read(|ns| ns.getxattr(&cred, Inode(r.inode), &r.name))
            .await?;
        Ok(Response::new(pb::GetXattrReply { value }))
    }

    async fn set_xattr(&self, req: Request<pb::SetXattrRequest>) -> R<pb::Empty> {
        let (c, r) = self
            .admit(req, Need::Write, |r| vec![Inode(r.inode)])
            .await?;
        let op = Op::SetXattr {
            cred: c.cred(r.cred),
            inode: Inode(r.inode),
            name: r.name,
            value: r.value,
            create_only: r.create_only,
            replace_only: r.replace_only,
        };
        ok_reply(self.mutate(r.id, op).await?)
    }

    async fn list_xattr(&self, req: Request<pb::ListXattrRequest>) -> R<pb::ListXattrReply> {
        let (c, r) = self
            .admit(req, Need::Read, |r| vec![Inode(r.inode)])
            .await?;
        let cred = c.cred(r.cred);
        let names = self.read(|ns| ns.listxattr(&cred, Inode(r.inode))).await?;
        Ok(Response::new(pb::ListXattrReply { names }))
    }

    async fn remove_xattr(&self, req: Request<pb::RemoveXattrRequest>) -> R<pb::Empty> {
        let (c, r) = self
            .admit(req, Need::Write, |r| vec![Inode(r.inode)])
            .await?;
        let op = Op::RemoveXattr {
            cred: c.cred(r.cred),
            inode: Inode(r.inode),
            name: r.name,
        };
        ok_reply(self.mutate(r.id, op).await?)
    }

    async fn read_chunk(&self, req: Request<pb::ReadChunkRequest>) -> R<pb::ChunkLocation> {
        self.chunk_to_read(req).await
    }

    async fn write_chunk(&self, req: Request<pb::WriteChunkRequest>) -> R<pb::ChunkLocation> {
        self.chunk_to_write(req).await
    }

    async fn write_chunk_end(&self, req: Request<pb::WriteChunkEndRequest>) -> R<pb::AttrReply> {
        self.end_write(req).await
    }

    async fn set_goal(&self, req: Request<pb::SetGoalRequest>) -> R<pb::SetTreeReply> {
        let (c, r) = self
            .admit(req, Need::Write, |r| vec![Inode(r.inode)])
            .await?;
        let goal = u8::try_from(r.goal)
            .ok()
            .filter(|g| (1..=MAX_GOAL).contains(g))
            .ok_or_else(|| invalid(format!("SetGoal: goal {} is not in 1..={MAX_GOAL}", r.goal)))?;
        c.goal(goal)?;
        let op = Op::SetGoal {
            cred: c.cred(r.cred),
            inode: Inode(r.inode),
            goal,
            recursive: r.recursive,
        };
        tree_reply(self.mutate(r.id, op).await?)
    }

    async fn set_trash_time(&self, req: Request<pb::SetTrashTimeRequest>) -> R<pb::SetTreeReply> {
        let (c, r) = self
            .admit(req, Need::Write, |r| vec![Inode(r.inode)])
            .await?;
        c.trash_time(r.trash_time)?;
        let op = Op::SetTrashTime {
            cred: c.cred(r.cred),
            inode: Inode(r.inode),
            trash_time: r.trash_time,
            recursive: r.recursive,
        };
        tree_reply(self.mutate(r.id, op).await?)
    }

    async fn set_eattr(&self, req: Request<pb::SetEattrRequest>) -> R<pb::SetTreeReply> {
        let (c, r) = self
            .admit(req, Need::Write, |r| {
                self.and_every_delegated(vec![Inode(r.inode)])
            })
            .await?;
        let bits = |v: u32, what: &str| {
            u8::try_from(v)
                .ok()
                .filter(|b| b & !fsm::eattr::ALL == 0)
                .ok_or_else(|| {
                    invalid(format!(
                        "SetEattr: {what} {v:#x} has bits outside {:#x}",
                        fsm::eattr::ALL
                    ))
                })
        };
        let op = Op::SetEattr {
            cred: c.cred(r.cred),
            inode: Inode(r.inode),
            set: bits(r.set, "set")?,
            clear: bits(r.clear, "clear")?,
            recursive: r.recursive,
        };
        tree_reply(self.mutate(r.id, op).await?)
    }

    async fn snapshot(&self, req: Request<pb::SnapshotRequest>) -> R<pb::EntryReply> {
        let (c, r) = self
            .admit(req, Need::Write, |r| {
                self.and_every_delegated(vec![Inode(r.src), Inode(r.parent)])
            })
            .await?;
        let op = Op::Snapshot {
            cred: c.cred(r.cred),
            src: Inode(r.src),
            parent: Inode(r.parent),
            name: r.name,
        };
        self.entry(self.mutate(r.id, op).await?)
    }

    async fn set_lock(&self, req: Request<pb::SetLockRequest>) -> R<pb::Empty> {
        let (_, r) = self
            .admit(req, Need::Read, |r| vec![Inode(r.inode)])
            .await?;
        let op = Op::SetLock {
            inode: Inode(r.inode),
            owner: r.owner,
            kind: lock_kind_from_pb(r.kind)?,
            ltype: lock_type_from_pb(r.r#type, "SetLock")?,
            start: r.start,
            end: r.end,
            pid: r.pid,
        };
        ok_reply(self.mutate(r.id, op).await?)
    }

    async fn get_lock(&self, req: Request<pb::GetLockRequest>) -> R<pb::GetLockReply> {
        let (_, r) = self
            .admit(req, Need::Read, |r| vec![Inode(r.inode)])
            .await?;
        let kind = lock_kind_from_pb(r.kind)?;
        let write = match lock_type_from_pb(r.r#type, "GetLock")? {
            fsm::LockType::Read => false,
            fsm::LockType::Write => true,
            fsm::LockType::Unlock => {
                return Err(invalid(
                    "GetLock: type must be LOCK_TYPE_READ or LOCK_TYPE_WRITE",
                ))
            }
        };
        let q = fsm::LockQuery {
            inode: Inode(r.inode),
            session: SessionId(r.session),
            owner: r.owner,
            kind,
            write,
            start: r.start,
            end: r.end,
        };
        let found = self.read(|ns| ns.get_lock(&q)).await?;
        Ok(Response::new(pb::GetLockReply {
            lock: Some(file_lock_to_pb(found.as_ref())),
        }))
    }

    async fn list_removed(&self, req: Request<pb::ListRemovedRequest>) -> R<pb::ListRemovedReply> {
        let (_, r) = self.admit(req, Need::Meta(false), |_| vec![]).await?;
        self.list_removed_files(r).await
    }

    async fn trash_delete(&self, req: Request<pb::TrashFileRequest>) -> R<pb::Empty> {
        let (c, r) = self.admit(req, Need::Meta(true), |_| vec![]).await?;
        let op = Op::TrashDelete {
            cred: c.cred(r.cred),
            inode: Inode(r.inode),
        };
        ok_reply(self.mutate(r.id, op).await?)
    }

    async fn undelete(&self, req: Request<pb::TrashFileRequest>) -> R<pb::AttrReply> {
        // It makes names (and missing directories) along the file's path:
        // a directory there held by a mount is recalled first.
        let (c, r) = self
            .admit(req, Need::Meta(true), |_| self.and_every_delegated(vec![]))
            .await?;
        let op = Op::Undelete {
            cred: c.cred(r.cred),
            inode: Inode(r.inode),
        };
        self.attr_response(self.mutate(r.id, op).await?)
    }

    async fn set_trash_path(&self, req: Request<pb::SetTrashPathRequest>) -> R<pb::Empty> {
        let (c, r) = self.admit(req, Need::Meta(true), |_| vec![]).await?;
        let op = Op::SetTrashPath {
            cred: c.cred(r.cred),
            inode: Inode(r.inode),
            path: r.path,
        };
        ok_reply(self.mutate(r.id, op).await?)
    }

    async fn access(&self, req: Request<pb::AccessRequest>) -> R<pb::Empty> {
        let (c, r) = self
            .admit(req, Need::Read, |r| vec![Inode(r.inode)])
            .await?;
        let cred = c.cred(r.cred);
        self.read(|ns| ns.access(&cred, Inode(r.inode), r.mask))
            .await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn punch_chunks(&self, req: Request<pb::PunchChunksRequest>) -> R<pb::AttrReply> {
        self.punch(req).await
    }

    async fn set_quota(&self, req: Request<pb::SetQuotaRequest>) -> R<pb::QuotaReply> {
        let (c, r) = self
            .admit(req, Need::Admin, |r| {
                self.and_every_delegated(vec![Inode(r.inode)])
            })
            .await?;
        self.set_dir_quota(r, &c).await
    }

    async fn get_quota(&self, req: Request<pb::GetQuotaRequest>) -> R<pb::QuotaReply> {
        let (_, r) = self
            .admit(req, Need::Read, |r| vec![Inode(r.inode)])
            .await?;
        self.dir_quota(Inode(r.inode)).await
    }

    async fn list_quotas(&self, req: Request<pb::ListQuotasRequest>) -> R<pb::ListQuotasReply> {
        let (c, _) = self.admit(req, Need::Read, |_| vec![]).await?;
        self.all_quotas(&c).await
    }

    async fn delegate(&self, req: Request<pb::DelegateRequest>) -> R<pb::DelegateReply> {
        self.delegate(req).await
    }

    async fn return_delegation(&self, req: Request<pb::ReturnDelegationRequest>) -> R<pb::Empty> {
        self.return_delegation(req).await
    }

    async fn batch(&self, req: Request<pb::BatchRequest>) -> R<pb::BatchReply> {
        self.batch(req).await
    }

    async fn hold_chunks(&self, req: Request<pb::HoldChunksRequest>) -> R<pb::HoldChunksReply> {
        self.hold_chunks(req).await
    }

    type RecallsStream = super::writeback::RecallStream;

    async fn recalls(&self, req: Request<pb::RecallsRequest>) -> R<Self::RecallsStream> {
        self.recall_stream(req).await
    }

    async fn dir_info(&self, req: Request<pb::DirInfoRequest>) -> R<pb::DirInfoReply> {
        let (_, r) = self
            .admit(req, Need::Read, |r| vec![Inode(r.inode)])
            .await?;
        let inode = Inode(r.inode);
        let s = self.read(|ns| ns.dir_stats(inode)).await?;
        Ok(Response::new(pb::DirInfoReply {
            inodes: s.inodes,
            dirs: s.dirs,
            files: s.files,
            chunks: s.chunks,
            length: s.length,
            size: s.size,
            realsize: s.realsize,
        }))
    }
}
