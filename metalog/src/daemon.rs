//! Wires a metalogger together: the changelog recorder, the learner node
//! and its RaftService, joining the cluster, the timers (fsync and rotation,
//! metadata images), `/metrics`, and a clean stop on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use mfs_master::raft::learner::{LearnerNode, LearnerSettings};
use mfs_mount::master::{ClientOptions, MasterClient};
use tokio::sync::mpsc;

use crate::changelog::WriterSettings;
use crate::config::{MetaloggerConfig, Resolved};
use crate::error::{Error, Result};
use crate::recorder::Recorder;

/// Subdirectory of DATA_PATH holding the learner's Raft log and snapshots.
pub const RAFT_DIR: &str = "raft";

/// Runs a metalogger until SIGTERM/SIGINT, or until something it cannot
/// work around (a wrong id, another cluster's data, a full disk) stops it.
pub async fn run(cfg: MetaloggerConfig, res: Resolved) -> Result<()> {
    let prom = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| Error::Raft(format!("metrics recorder: {e}")))?;
    let listener = tokio::net::TcpListener::bind(res.listen)
        .await
        .map_err(|e| {
            Error::Config(format!(
                "cannot listen on {} (LISTEN_HOST/LISTEN_PORT): {e}",
                res.listen
            ))
        })?;
    let id = cfg.node_id(&res.advertise)?;
    let recorder = Recorder::open(WriterSettings {
        dir: cfg.data_path.clone(),
        back_logs: cfg.back_logs,
        rotate_entries: cfg.changelog_rotate_entries,
        rotate_after: res.rotate_after,
    })?;
    let settings = LearnerSettings {
        id,
        raft_dir: cfg.data_path.join(RAFT_DIR),
        advertise: res.advertise.clone(),
        cluster_secret: cfg.cluster_secret.clone(),
        snapshot_log_entries: cfg.snapshot_log_entries,
        snapshot_entries_per_inode: cfg.snapshot_entries_per_inode,
        snapshot_files: 2,
    };
    let node = LearnerNode::start(&settings, recorder.clone())
        .await
        .map_err(Error::Raft)?;
    tracing::info!(
        id,
        listen = %res.listen,
        advertise = res.advertise.as_str(),
        data = %cfg.data_path.display(),
        last_line = ?recorder.last_index(),
        masters = %res.masters.join(","),
        "mfsmetalogger started"
    );

    // Fatal conditions found by background tasks end the daemon.
    let (fatal_tx, mut fatal_rx) = mpsc::unbounded_channel::<String>();
    if let Some(addr) = res.http_listen {
        let (prom, node) = (prom.clone(), node.clone());
        let tx = fatal_tx.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_http(addr, prom, node).await {
                let _ = tx.send(e);
            }
        });
    }
    tokio::spawn(join(
        node.clone(),
        res.masters.clone(),
        cfg.cluster_secret.clone(),
        fatal_tx.clone(),
    ));
    tokio::spawn(sync_timer(
        recorder.clone(),
        res.sync_every,
        fatal_tx.clone(),
    ));
    tokio::spawn(image_timer(
        node.clone(),
        recorder.clone(),
        res.image_every,
        cfg.data_path.join(crate::image::IMAGE_FILE).exists(),
        fatal_tx.clone(),
    ));
    tokio::spawn(watch(node.clone(), fatal_tx.clone()));

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let incoming = tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(30)));
    let mut fatal: Option<String> = None;
    let stop = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("cannot watch SIGTERM: {e}");
                    return std::future::pending().await;
                }
            };
        tokio::select! {
            _ = term.recv() => tracing::info!("stopping"),
            _ = tokio::signal::ctrl_c() => tracing::info!("stopping"),
            m = fatal_rx.recv() => fatal = m,
        }
    };
    let served = mfs_proto::tls::server_builder()
        .map_err(Error::Config)?
        .tcp_nodelay(true)
        .add_service(health)
        .add_service(node.raft_service())
        .serve_with_incoming_shutdown(incoming, stop)
        .await;
    node.shutdown().await;
    let synced = recorder.sync();
    served.map_err(|e| Error::Raft(format!("gRPC server: {e}")))?;
    synced?;
    match fatal {
        Some(m) => Err(Error::Raft(m)),
        None => Ok(()),
    }
}

/// Asks the leader to add this node as a learner, unless it is a member
/// already. Retries while no leader answers; stops the daemon on a conflict
/// that needs a person (id taken, other cluster).
async fn join(
    node: Arc<LearnerNode>,
    masters: Vec<String>,
    secret: String,
    fatal: mpsc::UnboundedSender<String>,
) {
    let opts = ClientOptions {
        cluster_secret: secret,
        call_timeout: Duration::from_secs(30),
        overall_timeout: Some(Duration::from_secs(60)),
        session_info: "mfsmetalogger".into(),
        ..Default::default()
    };
    let client = match MasterClient::connect(&masters, opts).await {
        Ok(c) => c,
        Err(e) => {
            let _ = fatal.send(format!("MASTER_HOST: {e}"));
            return;
        }
    };
    let mut tries = 0u32;
    loop {
        match join_once(&node, &client).await {
            Ok(()) => return,
            Err(Join::Fatal(m)) => {
                let _ = fatal.send(m);
                return;
            }
            Err(Join::Retry(m)) => {
                if tries.is_multiple_of(10) {
                    tracing::warn!("cannot join the cluster yet: {m}; retrying");
                }
                tries += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

enum Join {
    Retry(String),
    Fatal(String),
}

async fn join_once(node: &LearnerNode, client: &MasterClient) -> Result<(), Join> {
    let info = client
        .cluster_info()
        .await
        .map_err(|e| Join::Retry(e.to_string()))?;
    if let Some(ours) = node.cluster_id() {
        if !info.cluster_id.is_empty() && info.cluster_id != ours {
            return Err(Join::Fatal(format!(
                "this metalogger's data (DATA_PATH) belongs to cluster {ours}, the masters at \
                 MASTER_HOST form cluster {}: point MASTER_HOST at the right cluster, or move \
                 DATA_PATH away to start afresh",
                info.cluster_id
            )));
        }
    }
    if let Some(m) = info.members.iter().find(|m| m.id == node.id) {
        if m.voter {
            return Err(Join::Fatal(format!(
                "METALOGGER_ID {} is the id of master {} at {}: give the metalogger an id no \
                 master uses",
                node.id, m.id, m.address
            )));
        }
        if m.address != node.advertise {
            return Err(Join::Fatal(format!(
                "node id {} is already the learner at {}, and this metalogger advertises {}: two \
                 metaloggers with one METALOGGER_ID? Give each its own id; if this one moved, \
                 remove the old entry first (mfscli remove-master {})",
                node.id, m.address, node.advertise, node.id
            )));
        }
        tracing::info!(id = node.id, "already a learner of the cluster");
        return Ok(());
    }
    client
        .add_learner(node.id, &node.advertise)
        .await
        .map_err(|e| Join::Retry(format!("AddLearner: {e}")))?;
    tracing::info!(
        id = node.id,
        address = node.advertise.as_str(),
        "joined the cluster as a learner"
    );
    Ok(())
}

/// fsyncs the changelog (and rotates it when due) every `every`.
async fn sync_timer(rec: Arc<Recorder>, every: Duration, fatal: mpsc::UnboundedSender<String>) {
    let mut t = tokio::time::interval(every);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        t.tick().await;
        let r = rec.clone();
        let res = tokio::task::spawn_blocking(move || r.sync()).await;
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = fatal.send(format!("changelog: {e}"));
                return;
            }
            Err(e) => tracing::error!("changelog sync task: {e}"),
        }
    }
}

/// Writes `metadata_ml.mfs` every `every`; when there is none yet, soon
/// after the node holds some state.
async fn image_timer(
    node: Arc<LearnerNode>,
    rec: Arc<Recorder>,
    every: Duration,
    have_image: bool,
    fatal: mpsc::UnboundedSender<String>,
) {
    let mut last_written: Option<u64> = None;
    let mut have_image = have_image;
    loop {
        // Until a first image is written, look again soon.
        let wait = if !have_image {
            every.min(Duration::from_secs(5))
        } else {
            every
        };
        tokio::time::sleep(wait).await;
        let st = node.status();
        let Some(applied) = st.applied else {
            continue;
        };
        if last_written == Some(applied.index) {
            continue;
        }
        let (n, r) = (node.clone(), rec.clone());
        let res = tokio::task::spawn_blocking(move || {
            let (pos, image) = n.image().map_err(Error::Raft)?;
            r.write_image(pos, &image)?;
            Ok::<_, Error>(pos.map(|p| p.index))
        })
        .await;
        match res {
            Ok(Ok(idx)) => {
                last_written = idx;
                have_image = true;
            }
            Ok(Err(e)) => {
                let _ = fatal.send(format!("metadata image: {e}"));
                return;
            }
            Err(e) => tracing::error!("metadata image task: {e}"),
        }
    }
}

/// Logs role changes, and ends the daemon when the Raft node stopped on an
/// error (e.g. the changelog could not be written).
async fn watch(node: Arc<LearnerNode>, fatal: mpsc::UnboundedSender<String>) {
    let mut role = "";
    let mut warned_voter = false;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let st = node.status();
        if let Some(f) = st.fatal {
            let _ = fatal.send(format!("the Raft node stopped: {f}"));
            return;
        }
        if st.role != role {
            tracing::info!(role = st.role, leader = ?st.leader_id, "metalogger role");
            role = st.role;
        }
        if st.role == "voter" && !warned_voter {
            tracing::error!(
                "this metalogger was made a voter; it refuses votes and cannot lead: \
                 demote it (mfscli remove-master {}) and let it join again as a learner",
                node.id
            );
            warned_voter = true;
        }
        metrics::gauge!("mfs_metalogger_applied_index")
            .set(st.applied.map(|p| p.index).unwrap_or(0) as f64);
        metrics::gauge!("mfs_raft_term").set(st.term as f64);
    }
}

async fn serve_http(
    addr: SocketAddr,
    prom: PrometheusHandle,
    node: Arc<LearnerNode>,
) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on HTTP_LISTEN {addr}: {e}"))?;
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                metrics::gauge!("mfs_namespace_inodes").set(node.inodes() as f64);
                std::future::ready(prom.render())
            }),
        )
        .route(
            "/",
            get(|| std::future::ready("rmfs metalogger: see /metrics (Prometheus)\n")),
        );
    axum::serve(listener, app)
        .await
        .map_err(|e| format!("HTTP server: {e}"))
}
