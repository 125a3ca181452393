//! The public gRPC API of rmfs: package `mfs.v1`.
//!
//! The `.proto` files under `proto/mfs/v1/` are the contract; this crate only
//! holds the code generated from them (at build time, by protox, so no system
//! `protoc` is needed) and the few names every side shares (metadata keys,
//! the cluster secret's stamp and check, TLS settings and endpoints).

#![allow(clippy::all)]
#![allow(missing_docs)]

pub mod v1 {
    tonic::include_proto!("mfs.v1");
}

pub use v1::*;

pub mod codec;

pub mod secret;
pub use secret::{challenge_answer, password_md5, ChunkAccess, ClusterSecret, CHUNK_TOKEN_SECS};
pub mod tls;

/// A status as one line of text: the message and the chain of its causes
/// (which is where "Connection refused" lives for transport errors), with
/// a hint when the cause looks like a TLS mismatch between the two ends.
/// A ping after this long without a frame from the peer ([`watched`]).
pub const PING_AFTER: std::time::Duration = std::time::Duration::from_secs(1);
/// A peer that does not answer a ping within this long is given up.
pub const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// `e` with HTTP/2 pings that find a silent peer: a master whose machine
/// lost its network or power refuses and resets nothing, so without them a
/// call in flight would wait for its whole timeout. With pings the
/// connection fails within [`PING_AFTER`] + [`PING_TIMEOUT`] of the last
/// frame and the call is tried elsewhere. `while_idle`: ping connections
/// with no call too (for a channel driven by a runtime that always runs;
/// not for one polled only during its own calls).
pub fn watched(e: tonic::transport::Endpoint, while_idle: bool) -> tonic::transport::Endpoint {
    e.http2_keep_alive_interval(PING_AFTER)
        .keep_alive_timeout(PING_TIMEOUT)
        .keep_alive_while_idle(while_idle)
}

pub fn status_text(status: &tonic::Status) -> String {
    let mut text = if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        status.message().to_string()
    };
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        let s = cause.to_string();
        if !s.is_empty() && !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = cause.source();
    }
    if let Some(hint) = tls::hint(&text) {
        text.push_str(" (");
        text.push_str(hint);
        text.push(')');
    }
    text
}

/// The encoded `FileDescriptorSet` of the API, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("mfs_descriptor");

/// Trailing metadata key of a failed call: the Linux errno, in decimal.
pub const ERRNO_KEY: &str = "mfs-errno";
/// Trailing metadata key of a redirect: the leader's "host:port".
pub const LEADER_KEY: &str = "mfs-leader";
/// Request metadata key on client calls: the caller's session id, in
/// decimal (its rights apply to the call; see common.proto).
pub const SESSION_KEY: &str = "mfs-session";
/// Request metadata key on Raft calls: the cluster id.
pub const CLUSTER_KEY: &str = "mfs-cluster";
/// Request metadata key on internal calls: the cluster secret.
pub const SECRET_KEY: &str = "mfs-secret";
