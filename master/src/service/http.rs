//! The HTTP side of a master: Prometheus `/metrics`, a JSON `/status`, and
//! the per-RPC metrics layer for the gRPC server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::raft::MasterNode;

/// Installs the global metrics recorder; returns the handle that renders it.
pub fn install_recorder() -> Result<PrometheusHandle, String> {
    PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("metrics recorder: {e}"))
}

/// Serves `/metrics` and `/status` on `addr` until the process ends.
pub async fn serve(
    addr: SocketAddr,
    prom: PrometheusHandle,
    node: Arc<MasterNode>,
) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on HTTP_LISTEN {addr}: {e}"))?;
    let app = Router::new()
        .route(
            "/metrics",
            get(move || std::future::ready(render(&prom, &node))),
        )
        .route(
            "/",
            get(|| std::future::ready("rmfs master: see /metrics (Prometheus) and mfscli info\n")),
        );
    axum::serve(listener, app)
        .await
        .map_err(|e| format!("HTTP server: {e}"))
}

fn render(prom: &PrometheusHandle, node: &MasterNode) -> String {
    let v = node.view();
    metrics::gauge!("mfs_raft_term").set(v.term as f64);
    metrics::gauge!("mfs_raft_last_log_index").set(v.last_log_index as f64);
    metrics::gauge!("mfs_raft_commit_index").set(v.commit_index as f64);
    metrics::gauge!("mfs_raft_applied_index").set(v.applied_index as f64);
    metrics::gauge!("mfs_raft_is_leader").set(if v.role == "leader" { 1.0 } else { 0.0 });
    metrics::gauge!("mfs_namespace_inodes").set(node.shared.ns().inode_count() as f64);
    prom.render()
}

/// A tower layer that counts and times every gRPC call by method, and opens a
/// tracing span named after it.
#[derive(Clone, Default)]
pub struct RpcMetricsLayer;

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics { inner }
    }
}

#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or("unknown")
            .to_string();
        let start = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            metrics::counter!("mfs_rpc_requests_total", "method" => method.clone()).increment(1);
            metrics::histogram!("mfs_rpc_duration_seconds", "method" => method)
                .record(start.elapsed().as_secs_f64());
            res
        })
    }
}
