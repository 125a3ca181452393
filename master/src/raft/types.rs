//! The one place that fixes openraft's type parameters for rmfs. Every other
//! file names these aliases, never openraft's generic types.

use openraft::impls::BasicNode;

use crate::fsm::{Reply, Request};

openraft::declare_raft_types!(
    /// Raft types of the metadata group: entries carry namespace requests,
    /// applying one yields its reply.
    pub TypeConfig:
        D = Request,
        R = Reply,
        NodeId = u64,
        Node = BasicNode,
);

pub type NodeId = u64;
pub type Node = BasicNode;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type EntryPayload = openraft::alias::EntryPayloadOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type Membership = openraft::Membership<NodeId, Node>;
pub type LeaderId = openraft::alias::LeaderIdOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot is the metadata image, whole, in memory.
pub type SnapshotData = Vec<u8>;
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotData>;
pub type Raft = openraft::Raft<TypeConfig, super::sm::StateMachine>;
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;
pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<TypeConfig>;
pub type StreamAppendResult = openraft::raft::StreamAppendResult<TypeConfig>;
pub type VoteRequest = openraft::raft::VoteRequest<TypeConfig>;
pub type VoteResponse = openraft::raft::VoteResponse<TypeConfig>;
pub type SnapshotResponse = openraft::raft::SnapshotResponse<TypeConfig>;
pub type RPCError = openraft::error::RPCError<TypeConfig>;
pub type StreamingError = openraft::error::StreamingError<TypeConfig>;
pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<TypeConfig, E>;
pub type ClientWriteError = openraft::error::ClientWriteError<TypeConfig>;
pub type ClientWriteResponse = openraft::raft::ClientWriteResponse<TypeConfig>;
pub type LinearizableReadError = openraft::error::LinearizableReadError<TypeConfig>;
pub type ForwardToLeader = openraft::error::ForwardToLeader<TypeConfig>;
pub type IOFlushed = openraft::storage::IOFlushed<TypeConfig>;
pub type LogState = openraft::storage::LogState<TypeConfig>;
pub type EntryResponder = openraft::storage::EntryResponder<TypeConfig>;
pub type ServerState = openraft::ServerState;

/// Serialization of Raft messages and stored records: a format byte, then
/// bincode (standard config) of the serde form.
pub mod codec {
    use serde::de::DeserializeOwned;
    use serde::Serialize;

    /// Current wire/record format of Raft messages.
    pub const FORMAT: u8 = 1;

    pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
        let mut out = vec![FORMAT];
        bincode::serde::encode_into_std_write(v, &mut out, bincode::config::standard())
            .map_err(|e| format!("encode: {e}"))?;
        Ok(out)
    }

    pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
        match bytes.split_first() {
            Some((&FORMAT, rest)) => {
                let (v, used) =
                    bincode::serde::decode_from_slice(rest, bincode::config::standard())
                        .map_err(|e| format!("decode: {e}"))?;
                if used != rest.len() {
                    return Err(format!("decode: {} trailing bytes", rest.len() - used));
                }
                Ok(v)
            }
            Some((f, _)) => Err(format!(
                "unknown message format {f} (this build speaks {FORMAT})"
            )),
            None => Err("empty message".into()),
        }
    }
}
