//! `mfs.v1.ChunkService`: reads and writes from clients and peers, and the
//! leader's orders. File I/O runs on the blocking pool; writes go to the
//! local disk and down the chain at the same time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mfs_proto::v1 as pb;
use mfs_proto::v1::chunk_service_client::ChunkServiceClient;
use mfs_proto::v1::chunk_service_server::ChunkService;
use mfs_proto::{ChunkAccess, ClusterSecret};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::error::ChunkError;
use crate::store::{check_ranges, Store};

/// Largest gRPC message accepted or sent (requests carry up to 16 MiB).
pub const MAX_MESSAGE: usize = 24 << 20;
/// Piece size of a replication.
pub const REPLICATE_PIECE: u64 = 8 << 20;
/// HTTP/2 stream window (server and peer client): several 4-16 MiB
/// requests in flight on one stream never wait for a window update.
pub const STREAM_WINDOW: u32 = 32 << 20;
/// HTTP/2 connection window (server and peer client).
pub const CONNECTION_WINDOW: u32 = 64 << 20;
/// Largest HTTP/2 frame accepted (fewer frames per request).
pub const MAX_FRAME: u32 = 1 << 20;

/// A client of another chunkserver: its calls carry the cluster secret
/// (which stands for a client's chunk token between chunkservers).
pub type PeerClient = ChunkServiceClient<InterceptedService<Channel, ClusterSecret>>;

/// Connections to other chunkservers, by "host:port".
#[derive(Debug)]
pub struct Peers {
    clients: Mutex<HashMap<String, PeerClient>>,
    secret: ClusterSecret,
}

impl Peers {
    /// Connections whose calls carry `secret`.
    pub fn new(secret: ClusterSecret) -> Self {
        Peers {
            clients: Mutex::default(),
            secret,
        }
    }

    /// A client for the chunkserver at `addr` (connected lazily, reused).
    pub fn client(&self, addr: &str) -> Result<PeerClient, ChunkError> {
        let mut m = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = m.get(addr) {
            return Ok(c.clone());
        }
        let ep = mfs_proto::tls::endpoint(addr)
            .map_err(|e| ChunkError::Invalid(format!("chunkserver address `{addr}`: {e}")))?;
        // Pings: a write forwarded to a server that went silent fails in
        // seconds, so the client renews its lease on another chain.
        let ep = mfs_proto::watched(ep, true)
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            .max_frame_size(Some(MAX_FRAME))
            .initial_stream_window_size(Some(STREAM_WINDOW))
            .initial_connection_window_size(Some(CONNECTION_WINDOW));
        let c = ChunkServiceClient::with_interceptor(ep.connect_lazy(), self.secret.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        m.insert(addr.to_string(), c.clone());
        Ok(c)
    }
}

/// The service.
#[derive(Debug, Clone)]
pub struct ChunkSvc {
    store: Arc<Store>,
    peers: Arc<Peers>,
    /// Asked of the masters' orders (reads and writes are the clients').
    secret: ClusterSecret,
}

impl ChunkSvc {
    /// A service over `store`, taking orders that carry `secret`.
    pub fn new(store: Arc<Store>, secret: ClusterSecret) -> Self {
        ChunkSvc {
            store,
            peers: Arc::new(Peers::new(secret.clone())),
            secret,
        }
    }

    /// An order must carry the cluster secret, when this server has one.
    fn check_order<T>(&self, req: &Request<T>) -> Result<(), Status> {
        self.secret.check(
            req.metadata(),
            "chunk orders need this chunkserver's CLUSTER_SECRET (the masters' mfsmaster.cfg)",
        )
    }

    /// A client's read or write must show the master's token for it, when
    /// this server has a cluster secret; other chunkservers show the
    /// secret instead (forwarded writes, replication).
    fn check_access<T>(
        &self,
        req: &Request<T>,
        chunk_id: u64,
        version: u32,
        access: ChunkAccess,
        token: &[u8],
    ) -> Result<(), Status> {
        if !self.secret.is_set() || self.secret.check(req.metadata(), "").is_ok() {
            return Ok(());
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.secret
            .check_chunk_token(token, chunk_id, version, access, now)
            .map_err(|why| ChunkError::Token { id: chunk_id, why }.to_status())
    }

    /// The gRPC server for it, with the message size limits set.
    pub fn into_server(self) -> pb::chunk_service_server::ChunkServiceServer<ChunkSvc> {
        pb::chunk_service_server::ChunkServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }
}

/// Largest read tried from the page cache on the request's own task: a
/// copy and CRC of more would hold up the other requests of the thread.
const CACHED_READ_MAX: u64 = 256 << 10;

/// Largest write done on the request's own task: a small write is a copy
/// into the page cache (and, for a new chunk, a rename of a spare file),
/// shorter than the hop to the blocking pool and back that it would
/// otherwise wait for (a new 4 KiB chunk written here: 241 -> 162 µs in
/// the handler). Larger ones go to the pool.
const IN_PLACE_WRITE_MAX: usize = 64 << 10;

/// Runs blocking store work on the blocking pool.
async fn blocking<T: Send + 'static>(
    op: &'static str,
    f: impl FnOnce() -> Result<T, ChunkError> + Send + 'static,
) -> Result<T, Status> {
    let r = tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("{op}: worker failed: {e}")))?;
    counted(op, r)
}

/// Counts store work done (and failed) by `op`; its error as a status.
fn counted<T>(op: &'static str, r: Result<T, ChunkError>) -> Result<T, Status> {
    metrics::counter!("mfs_chunk_ops_total", "op" => op).increment(1);
    r.map_err(|e| {
        metrics::counter!("mfs_chunk_errors_total", "op" => op).increment(1);
        e.to_status()
    })
}

fn peer_err(addr: &str, s: Status) -> ChunkError {
    ChunkError::Peer {
        addr: addr.to_string(),
        status: Box::new(s),
    }
}

#[tonic::async_trait]
impl ChunkService for ChunkSvc {
    async fn read(
        &self,
        req: Request<pb::ChunkReadRequest>,
    ) -> Result<Response<pb::ChunkReadReply>, Status> {
        let r = req.get_ref();
        self.check_access(&req, r.chunk_id, r.version, ChunkAccess::Read, &r.token)?;
        let r = req.into_inner();
        // Served here when the page cache holds it (no hop to the blocking
        // pool and back); else read on the pool, which may wait for the disk.
        let cached = (u64::from(r.size) <= CACHED_READ_MAX)
            .then(|| {
                self.store
                    .read_cached(r.chunk_id, r.version, r.offset, r.size as u64)
            })
            .flatten();
        if let Some(data) = cached {
            metrics::counter!("mfs_chunk_ops_total", "op" => "read").increment(1);
            metrics::counter!("mfs_chunk_cached_reads_total").increment(1);
            return Ok(Response::new(pb::ChunkReadReply { data: data.into() }));
        }
        let store = self.store.clone();
        let data = blocking("read", move || {
            match store.read(r.chunk_id, r.version, r.offset, r.size as u64) {
                // Nothing was written here under the lease making it.
                Err(ChunkError::NotFound { .. }) if r.missing_is_hole => {
                    Ok(vec![0; r.size as usize])
                }
                other => other,
            }
        })
        .await?;
        // The buffer read into becomes the reply as it is (no copy).
        Ok(Response::new(pb::ChunkReadReply { data: data.into() }))
    }

    async fn write(
        &self,
        req: Request<pb::ChunkWriteRequest>,
    ) -> Result<Response<pb::ChunkWriteReply>, Status> {
        let r = req.get_ref();
        self.check_access(&req, r.chunk_id, r.version, ChunkAccess::Write, &r.token)?;
        let mut r = req.into_inner();
        check_ranges(&ranges(&r)).map_err(|e| e.to_status())?;
        let ranges = 1 + r.more.len() as u32;
        metrics::counter!("mfs_chunk_write_ranges_total").increment(u64::from(ranges));
        if r.chain.is_empty() {
            let length = write_here(&self.store, r).await?;
            return Ok(Response::new(pb::ChunkWriteReply { length, ranges }));
        }
        // Forward to chain[0] with the rest of the chain, while writing here.
        // `data` is a `Bytes` slice of the receive buffer: the forwarded
        // request and the local write share it (no copy).
        let next = r.chain.remove(0);
        let mut client = self.peers.client(&next).map_err(|e| e.to_status())?;
        let fwd = pb::ChunkWriteRequest {
            chunk_id: r.chunk_id,
            version: r.version,
            offset: r.offset,
            data: r.data.clone(),
            chain: std::mem::take(&mut r.chain),
            create: r.create,
            token: r.token.clone(),
            more: r.more.clone(),
        };
        let forward = async move { client.write(fwd).await };
        let (local, remote) = tokio::join!(write_here(&self.store, r), forward);
        let length = local?;
        let remote = remote.map_err(|s| peer_err(&next, s).to_status())?;
        // An older server down the chain wrote fewer (see the reply's doc).
        let ranges = ranges.min(remote.get_ref().ranges);
        Ok(Response::new(pb::ChunkWriteReply { length, ranges }))
    }

    async fn sync(
        &self,
        req: Request<pb::ChunkSyncRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let r = req.get_ref();
        // Making written data durable changes nothing: any token of the
        // chunk will do (a client may hold a read location by then).
        self.check_access(&req, r.chunk_id, r.version, ChunkAccess::Read, &r.token)?;
        let mut r = req.into_inner();
        let store = self.store.clone();
        let (id, v) = (r.chunk_id, r.version);
        let local = blocking("sync", move || store.sync(id, v));
        if r.chain.is_empty() {
            local.await?;
            return Ok(Response::new(pb::Empty {}));
        }
        let next = r.chain.remove(0);
        let mut client = self.peers.client(&next).map_err(|e| e.to_status())?;
        let fwd = pb::ChunkSyncRequest {
            chunk_id: id,
            version: v,
            chain: std::mem::take(&mut r.chain),
            token: std::mem::take(&mut r.token),
        };
        let (local, remote) = tokio::join!(local, async move { client.sync(fwd).await });
        local?;
        remote.map_err(|s| peer_err(&next, s).to_status())?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn create_chunk(
        &self,
        req: Request<pb::ChunkOrder>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.check_order(&req)?;
        let o = req.into_inner();
        let store = self.store.clone();
        blocking("create", move || store.create(o.chunk_id, o.version)).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn delete_chunk(
        &self,
        req: Request<pb::ChunkOrder>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.check_order(&req)?;
        let o = req.into_inner();
        let store = self.store.clone();
        blocking("delete", move || store.delete(o.chunk_id, o.version)).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn set_version(
        &self,
        req: Request<pb::ChunkOrder>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.check_order(&req)?;
        let o = req.into_inner();
        let store = self.store.clone();
        blocking("set_version", move || {
            store.set_version(o.chunk_id, o.version, o.new_version)
        })
        .await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn truncate(&self, req: Request<pb::ChunkOrder>) -> Result<Response<pb::Empty>, Status> {
        self.check_order(&req)?;
        let o = req.into_inner();
        let store = self.store.clone();
        blocking("truncate", move || {
            store.truncate(o.chunk_id, o.version, o.new_version, o.length)
        })
        .await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn replicate(&self, req: Request<pb::ChunkOrder>) -> Result<Response<pb::Empty>, Status> {
        self.check_order(&req)?;
        let o = req.into_inner();
        metrics::counter!("mfs_chunk_ops_total", "op" => "replicate").increment(1);
        replicate(&self.store, &self.peers, o.chunk_id, o.version, &o.sources)
            .await
            .map_err(|e| {
                metrics::counter!("mfs_chunk_errors_total", "op" => "replicate").increment(1);
                tracing::warn!(
                    "replicate chunk {:016X} version {:08X}: {e}",
                    o.chunk_id,
                    o.version
                );
                e.to_status()
            })?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn duplicate(&self, req: Request<pb::ChunkOrder>) -> Result<Response<pb::Empty>, Status> {
        self.check_order(&req)?;
        let o = req.into_inner();
        let store = self.store.clone();
        blocking("duplicate", move || {
            store.duplicate(o.chunk_id, o.version, o.new_chunk_id, o.new_version)
        })
        .await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn chunk_status(
        &self,
        req: Request<pb::ChunkStatusRequest>,
    ) -> Result<Response<pb::ChunkStatusReply>, Status> {
        let id = req.into_inner().chunk_id;
        let store = self.store.clone();
        let info = blocking("status", move || Ok(store.status(id))).await?;
        Ok(Response::new(match info {
            Some(i) => pb::ChunkStatusReply {
                present: true,
                version: i.version,
                length: i.length,
                path: i.path.display().to_string(),
            },
            None => pb::ChunkStatusReply::default(),
        }))
    }
}

/// Copies chunk (id, version) from the first of `sources` that has it:
/// pieces of 8 MiB through its Read into a temp file, checked, fsynced and
/// renamed in.
pub async fn replicate(
    store: &Arc<Store>,
    peers: &Peers,
    id: u64,
    version: u32,
    sources: &[String],
) -> Result<(), ChunkError> {
    if sources.is_empty() {
        return Err(ChunkError::Invalid("Replicate names no source".into()));
    }
    let mut last: Option<ChunkError> = None;
    for src in sources {
        match replicate_from(store, peers, id, version, src).await {
            Ok(()) => {
                tracing::info!("chunk {id:016X} version {version:08X} replicated from {src}");
                return Ok(());
            }
            Err(e) => {
                tracing::warn!("replicating chunk {id:016X} from {src}: {e}");
                match e {
                    // Our own disk's problem: another source will not help.
                    ChunkError::NoSpace(_) | ChunkError::Invalid(_) => return Err(e),
                    other => last = Some(other),
                }
            }
        }
    }
    Err(last.unwrap_or(ChunkError::NotFound { id }))
}

async fn replicate_from(
    store: &Arc<Store>,
    peers: &Peers,
    id: u64,
    version: u32,
    src: &str,
) -> Result<(), ChunkError> {
    let mut client = peers.client(src)?;
    let st = client
        .chunk_status(pb::ChunkStatusRequest { chunk_id: id })
        .await
        .map_err(|s| peer_err(src, s))?
        .into_inner();
    if !st.present {
        return Err(peer_err(src, ChunkError::NotFound { id }.to_status()));
    }
    if st.version != version {
        return Err(peer_err(
            src,
            ChunkError::Stale {
                id,
                have: st.version,
                want: version,
            }
            .to_status(),
        ));
    }
    let length = st.length;
    let s2 = store.clone();
    let Some(mut w) = blocking("replicate_begin", move || {
        s2.begin_replica(id, version, length)
    })
    .await
    .map_err(|s| status_to_local(id, s))?
    else {
        return Ok(());
    };
    let mut off = 0u64;
    while off < length {
        let size = (length - off).min(REPLICATE_PIECE);
        let data = client
            .read(pb::ChunkReadRequest {
                chunk_id: id,
                version,
                offset: off,
                size: size as u32,
                missing_is_hole: false,
                // The secret this server's peer calls carry stands for it.
                token: Vec::new(),
            })
            .await
            .map_err(|s| peer_err(src, s))?
            .into_inner()
            .data;
        if data.len() as u64 != size {
            return Err(peer_err(
                src,
                Status::data_loss(format!("Read returned {} bytes, {size} asked", data.len())),
            ));
        }
        let (w2, r) = tokio::task::spawn_blocking(move || {
            let r = w.write(off, &data);
            (w, r)
        })
        .await
        .map_err(|e| ChunkError::io("replication worker", std::io::Error::other(e.to_string())))?;
        w = w2;
        r?;
        off += size;
    }
    let s2 = store.clone();
    blocking("replicate_finish", move || {
        w.set_length(length)?;
        s2.finish_replica(w)
    })
    .await
    .map_err(|s| status_to_local(id, s))
}

/// The local part of a Write: with `create`, the copy is made first when
/// this server lacks it. A small one is done in place (see
/// [`IN_PLACE_WRITE_MAX`]) when nothing in it may wait for the disk: a
/// new chunk made from a spare file (no inode search), and the write as
/// `Store::write_if_free` takes it (the file open, the chunk not held by
/// another write or a sync, no block read first).
async fn write_here(store: &Arc<Store>, r: pb::ChunkWriteRequest) -> Result<u64, Status> {
    let mut r = r;
    let bytes = r.data.len() + r.more.iter().map(|m| m.data.len()).sum::<usize>();
    if bytes <= IN_PLACE_WRITE_MAX && (!r.create || store.has_spares()) {
        if r.create {
            if let Err(e) = store.create_missing(r.chunk_id, r.version) {
                return counted("write", Err(e));
            }
            r.create = false;
        }
        if let Some(done) = store.write_if_free(r.chunk_id, r.version, &ranges(&r)) {
            return counted("write", done);
        }
    }
    let store = store.clone();
    blocking("write", move || {
        if r.create {
            store.create_missing(r.chunk_id, r.version)?;
        }
        store.write_ranges(r.chunk_id, r.version, &ranges(&r))
    })
    .await
}

/// A Write's ranges, first to last.
fn ranges(r: &pb::ChunkWriteRequest) -> Vec<(u64, &[u8])> {
    let first = (r.offset, &r.data[..]);
    std::iter::once(first)
        .chain(r.more.iter().map(|m| (m.offset, &m.data[..])))
        .collect()
}

/// A status from our own store, back into an error (for the source loop).
fn status_to_local(id: u64, s: Status) -> ChunkError {
    match s.code() {
        tonic::Code::ResourceExhausted => ChunkError::NoSpace(s.message().to_string()),
        tonic::Code::InvalidArgument => ChunkError::Invalid(s.message().to_string()),
        tonic::Code::NotFound => ChunkError::NotFound { id },
        _ => ChunkError::io(
            "storing the replica",
            std::io::Error::other(s.message().to_string()),
        ),
    }
}
