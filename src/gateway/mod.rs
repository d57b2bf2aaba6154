//! The gateway role: stateless front-ends that clients talk to, over one
//! request core that streams to agents.

pub mod clocks;
pub mod core;
pub mod git;
pub mod http;
pub mod limits;
pub mod line;
pub mod mesh;
pub mod metrics;
pub mod select;
pub mod throttle;

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::tasks::{SHUTDOWN_GRACE, Tasks, serve_until};

#[derive(Debug, Clone, clap::Args)]
pub struct GatewayConfig {
    /// Coordinator gRPC URL, e.g. https://10.0.0.1:7400, or several
    /// separated by commas (a host name stands for each of its addresses):
    /// calls fail over between them.
    #[arg(long, env = "ANNEXMESH_COORDINATOR")]
    pub coordinator: String,
    #[command(flatten)]
    pub failover: crate::rpc::FailoverArgs,
    /// Address to serve P2P over HTTP on (git-annex's default port is 9417).
    #[arg(long, env = "ANNEXMESH_HTTP", default_value = "127.0.0.1:9417")]
    pub http: SocketAddr,
    /// Address to serve git-annex's line-based P2P protocol on (TCP, AUTH
    /// with tokens from `annexmesh admin token create`), for `p2p-annex::`
    /// remotes and `annexmesh shell`. Off unless given.
    #[arg(long, env = "ANNEXMESH_P2P")]
    pub p2p: Option<SocketAddr>,
    /// The cluster or node served to line-protocol connections that do not
    /// name one; by default the only cluster, when there is exactly one.
    #[arg(long, env = "ANNEXMESH_P2P_REPO")]
    pub p2p_repo: Option<String>,
    /// PEM certificate chain: serve the line protocol over TLS (clients use
    /// addresses `tls:HOST:PORT/NAME`). Needs --p2p-tls-key.
    #[arg(long, env = "ANNEXMESH_P2P_TLS_CERT", requires = "p2p_tls_key")]
    pub p2p_tls_cert: Option<std::path::PathBuf>,
    /// PEM private key for --p2p-tls-cert.
    #[arg(long, env = "ANNEXMESH_P2P_TLS_KEY", requires = "p2p_tls_cert")]
    pub p2p_tls_key: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub http_args: http::HttpArgs,
    #[command(flatten)]
    pub limits: limits::GatewayLimits,
    /// TLS to the coordinator and agents (the mesh's own certificates).
    #[command(flatten)]
    pub mesh_tls: crate::pki::MemberTlsArgs,
}

pub async fn run(cfg: GatewayConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Before binding: a gateway without an access choice must not start.
    let mut serving = cfg.http_args.serving()?;
    limits::set_call_limits(cfg.limits.call_limits());
    // One count of failed logins per address, whichever front-end they try.
    let throttle = cfg.limits.throttle();
    serving.opts.throttle = throttle.clone();
    let listener = TcpListener::bind(cfg.http)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.http))?;
    let line = match cfg.p2p {
        None => None,
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            let tls = match (&cfg.p2p_tls_cert, &cfg.p2p_tls_key) {
                (Some(c), Some(k)) => Some(crate::tls::acceptor(c, k)?),
                _ => None,
            };
            let mut opts = cfg.limits.line_options(cfg.p2p_repo.clone(), tls);
            opts.throttle = throttle.clone();
            Some((l, opts))
        }
    };
    let t = &cfg.mesh_tls;
    if (t.join_token.is_some() || t.join_token_file.is_some()) && t.state_dir.is_none() {
        warn!(
            "--join-token without --state-dir: the certificate is not kept, join again on restart"
        );
    }
    let creds = t
        .credentials(&cfg.coordinator, t.state_dir.as_deref(), crate::pki::Role::Gateway, "")
        .await?;
    let dialer =
        crate::rpc::Dialer::new(creds, t.insecure).with_failover(cfg.failover.coordinator_failover);
    serve(&cfg.coordinator, dialer, listener, serving, line, shutdown).await
}

/// Serves P2P over HTTP on `listener` and, when given, the line protocol.
pub async fn serve(
    coordinator: &str,
    dialer: crate::rpc::Dialer,
    listener: TcpListener,
    http: http::HttpServing,
    line: Option<(TcpListener, line::LineOptions)>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    match http::serve::raise_nofile_limit() {
        Ok(n) => info!(open_files = n, "descriptor limit"),
        Err(e) => warn!("cannot raise the open-file limit: {e}"),
    }
    let tasks = Tasks::new(&shutdown);
    let mesh = mesh::Mesh::new(coordinator, dialer)?;
    mesh.spawn_refresh(&tasks);
    let core = core::Core::new(mesh.clone(), tasks.clone());
    let line = line.map(|(l, opts)| {
        let tokens: std::sync::Arc<dyn line::TokenCheck> =
            std::sync::Arc::new(line::CoordinatorTokens(mesh.clone()));
        tasks.spawn_owned(line::serve(core.clone(), tokens, l, opts))
    });
    let passwords = std::sync::Arc::new(http::auth::CoordinatorPasswords(mesh.clone()));
    let app = http::router(core, http.opts.clone(), passwords)
        .layer(axum::middleware::from_fn(http::trace::trace));
    let scheme = if http.tls.is_some() { "HTTPS" } else { "HTTP" };
    let policy = http.opts.policy;
    info!(addr = %listener.local_addr()?, users = policy.users, anonymous = ?policy.anonymous, "gateway serving P2P over {scheme}");
    let public = !listener.local_addr()?.ip().is_loopback();
    if policy.users && public && http.tls.is_none() && http.opts.trusted_proxies.is_empty() {
        warn!(
            "basic-auth passwords travel in clear text over plain HTTP; use --http-tls-cert or a TLS proxy"
        );
    }
    let server = http::serve::serve(listener, app, http.tls, http.limits, tasks.token().clone());
    let result = serve_until(server, tasks.token(), SHUTDOWN_GRACE, "gateway HTTP").await;
    let result = result.context("gateway HTTP server failed");
    if let Some(Ok(Err(e))) = match line {
        Some(l) => Some(l.await),
        None => None,
    } {
        warn!("line-protocol listener failed: {e}");
    }
    tasks.shutdown(SHUTDOWN_GRACE).await;
    result
}
