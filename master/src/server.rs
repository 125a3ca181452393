//! Wires a master together: the Raft node, the gRPC services (with health
//! and reflection), the HTTP side, and a clean stop on SIGTERM/SIGINT.

use std::sync::Arc;
use std::time::Duration;

use mfs_proto::v1::admin_service_server::AdminServiceServer;
use mfs_proto::v1::chunk_registry_server::ChunkRegistryServer;
use mfs_proto::v1::meta_service_server::MetaServiceServer;

use crate::chunks::{duties, ChunkManager};
use crate::config::{MasterConfig, Resolved};
use crate::raft::MasterNode;
use crate::service::access::ExportsFile;
use crate::service::{admin::Admin, chunks, http, meta::Meta};

/// Largest request a client may send (bytes); bigger ones are refused.
const MAX_REQUEST: usize = 4 << 20;
/// How long calls in flight may take after SIGTERM: clients (mounts,
/// chunkservers, peers) keep their connections open, and a graceful stop
/// would wait for every one of them to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// How long the Raft node may take to stop before the process exits anyway.
const RAFT_SHUTDOWN_LIMIT: Duration = Duration::from_secs(5);

pub async fn run(cfg: MasterConfig, res: Resolved) -> Result<(), String> {
    let exports = exports_file(&cfg)?;
    let prom = http::install_recorder()?;
    // Bind first, so a port already taken is reported before anything else.
    let listener = tokio::net::TcpListener::bind(res.listen)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {} (LISTEN_HOST/LISTEN_PORT): {e}",
                res.listen
            )
        })?;
    let node = MasterNode::start(&cfg, &res).await?;
    tracing::info!(
        id = cfg.master_id,
        listen = %res.listen,
        advertise = res.advertise.as_str(),
        data = %cfg.data_path.display(),
        "mfsmaster started"
    );
    if let Some(addr) = res.http_listen {
        let (prom, node) = (prom.clone(), node.clone());
        tokio::spawn(async move {
            if let Err(e) = http::serve(addr, prom, node).await {
                tracing::error!("{e}");
            }
        });
    }

    let chunk_mgr = ChunkManager::new(node.clone());
    tokio::spawn(duties::run(chunk_mgr.clone()));
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<MetaServiceServer<Meta>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(mfs_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| format!("reflection: {e}"))?;

    tokio::spawn(reload_on_hangup(exports.clone()));
    let meta = MetaServiceServer::new(Meta {
        node: node.clone(),
        chunks: chunk_mgr.clone(),
        exports,
        secret: mfs_proto::ClusterSecret::new(&cfg.cluster_secret),
        recalls: Default::default(),
    })
    .max_decoding_message_size(MAX_REQUEST);
    let admin = AdminServiceServer::new(Admin {
        node: node.clone(),
        chunks: chunk_mgr.clone(),
        secret: mfs_proto::ClusterSecret::new(&cfg.cluster_secret),
    });
    // Full chunk reports come in batches of many copies.
    let chunks = ChunkRegistryServer::new(chunks::Chunks { chunks: chunk_mgr })
        .max_decoding_message_size(64 << 20);
    // Every accepted connection gets TCP_NODELAY: small replies (and Raft
    // acks) must not wait for the peer's delayed ACK.
    let incoming = tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(std::time::Duration::from_secs(30)));
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("cannot watch SIGTERM: {e}");
                    return std::future::pending().await;
                }
            };
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        tracing::info!("stopping");
        let _ = stop_tx.send(true);
    };
    let mut serve = Box::pin(
        mfs_proto::tls::server_builder()?
            .tcp_nodelay(true)
            .layer(http::RpcMetricsLayer)
            .add_service(health)
            .add_service(reflection)
            .add_service(meta)
            .add_service(admin)
            .add_service(chunks)
            .add_service(node.raft_service())
            .serve_with_incoming_shutdown(incoming, shutdown),
    );
    // After the signal, calls in flight get a grace period; then the server
    // is dropped (closing the connections still open) and the node stops.
    let grace = async {
        let _ = stop_rx.wait_for(|stop| *stop).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let served = tokio::select! {
        r = &mut serve => r.map_err(|e| format!("gRPC server: {e}")),
        _ = grace => {
            tracing::info!("connections still open after {SHUTDOWN_GRACE:?}; stopping anyway");
            Ok(())
        }
    };
    // Dropping the server future closes the listener and every connection.
    drop(serve);
    if tokio::time::timeout(RAFT_SHUTDOWN_LIMIT, node.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("the Raft node did not stop within {RAFT_SHUTDOWN_LIMIT:?}; exiting anyway");
    }
    served
}

/// EXPORTS_FILENAME read and checked: a file that cannot be read or has a
/// bad line stops the master at start, naming the line.
fn exports_file(cfg: &MasterConfig) -> Result<Arc<ExportsFile>, String> {
    let path = (!cfg.exports_filename.trim().is_empty())
        .then(|| std::path::PathBuf::from(cfg.exports_filename.trim()));
    let file = ExportsFile::load(path).map_err(|e| format!("EXPORTS_FILENAME: {e}"))?;
    match (file.path(), file.rules()) {
        (Some(p), Some(rules)) => tracing::info!(
            file = %p.display(),
            lines = rules.len(),
            "client access as the exports file says"
        ),
        _ => tracing::info!(
            "no EXPORTS_FILENAME: every client may mount every directory, read and write"
        ),
    }
    Ok(Arc::new(file))
}

/// SIGHUP reads the exports file again (new sessions get the new rules);
/// a file with an error is reported and the rules in force stay.
async fn reload_on_hangup(exports: Arc<ExportsFile>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot watch SIGHUP (no reload of the exports file): {e}");
            return;
        }
    };
    while hup.recv().await.is_some() {
        match exports.reload() {
            Ok(lines) if exports.path().is_some() => {
                tracing::info!(lines, "SIGHUP: exports file read again")
            }
            Ok(_) => tracing::info!("SIGHUP: no EXPORTS_FILENAME to read"),
            Err(e) => tracing::error!("SIGHUP: {e}; the rules read before stay in force"),
        }
    }
}
