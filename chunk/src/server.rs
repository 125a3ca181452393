//! Wires a chunkserver together: disks, store, the data service (with
//! health), the link to the masters, the scrub, `/metrics`, and a clean
//! stop on SIGTERM/SIGINT.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{ChunkConfig, Resolved};
use crate::master_link::{LinkConfig, MasterLink};
use crate::service::{ChunkSvc, CONNECTION_WINDOW, MAX_FRAME, STREAM_WINDOW};
use crate::store::{Store, StoreOptions};
use crate::{hdd, http, scrub};

/// How long calls in flight may take after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Runs a chunkserver until SIGTERM/SIGINT.
pub async fn run(cfg: ChunkConfig, res: Resolved) -> Result<(), String> {
    let specs = hdd::load(&res.hdd_file).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&cfg.data_path).map_err(|e| {
        format!(
            "cannot create DATA_PATH {}: {e} (set DATA_PATH to a writable folder)",
            cfg.data_path.display()
        )
    })?;
    // Bind first, so a port already taken is reported before the scan.
    let listener = tokio::net::TcpListener::bind(res.listen)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {} (CSSERV_LISTEN_HOST/CSSERV_LISTEN_PORT): {e}",
                res.listen
            )
        })?;
    // With port 0 the OS picked one: tell the master the real one.
    let mut res = res;
    if cfg.advertise.trim().is_empty() && res.listen.port() == 0 {
        if let Ok(a) = listener.local_addr() {
            let ip = if a.ip().is_unspecified() {
                std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
            } else {
                a.ip()
            };
            res.advertise = std::net::SocketAddr::new(ip, a.port()).to_string();
        }
    }
    let http_listener = match res.http_listen {
        Some(a) => Some(http::bind(a).await?),
        None => None,
    };
    let opts = StoreOptions {
        reserve: res.reserve,
        fsync_before_close: cfg.hdd_fsync_before_close,
        open_files: cfg.open_files,
        direct_writes: cfg.hdd_direct_writes,
        spare_files: cfg.hdd_spare_files,
    };
    let store = tokio::task::spawn_blocking(move || Store::open(&specs, opts))
        .await
        .map_err(|e| format!("disk scan failed: {e}"))??;
    let store = Arc::new(store);
    tracing::info!(
        listen = %res.listen,
        advertise = res.advertise.as_str(),
        chunks = store.chunk_count(),
        disks = store.disks().len(),
        masters = res.masters.join(",").as_str(),
        "mfschunkserver started"
    );
    if let Some(l) = http_listener {
        let prom = http::install_recorder()?;
        let s = store.clone();
        tokio::spawn(async move {
            if let Err(e) = http::serve(l, prom, s).await {
                tracing::error!("{e}");
            }
        });
    }
    let secret = mfs_proto::ClusterSecret::new(&cfg.cluster_secret);
    let link = MasterLink::new(
        LinkConfig {
            masters: res.masters.clone(),
            advertise: res.advertise.clone(),
            labels: res.labels.clone(),
            maintenance: cfg.maintenance,
            id_file: cfg.data_path.join("chunkserver.id"),
            secret: secret.clone(),
        },
        store.clone(),
    );
    tokio::spawn(link.run());
    tokio::spawn(crate::spare::run(store.clone()));
    if cfg.hdd_test_freq > 0 {
        tokio::spawn(scrub::run(
            store.clone(),
            Duration::from_secs(cfg.hdd_test_freq),
        ));
    }
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
    let serve = serve_grpc(store.clone(), secret, listener, shutdown);
    tokio::pin!(serve);
    // Clients (mounts, peers) keep their connections open: after the signal,
    // calls in flight get a grace period, then the server stops anyway.
    let grace = async {
        let _ = stop_rx.wait_for(|stop| *stop).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let r = tokio::select! {
        r = &mut serve => r,
        _ = grace => {
            tracing::info!("connections still open after {SHUTDOWN_GRACE:?}; stopping anyway");
            Ok(())
        }
    };
    let s = store.clone();
    let _ = tokio::task::spawn_blocking(move || s.close_all()).await;
    r
}

/// Serves the data service (and gRPC health) on `listener` until
/// `shutdown` completes; orders must carry `secret` (when set).
pub async fn serve_grpc(
    store: Arc<Store>,
    secret: mfs_proto::ClusterSecret,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), String> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<mfs_proto::v1::chunk_service_server::ChunkServiceServer<ChunkSvc>>()
        .await;
    let incoming = tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(30)));
    mfs_proto::tls::server_builder()?
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .max_frame_size(Some(MAX_FRAME))
        .add_service(health)
        .add_service(ChunkSvc::new(store, secret).into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| format!("gRPC server: {e}"))
}

/// Keeps glibc malloc from returning large buffers (gRPC messages of up to
/// 16 MiB) to the kernel after every request: without it each request
/// maps fresh pages and pays a page fault and a kernel zeroing per 4 KiB.
pub fn tune_malloc() {
    // SAFETY: mallopt only changes allocator parameters; called before the
    // threads that allocate are started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}
