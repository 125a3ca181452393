//! Everything that touches openraft lives under this module; the rest of the
//! master sees [`MasterNode`]: propose a request, make a read linearizable,
//! ask who leads, change membership.
//!
//! - `types`: the openraft type configuration and aliases (the only place
//!   that spells openraft's generic types), and the message codec.
//! - `store`: the Raft log and vote on our storage engine (`crate::store`).
//! - `sm`: the state machine adapter over the namespace (`crate::fsm`).
//! - `network` / `service`: Raft messages over gRPC, sending and receiving.
//! - `identity`: cluster id and secret checks on Raft traffic.
//! - `early`: opens answered before their commit, logged together.
//! - `node`: starting a master, bootstrap of a new cluster, leader duties.
//! - `observer`: the apply hook (every applied entry, every state jump).
//! - `learner`: a node that only learns (the metalogger's Raft side).
//! - `restore`: a new single-master data dir made from a namespace.

mod early;
pub mod identity;
mod image_child;
pub mod learner;
pub mod network;
pub mod node;
pub mod observer;
pub mod restore;
pub mod service;
pub mod sm;
pub mod snapshots;
pub mod store;
#[cfg(test)]
mod tests;
pub mod types;

pub use node::{MasterNode, NodeError, NodeView};
