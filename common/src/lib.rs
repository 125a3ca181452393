//! Small pieces every rmfs role shares.
pub mod config;
pub mod eattr;
pub mod ids;
pub mod logging;
pub mod runtime;
pub mod silence;
