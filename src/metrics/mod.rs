//! What every role shares for Prometheus metrics: one [`Registry`] per role
//! instance holding `process_*` (see [`process`]) and
//! `annexmesh_build_info`, the latency buckets, the gRPC timing layer
//! ([`grpc`]) and a small `/metrics` server for the roles without an HTTP
//! listener of their own (coordinator and agent).
//!
//! Names follow Prometheus conventions: everything the mesh defines starts
//! `annexmesh_`, counters end `_total`, sizes `_bytes`, durations
//! `_seconds`. The text is OpenMetrics, which Prometheus asks for.

pub mod grpc;
pub mod process;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::info;

use crate::tasks::{SHUTDOWN_GRACE, Tasks, serve_until};

/// The prefix of every metric the mesh defines (`process_*` aside).
pub const PREFIX: &str = "annexmesh";

/// The content type of [`encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A label set given as pairs, in the order they are rendered.
pub type Labels = Vec<(String, String)>;

/// A role's root registry: `process_*` and `annexmesh_build_info{version,
/// commit,role} 1`. Register the role's own metrics in
/// `registry.sub_registry_with_prefix(PREFIX)`.
pub fn role_registry(role: &str) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(process::ProcessCollector));
    let info = Family::<Labels, Gauge>::default();
    info.get_or_create(&vec![
        ("version".into(), env!("CARGO_PKG_VERSION").into()),
        ("commit".into(), env!("ANNEXMESH_COMMIT").into()),
        ("role".into(), role.into()),
    ])
    .set(1);
    registry.sub_registry_with_prefix(PREFIX).register(
        "build_info",
        "The running build: always 1, with its version, commit and role.",
        info,
    );
    registry
}

/// The registry in the OpenMetrics text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; a metric that did would be a bug.
    prometheus_client::encoding::text::encode(&mut out, registry)
        .expect("metrics encode into a string");
    out
}

/// Buckets for request latencies, 1 ms to about 2 min.
pub fn latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 18))
}

/// A role's metrics, rendered on demand: roles whose figures come from
/// asynchronous reads (the coordinator's store) refresh them first.
pub trait Scrape: Send + Sync + 'static {
    /// The metrics text, or why it cannot be had now.
    fn scrape(&self) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>>;
}

/// A shared [`Scrape`].
pub type Source = Arc<dyn Scrape>;

/// The `/metrics` answer for `source`.
pub async fn respond(source: &dyn Scrape) -> Response {
    match source.scrape().await {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("metrics unavailable: {e}\n")).into_response()
        }
    }
}

/// Serves `GET /metrics` from `source` on `listener` until `tasks` stop;
/// `what` names the role in logs.
pub fn spawn_server(listener: TcpListener, source: Source, tasks: &Tasks, what: &'static str) {
    let app = Router::new()
        .route("/metrics", get(|State(s): State<Source>| async move { respond(&*s).await }))
        .with_state(source);
    let token = tasks.token().clone();
    tasks.spawn_owned(async move {
        let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        info!(%addr, "{what} serving metrics");
        let server = axum::serve(listener, app)
            .with_graceful_shutdown(token.clone().cancelled_owned())
            .into_future();
        let served = serve_until(server, &token, SHUTDOWN_GRACE, what).await;
        if let Err(e) = served.with_context(|| format!("{what} metrics server failed")) {
            tracing::warn!("{e:#}");
        }
    });
}

/// Binds `addr` for a metrics server, naming it in the error.
pub async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} for metrics"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_registry_says_its_build_and_process() {
        let text = encode(&role_registry("agent"));
        let info = format!(
            "annexmesh_build_info{{version=\"{}\",commit=\"{}\",role=\"agent\"}} 1",
            env!("CARGO_PKG_VERSION"),
            env!("ANNEXMESH_COMMIT")
        );
        assert!(text.lines().any(|l| l == info), "{text}");
        assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
