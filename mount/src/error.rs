//! Errors of the client side, and their mapping to Linux errno values.
//!
//! This is the one place where a gRPC [`tonic::Status`] becomes a client
//! error, and a client error becomes the errno a FUSE reply or a tool's exit
//! message carries. The wire conventions are those of `mfs/v1/common.proto`:
//! a POSIX failure carries trailing metadata `mfs-errno` (decimal), a
//! malformed request is INVALID_ARGUMENT without it, and a follower answers
//! UNAVAILABLE with `mfs-leader` (handled by the retry loop, not here).

use std::time::Duration;

use tonic::{Code, Status};

/// Linux errno values the client produces itself.
pub mod errno {
    /// Operation not permitted.
    pub const EPERM: i32 = 1;
    /// No such file or directory.
    pub const ENOENT: i32 = 2;
    /// Input/output error.
    pub const EIO: i32 = 5;
    /// Bad file descriptor (also: unknown session, on a heartbeat).
    pub const EBADF: i32 = 9;
    /// Try again (a chunk's write lease is held by another session).
    pub const EAGAIN: i32 = 11;
    /// Permission denied.
    pub const EACCES: i32 = 13;
    /// File exists.
    pub const EEXIST: i32 = 17;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// File too large (an offset past the largest file).
    pub const EFBIG: i32 = 27;
    /// No space left on device.
    pub const ENOSPC: i32 = 28;
    /// Result too large.
    pub const ERANGE: i32 = 34;
    /// Function not implemented.
    pub const ENOSYS: i32 = 38;
    /// Transport endpoint is not connected.
    pub const ENOTCONN: i32 = 107;
    /// Stale file handle (also: unknown session).
    pub const ESTALE: i32 = 116;
    /// Disk quota exceeded (a write past a directory quota's room).
    pub const EDQUOT: i32 = 122;
}

/// What a call to the master group can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The master answered with a POSIX error (`mfs-errno`): errno, message.
    #[error("{1} ({name}, errno {0})", name = errno_name(*.0))]
    Errno(i32, String),
    /// The request was malformed (INVALID_ARGUMENT without `mfs-errno`), or a
    /// caller-given value (an address, an option) is not usable.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// No master answered (or none was the leader) within the overall timeout.
    #[error("no master answered at {masters} for {elapsed:.1?}: {last_error}")]
    Timeout {
        /// Time from the first attempt to giving up.
        elapsed: Duration,
        /// The addresses tried, comma-separated.
        masters: String,
        /// What the last attempt failed with, and where.
        last_error: String,
    },
    /// There is no master to ask (empty list, no address resolves).
    #[error("no master: {0}")]
    NoMaster(String),
    /// One given master (a call that does not follow redirects) could not be
    /// reached or did not answer in time.
    #[error("master {addr} unreachable: {message}")]
    Unreachable {
        /// The master's address.
        addr: String,
        /// What went wrong.
        message: String,
    },
    /// Any other final gRPC status (UNIMPLEMENTED, PERMISSION_DENIED without
    /// errno, ...).
    #[error("master answered {code:?}: {message}")]
    Status {
        /// The gRPC status code.
        code: Code,
        /// The status message.
        message: String,
    },
    /// The reply lacked a field the API promises (a master bug).
    #[error("bad reply from master: {0}")]
    BadReply(String),
    /// Reading or writing a chunk kept failing on every copy (and after
    /// asking the master again) until the time limit.
    #[error(
        "{op} of inode {inode} chunk {index} failed on every chunkserver for {elapsed:.1?}: \
         {last_error} (check `mfscli info` for lost chunkservers and missing chunks)"
    )]
    Data {
        /// "read", "write" or "sync".
        op: &'static str,
        /// The file.
        inode: u64,
        /// The chunk's index in the file.
        index: u32,
        /// Time from the first attempt to giving up.
        elapsed: Duration,
        /// What the last attempt failed with, and where.
        last_error: String,
    },
}

impl ClientError {
    /// The Linux errno for this error, as a FUSE reply or a tool reports it.
    pub fn errno(&self) -> i32 {
        match self {
            ClientError::Errno(e, _) => *e,
            ClientError::InvalidArgument(_) => errno::EINVAL,
            ClientError::Timeout { .. } => errno::EIO,
            ClientError::NoMaster(_) | ClientError::Unreachable { .. } => errno::ENOTCONN,
            ClientError::Status { code, .. } => match code {
                Code::NotFound => errno::ENOENT,
                Code::AlreadyExists => errno::EEXIST,
                Code::PermissionDenied | Code::Unauthenticated => errno::EACCES,
                Code::InvalidArgument => errno::EINVAL,
                Code::OutOfRange => errno::ERANGE,
                Code::Unimplemented => errno::ENOSYS,
                _ => errno::EIO,
            },
            ClientError::BadReply(_) | ClientError::Data { .. } => errno::EIO,
        }
    }

    /// True when this is the master's "this session is unknown" answer
    /// (`mfs-errno` ESTALE or EBADF), as a heartbeat receives it.
    pub fn is_session_unknown(&self) -> bool {
        matches!(self, ClientError::Errno(e, _) if *e == errno::ESTALE || *e == errno::EBADF)
    }
}

/// The errno a failed call carries in `mfs-errno`, if any (and valid).
pub fn errno_of(status: &Status) -> Option<i32> {
    let value = status.metadata().get(mfs_proto::ERRNO_KEY)?;
    let n: i32 = value.to_str().ok()?.trim().parse().ok()?;
    (n > 0).then_some(n)
}

/// Turns a final (non-retried) status into a [`ClientError`].
pub fn from_status(status: &Status) -> ClientError {
    if let Some(e) = errno_of(status) {
        return ClientError::Errno(e, status_text(status));
    }
    match status.code() {
        Code::InvalidArgument => ClientError::InvalidArgument(status_text(status)),
        code => ClientError::Status {
            code,
            message: status_text(status),
        },
    }
}

pub use mfs_proto::status_text;

/// The symbolic name of a Linux errno ("ENOENT"), or "E?" when unknown.
pub fn errno_name(e: i32) -> &'static str {
    match e {
        1 => "EPERM",
        2 => "ENOENT",
        3 => "ESRCH",
        4 => "EINTR",
        5 => "EIO",
        6 => "ENXIO",
        7 => "E2BIG",
        9 => "EBADF",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        16 => "EBUSY",
        17 => "EEXIST",
        18 => "EXDEV",
        19 => "ENODEV",
        20 => "ENOTDIR",
        21 => "EISDIR",
        22 => "EINVAL",
        23 => "ENFILE",
        24 => "EMFILE",
        26 => "ETXTBSY",
        27 => "EFBIG",
        28 => "ENOSPC",
        30 => "EROFS",
        31 => "EMLINK",
        34 => "ERANGE",
        36 => "ENAMETOOLONG",
        38 => "ENOSYS",
        39 => "ENOTEMPTY",
        40 => "ELOOP",
        61 => "ENODATA",
        95 => "EOPNOTSUPP",
        107 => "ENOTCONN",
        110 => "ETIMEDOUT",
        116 => "ESTALE",
        122 => "EDQUOT",
        _ => "E?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataMap;

    fn status_with(code: Code, msg: &str, pairs: &[(&'static str, &str)]) -> Status {
        let mut md = MetadataMap::new();
        for (k, v) in pairs {
            md.insert(*k, v.parse().expect("ascii metadata in test"));
        }
        Status::with_metadata(code, msg, md)
    }

    #[test]
    fn errno_metadata_wins_over_code() {
        let s = status_with(
            Code::NotFound,
            "no such entry",
            &[(mfs_proto::ERRNO_KEY, "2")],
        );
        let e = from_status(&s);
        assert!(matches!(&e, ClientError::Errno(2, m) if m == "no such entry"));
        assert_eq!(e.errno(), errno::ENOENT);
        assert_eq!(e.to_string(), "no such entry (ENOENT, errno 2)");

        let s = status_with(
            Code::FailedPrecondition,
            "x",
            &[(mfs_proto::ERRNO_KEY, "39")],
        );
        assert_eq!(from_status(&s).errno(), 39);
        // ENAMETOOLONG travels as INVALID_ARGUMENT with errno: still an errno.
        let s = status_with(
            Code::InvalidArgument,
            "long",
            &[(mfs_proto::ERRNO_KEY, " 36 ")],
        );
        assert_eq!(from_status(&s).errno(), 36);
    }

    #[test]
    fn invalid_argument_without_errno() {
        let s = status_with(Code::InvalidArgument, "name missing", &[]);
        let e = from_status(&s);
        assert!(matches!(&e, ClientError::InvalidArgument(m) if m == "name missing"));
        assert_eq!(e.errno(), errno::EINVAL);
    }

    #[test]
    fn bad_errno_metadata_is_ignored() {
        for bad in ["", "abc", "-3", "0"] {
            let s = status_with(Code::NotFound, "gone", &[(mfs_proto::ERRNO_KEY, bad)]);
            let e = from_status(&s);
            assert!(
                matches!(
                    e,
                    ClientError::Status {
                        code: Code::NotFound,
                        ..
                    }
                ),
                "{bad}"
            );
            assert_eq!(e.errno(), errno::ENOENT);
        }
    }

    #[test]
    fn other_codes_map_to_errno() {
        let e = from_status(&status_with(Code::Unimplemented, "", &[]));
        assert_eq!(e.errno(), errno::ENOSYS);
        assert!(e.to_string().contains("Unimplemented"), "{e}");
        let e = from_status(&status_with(Code::Internal, "boom", &[]));
        assert_eq!(e.errno(), errno::EIO);
        let t = ClientError::Timeout {
            elapsed: Duration::from_secs(30),
            masters: "127.0.0.1:9421,127.0.0.1:9422".into(),
            last_error: "127.0.0.1:9422: connection refused".into(),
        };
        assert_eq!(t.errno(), errno::EIO);
        assert_eq!(
            t.to_string(),
            "no master answered at 127.0.0.1:9421,127.0.0.1:9422 for 30.0s: \
             127.0.0.1:9422: connection refused"
        );
        assert_eq!(
            ClientError::NoMaster("none".into()).errno(),
            errno::ENOTCONN
        );
    }

    #[test]
    fn session_unknown() {
        assert!(ClientError::Errno(116, String::new()).is_session_unknown());
        assert!(ClientError::Errno(9, String::new()).is_session_unknown());
        assert!(!ClientError::Errno(2, String::new()).is_session_unknown());
        assert!(!ClientError::InvalidArgument(String::new()).is_session_unknown());
    }
}
