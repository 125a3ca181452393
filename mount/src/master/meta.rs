//! Typed wrappers for every MetaService call.
//!
//! Reads take plain arguments. Mutating calls take the request message as
//! the proto defines it, with `id` left empty: the wrapper fills in a fresh
//! [`RequestId`] and keeps it for every attempt. They return the useful part
//! of the reply (the `Attr` of an `EntryReply`, ...).

use std::future::Future;
use std::time::Duration;

use mfs_proto::v1::{
    AssertOpensRequest, FileLock, GetLockRequest, OpenCount, PunchChunksRequest, SetLockRequest,
};
use mfs_proto::v1::{
    Attr, AttrReply, CloseSessionRequest, CreateRequest, Credentials, EntryReply, GetAttrRequest,
    GetXattrRequest, LinkRequest, ListXattrRequest, LookupRequest, MkdirRequest, MknodRequest,
    OpenRequest, ReaddirReply, ReaddirRequest, ReadlinkRequest, ReleaseRequest, RemoveXattrRequest,
    RenameRequest, RequestId, RmdirRequest, SetAttrRequest, SetXattrRequest, StatfsReply,
    StatfsRequest, SymlinkRequest, UnlinkRequest,
};
use mfs_proto::v1::{
    ChunkLocation, ReadChunkRequest, SetEattrRequest, SetGoalRequest, SetTrashTimeRequest,
    SetTreeReply, SnapshotRequest, WriteChunkEndRequest, WriteChunkRequest,
};
use tonic::Status;

use super::queue::Scope;
use super::{meta_client, session, MasterClient};
use crate::error::ClientError;

/// A request that changes the namespace and so carries a [`RequestId`].
pub(crate) trait Mutating: Clone {
    fn set_request_id(&mut self, id: RequestId);
}

macro_rules! mutating {
    ($($t:ty),* $(,)?) => {
        $(impl Mutating for $t {
            fn set_request_id(&mut self, id: RequestId) {
                self.id = Some(id);
            }
        })*
    };
}

mutating!(
    CloseSessionRequest,
    SetAttrRequest,
    MkdirRequest,
    MknodRequest,
    CreateRequest,
    OpenRequest,
    ReleaseRequest,
    AssertOpensRequest,
    UnlinkRequest,
    RmdirRequest,
    RenameRequest,
    LinkRequest,
    SymlinkRequest,
    SetXattrRequest,
    RemoveXattrRequest,
    WriteChunkRequest,
    WriteChunkEndRequest,
    SetGoalRequest,
    SetTrashTimeRequest,
    SetEattrRequest,
    SnapshotRequest,
    SetLockRequest,
    PunchChunksRequest,
    mfs_proto::v1::BatchRequest,
    mfs_proto::v1::DelegateRequest,
    mfs_proto::v1::ReturnDelegationRequest,
    mfs_proto::v1::HoldChunksRequest,
);

fn attr_of(attr: Option<Attr>, method: &str) -> Result<Attr, ClientError> {
    attr.ok_or_else(|| ClientError::BadReply(format!("{method} reply without attributes")))
}

fn entry(r: EntryReply, method: &str) -> Result<Attr, ClientError> {
    attr_of(r.attr, method)
}

fn attr(r: AttrReply, method: &str) -> Result<Attr, ClientError> {
    attr_of(r.attr, method)
}

impl MasterClient {
    /// Runs a mutating call: takes a request id, keeps it for every attempt,
    /// completes it at the end. When the master answers ESTALE/EBADF and a
    /// heartbeat confirms our session is unknown to it, registers a new
    /// session and runs the call once more under it.
    pub(crate) async fn call_mut<Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        req: Req,
        f: F,
    ) -> Result<Resp, ClientError>
    where
        Req: Mutating,
        F: Fn(super::Conn, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        self.call_mut_in(method, Scope::All, req, f).await
    }

    /// [`call_mut`](MasterClient::call_mut) waiting only for the queued
    /// ops `scope` depends on.
    pub(crate) async fn call_mut_in<Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        scope: Scope<'_>,
        mut req: Req,
        f: F,
    ) -> Result<Resp, ClientError>
    where
        Req: Mutating,
        F: Fn(super::Conn, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let mut renewed = false;
        // Counted as it starts and as it ends (see `changes`); a release
        // changes nothing a listing or stat shows.
        let count = || {
            if method != "Release" {
                let c = &self.inner.changing_calls;
                c.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            }
        };
        loop {
            let pending = self.next_request_id();
            let id = pending.id();
            req.set_request_id(id);
            count();
            let result = self.inner.call_in(method, scope, req.clone(), &f).await;
            count();
            drop(pending);
            match result {
                Err(e)
                    if e.is_session_unknown()
                        && !renewed
                        && id.session != 0
                        && method != "CloseSession" =>
                {
                    if !self.session_lost(id.session).await {
                        return Err(e);
                    }
                    session::renew(&self.inner, id.session).await?;
                    renewed = true;
                }
                r => return r,
            }
        }
    }

    /// Asks the master whether `session` still exists (by a heartbeat).
    async fn session_lost(&self, session: u64) -> bool {
        let limit = self.inner.opts.call_timeout.max(Duration::from_secs(1)) * 2;
        matches!(session::heartbeat_once(&self.inner, session, limit).await, Err(e) if e.is_session_unknown())
    }

    /// Finds `name` in directory `parent`.
    pub async fn lookup(
        &self,
        cred: &Credentials,
        parent: u64,
        name: &[u8],
    ) -> Result<Attr, ClientError> {
        let req = LookupRequest {
            cred: Some(cred.clone()),
            parent,
            name: name.to_vec(),
        };
        let call = |ch, r| async move { meta_client(ch).lookup(r).await };
        let r = self
            .inner
            .call_in("Lookup", Scope::Inodes(&[parent]), req.clone(), call)
            .await?;
        let found = entry(r, "Lookup")?;
        if !self.inner.queue.waits_on(found.inode) {
            return Ok(found);
        }
        // What was found has changes queued here: ask again after them.
        let r = self.inner.call("Lookup", req, call).await?;
        entry(r, "Lookup")
    }

    /// Attributes of `inode`.
    pub async fn getattr(&self, inode: u64) -> Result<Attr, ClientError> {
        let r = self
            .inner
            .call_in(
                "GetAttr",
                Scope::Inodes(&[inode]),
                GetAttrRequest { inode },
                |ch, r| async move { meta_client(ch).get_attr(r).await },
            )
            .await?;
        attr(r, "GetAttr")
    }

    /// Changes attributes (chmod, chown, truncate, utimens).
    pub async fn setattr(&self, req: SetAttrRequest) -> Result<Attr, ClientError> {
        let inode = req.inode;
        let r = self
            .call_mut_in(
                "SetAttr",
                Scope::Inodes(&[inode]),
                req,
                |ch, r| async move { meta_client(ch).set_attr(r).await },
            )
            .await?;
        attr(r, "SetAttr")
    }

    /// Creates a directory.
    pub async fn mkdir(&self, req: MkdirRequest) -> Result<Attr, ClientError> {
        let r = self
            .call_mut("Mkdir", req, |ch, r| async move {
                meta_client(ch).mkdir(r).await
            })
            .await?;
        entry(r, "Mkdir")
    }

    /// Creates a file, fifo, socket or device node.
    pub async fn mknod(&self, req: MknodRequest) -> Result<Attr, ClientError> {
        let r = self
            .call_mut("Mknod", req, |ch, r| async move {
                meta_client(ch).mknod(r).await
            })
            .await?;
        entry(r, "Mknod")
    }

    /// Creates and opens a regular file.
    pub async fn create(&self, req: CreateRequest) -> Result<Attr, ClientError> {
        let r = self
            .call_mut("Create", req, |ch, r| async move {
                meta_client(ch).create(r).await
            })
            .await?;
        entry(r, "Create")
    }

    /// Opens an inode for the session.
    pub async fn open(&self, req: OpenRequest) -> Result<Attr, ClientError> {
        self.open_for_reading(req).await.map(|(a, _)| a)
    }

    /// [`open`](MasterClient::open), with where the file's first chunk is
    /// when the master says (an open that may read a non-empty file).
    pub async fn open_for_reading(
        &self,
        req: OpenRequest,
    ) -> Result<(Attr, Option<ChunkLocation>), ClientError> {
        let inode = req.inode;
        let r = self
            .call_mut_in("Open", Scope::Inodes(&[inode]), req, |ch, r| async move {
                meta_client(ch).open(r).await
            })
            .await?;
        Ok((attr_of(r.attr, "Open")?, r.first_chunk))
    }

    /// Releases what Open took.
    pub async fn release(&self, req: ReleaseRequest) -> Result<(), ClientError> {
        self.call_mut("Release", req, |ch, r| async move {
            meta_client(ch).release(r).await
        })
        .await
        .map(|_| ())
    }

    /// Tells the master how many times this session holds each inode open
    /// (see [`MasterClient::leader_changes`]); at most 4096 a call.
    pub async fn assert_opens(&self, opens: Vec<(u64, u32)>) -> Result<(), ClientError> {
        let req = AssertOpensRequest {
            id: None,
            opens: opens
                .into_iter()
                .map(|(inode, count)| OpenCount { inode, count })
                .collect(),
        };
        self.call_mut("AssertOpens", req, |ch, r| async move {
            meta_client(ch).assert_opens(r).await
        })
        .await
        .map(|_| ())
    }

    /// Removes a name of a non-directory.
    pub async fn unlink(&self, req: UnlinkRequest) -> Result<(), ClientError> {
        self.call_mut("Unlink", req, |ch, r| async move {
            meta_client(ch).unlink(r).await
        })
        .await
        .map(|_| ())
    }

    /// Removes an empty directory.
    pub async fn rmdir(&self, req: RmdirRequest) -> Result<(), ClientError> {
        self.call_mut("Rmdir", req, |ch, r| async move {
            meta_client(ch).rmdir(r).await
        })
        .await
        .map(|_| ())
    }

    /// Renames (with RENAME_NOREPLACE / RENAME_EXCHANGE).
    pub async fn rename(&self, req: RenameRequest) -> Result<(), ClientError> {
        self.call_mut("Rename", req, |ch, r| async move {
            meta_client(ch).rename(r).await
        })
        .await
        .map(|_| ())
    }

    /// Adds a hard link.
    pub async fn link(&self, req: LinkRequest) -> Result<Attr, ClientError> {
        let r = self
            .call_mut(
                "Link",
                req,
                |ch, r| async move { meta_client(ch).link(r).await },
            )
            .await?;
        entry(r, "Link")
    }

    /// Creates a symbolic link.
    pub async fn symlink(&self, req: SymlinkRequest) -> Result<Attr, ClientError> {
        let r = self
            .call_mut("Symlink", req, |ch, r| async move {
                meta_client(ch).symlink(r).await
            })
            .await?;
        entry(r, "Symlink")
    }

    /// Target of a symbolic link.
    pub async fn readlink(&self, inode: u64) -> Result<Vec<u8>, ClientError> {
        self.inner
            .call("Readlink", ReadlinkRequest { inode }, |ch, r| async move {
                meta_client(ch).readlink(r).await
            })
            .await
            .map(|r| r.target)
    }

    /// One page of a directory (without "." and "..").
    pub async fn readdir(&self, req: ReaddirRequest) -> Result<ReaddirReply, ClientError> {
        self.readdir_in(Scope::All, req).await
    }

    async fn readdir_in(
        &self,
        scope: Scope<'_>,
        req: ReaddirRequest,
    ) -> Result<ReaddirReply, ClientError> {
        self.inner
            .call_in("Readdir", scope, req, |ch, r| async move {
                meta_client(ch).readdir(r).await
            })
            .await
    }

    /// Every entry of directory `inode` (without "." and ".."), read in
    /// pages of `page`, and with `plus` the directory's own attributes
    /// (`None` from a master that does not give them). Read after the
    /// queued ops on the directory; read again after the whole queue if
    /// an entry has ops queued here (its attributes may change).
    pub async fn readdir_all(
        &self,
        cred: &Credentials,
        inode: u64,
        plus: bool,
        page: u32,
    ) -> Result<(Vec<mfs_proto::v1::DirEntry>, Option<Attr>), ClientError> {
        let listed = self
            .readdir_pages(Scope::Inodes(&[inode]), cred, inode, plus, page)
            .await?;
        if !listed.0.iter().any(|e| self.inner.queue.waits_on(e.inode)) {
            return Ok(listed);
        }
        self.readdir_pages(Scope::All, cred, inode, plus, page)
            .await
    }

    async fn readdir_pages(
        &self,
        scope: Scope<'_>,
        cred: &Credentials,
        inode: u64,
        plus: bool,
        page: u32,
    ) -> Result<(Vec<mfs_proto::v1::DirEntry>, Option<Attr>), ClientError> {
        let mut out = Vec::new();
        let mut after = Vec::new();
        loop {
            let req = ReaddirRequest {
                cred: Some(cred.clone()),
                inode,
                after,
                limit: page,
                plus,
            };
            let r = self.readdir_in(scope, req).await?;
            let more = r.more;
            out.extend(r.entries);
            match out.last() {
                Some(last) if more => after = last.name.clone(),
                _ => return Ok((out, r.dir)),
            }
        }
    }

    /// Space and inode counts of the file system.
    pub async fn statfs(&self) -> Result<StatfsReply, ClientError> {
        self.inner
            .call("Statfs", StatfsRequest {}, |ch, r| async move {
                meta_client(ch).statfs(r).await
            })
            .await
    }

    /// Value of extended attribute `name` of `inode`.
    pub async fn getxattr(
        &self,
        cred: &Credentials,
        inode: u64,
        name: &[u8],
    ) -> Result<Vec<u8>, ClientError> {
        let req = GetXattrRequest {
            cred: Some(cred.clone()),
            inode,
            name: name.to_vec(),
        };
        self.inner
            .call_in(
                "GetXattr",
                Scope::Inodes(&[inode]),
                req,
                |ch, r| async move { meta_client(ch).get_xattr(r).await },
            )
            .await
            .map(|r| r.value)
    }

    /// Sets an extended attribute.
    pub async fn setxattr(&self, req: SetXattrRequest) -> Result<(), ClientError> {
        self.call_mut("SetXattr", req, |ch, r| async move {
            meta_client(ch).set_xattr(r).await
        })
        .await
        .map(|_| ())
    }

    /// Names of the extended attributes of `inode`.
    pub async fn listxattr(
        &self,
        cred: &Credentials,
        inode: u64,
    ) -> Result<Vec<Vec<u8>>, ClientError> {
        let req = ListXattrRequest {
            cred: Some(cred.clone()),
            inode,
        };
        self.inner
            .call_in(
                "ListXattr",
                Scope::Inodes(&[inode]),
                req,
                |ch, r| async move { meta_client(ch).list_xattr(r).await },
            )
            .await
            .map(|r| r.names)
    }

    /// Removes an extended attribute.
    pub async fn removexattr(&self, req: RemoveXattrRequest) -> Result<(), ClientError> {
        self.call_mut("RemoveXattr", req, |ch, r| async move {
            meta_client(ch).remove_xattr(r).await
        })
        .await
        .map(|_| ())
    }

    // ---- data path ----

    /// Where chunk `index` of `inode` is, to read it (chunk_id 0: a hole),
    /// with the file's length. Asked under the current session.
    pub async fn read_chunk(&self, inode: u64, index: u32) -> Result<ChunkLocation, ClientError> {
        let req = ReadChunkRequest {
            session: self.session_id(),
            inode,
            index,
        };
        self.inner
            .call_in(
                "ReadChunk",
                Scope::Inodes(&[inode]),
                req,
                |ch, r| async move { meta_client(ch).read_chunk(r).await },
            )
            .await
    }

    /// Takes (or, with `renew`, renews) the write lease of one chunk: the
    /// master allocates or versions it and answers with the chain to write
    /// to. EAGAIN means another session holds the lease: retry later.
    pub async fn write_chunk(&self, req: WriteChunkRequest) -> Result<ChunkLocation, ClientError> {
        let inode = req.inode;
        self.call_mut_in(
            "WriteChunk",
            Scope::Inodes(&[inode]),
            req,
            |ch, r| async move { meta_client(ch).write_chunk(r).await },
        )
        .await
    }

    /// Ends a write to one chunk: commits the file length and releases the
    /// lease. Returns the file's attributes after it.
    pub async fn write_chunk_end(&self, req: WriteChunkEndRequest) -> Result<Attr, ClientError> {
        let inode = req.inode;
        let r = self
            .call_mut_in(
                "WriteChunkEnd",
                Scope::Inodes(&[inode]),
                req,
                |ch, r| async move { meta_client(ch).write_chunk_end(r).await },
            )
            .await?;
        attr(r, "WriteChunkEnd")
    }

    /// access(2) at the master: Ok, or the errno (EACCES, EPERM).
    pub async fn access(
        &self,
        cred: &Credentials,
        inode: u64,
        mask: u32,
    ) -> Result<(), ClientError> {
        let req = mfs_proto::v1::AccessRequest {
            cred: Some(cred.clone()),
            inode,
            mask,
        };
        self.inner
            .call_in("Access", Scope::Inodes(&[inode]), req, |ch, r| async move {
                meta_client(ch).access(r).await
            })
            .await
            .map(drop)
    }

    /// Makes whole chunks of a file holes (fallocate PUNCH_HOLE).
    pub async fn punch_chunks(&self, req: PunchChunksRequest) -> Result<Attr, ClientError> {
        let r = self
            .call_mut("PunchChunks", req, |ch, r| async move {
                meta_client(ch).punch_chunks(r).await
            })
            .await?;
        attr(r, "PunchChunks")
    }

    /// Sets the goal of an inode (or a tree, with `recursive`).
    pub async fn set_goal(&self, req: SetGoalRequest) -> Result<SetTreeReply, ClientError> {
        self.call_mut("SetGoal", req, |ch, r| async move {
            meta_client(ch).set_goal(r).await
        })
        .await
    }

    /// Sets the trash time of an inode (or a tree, with `recursive`).
    pub async fn set_trash_time(
        &self,
        req: SetTrashTimeRequest,
    ) -> Result<SetTreeReply, ClientError> {
        self.call_mut("SetTrashTime", req, |ch, r| async move {
            meta_client(ch).set_trash_time(r).await
        })
        .await
    }

    /// Sets and clears extra attributes of an inode (or a tree, with
    /// `recursive`).
    pub async fn set_eattr(&self, req: SetEattrRequest) -> Result<SetTreeReply, ClientError> {
        self.call_mut("SetEattr", req, |ch, r| async move {
            meta_client(ch).set_eattr(r).await
        })
        .await
    }

    /// Copies a file or a tree, sharing chunks (mfsmakesnapshot).
    pub async fn snapshot(&self, req: SnapshotRequest) -> Result<Attr, ClientError> {
        let r = self
            .call_mut("Snapshot", req, |ch, r| async move {
                meta_client(ch).snapshot(r).await
            })
            .await?;
        entry(r, "Snapshot")
    }

    /// Sets, changes or removes a file lock of the session (never waits:
    /// a conflict is `Errno(EAGAIN)`; the caller retries to wait).
    pub async fn set_lock(&self, req: SetLockRequest) -> Result<(), ClientError> {
        self.call_mut("SetLock", req, |ch, r| async move {
            meta_client(ch).set_lock(r).await
        })
        .await
        .map(|_| ())
    }

    /// The first lock of another owner conflicting with the one described
    /// (`session` is filled in with the current one); its type is
    /// LOCK_TYPE_UNLOCK when there is none.
    pub async fn get_lock(&self, mut req: GetLockRequest) -> Result<FileLock, ClientError> {
        req.session = self.session_id();
        let r = self
            .inner
            .call("GetLock", req, |ch, r| async move {
                meta_client(ch).get_lock(r).await
            })
            .await?;
        r.lock
            .ok_or_else(|| ClientError::BadReply("GetLock reply without a lock".into()))
    }
}
