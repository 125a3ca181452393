//! Prometheus `/metrics` on HTTP_LISTEN.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::store::Store;

/// Installs the global metrics recorder; returns the handle that renders it.
pub fn install_recorder() -> Result<PrometheusHandle, String> {
    PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("metrics recorder: {e}"))
}

/// Serves `/metrics` on an already bound listener until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    prom: PrometheusHandle,
    store: Arc<Store>,
) -> Result<(), String> {
    let app = Router::new()
        .route(
            "/metrics",
            get(move || std::future::ready(render(&prom, &store))),
        )
        .route(
            "/",
            get(|| std::future::ready("rmfs chunkserver: see /metrics (Prometheus)\n")),
        );
    axum::serve(listener, app)
        .await
        .map_err(|e| format!("HTTP server: {e}"))
}

/// Binds HTTP_LISTEN.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on HTTP_LISTEN {addr}: {e}"))
}

fn render(prom: &PrometheusHandle, store: &Store) -> String {
    metrics::gauge!("mfs_chunk_count").set(store.chunk_count() as f64);
    metrics::gauge!("mfs_chunk_load").set(store.load() as f64);
    for d in store.disks() {
        let path = d.path.display().to_string();
        if let Ok(sp) = d.space() {
            metrics::gauge!("mfs_disk_total_bytes", "path" => path.clone()).set(sp.total as f64);
            metrics::gauge!("mfs_disk_used_bytes", "path" => path.clone()).set(sp.used as f64);
        }
        metrics::gauge!("mfs_disk_chunks", "path" => path.clone()).set(d.chunk_count() as f64);
        metrics::gauge!("mfs_disk_damaged", "path" => path).set(if d.is_damaged() {
            1.0
        } else {
            0.0
        });
    }
    prom.render()
}
