//! In-process fakes for the data path: a master answering the session and
//! chunk calls of MetaService, and chunkservers keeping chunks in memory,
//! forwarding writes along the chain for real. Each can be told to fail.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mfs_proto::v1::chunk_service_client::ChunkServiceClient;
use mfs_proto::v1::chunk_service_server::{ChunkService, ChunkServiceServer};
use mfs_proto::v1::meta_service_server::{MetaService, MetaServiceServer};
use mfs_proto::v1::*;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status};

type R<T> = Result<Response<T>, Status>;

fn errno_status(code: Code, errno: i32, msg: &str) -> Status {
    let mut md = MetadataMap::new();
    if let Ok(v) = errno.to_string().parse() {
        md.insert(mfs_proto::ERRNO_KEY, v);
    }
    Status::with_metadata(code, msg, md)
}

fn un<T>() -> R<T> {
    Err(Status::unimplemented("not in the fake"))
}

fn lk<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts a tonic server on 127.0.0.1:0; returns its address. The server
/// stops when the returned task handle is aborted.
async fn serve(router: tonic::transport::server::Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => panic!("bind: {e}"),
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let task = tokio::spawn(async move {
        let _ = router
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    (addr, task)
}

// ---------------------------------------------------------------- chunkserver

/// How a fake chunkserver misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ok,
    /// Reads fail with DATA_LOSS + EIO (a bad copy).
    BadReads,
    /// Every call fails with UNAVAILABLE (as if down).
    Down,
}

#[derive(Debug)]
pub struct CsState {
    pub addr: Mutex<String>,
    /// chunk id -> (version, data).
    pub chunks: Mutex<HashMap<u64, (u32, Vec<u8>)>>,
    pub mode: Mutex<Mode>,
    pub reads: AtomicU64,
    /// Ranges written (a request may carry several).
    pub writes: AtomicU64,
    /// Write requests.
    pub write_requests: AtomicU64,
    /// Answers as a server older than `ChunkWriteRequest.more`: writes the
    /// first range only, and says no count of ranges.
    pub ignores_more: AtomicBool,
    pub syncs: AtomicU64,
    /// Writes and syncs it passed on along their chain.
    pub forwarded: AtomicU64,
}

impl CsState {
    pub fn mode(&self, m: Mode) {
        *lk(&self.mode) = m;
    }

    pub fn data(&self, chunk_id: u64) -> Option<(u32, Vec<u8>)> {
        lk(&self.chunks).get(&chunk_id).cloned()
    }

    fn check(&self, chunk_id: u64, version: u32) -> Result<(), Status> {
        if *lk(&self.mode) == Mode::Down {
            return Err(Status::unavailable("fake chunkserver is down"));
        }
        match lk(&self.chunks).get(&chunk_id) {
            None => Err(errno_status(Code::NotFound, 2, "no such chunk")),
            Some((v, _)) if *v != version => Err(errno_status(
                Code::FailedPrecondition,
                116,
                &format!("version {v} here, {version} asked"),
            )),
            Some(_) => Ok(()),
        }
    }
}

#[derive(Clone)]
struct Cs(Arc<CsState>);

#[tonic::async_trait]
impl ChunkService for Cs {
    async fn read(&self, r: Request<ChunkReadRequest>) -> R<ChunkReadReply> {
        let r = r.into_inner();
        self.0.reads.fetch_add(1, Ordering::SeqCst);
        self.0.check(r.chunk_id, r.version)?;
        if *lk(&self.0.mode) == Mode::BadReads {
            return Err(errno_status(Code::DataLoss, 5, "bad block CRC"));
        }
        let chunks = lk(&self.0.chunks);
        let data = chunks.get(&r.chunk_id).map(|c| &c.1[..]).unwrap_or(&[]);
        let (start, size) = (r.offset as usize, r.size as usize);
        let mut out = vec![0u8; size];
        if start < data.len() {
            let n = (data.len() - start).min(size);
            out[..n].copy_from_slice(&data[start..start + n]);
        }
        Ok(Response::new(ChunkReadReply { data: out.into() }))
    }

    async fn write(&self, r: Request<ChunkWriteRequest>) -> R<ChunkWriteReply> {
        let mut r = r.into_inner();
        self.0.write_requests.fetch_add(1, Ordering::SeqCst);
        self.0.check(r.chunk_id, r.version)?;
        let length = {
            let mut chunks = lk(&self.0.chunks);
            let data = &mut chunks.entry(r.chunk_id).or_default().1;
            let first = (r.offset, &r.data);
            // A server older than `more` knows nothing of it.
            let old = self.0.ignores_more.load(Ordering::SeqCst);
            let more = r.more.iter().filter(|_| !old).map(|m| (m.offset, &m.data));
            for (offset, bytes) in std::iter::once(first).chain(more) {
                self.0.writes.fetch_add(1, Ordering::SeqCst);
                let end = offset as usize + bytes.len();
                if data.len() < end {
                    data.resize(end, 0);
                }
                data[offset as usize..end].copy_from_slice(bytes);
            }
            data.len() as u64
        };
        if !r.chain.is_empty() {
            self.0.forwarded.fetch_add(1, Ordering::SeqCst);
            let next = r.chain.remove(0);
            let mut c = ChunkServiceClient::connect(format!("http://{next}"))
                .await
                .map_err(|e| Status::unavailable(format!("forward to {next}: {e}")))?;
            c.write(r.clone()).await?;
        }
        let ranges = match self.0.ignores_more.load(Ordering::SeqCst) {
            true => 0,
            false => 1 + r.more.len() as u32,
        };
        Ok(Response::new(ChunkWriteReply { length, ranges }))
    }

    async fn sync(&self, r: Request<ChunkSyncRequest>) -> R<Empty> {
        let mut r = r.into_inner();
        self.0.syncs.fetch_add(1, Ordering::SeqCst);
        self.0.check(r.chunk_id, r.version)?;
        if !r.chain.is_empty() {
            self.0.forwarded.fetch_add(1, Ordering::SeqCst);
            let next = r.chain.remove(0);
            let mut c = ChunkServiceClient::connect(format!("http://{next}"))
                .await
                .map_err(|e| Status::unavailable(format!("forward to {next}: {e}")))?;
            c.sync(r).await?;
        }
        Ok(Response::new(Empty {}))
    }

    async fn create_chunk(&self, _r: Request<ChunkOrder>) -> R<Empty> {
        un()
    }
    async fn delete_chunk(&self, _r: Request<ChunkOrder>) -> R<Empty> {
        un()
    }
    async fn set_version(&self, _r: Request<ChunkOrder>) -> R<Empty> {
        un()
    }
    async fn truncate(&self, _r: Request<ChunkOrder>) -> R<Empty> {
        un()
    }
    async fn replicate(&self, _r: Request<ChunkOrder>) -> R<Empty> {
        un()
    }
    async fn duplicate(&self, _r: Request<ChunkOrder>) -> R<Empty> {
        un()
    }
    async fn chunk_status(&self, _r: Request<ChunkStatusRequest>) -> R<ChunkStatusReply> {
        un()
    }
}

pub struct FakeCs {
    pub state: Arc<CsState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeCs {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeCs {
    pub async fn start() -> FakeCs {
        let state = Arc::new(CsState {
            addr: Mutex::new(String::new()),
            chunks: Mutex::new(HashMap::new()),
            mode: Mutex::new(Mode::Ok),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            write_requests: AtomicU64::new(0),
            ignores_more: AtomicBool::new(false),
            syncs: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
        });
        let svc = ChunkServiceServer::new(Cs(Arc::clone(&state)))
            .max_decoding_message_size(20 << 20)
            .max_encoding_message_size(20 << 20);
        let (addr, task) = serve(tonic::transport::Server::builder().add_service(svc)).await;
        *lk(&state.addr) = addr;
        FakeCs { state, task }
    }
}

// ---------------------------------------------------------------- master

/// One chunk as the fake master knows it.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub id: u64,
    pub version: u32,
    /// Indexes into the master's chunkserver list holding the current
    /// version.
    pub copies: Vec<usize>,
}

pub struct MasterState {
    pub servers: Vec<Arc<CsState>>,
    /// Copies per new chunk.
    pub goal: usize,
    /// (inode, index) -> chunk.
    pub chunks: Mutex<HashMap<(u64, u32), Chunk>>,
    pub lengths: Mutex<HashMap<u64, u64>>,
    next_chunk: AtomicU64,
    /// WriteChunk answers EAGAIN this many more times.
    pub eagain: AtomicU32,
    /// The quota room WriteChunk gives (`None`: no quota).
    pub quota_room: Mutex<Option<u64>>,
    pub read_chunk_calls: AtomicU64,
    /// ReadChunk says another session holds the write lease.
    pub others_writing: AtomicBool,
    /// Every WriteChunk request seen (retries included).
    pub write_chunk_calls: Mutex<Vec<WriteChunkRequest>>,
    pub write_chunk_end_calls: Mutex<Vec<WriteChunkEndRequest>>,
    pub set_attr_calls: Mutex<Vec<SetAttrRequest>>,
}

impl MasterState {
    fn addr(&self, i: usize) -> ChunkServerAddr {
        ChunkServerAddr {
            id: i as u64 + 1,
            address: lk(&self.servers[i].addr).clone(),
        }
    }

    fn location(&self, inode: u64, c: &Chunk) -> ChunkLocation {
        ChunkLocation {
            chunk_id: c.id,
            version: c.version,
            file_length: lk(&self.lengths).get(&inode).copied().unwrap_or(0),
            servers: c.copies.iter().map(|&i| self.addr(i)).collect(),
            lease_secs: 10,
            quota_room: *lk(&self.quota_room),
            written_by_others: self.others_writing.load(Ordering::SeqCst),
            create: false,
            token: Vec::new(),
        }
    }

    /// Gives chunk (inode, index) a new version on the copies listed, as
    /// the real master does with SetVersion orders; creates it if needed.
    pub fn set_version(&self, inode: u64, index: u32, copies: Vec<usize>) -> Chunk {
        let mut chunks = lk(&self.chunks);
        let c = chunks.entry((inode, index)).or_insert_with(|| Chunk {
            id: self.next_chunk.fetch_add(1, Ordering::SeqCst),
            version: 0,
            copies: copies.clone(),
        });
        c.version += 1;
        c.copies = copies;
        for &i in &c.copies {
            let mut data = lk(&self.servers[i].chunks);
            data.entry(c.id).or_insert((0, Vec::new())).0 = c.version;
        }
        c.clone()
    }

    pub fn write_chunk_calls(&self) -> Vec<WriteChunkRequest> {
        lk(&self.write_chunk_calls).clone()
    }

    pub fn write_chunk_end_calls(&self) -> Vec<WriteChunkEndRequest> {
        lk(&self.write_chunk_end_calls).clone()
    }

    pub fn set_attr_calls(&self) -> Vec<SetAttrRequest> {
        lk(&self.set_attr_calls).clone()
    }
}

#[derive(Clone)]
struct Meta(Arc<MasterState>);

#[tonic::async_trait]
impl MetaService for Meta {
    async fn register_session(
        &self,
        _r: Request<RegisterSessionRequest>,
    ) -> R<RegisterSessionReply> {
        Ok(Response::new(RegisterSessionReply {
            session: 7,
            timeout_secs: 60,
            commits_attributes: true,
            ..Default::default()
        }))
    }
    async fn challenge(
        &self,
        _r: Request<mfs_proto::v1::ChallengeRequest>,
    ) -> R<mfs_proto::v1::ChallengeReply> {
        Err(Status::unimplemented("challenge"))
    }

    async fn heartbeat(&self, _r: Request<HeartbeatRequest>) -> R<Empty> {
        Ok(Response::new(Empty {}))
    }
    async fn close_session(&self, _r: Request<CloseSessionRequest>) -> R<Empty> {
        Ok(Response::new(Empty {}))
    }

    async fn read_chunk(&self, r: Request<ReadChunkRequest>) -> R<ChunkLocation> {
        let r = r.into_inner();
        let m = &self.0;
        m.read_chunk_calls.fetch_add(1, Ordering::SeqCst);
        let chunk = lk(&m.chunks).get(&(r.inode, r.index)).cloned();
        Ok(Response::new(match chunk {
            Some(c) => m.location(r.inode, &c),
            None => ChunkLocation {
                file_length: lk(&m.lengths).get(&r.inode).copied().unwrap_or(0),
                ..ChunkLocation::default()
            },
        }))
    }

    async fn write_chunk(&self, r: Request<WriteChunkRequest>) -> R<ChunkLocation> {
        let r = r.into_inner();
        let m = &self.0;
        lk(&m.write_chunk_calls).push(r.clone());
        if m.eagain
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(errno_status(
                Code::FailedPrecondition,
                11,
                "lease held by session 8",
            ));
        }
        let existing = lk(&m.chunks).get(&(r.inode, r.index)).cloned();
        // New chunk: the first `goal` servers. Renew: the copies whose
        // server still answers (the real master drops the dead ones).
        let copies: Vec<usize> = match existing {
            Some(c) if r.renew => c
                .copies
                .into_iter()
                .filter(|&i| *lk(&m.servers[i].mode) != Mode::Down)
                .collect(),
            Some(c) => c.copies,
            None => (0..m.goal.min(m.servers.len())).collect(),
        };
        let c = m.set_version(r.inode, r.index, copies);
        Ok(Response::new(m.location(r.inode, &c)))
    }

    async fn write_chunk_end(&self, r: Request<WriteChunkEndRequest>) -> R<AttrReply> {
        let r = r.into_inner();
        let m = &self.0;
        lk(&m.write_chunk_end_calls).push(r.clone());
        let mut lengths = lk(&m.lengths);
        let len = lengths.entry(r.inode).or_insert(0);
        *len = (*len).max(r.file_length);
        Ok(Response::new(AttrReply {
            attr: Some(Attr {
                inode: r.inode,
                size: *len,
                ..Attr::default()
            }),
        }))
    }

    async fn lookup(&self, _r: Request<LookupRequest>) -> R<EntryReply> {
        un()
    }
    async fn get_attr(&self, _r: Request<GetAttrRequest>) -> R<AttrReply> {
        un()
    }
    async fn set_attr(&self, r: Request<SetAttrRequest>) -> R<AttrReply> {
        let r = r.into_inner();
        let inode = r.inode;
        lk(&self.0.set_attr_calls).push(r);
        Ok(Response::new(AttrReply {
            attr: Some(Attr {
                inode,
                ..Attr::default()
            }),
        }))
    }
    async fn mkdir(&self, _r: Request<MkdirRequest>) -> R<EntryReply> {
        un()
    }
    async fn mknod(&self, _r: Request<MknodRequest>) -> R<EntryReply> {
        un()
    }
    async fn create(&self, _r: Request<CreateRequest>) -> R<EntryReply> {
        un()
    }
    async fn open(&self, _r: Request<OpenRequest>) -> R<OpenReply> {
        un()
    }
    async fn assert_opens(&self, _r: Request<mfs_proto::v1::AssertOpensRequest>) -> R<Empty> {
        Err(Status::unimplemented("assert_opens"))
    }

    async fn release(&self, _r: Request<ReleaseRequest>) -> R<Empty> {
        un()
    }
    async fn unlink(&self, _r: Request<UnlinkRequest>) -> R<Empty> {
        un()
    }
    async fn rmdir(&self, _r: Request<RmdirRequest>) -> R<Empty> {
        un()
    }
    async fn rename(&self, _r: Request<RenameRequest>) -> R<Empty> {
        un()
    }
    async fn link(&self, _r: Request<LinkRequest>) -> R<EntryReply> {
        un()
    }
    async fn symlink(&self, _r: Request<SymlinkRequest>) -> R<EntryReply> {
        un()
    }
    async fn readlink(&self, _r: Request<ReadlinkRequest>) -> R<ReadlinkReply> {
        un()
    }
    async fn readdir(&self, _r: Request<ReaddirRequest>) -> R<ReaddirReply> {
        un()
    }
    async fn statfs(&self, _r: Request<StatfsRequest>) -> R<StatfsReply> {
        un()
    }
    async fn get_xattr(&self, _r: Request<GetXattrRequest>) -> R<GetXattrReply> {
        un()
    }
    async fn set_xattr(&self, _r: Request<SetXattrRequest>) -> R<Empty> {
        un()
    }
    async fn list_xattr(&self, _r: Request<ListXattrRequest>) -> R<ListXattrReply> {
        un()
    }
    async fn remove_xattr(&self, _r: Request<RemoveXattrRequest>) -> R<Empty> {
        un()
    }
    async fn set_goal(&self, _r: Request<SetGoalRequest>) -> R<SetTreeReply> {
        un()
    }
    async fn set_trash_time(&self, _r: Request<SetTrashTimeRequest>) -> R<SetTreeReply> {
        un()
    }
    async fn set_eattr(&self, _r: Request<mfs_proto::v1::SetEattrRequest>) -> R<SetTreeReply> {
        un()
    }
    async fn snapshot(
        &self,
        _r: Request<mfs_proto::v1::SnapshotRequest>,
    ) -> R<mfs_proto::v1::EntryReply> {
        un()
    }
    async fn set_lock(&self, _r: Request<SetLockRequest>) -> R<Empty> {
        un()
    }
    async fn get_lock(&self, _r: Request<GetLockRequest>) -> R<GetLockReply> {
        un()
    }
    async fn list_removed(&self, _r: Request<ListRemovedRequest>) -> R<ListRemovedReply> {
        un()
    }
    async fn trash_delete(&self, _r: Request<TrashFileRequest>) -> R<Empty> {
        un()
    }
    async fn undelete(&self, _r: Request<TrashFileRequest>) -> R<AttrReply> {
        un()
    }
    async fn set_trash_path(&self, _r: Request<SetTrashPathRequest>) -> R<Empty> {
        un()
    }
    async fn set_quota(&self, _r: Request<SetQuotaRequest>) -> R<QuotaReply> {
        un()
    }
    async fn get_quota(&self, _r: Request<GetQuotaRequest>) -> R<QuotaReply> {
        un()
    }
    async fn list_quotas(&self, _r: Request<ListQuotasRequest>) -> R<ListQuotasReply> {
        un()
    }
    async fn access(&self, _r: Request<AccessRequest>) -> R<Empty> {
        un()
    }
    async fn punch_chunks(&self, _r: Request<PunchChunksRequest>) -> R<AttrReply> {
        un()
    }
    async fn dir_info(&self, _r: Request<DirInfoRequest>) -> R<DirInfoReply> {
        un()
    }

    async fn delegate(
        &self,
        _r: Request<mfs_proto::v1::DelegateRequest>,
    ) -> R<mfs_proto::v1::DelegateReply> {
        un()
    }

    async fn return_delegation(
        &self,
        _r: Request<mfs_proto::v1::ReturnDelegationRequest>,
    ) -> R<mfs_proto::v1::Empty> {
        un()
    }

    async fn hold_chunks(
        &self,
        _r: Request<mfs_proto::v1::HoldChunksRequest>,
    ) -> R<mfs_proto::v1::HoldChunksReply> {
        un()
    }

    /// Refuses every op: a create with EEXIST, anything else with EPERM.
    async fn batch(&self, r: Request<mfs_proto::v1::BatchRequest>) -> R<mfs_proto::v1::BatchReply> {
        use mfs_proto::v1::batch_op::Op;
        let errnos = r
            .get_ref()
            .ops
            .iter()
            .map(|o| match o.op {
                Some(Op::Create(_)) => libc::EEXIST,
                _ => libc::EPERM,
            })
            .collect();
        Ok(Response::new(mfs_proto::v1::BatchReply {
            errnos,
            leases: Default::default(),
        }))
    }

    type RecallsStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<mfs_proto::v1::Recall, Status>> + Send + 'static>,
    >;

    async fn recalls(&self, _r: Request<mfs_proto::v1::RecallsRequest>) -> R<Self::RecallsStream> {
        un()
    }
}

/// A fake master and `n` fake chunkservers.
pub struct FakeCluster {
    pub master_addr: String,
    pub master: Arc<MasterState>,
    pub chunkservers: Vec<FakeCs>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeCluster {
    pub async fn start(n: usize, goal: usize) -> FakeCluster {
        let mut chunkservers = Vec::new();
        for _ in 0..n {
            chunkservers.push(FakeCs::start().await);
        }
        let master = Arc::new(MasterState {
            servers: chunkservers.iter().map(|c| Arc::clone(&c.state)).collect(),
            goal,
            chunks: Mutex::new(HashMap::new()),
            lengths: Mutex::new(HashMap::new()),
            next_chunk: AtomicU64::new(0x100),
            eagain: AtomicU32::new(0),
            quota_room: Mutex::new(None),
            read_chunk_calls: AtomicU64::new(0),
            others_writing: AtomicBool::new(false),
            write_chunk_calls: Mutex::new(Vec::new()),
            write_chunk_end_calls: Mutex::new(Vec::new()),
            set_attr_calls: Mutex::new(Vec::new()),
        });
        let (master_addr, task) = serve(
            tonic::transport::Server::builder()
                .add_service(MetaServiceServer::new(Meta(Arc::clone(&master)))),
        )
        .await;
        FakeCluster {
            master_addr,
            master,
            chunkservers,
            task,
        }
    }

    pub fn cs(&self, i: usize) -> &CsState {
        &self.chunkservers[i].state
    }
}
