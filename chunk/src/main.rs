//! mfschunkserver: parses the command line and the config, then runs a
//! chunkserver in the foreground.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use serde::Serialize;

use mfs_chunk::config::{ChunkConfig, ALIASES};

/// rmfs chunkserver: stores chunk data on the disks of mfshdd.cfg.
///
/// Settings come from built-in defaults, then the config file (MooseFS
/// `KEY = VALUE` lines, or TOML when the name ends in .toml), then `MFS_*`
/// environment variables (e.g. MFS_MASTER_HOST), then these flags.
#[derive(Parser, Debug)]
#[command(name = "mfschunkserver", version)]
struct Args {
    /// Config file (default /etc/mfs/mfschunkserver.cfg, used only if present).
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
    /// Print the effective settings (defaults merged with file, env and
    /// flags) and exit.
    #[arg(long)]
    print_config: bool,
    /// DATA_PATH: where the chunkserver's own state is kept.
    #[arg(short = 'd', long)]
    data_path: Option<PathBuf>,
    /// CSSERV_LISTEN_HOST:CSSERV_LISTEN_PORT of the data service.
    #[arg(long)]
    listen: Option<String>,
    /// MASTER_HOST: the masters as host[:port],host[:port],...
    #[arg(long)]
    master: Option<String>,
    /// HDD_CONF_FILENAME: the disk list (mfshdd.cfg).
    #[arg(long)]
    hdd: Option<String>,
}

/// The flags as config overrides (only those given).
#[derive(Serialize, Default)]
struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    data_path: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    csserv_listen_host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    csserv_listen_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    master_host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hdd_conf_filename: Option<String>,
}

fn overrides(args: &Args) -> anyhow::Result<Overrides> {
    let mut o = Overrides {
        data_path: args.data_path.clone(),
        master_host: args.master.clone(),
        hdd_conf_filename: args.hdd.clone(),
        ..Default::default()
    };
    if let Some(l) = &args.listen {
        let (h, p) = l
            .rsplit_once(':')
            .with_context(|| format!("--listen `{l}`: expected host:port"))?;
        let port: u16 = p
            .parse()
            .with_context(|| format!("--listen `{l}`: `{p}` is not a port"))?;
        o.csserv_listen_host = Some(h.trim_matches(['[', ']']).to_string());
        o.csserv_listen_port = Some(port);
    }
    Ok(o)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (file, required) =
        mfs_common::config::config_file(args.config.as_deref(), "/etc/mfs/mfschunkserver.cfg");
    let over = overrides(&args)?;
    let cfg: ChunkConfig = mfs_common::config::load(Some(&file), required, ALIASES, &over)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("mfschunkserver cannot start: fix the configuration")?;
    if args.print_config {
        print!("{}", mfs_common::config::key_value_lines(&cfg));
        return Ok(());
    }
    mfs_common::logging::init(&cfg.log_level);
    mfs_proto::tls::load_and_set(&cfg.tls_cert_file, &cfg.tls_key_file, &cfg.tls_ca_file)
        .map_err(|e| anyhow::anyhow!("mfschunkserver cannot start: {e}"))?;
    let used_file = file.exists().then_some(file.as_path());
    let res = cfg
        .resolve(used_file)
        .map_err(|e| anyhow::anyhow!("bad configuration: {e}"))?;
    mfs_chunk::server::tune_malloc();
    let rt =
        mfs_common::runtime::build(0, cfg.sched_batch).context("cannot start the async runtime")?;
    rt.block_on(mfs_chunk::server::run(cfg, res))
        .map_err(|e| anyhow::anyhow!("mfschunkserver: {e}"))
}
