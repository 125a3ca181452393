//! Logging set-up for the daemons and tools: `tracing` to stderr, filtered by
//! `RUST_LOG` (or the given default level).

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `default` is used when `RUST_LOG` is unset
/// (e.g. "info"); openraft's own chatter is kept to warnings unless asked
/// for. Colours only on a terminal. Calling it twice is harmless.
pub fn init(default: &str) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{default},openraft=error")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
