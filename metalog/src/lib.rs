//! mfsmetalogger: a Raft learner that keeps the cluster's changelog and
//! metadata images on its own disk, and restores a master from them.
//!
//! - `config`: the daemon's settings (`mfsmetalogger.cfg`).
//! - `changelog`: the text changelog (`changelog_ml.N.mfs`): line format,
//!   writer with rotation and resume.
//! - `image`: `metadata_ml.mfs` and its `.back`.
//! - `recorder`: the apply hook that turns applied entries into lines.
//! - `daemon`: the running metalogger (learner node, joining, timers).
//! - `restore`: metalogger dir → namespace → a new master data dir.
//!
//! The Raft side (openraft) lives in `mfs_master::raft::learner`; this crate
//! never names openraft.

pub mod changelog;
pub mod config;
pub mod daemon;
pub mod error;
pub mod image;
pub mod recorder;
pub mod restore;

pub use error::{Error, Result};
