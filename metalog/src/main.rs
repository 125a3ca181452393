//! mfsmetalogger: parses the command line and the config, then runs a
//! metalogger, or restores a master data dir from a metalogger's data.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::Serialize;

use mfs_metalog::config::{MetaloggerConfig, ALIASES};
use mfs_metalog::restore::{restore, RestoreOptions};

/// rmfs metalogger: a Raft learner of the masters' group that keeps every
/// committed change in a text changelog (changelog_ml.N.mfs) and metadata
/// images (metadata_ml.mfs) on its own disk; `restore` turns those into a
/// new master.
///
/// Settings come from built-in defaults, then the config file (MooseFS
/// `KEY = VALUE` lines, or TOML when the name ends in .toml), then `MFS_*`
/// environment variables (e.g. MFS_DATA_PATH), then these flags.
#[derive(Parser, Debug, Serialize)]
#[command(name = "mfsmetalogger", version)]
struct Args {
    #[command(subcommand)]
    #[serde(skip)]
    command: Option<Command>,
    /// Config file (default /etc/mfs/mfsmetalogger.cfg, used only if present).
    #[arg(short = 'c', long = "config")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Print the effective settings (defaults merged with file, env and
    /// flags) and exit.
    #[arg(long)]
    #[serde(skip)]
    print_config: bool,
    /// METALOGGER_ID: its Raft node id (unique in the cluster).
    #[arg(long = "id")]
    #[serde(skip_serializing_if = "Option::is_none")]
    metalogger_id: Option<u64>,
    /// MASTER_HOST: the masters, host or host:port, comma-separated.
    #[arg(short = 'H', long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    master_host: Option<String>,
    /// MASTER_PORT: port of masters listed without one (default 9421).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    master_port: Option<u16>,
    /// LISTEN_HOST: address to serve Raft on (`*` = all).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen_host: Option<String>,
    /// LISTEN_PORT: Raft port (default 9419).
    #[arg(short = 'p', long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen_port: Option<u16>,
    /// ADVERTISE_ADDRESS: host:port the masters reach this metalogger at.
    #[arg(long = "advertise")]
    #[serde(skip_serializing_if = "Option::is_none")]
    advertise_address: Option<String>,
    /// HTTP_LISTEN: host:port for /metrics ("" disables).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    http_listen: Option<String>,
    /// DATA_PATH: where the changelog, images and Raft state are kept.
    #[arg(short = 'd', long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    data_path: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build a master data dir from a metalogger's data dir: load
    /// metadata_ml.mfs, apply the changelog after it, and write a new
    /// single-master cluster holding that namespace. Then start it with
    /// `mfsmaster -d TO --id ID --listen-port PORT` (matching --advertise).
    Restore {
        /// The metalogger's DATA_PATH.
        #[arg(long)]
        from: PathBuf,
        /// The new master's DATA_PATH (must be absent or empty).
        #[arg(long)]
        to: PathBuf,
        /// The new master's MASTER_ID.
        #[arg(long, default_value_t = 1)]
        id: u64,
        /// host:port the new master will listen on and advertise.
        #[arg(long, default_value = "127.0.0.1:9421")]
        advertise: String,
        /// Write the data dir even if the changelog stops early (damaged
        /// line, gap): the changes after that point are lost.
        #[arg(long)]
        partial: bool,
    },
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::Restore {
        from,
        to,
        id,
        advertise,
        partial,
    }) = &args.command
    {
        mfs_common::logging::init("warn");
        let o = RestoreOptions {
            from: from.clone(),
            to: to.clone(),
            master_id: *id,
            advertise: advertise.clone(),
            partial: *partial,
        };
        let (replay, dir) = runtime()?
            .block_on(restore(&o))
            .map_err(|e| anyhow::anyhow!("restore: {e}"))?;
        for n in &replay.notes {
            println!("note: {n}");
        }
        if let Some(stop) = &replay.stop {
            println!("stopped early (--partial): {stop}");
        }
        println!("{}", replay.summary());
        println!(
            "wrote master data dir {} (new cluster {}, master {id} at {advertise}, {})",
            to.display(),
            dir.cluster_id,
            dir.snapshot_file
        );
        let port = advertise.rsplit(':').next().unwrap_or("9421");
        println!(
            "start it with: mfsmaster -d {} --id {id} --listen-port {port} --advertise {advertise}",
            to.display()
        );
        return Ok(());
    }
    let (file, required) =
        mfs_common::config::config_file(args.config.as_deref(), "/etc/mfs/mfsmetalogger.cfg");
    let cfg: MetaloggerConfig = mfs_common::config::load(Some(&file), required, ALIASES, &args)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("mfsmetalogger cannot start: fix the configuration")?;
    if args.print_config {
        println!("{}", mfs_common::config::key_value_lines(&cfg));
        return Ok(());
    }
    mfs_common::logging::init(&cfg.log_level);
    mfs_proto::tls::load_and_set(&cfg.tls_cert_file, &cfg.tls_key_file, &cfg.tls_ca_file)
        .map_err(|e| anyhow::anyhow!("mfsmetalogger cannot start: {e}"))?;
    let res = cfg.resolve().map_err(|e| anyhow::anyhow!("{e}"))?;
    runtime()?
        .block_on(mfs_metalog::daemon::run(cfg, res))
        .map_err(|e| anyhow::anyhow!("mfsmetalogger: {e}"))
}
