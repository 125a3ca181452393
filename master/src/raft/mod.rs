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
//! - `node`: starting a master, bootstrap of a new cluster, leader duties.

pub mod identity;
pub mod network;
pub mod node;
pub mod service;
pub mod sm;
pub mod store;
#[cfg(test)]
mod tests;
pub mod types;

pub use node::{MasterNode, NodeError, NodeView};
