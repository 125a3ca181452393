//! Connections to chunkservers (one cached gRPC channel per address, tuned
//! for large messages) and the meaning of their errors.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use mfs_common::silence::Silence;

use mfs_proto::v1::chunk_service_client::ChunkServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::error::{errno, errno_of, status_text, ClientError};
use crate::inline::Generation;

/// Largest gRPC message sent to or accepted from a chunkserver: a piece of
/// at most 16 MiB (the chunkserver's limit) plus framing.
pub(crate) const MAX_MESSAGE_BYTES: usize = 20 << 20;

/// HTTP/2 flow-control windows: large enough that a 4 MiB piece is never
/// stalled waiting for a window update, on a stream or on the connection
/// with several pieces in flight.
const STREAM_WINDOW: u32 = 32 << 20;
const CONNECTION_WINDOW: u32 = 64 << 20;
/// HTTP/2 frame size the client accepts (fewer frames per piece).
const MAX_FRAME: u32 = 1 << 20;

/// What a failed chunkserver call means for the client.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// The copy has another version (ESTALE): ask the master again.
    Stale(String),
    /// This server has no copy (ENOENT), a bad copy (DATA_LOSS/EIO), or
    /// does not answer: try another copy, then ask the master again.
    Copy(String),
    /// An answer that retrying cannot change (ENOSPC, EINVAL, ...).
    Final(ClientError),
}

/// Sorts a chunkserver's error status (see `chunkserver.proto`).
pub(crate) fn classify(addr: &str, status: &Status) -> Failure {
    let text = format!("chunkserver {addr}: {}", status_text(status));
    match errno_of(status) {
        Some(errno::ESTALE) => return Failure::Stale(text),
        Some(errno::ENOENT) | Some(errno::EIO) => return Failure::Copy(text),
        Some(e) => return Failure::Final(ClientError::Errno(e, text)),
        None => {}
    }
    match status.code() {
        Code::FailedPrecondition => Failure::Stale(text),
        Code::NotFound
        | Code::DataLoss
        | Code::Unavailable
        | Code::Unknown
        | Code::Internal
        | Code::Aborted
        | Code::Cancelled
        | Code::DeadlineExceeded
        | Code::ResourceExhausted => Failure::Copy(text),
        Code::InvalidArgument => Failure::Final(ClientError::InvalidArgument(text)),
        code => Failure::Final(ClientError::Status {
            code,
            message: text,
        }),
    }
}

/// The channels to chunkservers, one per address, made on first use and
/// kept (tonic reconnects a channel by itself after a failure).
#[derive(Debug)]
pub(crate) struct Conns {
    channels: RwLock<HashMap<String, Channel>>,
    /// Per address: how many times the FUSE threads' own connections were
    /// found broken (see `crate::inline::Generation`).
    broken: RwLock<HashMap<String, Generation>>,
    /// Servers a call waited on for a ping's or a connect's timeout: reads
    /// ask them last for [`SILENT_FOR`].
    silent: Silence,
    /// Servers that answered a Write with several ranges having written
    /// the first only (older than `ChunkWriteRequest.more`): no batch is
    /// sent to them for [`OLD_FOR`] (then asked again: it may have been
    /// upgraded).
    old: Silence,
    connect_timeout: Duration,
}

/// How long a chunkserver older than batched writes gets none.
const OLD_FOR: Duration = Duration::from_secs(60);

/// How long a chunkserver that went silent is asked last: until the master
/// has taken it out of the locations it gives (30 s without a heartbeat).
pub(crate) const SILENT_FOR: Duration = Duration::from_secs(30);

impl Conns {
    pub(crate) fn new(connect_timeout: Duration) -> Self {
        Conns {
            channels: RwLock::new(HashMap::new()),
            broken: RwLock::new(HashMap::new()),
            silent: Silence::new(SILENT_FOR),
            old: Silence::new(OLD_FOR),
            connect_timeout,
        }
    }

    /// Notes that a call to `addr` failed slowly (it went silent), or,
    /// not `silent`, that it answered.
    pub(crate) fn note_silence(&self, addr: &str, silent: bool) {
        self.silent.note(addr, silent);
    }

    /// Notes that `addr` wrote only the first range of a batched Write.
    pub(crate) fn note_old(&self, addr: &str) {
        self.old.note(addr, true);
    }

    /// Whether `addr` takes batched Writes, as far as is known.
    pub(crate) fn takes_batches(&self, addr: &str) -> bool {
        self.old.since(addr).is_none()
    }

    /// `servers` in the order to ask them: as given, but those that went
    /// silent less than [`SILENT_FOR`] ago last.
    pub(crate) fn by_silence<'a, T>(
        &self,
        servers: &'a [T],
        addr: impl Fn(&T) -> &str,
    ) -> Vec<&'a T> {
        let quiet = |t: &T| self.silent.since(addr(t)).is_some();
        let mut out: Vec<&T> = servers.iter().filter(|t| !quiet(t)).collect();
        out.extend(servers.iter().filter(|t| quiet(t)));
        out
    }

    /// A client for the chunkserver at `addr` ("host:port").
    pub(crate) fn client(&self, addr: &str) -> Result<ChunkServiceClient<Channel>, Failure> {
        let channel = self.channel(addr)?;
        Ok(ChunkServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    fn channel(&self, addr: &str) -> Result<Channel, Failure> {
        let generation = || {
            let broken = self.broken.read().unwrap_or_else(|p| p.into_inner());
            broken.get(addr).map_or(0, Generation::get)
        };
        if let Some(ch) =
            crate::inline::channel("chunk", addr, generation, || self.make(addr, false).ok())
        {
            return Ok(ch);
        }
        if let Some(ch) = self
            .channels
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
        {
            return Ok(ch.clone());
        }
        let mut map = self.channels.write().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = map.get(addr) {
            return Ok(ch.clone());
        }
        let channel = self.make(addr, true)?;
        map.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// Whether a failed call to `addr` is worth one more try at once: it
    /// ran on a FUSE thread's own connection, which may have died unseen
    /// (the server restarted while the thread was idle). Then every
    /// thread's connection to `addr` is made anew before its next call.
    pub(crate) fn renew(&self, addr: &str) -> bool {
        if !crate::inline::inside() {
            return false;
        }
        self.broken
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(addr.to_string())
            .or_default()
            .bump();
        true
    }

    /// A new lazily connected channel to `addr`, with HTTP/2 keep-alive
    /// pings or not (see `crate::inline::channel`).
    fn make(&self, addr: &str, keepalive: bool) -> Result<Channel, Failure> {
        let endpoint = mfs_proto::tls::endpoint(addr).map_err(|e| {
            // The master handed out an address no URI can be made of: no
            // other attempt at this address can work, but other copies may.
            Failure::Copy(format!("chunkserver address {addr:?} is not usable: {e}"))
        })?;
        let endpoint = endpoint
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME);
        // Pings find a chunkserver whose machine went silent (a read or
        // write waiting on it fails within seconds and goes to another
        // copy, instead of after the whole chunk call timeout).
        let endpoint = if keepalive {
            mfs_proto::watched(endpoint, true)
        } else {
            mfs_proto::watched(endpoint, false).tcp_keepalive(Some(Duration::from_secs(10)))
        };
        Ok(endpoint.connect_lazy())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataMap;

    fn status(code: Code, errno: Option<i32>) -> Status {
        let mut md = MetadataMap::new();
        if let Some(e) = errno {
            md.insert(
                mfs_proto::ERRNO_KEY,
                e.to_string().parse().unwrap_or_else(|_| unreachable!()),
            );
        }
        Status::with_metadata(code, "msg", md)
    }

    #[test]
    fn chunkserver_errors() {
        let c = |code, e| classify("cs:1", &status(code, e));
        assert!(
            matches!(c(Code::FailedPrecondition, Some(116)), Failure::Stale(t) if t.contains("cs:1"))
        );
        assert!(matches!(c(Code::NotFound, Some(2)), Failure::Copy(_)));
        assert!(matches!(c(Code::DataLoss, Some(5)), Failure::Copy(_)));
        assert!(matches!(c(Code::DataLoss, None), Failure::Copy(_)));
        assert!(matches!(c(Code::Unavailable, None), Failure::Copy(_)));
        assert!(matches!(
            c(Code::ResourceExhausted, Some(28)),
            Failure::Final(ClientError::Errno(28, _))
        ));
        assert!(matches!(
            c(Code::InvalidArgument, None),
            Failure::Final(ClientError::InvalidArgument(_))
        ));
        assert!(matches!(c(Code::Unimplemented, None), Failure::Final(_)));
    }

    #[tokio::test]
    async fn one_channel_per_address() {
        let conns = Conns::new(Duration::from_secs(1));
        assert!(conns.client("127.0.0.1:1").is_ok());
        assert!(conns.client("127.0.0.1:1").is_ok());
        assert!(conns.client("127.0.0.1:2").is_ok());
        assert_eq!(conns.channels.read().map(|m| m.len()).unwrap_or(0), 2);
        assert!(matches!(conns.client("bad host:1"), Err(Failure::Copy(_))));
    }
}
