//! mfscli: the state of an rmfs cluster, and membership administration.
//!
//! Talks gRPC (AdminService) to the masters given by `-H` / `MFS_MASTERS`.
//! `info` prints tables on a terminal, tab-separated lines when piped (first
//! field = record kind: `cluster`, `master`, `metalogger`, `chunkserver`,
//! `chunk_health`), and with `--json` the shape documented on
//! [`mfs_mount::info::ClusterView`], the contract for scripts.

mod output;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use mfs_mount::info;
use mfs_mount::master::{parse_masters, ClientOptions, MasterClient, DEFAULT_MASTERS, MASTERS_ENV};
use mfs_mount::ClientError;

use output::Style;

#[derive(Debug, Parser)]
#[command(
    name = "mfscli",
    version,
    about = "Show the state of an rmfs cluster and change its membership",
    after_help = "Examples:\n  \
        mfscli info                          masters, metaloggers, chunkservers, chunk health\n  \
        mfscli -H m1:9421,m2:9421 info --json\n  \
        mfscli wait-leader --timeout 60      block until the cluster has a leader\n  \
        mfscli quota                         directory quotas and their usage\n  \
        mfscli add-master 4 10.0.0.4:9421    grow the Raft group"
)]
struct Cli {
    /// Masters to ask, as host:port,host:port,... (a name with several IPs
    /// counts as several masters).
    #[arg(short = 'H', long, env = MASTERS_ENV, default_value = DEFAULT_MASTERS, global = true)]
    masters: String,
    /// Seconds to keep trying for a leader before giving up (default: 5 for
    /// info, 30 for the other commands).
    #[arg(long, value_name = "SECS", global = true)]
    timeout: Option<f64>,
    /// PEM CA of a cluster serving TLS: dial the masters with TLS.
    #[arg(long, value_name = "PATH", env = "MFS_TLS_CA_FILE", global = true)]
    tls_ca: Option<String>,
    /// The masters' CLUSTER_SECRET, if they have one: needed to change the
    /// masters (add-master, remove-master, ...) and order snapshots.
    /// Prefer the environment variable: arguments show in `ps`.
    #[arg(
        long,
        value_name = "SECRET",
        env = "MFS_CLUSTER_SECRET",
        hide_env_values = true,
        global = true
    )]
    cluster_secret: Option<String>,
    /// Log what the client does (repeat for more) on stderr.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Masters (role, term, log indexes), the leader, metaloggers,
    /// chunkservers and chunk health.
    Info {
        /// Print JSON (the stable shape for scripts).
        #[arg(long)]
        json: bool,
        /// Sizes as KiB/MiB/GiB (the default on a terminal).
        #[arg(long, conflicts_with = "raw")]
        human: bool,
        /// Sizes in bytes (the default when piped).
        #[arg(long)]
        raw: bool,
    },
    /// Add a master to the Raft group (a learner first, then a voter).
    AddMaster {
        /// The new master's MASTER_ID.
        id: u64,
        /// Its gRPC address, host:port.
        addr: String,
    },
    /// Remove a master from the Raft group.
    RemoveMaster {
        /// The master's id.
        id: u64,
    },
    /// Add a non-voting member (a metalogger).
    AddLearner {
        /// The learner's id.
        id: u64,
        /// Its gRPC address, host:port.
        addr: String,
    },
    /// Make a learner a voter.
    Promote {
        /// The learner's id.
        id: u64,
    },
    /// Make the leader write a metadata snapshot now.
    Snapshot,
    /// Wait until the cluster has a leader that answers; print its id.
    WaitLeader,
    /// Client sessions (mounts, tools): id, open files, and the rights
    /// their mfsexports.cfg line gave them (address, directory inode,
    /// ro/rw, the line).
    Sessions {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Directory quotas: each directory's usage with its soft and hard
    /// limits ("usage/soft/hard", "-": no limit), grace period and since
    /// when a soft limit is exceeded.
    Quota {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match mfs_proto::tls::Tls::dialing("--tls-ca", cli.tls_ca.as_deref().unwrap_or("")) {
        Ok(t) => mfs_proto::tls::set(t),
        Err(e) => {
            eprintln!("mfscli: {e}");
            return ExitCode::FAILURE;
        }
    }
    let filter = match cli.verbose {
        0 => "error",
        1 => "info",
        _ => "debug",
    };
    let env_filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mfscli: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mfscli: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes to stdout; a closed pipe (`mfscli info | head`) is not an error.
fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

fn seconds(s: Option<f64>, default: f64) -> Result<Duration> {
    let s = s.unwrap_or(default);
    Duration::try_from_secs_f64(s)
        .map_err(|_| anyhow::anyhow!("--timeout must be a number of seconds >= 0, got {s}"))
}

/// `--cluster-secret`, set once at start.
static CLUSTER_SECRET: std::sync::OnceLock<String> = std::sync::OnceLock::new();

async fn connect(masters: &[String], call: Duration, overall: Duration) -> Result<MasterClient> {
    let opts = ClientOptions {
        cluster_secret: CLUSTER_SECRET.get().cloned().unwrap_or_default(),
        connect_timeout: Duration::from_secs(2).min(call),
        call_timeout: call,
        overall_timeout: Some(overall),
        session_info: "mfscli".into(),
        register_session: false,
        ..Default::default()
    };
    Ok(MasterClient::connect(masters, opts).await?)
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let masters = parse_masters(&cli.masters)?;
    if let Some(s) = &cli.cluster_secret {
        let _ = CLUSTER_SECRET.set(s.clone());
    }
    match cli.cmd {
        Cmd::Info { json, human, raw } => {
            let timeout = seconds(cli.timeout, 5.0)?;
            // Each NodeStatus gets 2 s; ClusterInfo keeps trying for `timeout`.
            let client = connect(&masters, Duration::from_secs(2), timeout).await?;
            let (view, cluster_err) = info::gather(&client).await;
            let tty = std::io::stdout().is_terminal();
            if json {
                emit(&(serde_json::to_string_pretty(&view)? + "\n"))?;
            } else {
                let human = human || (tty && !raw);
                emit(&output::info(&view, Style { table: tty, human }))?;
            }
            if !view.any_reachable() {
                eprintln!(
                    "mfscli: no master answered at {}",
                    client.masters().join(",")
                );
                return Ok(ExitCode::FAILURE);
            }
            if let Some(e) = cluster_err {
                eprintln!("mfscli: warning: no leader answered ClusterInfo: {e}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Sessions { json } => {
            let client = listing_client(&masters, cli.timeout).await?;
            let info = client.cluster_info().await.context("asking the leader")?;
            let list = &info.sessions;
            emit_listing(json, output::sessions_json(list), || output::sessions(list))
        }
        Cmd::Quota { json } => {
            let client = listing_client(&masters, cli.timeout).await?;
            let list = client.list_quotas().await.context("listing quotas")?;
            emit_listing(json, output::quotas_json(&list), || output::quotas(&list))
        }
        Cmd::AddMaster { id, addr } => {
            let client = admin_client(&masters, cli.timeout).await?;
            let r = client
                .add_master(id, &addr)
                .await
                .with_context(|| format!("adding master {id} at {addr}"))?;
            emit(&output::membership(&r))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::RemoveMaster { id } => {
            let client = admin_client(&masters, cli.timeout).await?;
            let r = client
                .remove_master(id)
                .await
                .with_context(|| format!("removing master {id}"))?;
            emit(&output::membership(&r))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::AddLearner { id, addr } => {
            let client = admin_client(&masters, cli.timeout).await?;
            let r = client
                .add_learner(id, &addr)
                .await
                .with_context(|| format!("adding learner {id} at {addr}"))?;
            emit(&output::membership(&r))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Promote { id } => {
            let client = admin_client(&masters, cli.timeout).await?;
            let r = client
                .promote_learner(id)
                .await
                .with_context(|| format!("promoting learner {id}"))?;
            emit(&output::membership(&r))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Snapshot => {
            let client = admin_client(&masters, cli.timeout).await?;
            client
                .trigger_snapshot()
                .await
                .context("triggering a snapshot")?;
            emit("snapshot triggered\n")?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::WaitLeader => {
            let timeout = seconds(cli.timeout, 30.0)?;
            let id = wait_leader(&masters, timeout).await?;
            emit(&format!("{id}\n"))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A client for membership changes: an attempt may take as long as the
/// whole command (a new member can take a while to catch up).
/// A client for the listing commands (`sessions`, `quota`).
async fn listing_client(masters: &[String], timeout: Option<f64>) -> Result<MasterClient> {
    connect(masters, Duration::from_secs(5), seconds(timeout, 30.0)?).await
}

/// Prints a listing as pretty JSON or as text.
fn emit_listing(
    json: bool,
    value: serde_json::Value,
    text: impl FnOnce() -> String,
) -> Result<ExitCode> {
    if json {
        emit(&(serde_json::to_string_pretty(&value)? + "\n"))?;
    } else {
        emit(&text())?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn admin_client(masters: &[String], timeout: Option<f64>) -> Result<MasterClient> {
    let timeout = seconds(timeout, 30.0)?;
    connect(masters, timeout, timeout).await
}

/// Polls ClusterInfo (which follows redirects and fails over) until a leader
/// answers with its id, or `timeout` passes.
async fn wait_leader(masters: &[String], timeout: Duration) -> Result<u64> {
    let start = Instant::now();
    let client = connect(masters, Duration::from_secs(2), timeout).await?;
    let mut last = String::from("no attempt made");
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left, client.cluster_info()).await {
            Ok(Ok(ci)) if ci.leader_id != 0 => return Ok(ci.leader_id),
            Ok(Ok(_)) => last = "the master answered ClusterInfo but knows no leader".into(),
            // A timeout already says where it tried and why: keep its cause.
            Ok(Err(ClientError::Timeout { last_error, .. })) => last = last_error,
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(200).min(timeout.saturating_sub(start.elapsed())))
            .await;
    }
    bail!(
        "no leader at {} within {:.1?}: {last}",
        client.masters().join(","),
        timeout
    )
}
