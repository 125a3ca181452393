//! The chunkserver's error type and its one mapping to gRPC statuses (the
//! convention of `chunkserver.proto`: a gRPC code plus the Linux errno in
//! `mfs-errno` trailing metadata).

use mfs_proto::ERRNO_KEY;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// Linux errno values used on the wire.
pub mod errno {
    /// No such chunk.
    pub const ENOENT: i32 = 2;
    /// I/O error or bad block.
    pub const EIO: i32 = 5;
    /// The chunk exists already.
    pub const EEXIST: i32 = 17;
    /// Bad argument (range, size).
    pub const EINVAL: i32 = 22;
    /// No space left on the disk.
    pub const ENOSPC: i32 = 28;
    /// Version mismatch: the copy is stale or the client is.
    pub const ESTALE: i32 = 116;
}

/// Why a chunk operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// This server holds no copy of the chunk.
    #[error("chunk {id:016X} is not on this chunkserver")]
    NotFound {
        /// The chunk.
        id: u64,
    },
    /// The copy here has another version than the request names.
    #[error("chunk {id:016X}: version {want} asked, this copy has version {have}; ask the master for the current version")]
    Stale {
        /// The chunk.
        id: u64,
        /// Version of the local copy.
        have: u32,
        /// Version the request named.
        want: u32,
    },
    /// A copy of the chunk exists already (create, replicate, duplicate).
    #[error("chunk {id:016X} already exists here (version {version})")]
    Exists {
        /// The chunk.
        id: u64,
        /// Version of the local copy.
        version: u32,
    },
    /// Offset/size outside the chunk, or another malformed argument.
    #[error("bad request: {0}")]
    Invalid(String),
    /// No disk has room (or the chunk's disk is over its reserve).
    #[error("no space: {0}")]
    NoSpace(String),
    /// The copy is damaged (bad CRC, bad header): it has been dropped.
    #[error("chunk {id:016X} is damaged: {msg}; this copy was dropped and the master told")]
    Corrupt {
        /// The chunk.
        id: u64,
        /// What was found.
        msg: String,
    },
    /// An I/O error on this server's disk.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A client's read or write without the master's token for it (with a
    /// cluster secret): ESTALE, so the client asks the master again.
    #[error("chunk {id:016X}: {why}; ask the master for the chunk's location again")]
    Token {
        /// The chunk.
        id: u64,
        /// What is wrong with the token.
        why: String,
    },
    /// Another chunkserver (chain, replication source) failed.
    #[error("chunkserver {addr}: {status}")]
    Peer {
        /// The peer's address.
        addr: String,
        /// What it answered (or the transport error).
        status: Box<Status>,
    },
}

impl ChunkError {
    /// An I/O error with what was being done; ENOSPC becomes `NoSpace`.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        let context = context.into();
        if source.raw_os_error() == Some(libc::ENOSPC) {
            return ChunkError::NoSpace(format!("{context}: {source}"));
        }
        ChunkError::Io { context, source }
    }

    /// The Linux errno this error stands for.
    pub fn errno(&self) -> i32 {
        match self {
            ChunkError::NotFound { .. } => errno::ENOENT,
            ChunkError::Stale { .. } | ChunkError::Token { .. } => errno::ESTALE,
            ChunkError::Exists { .. } => errno::EEXIST,
            ChunkError::Invalid(_) => errno::EINVAL,
            ChunkError::NoSpace(_) => errno::ENOSPC,
            ChunkError::Corrupt { .. } | ChunkError::Io { .. } => errno::EIO,
            ChunkError::Peer { status, .. } => status_errno(status).unwrap_or(errno::EIO),
        }
    }

    /// The gRPC status for this error, with `mfs-errno`.
    pub fn to_status(&self) -> Status {
        let code = match self {
            ChunkError::NotFound { .. } => Code::NotFound,
            ChunkError::Stale { .. } | ChunkError::Token { .. } => Code::FailedPrecondition,
            ChunkError::Exists { .. } => Code::AlreadyExists,
            ChunkError::Invalid(_) => Code::InvalidArgument,
            ChunkError::NoSpace(_) => Code::ResourceExhausted,
            ChunkError::Corrupt { .. } | ChunkError::Io { .. } => Code::DataLoss,
            ChunkError::Peer { status, .. } => match status.code() {
                // A peer we could not reach: the client should retry (or
                // ask the master for another chain).
                Code::Unknown | Code::Cancelled | Code::DeadlineExceeded => Code::Unavailable,
                c => c,
            },
        };
        let mut s = Status::new(code, self.to_string());
        if let Ok(v) = MetadataValue::try_from(self.errno().to_string()) {
            s.metadata_mut().insert(ERRNO_KEY, v);
        }
        s
    }
}

impl From<ChunkError> for Status {
    fn from(e: ChunkError) -> Status {
        e.to_status()
    }
}

/// The `mfs-errno` a status carries, if any.
pub fn status_errno(s: &Status) -> Option<i32> {
    s.metadata()
        .get(ERRNO_KEY)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_carry_code_and_errno() {
        let cases = [
            (ChunkError::NotFound { id: 1 }, Code::NotFound, 2),
            (
                ChunkError::Stale {
                    id: 1,
                    have: 2,
                    want: 3,
                },
                Code::FailedPrecondition,
                116,
            ),
            (ChunkError::Invalid("x".into()), Code::InvalidArgument, 22),
            (ChunkError::NoSpace("x".into()), Code::ResourceExhausted, 28),
            (
                ChunkError::Corrupt {
                    id: 1,
                    msg: "crc".into(),
                },
                Code::DataLoss,
                5,
            ),
        ];
        for (e, code, no) in cases {
            let s = e.to_status();
            assert_eq!(s.code(), code, "{e}");
            assert_eq!(status_errno(&s), Some(no), "{e}");
        }
        let enospc = ChunkError::io("writing", std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(matches!(enospc, ChunkError::NoSpace(_)));
    }

    #[test]
    fn peer_errors_keep_the_peers_errno_and_name_it() {
        let inner = ChunkError::Stale {
            id: 9,
            have: 1,
            want: 2,
        }
        .to_status();
        let e = ChunkError::Peer {
            addr: "10.1.1.1:9422".into(),
            status: Box::new(inner),
        };
        let s = e.to_status();
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(status_errno(&s), Some(116));
        assert!(s.message().contains("10.1.1.1:9422"));
    }
}
