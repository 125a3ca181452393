//! Cross-process tests: real `mfsmaster` binaries on 127.0.0.1.
//!
//! Each test starts its own cluster (free ports, a temp dir kept on failure)
//! and prints `===` lines for its steps.

mod acl;
mod config;
mod data;
mod exports;
mod failover;
mod fallocate;
mod locks;
mod masters;
mod metalog;
mod mount;
mod opens;
mod overwrite;
mod pages;
mod partition;
mod quota;
mod random_writes;
mod realworld;
mod secret;
mod space;
mod tls;
mod tools;
mod trash;
mod util;
mod versions;
mod writeback;
mod writeback_attrs;
mod writeback_data;
