//! A tiny in-process fake master: MetaService and AdminService on
//! 127.0.0.1:0, scripted to redirect, fail the first attempt of a call, or
//! forget sessions, and recording every request it receives.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mfs_proto::v1::admin_service_server::{AdminService, AdminServiceServer};
use mfs_proto::v1::meta_service_server::{MetaService, MetaServiceServer};
use mfs_proto::v1::*;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status};

/// One request as the fake saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub method: &'static str,
    pub id: Option<RequestId>,
}

/// How the first attempt of a method fails.
#[derive(Debug, Clone, Copy)]
pub enum Failure {
    /// Answer this code, no metadata (what a reset stream looks like).
    Code(Code),
    /// Answer nothing for this long (longer than the client's call timeout).
    Hang(Duration),
}

#[derive(Debug, Default)]
pub struct State {
    pub id: u64,
    pub addr: String,
    /// Some(leader address): act as a follower and redirect there.
    pub redirect_to: Mutex<Option<String>>,
    pub seen: Mutex<Vec<Seen>>,
    pub fail_first: Mutex<HashMap<&'static str, Failure>>,
    pub next_session: AtomicU64,
    pub lost_sessions: Mutex<HashSet<u64>>,
    pub session_timeout_secs: u32,
}

impl State {
    pub fn seen(&self, method: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.method == method)
            .cloned()
            .collect()
    }
}

pub struct Fake {
    pub addr: String,
    pub state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address nothing listens on: connecting is refused. The port stays
/// bound (not listening) while this lives, so no fake started by a test
/// running in parallel can get it.
pub struct Dead {
    pub addr: String,
    _socket: tokio::net::TcpSocket,
}

pub fn dead() -> Dead {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    Dead {
        addr,
        _socket: socket,
    }
}

impl Fake {
    pub async fn start(id: u64, session_timeout_secs: u32) -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            id,
            addr: addr.to_string(),
            next_session: AtomicU64::new(1),
            session_timeout_secs,
            ..State::default()
        });
        let svc = Svc(Arc::clone(&state));
        let server = tonic::transport::Server::builder()
            .add_service(MetaServiceServer::new(svc.clone()))
            .add_service(AdminServiceServer::new(svc))
            .serve_with_incoming(TcpListenerStream::new(listener));
        let task = tokio::spawn(async move {
            let _ = server.await;
        });
        Fake {
            addr: addr.to_string(),
            state,
            task,
        }
    }

    pub fn redirect_to(&self, leader: Option<&str>) {
        *self.state.redirect_to.lock().unwrap() = leader.map(str::to_string);
    }

    pub fn fail_first(&self, method: &'static str, f: Failure) {
        self.state.fail_first.lock().unwrap().insert(method, f);
    }

    pub fn lose_session(&self, session: u64) {
        self.state.lost_sessions.lock().unwrap().insert(session);
    }
}

fn errno_status(code: Code, errno: i32, msg: &str) -> Status {
    let mut md = MetadataMap::new();
    md.insert(mfs_proto::ERRNO_KEY, errno.to_string().parse().unwrap());
    Status::with_metadata(code, msg, md)
}

#[derive(Clone)]
struct Svc(Arc<State>);

impl Svc {
    /// Records the request, then redirects or fails as scripted.
    async fn gate(&self, method: &'static str, id: Option<RequestId>) -> Result<(), Status> {
        self.0.seen.lock().unwrap().push(Seen { method, id });
        let redirect = self.0.redirect_to.lock().unwrap().clone();
        if let Some(leader) = redirect {
            let mut md = MetadataMap::new();
            md.insert(mfs_proto::LEADER_KEY, leader.parse().unwrap());
            return Err(Status::with_metadata(
                Code::Unavailable,
                "not the leader",
                md,
            ));
        }
        let failure = self.0.fail_first.lock().unwrap().remove(method);
        match failure {
            Some(Failure::Code(code)) => return Err(Status::new(code, "stream reset by fake")),
            Some(Failure::Hang(d)) => tokio::time::sleep(d).await,
            None => {}
        }
        if let Some(id) = id {
            if self.0.lost_sessions.lock().unwrap().contains(&id.session) {
                return Err(errno_status(
                    Code::FailedPrecondition,
                    116,
                    "unknown session",
                ));
            }
        }
        Ok(())
    }

    fn attr(&self, inode: u64) -> Attr {
        Attr {
            inode,
            r#type: FileType::Directory as i32,
            mode: 0o755,
            nlink: 2,
            ..Attr::default()
        }
    }
}

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl MetaService for Svc {
    async fn register_session(
        &self,
        _r: Request<RegisterSessionRequest>,
    ) -> R<RegisterSessionReply> {
        self.gate("RegisterSession", None).await?;
        let session = self.0.next_session.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(RegisterSessionReply {
            session,
            timeout_secs: self.0.session_timeout_secs,
            commits_attributes: false,
            ..Default::default()
        }))
    }

    async fn challenge(
        &self,
        _r: Request<mfs_proto::v1::ChallengeRequest>,
    ) -> R<mfs_proto::v1::ChallengeReply> {
        Err(Status::unimplemented("challenge"))
    }

    async fn heartbeat(&self, r: Request<HeartbeatRequest>) -> R<Empty> {
        let session = r.into_inner().session;
        self.gate("Heartbeat", None).await?;
        if self.0.lost_sessions.lock().unwrap().contains(&session) {
            return Err(errno_status(
                Code::FailedPrecondition,
                116,
                "unknown session",
            ));
        }
        Ok(Response::new(Empty {}))
    }

    async fn close_session(&self, r: Request<CloseSessionRequest>) -> R<Empty> {
        self.gate("CloseSession", r.into_inner().id).await?;
        Ok(Response::new(Empty {}))
    }

    async fn lookup(&self, _r: Request<LookupRequest>) -> R<EntryReply> {
        self.gate("Lookup", None).await?;
        Err(errno_status(Code::NotFound, 2, "no such entry"))
    }

    async fn get_attr(&self, r: Request<GetAttrRequest>) -> R<AttrReply> {
        self.gate("GetAttr", None).await?;
        Ok(Response::new(AttrReply {
            attr: Some(self.attr(r.into_inner().inode)),
        }))
    }

    async fn mkdir(&self, r: Request<MkdirRequest>) -> R<EntryReply> {
        self.gate("Mkdir", r.into_inner().id).await?;
        Ok(Response::new(EntryReply {
            attr: Some(self.attr(100)),
        }))
    }

    async fn create(&self, r: Request<CreateRequest>) -> R<EntryReply> {
        self.gate("Create", r.into_inner().id).await?;
        Ok(Response::new(EntryReply {
            attr: Some(self.attr(101)),
        }))
    }

    async fn unlink(&self, r: Request<UnlinkRequest>) -> R<Empty> {
        self.gate("Unlink", r.into_inner().id).await?;
        Ok(Response::new(Empty {}))
    }

    async fn set_attr(&self, _r: Request<SetAttrRequest>) -> R<AttrReply> {
        Err(Status::unimplemented("set_attr"))
    }

    async fn mknod(&self, _r: Request<MknodRequest>) -> R<EntryReply> {
        Err(Status::unimplemented("mknod"))
    }

    async fn open(&self, _r: Request<OpenRequest>) -> R<OpenReply> {
        Err(Status::unimplemented("open"))
    }

    async fn assert_opens(&self, _r: Request<mfs_proto::v1::AssertOpensRequest>) -> R<Empty> {
        Err(Status::unimplemented("assert_opens"))
    }
    async fn release(&self, _r: Request<ReleaseRequest>) -> R<Empty> {
        Err(Status::unimplemented("release"))
    }

    async fn rmdir(&self, _r: Request<RmdirRequest>) -> R<Empty> {
        Err(Status::unimplemented("rmdir"))
    }

    async fn rename(&self, _r: Request<RenameRequest>) -> R<Empty> {
        Err(Status::unimplemented("rename"))
    }

    async fn link(&self, _r: Request<LinkRequest>) -> R<EntryReply> {
        Err(Status::unimplemented("link"))
    }

    async fn symlink(&self, _r: Request<SymlinkRequest>) -> R<EntryReply> {
        Err(Status::unimplemented("symlink"))
    }

    async fn readlink(&self, _r: Request<ReadlinkRequest>) -> R<ReadlinkReply> {
        Err(Status::unimplemented("readlink"))
    }

    async fn readdir(&self, _r: Request<ReaddirRequest>) -> R<ReaddirReply> {
        Err(Status::unimplemented("readdir"))
    }

    async fn statfs(&self, _r: Request<StatfsRequest>) -> R<StatfsReply> {
        Err(Status::unimplemented("statfs"))
    }

    async fn get_xattr(&self, _r: Request<GetXattrRequest>) -> R<GetXattrReply> {
        Err(Status::unimplemented("get_xattr"))
    }

    async fn set_xattr(&self, _r: Request<SetXattrRequest>) -> R<Empty> {
        Err(Status::unimplemented("set_xattr"))
    }

    async fn list_xattr(&self, _r: Request<ListXattrRequest>) -> R<ListXattrReply> {
        Err(Status::unimplemented("list_xattr"))
    }

    async fn remove_xattr(&self, _r: Request<RemoveXattrRequest>) -> R<Empty> {
        Err(Status::unimplemented("remove_xattr"))
    }

    // The data path is tested against its own fakes (mount/src/io/tests).
    async fn read_chunk(&self, _r: Request<ReadChunkRequest>) -> R<ChunkLocation> {
        Err(Status::unimplemented("read_chunk"))
    }

    async fn write_chunk(&self, _r: Request<WriteChunkRequest>) -> R<ChunkLocation> {
        Err(Status::unimplemented("write_chunk"))
    }

    async fn write_chunk_end(&self, _r: Request<WriteChunkEndRequest>) -> R<AttrReply> {
        Err(Status::unimplemented("write_chunk_end"))
    }

    async fn set_goal(&self, _r: Request<SetGoalRequest>) -> R<SetTreeReply> {
        Err(Status::unimplemented("set_goal"))
    }

    async fn set_trash_time(&self, _r: Request<SetTrashTimeRequest>) -> R<SetTreeReply> {
        Err(Status::unimplemented("set_trash_time"))
    }

    async fn set_eattr(&self, _r: Request<mfs_proto::v1::SetEattrRequest>) -> R<SetTreeReply> {
        Err(Status::unimplemented("set_eattr"))
    }
    async fn snapshot(
        &self,
        _r: Request<mfs_proto::v1::SnapshotRequest>,
    ) -> R<mfs_proto::v1::EntryReply> {
        Err(Status::unimplemented("snapshot"))
    }

    async fn set_lock(&self, _r: Request<mfs_proto::v1::SetLockRequest>) -> R<Empty> {
        Err(Status::unimplemented("set_lock"))
    }

    async fn get_lock(
        &self,
        _r: Request<mfs_proto::v1::GetLockRequest>,
    ) -> R<mfs_proto::v1::GetLockReply> {
        Err(Status::unimplemented("get_lock"))
    }
    async fn list_removed(&self, _r: Request<ListRemovedRequest>) -> R<ListRemovedReply> {
        Err(Status::unimplemented("trash"))
    }
    async fn trash_delete(&self, _r: Request<TrashFileRequest>) -> R<Empty> {
        Err(Status::unimplemented("trash"))
    }
    async fn undelete(&self, _r: Request<TrashFileRequest>) -> R<AttrReply> {
        Err(Status::unimplemented("trash"))
    }
    async fn set_trash_path(&self, _r: Request<SetTrashPathRequest>) -> R<Empty> {
        Err(Status::unimplemented("trash"))
    }
    async fn set_quota(&self, _r: Request<SetQuotaRequest>) -> R<QuotaReply> {
        Err(Status::unimplemented("quota"))
    }
    async fn get_quota(&self, _r: Request<GetQuotaRequest>) -> R<QuotaReply> {
        Err(Status::unimplemented("quota"))
    }
    async fn list_quotas(&self, _r: Request<ListQuotasRequest>) -> R<ListQuotasReply> {
        Err(Status::unimplemented("quota"))
    }
    async fn access(&self, _r: Request<AccessRequest>) -> R<Empty> {
        Err(Status::unimplemented("access"))
    }
    async fn punch_chunks(&self, _r: Request<PunchChunksRequest>) -> R<AttrReply> {
        Err(Status::unimplemented("punch"))
    }
    async fn dir_info(&self, _r: Request<DirInfoRequest>) -> R<DirInfoReply> {
        Err(Status::unimplemented("dirinfo"))
    }

    async fn delegate(
        &self,
        _r: Request<mfs_proto::v1::DelegateRequest>,
    ) -> R<mfs_proto::v1::DelegateReply> {
        Err(Status::unimplemented("delegate"))
    }

    async fn return_delegation(
        &self,
        _r: Request<mfs_proto::v1::ReturnDelegationRequest>,
    ) -> R<mfs_proto::v1::Empty> {
        Err(Status::unimplemented("return_delegation"))
    }

    async fn hold_chunks(
        &self,
        _r: Request<mfs_proto::v1::HoldChunksRequest>,
    ) -> R<mfs_proto::v1::HoldChunksReply> {
        Err(Status::unimplemented("hold_chunks"))
    }

    async fn batch(
        &self,
        _r: Request<mfs_proto::v1::BatchRequest>,
    ) -> R<mfs_proto::v1::BatchReply> {
        Err(Status::unimplemented("batch"))
    }

    type RecallsStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<mfs_proto::v1::Recall, Status>> + Send + 'static>,
    >;

    async fn recalls(&self, _r: Request<mfs_proto::v1::RecallsRequest>) -> R<Self::RecallsStream> {
        Err(Status::unimplemented("recalls"))
    }
}

#[tonic::async_trait]
impl AdminService for Svc {
    async fn node_status(&self, _r: Request<Empty>) -> R<NodeStatusReply> {
        let follower = self.0.redirect_to.lock().unwrap().is_some();
        Ok(Response::new(NodeStatusReply {
            id: self.0.id,
            address: self.0.addr.clone(),
            role: if follower {
                Role::Follower
            } else {
                Role::Leader
            } as i32,
            term: 7,
            last_log_index: 40,
            commit_index: 40,
            applied_index: 39,
            cluster_id: "fake".into(),
            ..NodeStatusReply::default()
        }))
    }

    async fn cluster_info(&self, _r: Request<Empty>) -> R<ClusterInfoReply> {
        self.gate("ClusterInfo", None).await?;
        Ok(Response::new(ClusterInfoReply {
            leader_id: self.0.id,
            term: 7,
            commit_index: 40,
            members: vec![
                MemberInfo {
                    id: self.0.id,
                    address: self.0.addr.clone(),
                    voter: true,
                    matched_index: 40,
                },
                MemberInfo {
                    id: 50,
                    address: "127.0.0.1:1".into(),
                    voter: false,
                    matched_index: 38,
                },
            ],
            chunkservers: vec![ChunkserverInfo {
                id: 1,
                address: "127.0.0.1:9422".into(),
                state: "ok".into(),
                total_bytes: 1 << 30,
                used_bytes: 1 << 20,
                chunks: 3,
                disks: 1,
                ..ChunkserverInfo::default()
            }],
            chunk_health: Some(ChunkHealth {
                chunks: 3,
                undergoal: 1,
                ..ChunkHealth::default()
            }),
            sessions: vec![SessionInfo::default()],
            cluster_id: "fake".into(),
            inodes: 5,
            trash_files: 2,
            trash_bytes: 4096,
            sustained_files: 1,
        }))
    }

    async fn add_master(&self, r: Request<AddMasterRequest>) -> R<MembershipReply> {
        self.gate("AddMaster", None).await?;
        Ok(Response::new(MembershipReply {
            voters: vec![self.0.id, r.into_inner().id],
            learners: vec![],
        }))
    }

    async fn remove_master(&self, _r: Request<RemoveMasterRequest>) -> R<MembershipReply> {
        Err(errno_status(
            Code::FailedPrecondition,
            16,
            "cannot remove the last voter",
        ))
    }

    async fn add_learner(&self, _r: Request<AddMasterRequest>) -> R<MembershipReply> {
        Err(Status::unimplemented("add_learner"))
    }

    async fn promote_learner(&self, _r: Request<RemoveMasterRequest>) -> R<MembershipReply> {
        Err(Status::unimplemented("promote_learner"))
    }

    async fn trigger_snapshot(&self, _r: Request<Empty>) -> R<Empty> {
        self.gate("TriggerSnapshot", None).await?;
        Ok(Response::new(Empty {}))
    }
}
