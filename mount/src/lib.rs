//! The client side of rmfs.
//!
//! - [`master`]: [`MasterClient`], the connection to the master group
//!   (leader following, failover, sessions, exactly-once retries) that the
//!   FUSE mount, mfscli, the tools, tests and benchmarks share.
//! - [`error`]: [`ClientError`] and its mapping to Linux errno values.
//! - [`fuse`]: the FUSE file system of `mfsmount` and its mount options.
//! - [`io`]: [`io::FileIo`], reading and writing file data (chunk locations,
//!   write leases, chunkservers).
//! - [`info`]: the cluster overview `mfscli info` prints, and its JSON shape.
//! - [`tools`]: what `mfstools` (mfsgetgoal, mfsfileinfo, ...) shares: from
//!   a path to the cluster and inode, and MooseFS's output formats.

pub mod error;
pub mod fuse;
pub mod info;
mod inline;
pub mod io;
pub mod master;
pub mod tools;

pub use error::ClientError;
pub use master::{ClientOptions, ClientStats, MasterClient};
