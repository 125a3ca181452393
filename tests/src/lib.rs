//! Helpers for cross-process tests and benchmarks: a [`cluster::Cluster`] of
//! real `mfsmaster` processes on 127.0.0.1 with free ports and a temp dir,
//! and [`mountpoint::Mount`], a real `mfsmount` on it.

pub mod chunkservers;
pub mod cluster;
pub mod metaloggers;
pub mod mountpoint;
pub mod netlab;
pub mod spawner;
