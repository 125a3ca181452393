//! Small pieces every rmfs role shares.
pub mod config;
pub mod ids;
pub mod logging;
