//! Orders to chunkservers: one cached gRPC channel per address, a time
//! limit on every call.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mfs_common::silence::Silence;
use mfs_proto::v1 as pb;
use mfs_proto::v1::chunk_service_client::ChunkServiceClient;
use mfs_proto::ClusterSecret;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::Code;

use crate::fsm::ChunkId;

/// Largest message either way (a chunk read or write piece is at most 16 MiB).
const MAX_MESSAGE: usize = 20 << 20;
/// Time limit of quick orders (create, delete, set version, truncate).
const ORDER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time limit of a replication (a whole chunk crosses the network).
const REPLICATE_TIMEOUT: Duration = Duration::from_secs(120);

/// A chunkserver that left an order unanswered for this long (a ping's or a
/// connect's timeout: its machine went silent) gets no order for
/// [`SILENT_FOR`] (until heartbeats lose it): each would wait as long again, and a write's lease
/// renewal waits for all its orders.
const SILENT_AFTER: Duration = Duration::from_secs(1);
const SILENT_FOR: Duration = Duration::from_secs(30);

/// Why an order failed.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// The server does not hold the chunk (for a delete: done already).
    #[error("chunkserver {addr}: chunk {chunk} not found")]
    NotFound { addr: String, chunk: ChunkId },
    #[error("chunkserver {addr}: {msg}")]
    Failed { addr: String, msg: String },
}

/// The channels to chunkservers, and the cluster secret every order
/// carries (chunkservers refuse orders without it when they have one).
pub struct Orders {
    channels: Mutex<HashMap<String, Channel>>,
    /// Servers that left an order unanswered slowly ([`SILENT_AFTER`]).
    silent: Silence,
    secret: ClusterSecret,
}

type Client = ChunkServiceClient<InterceptedService<Channel, ClusterSecret>>;

impl Orders {
    pub fn new(secret: ClusterSecret) -> Orders {
        Orders {
            channels: Mutex::default(),
            silent: Silence::new(SILENT_FOR),
            secret,
        }
    }

    fn client(&self, addr: &str) -> Result<Client, OrderError> {
        let failed = |msg: String| OrderError::Failed {
            addr: addr.to_string(),
            msg,
        };
        let mut map = self
            .channels
            .lock()
            .map_err(|_| failed("channel cache poisoned".into()))?;
        let ch = match map.get(addr) {
            Some(ch) => ch.clone(),
            None => {
                let ep = mfs_proto::tls::endpoint(addr)
                    .map_err(|e| failed(format!("bad address: {e}")))?;
                // Pings: an order to a silent chunkserver fails in seconds,
                // not after the order's whole timeout.
                let ep = mfs_proto::watched(ep, true)
                    .connect_timeout(Duration::from_secs(3))
                    .tcp_nodelay(true);
                let ch = ep.connect_lazy();
                map.insert(addr.to_string(), ch.clone());
                ch
            }
        };
        Ok(
            ChunkServiceClient::with_interceptor(ch, self.secret.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
    }

    /// How long ago the chunkserver at `addr` left an order unanswered
    /// slowly, if less than [`SILENT_FOR`] ago.
    pub fn silent_since(&self, addr: &str) -> Option<Duration> {
        self.silent.since(addr)
    }

    async fn call<F, Fut>(
        &self,
        addr: &str,
        chunk: ChunkId,
        limit: Duration,
        f: F,
    ) -> Result<(), OrderError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<pb::Empty>, tonic::Status>>,
    {
        if let Some(d) = self.silent_since(addr) {
            return Err(OrderError::Failed {
                addr: addr.to_string(),
                msg: format!("left an order unanswered {d:.1?} ago; not asked for {SILENT_FOR:?}"),
            });
        }
        let client = self.client(addr)?;
        let start = Instant::now();
        let r = tokio::time::timeout(limit, f(client)).await;
        let silent = match &r {
            Err(_) => true,
            Ok(Err(s)) => s.code() == Code::Unavailable && start.elapsed() >= SILENT_AFTER,
            Ok(Ok(_)) => false,
        };
        if silent {
            self.silent.note(addr, true);
        }
        match r {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(s)) if s.code() == Code::NotFound => Err(OrderError::NotFound {
                addr: addr.to_string(),
                chunk,
            }),
            Ok(Err(s)) => Err(OrderError::Failed {
                addr: addr.to_string(),
                msg: format!("{:?}: {}", s.code(), s.message()),
            }),
            Err(_) => Err(OrderError::Failed {
                addr: addr.to_string(),
                msg: format!("no answer within {limit:?}"),
            }),
        }
    }

    /// Creates an empty chunk at `version`.
    pub async fn create(&self, addr: &str, chunk: ChunkId, version: u32) -> Result<(), OrderError> {
        let o = order(chunk, version);
        self.call(addr, chunk, ORDER_TIMEOUT, |mut c| async move {
            c.create_chunk(o).await
        })
        .await
    }

    /// Deletes the copy at `version` (0: any); a copy already gone is success.
    pub async fn delete(&self, addr: &str, chunk: ChunkId, version: u32) -> Result<(), OrderError> {
        let o = order(chunk, version);
        let r = self
            .call(addr, chunk, ORDER_TIMEOUT, |mut c| async move {
                c.delete_chunk(o).await
            })
            .await;
        match r {
            Err(OrderError::NotFound { .. }) => Ok(()),
            other => other,
        }
    }

    /// Changes the copy's version from `from` to `to`.
    pub async fn set_version(
        &self,
        addr: &str,
        chunk: ChunkId,
        from: u32,
        to: u32,
    ) -> Result<(), OrderError> {
        let mut o = order(chunk, from);
        o.new_version = to;
        self.call(addr, chunk, ORDER_TIMEOUT, |mut c| async move {
            c.set_version(o).await
        })
        .await
    }

    /// Cuts the copy to `length` bytes and gives it version `to`.
    pub async fn truncate(
        &self,
        addr: &str,
        chunk: ChunkId,
        from: u32,
        to: u32,
        length: u64,
    ) -> Result<(), OrderError> {
        let mut o = order(chunk, from);
        o.new_version = to;
        o.length = length;
        self.call(addr, chunk, ORDER_TIMEOUT, |mut c| async move {
            c.truncate(o).await
        })
        .await
    }

    /// Makes chunk `new` at `new_version` on `addr` from its copy of
    /// `chunk` at `version` (copy-on-write of a chunk shared by snapshots).
    pub async fn duplicate(
        &self,
        addr: &str,
        chunk: ChunkId,
        version: u32,
        new: ChunkId,
        new_version: u32,
    ) -> Result<(), OrderError> {
        let mut o = order(chunk, version);
        o.new_chunk_id = new.0;
        o.new_version = new_version;
        self.call(addr, chunk, REPLICATE_TIMEOUT, |mut c| async move {
            c.duplicate(o).await
        })
        .await
    }

    /// Copies the chunk at `version` to `addr` from one of `sources`.
    pub async fn replicate(
        &self,
        addr: &str,
        chunk: ChunkId,
        version: u32,
        sources: Vec<String>,
    ) -> Result<(), OrderError> {
        let mut o = order(chunk, version);
        o.sources = sources;
        self.call(addr, chunk, REPLICATE_TIMEOUT, |mut c| async move {
            c.replicate(o).await
        })
        .await
    }
}

fn order(chunk: ChunkId, version: u32) -> pb::ChunkOrder {
    pb::ChunkOrder {
        chunk_id: chunk.0,
        version,
        ..pb::ChunkOrder::default()
    }
}
