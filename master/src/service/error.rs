//! The one place master errors become gRPC statuses (see common.proto for
//! the convention clients rely on).

use mfs_proto::{ERRNO_KEY, LEADER_KEY};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::chunks::ChunkError;
use crate::fsm::Errno;
use crate::raft::NodeError;

/// A POSIX error: the mapped code plus `mfs-errno`.
pub fn errno_status(e: Errno) -> Status {
    errno_status_with(e, e.to_string())
}

/// [`errno_status`] with a message saying why, for the client's user.
pub fn errno_status_with(e: Errno, why: String) -> Status {
    let code = match e.0 {
        2 => Code::NotFound,
        17 => Code::AlreadyExists,
        1 | 13 => Code::PermissionDenied,
        22 | 36 => Code::InvalidArgument,
        _ => Code::FailedPrecondition,
    };
    let mut s = Status::new(code, why);
    if let Ok(v) = MetadataValue::try_from(e.0.to_string()) {
        s.metadata_mut().insert(ERRNO_KEY, v);
    }
    s
}

pub fn node_status(e: NodeError) -> Status {
    match e {
        NodeError::NotLeader { leader } => {
            let mut s = Status::unavailable(format!(
                "not the leader; leader is {}",
                leader
                    .as_deref()
                    .unwrap_or("unknown (election in progress)")
            ));
            if let Some(l) = leader {
                if let Ok(v) = MetadataValue::try_from(l) {
                    s.metadata_mut().insert(LEADER_KEY, v);
                }
            }
            s
        }
        NodeError::Unavailable(m) => Status::unavailable(m),
        NodeError::Invalid(m) => Status::invalid_argument(m),
    }
}

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Status {
        node_status(e)
    }
}

/// A malformed request: nothing was applied.
pub fn invalid(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg.into())
}

impl From<ChunkError> for Status {
    fn from(e: ChunkError) -> Status {
        match e {
            ChunkError::Errno(e) => errno_status(e),
            ChunkError::Node(e) => node_status(e),
        }
    }
}
