//! The gRPC services a master serves, besides Raft's own (in `crate::raft`):
//! `meta` (clients), `admin` (mfscli), `chunks` (chunkserver registry), and
//! the HTTP side (`http`: Prometheus metrics and a status page).

pub mod access;
pub mod admin;
pub mod chunks;
pub mod convert;
mod data;
pub mod error;
pub mod http;
pub mod meta;
mod quotas;
pub mod writeback;
