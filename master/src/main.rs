//! mfsmaster: parses the command line and the config, then runs a master.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use serde::Serialize;

use mfs_master::config::{MasterConfig, ALIASES};

/// rmfs metadata server: one member of the masters' Raft group.
///
/// Settings come from built-in defaults, then the config file (MooseFS
/// `KEY = VALUE` lines, or TOML when the name ends in .toml), then `MFS_*`
/// environment variables (e.g. MFS_DATA_PATH), then these flags.
#[derive(Parser, Debug, Serialize)]
#[command(name = "mfsmaster", version)]
struct Args {
    /// Config file (default /etc/mfs/mfsmaster.cfg, used only if present).
    #[arg(short = 'c', long = "config")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Print the effective settings (defaults merged with file, env and
    /// flags) and exit.
    #[arg(long)]
    #[serde(skip)]
    print_config: bool,
    /// MASTER_ID: this master's id in the group.
    #[arg(long = "id")]
    #[serde(skip_serializing_if = "Option::is_none")]
    master_id: Option<u64>,
    /// LISTEN_HOST: address to serve gRPC on (`*` = all).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen_host: Option<String>,
    /// LISTEN_PORT: gRPC port (default 9421).
    #[arg(short = 'p', long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen_port: Option<u16>,
    /// ADVERTISE_ADDRESS: host:port others reach this master at.
    #[arg(long = "advertise")]
    #[serde(skip_serializing_if = "Option::is_none")]
    advertise_address: Option<String>,
    /// HTTP_LISTEN: host:port for /metrics ("" disables).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    http_listen: Option<String>,
    /// DATA_PATH: where the log, vote and snapshots are kept.
    #[arg(short = 'd', long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    data_path: Option<PathBuf>,
    /// MASTER_PEERS: every master as ID=host:port,ID=host:port,...
    #[arg(long = "peers")]
    #[serde(skip_serializing_if = "Option::is_none")]
    master_peers: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (file, required) =
        mfs_common::config::config_file(args.config.as_deref(), "/etc/mfs/mfsmaster.cfg");
    let cfg: MasterConfig = mfs_common::config::load(Some(&file), required, ALIASES, &args)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("mfsmaster cannot start: fix the configuration")?;
    if args.print_config {
        println!("{}", mfs_common::config::key_value_lines(&cfg));
        return Ok(());
    }
    mfs_common::logging::init(&cfg.log_level);
    tracing::info!(pid = std::process::id(), "mfsmaster: configuration read");
    mfs_proto::tls::load_and_set(&cfg.tls_cert_file, &cfg.tls_key_file, &cfg.tls_ca_file)
        .map_err(|e| anyhow::anyhow!("mfsmaster cannot start: {e}"))?;
    let res = cfg
        .resolve()
        .map_err(|e| anyhow::anyhow!("bad configuration: {e}"))?;
    let rt = mfs_common::runtime::build(cfg.worker_threads, cfg.sched_batch)
        .context("cannot start the async runtime")?;
    rt.block_on(mfs_master::server::run(cfg, res))
        .map_err(|e| anyhow::anyhow!("mfsmaster: {e}"))
}
