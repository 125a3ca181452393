//! mfsmaster: the metadata server of rmfs.
//!
//! See ARCHITECTURE.md for the map. In short: `fsm` is the namespace state
//! machine (pure, deterministic), `store` the on-disk storage engine behind our
//! own trait, `raft` everything that touches openraft, `service` the gRPC
//! services, `config` the daemon's settings, `server` the wiring.

pub mod chunks;
pub mod config;
pub mod exports;
pub mod fsm;
pub mod raft;
pub mod server;
pub mod service;
pub mod store;
