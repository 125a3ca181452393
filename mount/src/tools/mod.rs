//! Shared code of `mfstools`, the MooseFS-style admin tools (`mfsgetgoal`,
//! `mfssetgoal`, `mfsfileinfo`, ...):
//!
//! - [`locate`]: from a local path to the cluster and the master's inode
//!   (the mount is found by `st_dev` in `/proc/self/mountinfo`, its source
//!   `mfs#MASTERS[:/subfolder]` names the masters).
//! - [`report`]: the counters the tools gather and the text they print, in
//!   MooseFS's formats (so scripts written for MooseFS keep working).

pub mod locate;
pub mod report;
