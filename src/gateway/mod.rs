//! The gateway role: stateless front-ends that clients talk to, over one
//! request core that streams to agents.

pub mod clocks;
pub mod core;
pub mod fetch;
pub mod http;
pub mod mesh;
pub mod metrics;
pub mod select;

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

#[derive(Debug, Clone, clap::Args)]
pub struct GatewayConfig {
    /// Coordinator gRPC URL, e.g. http://10.0.0.1:7400
    #[arg(long, env = "ANNEXMESH_COORDINATOR")]
    pub coordinator: String,
    /// Address to serve P2P over HTTP on (git-annex's default port is 9417).
    #[arg(long, env = "ANNEXMESH_HTTP", default_value = "127.0.0.1:9417")]
    pub http: SocketAddr,
}

pub async fn run(cfg: GatewayConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = TcpListener::bind(cfg.http)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.http))?;
    serve(&cfg.coordinator, listener, shutdown).await
}

pub async fn serve(coordinator: &str, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mesh = mesh::Mesh::new(coordinator)?;
    let refresher = mesh.spawn_refresh();
    let app = http::router(core::Core::new(mesh)).layer(tower_http::trace::TraceLayer::new_for_http());
    info!(addr = %listener.local_addr()?, "gateway serving P2P over HTTP");
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("gateway HTTP server failed");
    refresher.abort();
    result
}
