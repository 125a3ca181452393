//! mfschunkserver: stores chunk data for rmfs.
//!
//! - [`format`]: the chunk file (header, per-block CRCs, crash rule).
//! - [`hdd`], [`disk`]: `mfshdd.cfg`, disk space and health, the start-up scan.
//! - [`store`]: every copy held, the open-file cache, the leader's orders.
//! - [`service`]: the `mfs.v1.ChunkService` gRPC service.
//! - [`master_link`]: registration and heartbeats to the leading master.
//! - [`scrub`]: the background re-reading of chunks.
//! - [`config`], [`server`], [`http`]: settings, wiring, `/metrics`.

pub mod config;
pub mod disk;
pub mod error;
pub mod format;
pub mod hdd;
pub mod http;
pub mod master_link;
pub mod scrub;
pub mod server;
pub mod service;
pub mod spare;
pub mod store;
