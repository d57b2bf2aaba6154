//! The accept loop: a bounded number of connections, each optionally over
//! TLS, each served to its end and counted, until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use super::LineOptions;
use super::conn::{Close, Conn};
use super::handshake::{HANDSHAKE, TokenCheck, handshake};
use super::session::Session;
use crate::gateway::core::Core;
use crate::gateway::mesh::Repo;
use crate::gateway::metrics::Metrics;
use crate::tasks::SHUTDOWN_GRACE;

/// Accepts line-protocol connections until the gateway stops; connections
/// then get `SHUTDOWN_GRACE` to finish what they are doing.
pub async fn serve(
    core: Core,
    tokens: Arc<dyn TokenCheck>,
    listener: TcpListener,
    opts: LineOptions,
) -> std::io::Result<()> {
    let shutdown = core.tasks.token().clone();
    let slots = Arc::new(Semaphore::new(opts.max_connections));
    info!(addr = %listener.local_addr()?, tls = opts.tls.is_some(), "gateway serving the P2P line protocol");
    loop {
        let (mut stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: pause, not die.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            warn!(%peer, "refusing connection: {} connections open", opts.max_connections);
            core.tasks.spawn(async move {
                let _ = stream.write_all(b"ERROR too many connections; try again later\n").await;
            });
            continue;
        };
        let (tasks, core, tokens, opts) =
            (core.tasks.clone(), core.clone(), tokens.clone(), opts.clone());
        let serve_one = async move {
            match opts.tls.clone() {
                None => connection(&core, tokens.as_ref(), &opts, stream, peer).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => connection(&core, tokens.as_ref(), &opts, s, peer).await,
                        Ok(Err(e)) => info!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => info!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        };
        tasks.spawn_graceful(serve_one, SHUTDOWN_GRACE);
    }
}

/// Serves one connection to its end and accounts for it.
async fn connection<S: AsyncRead + AsyncWrite + Unpin + Send>(
    core: &Core,
    tokens: &dyn TokenCheck,
    opts: &LineOptions,
    stream: S,
    peer: SocketAddr,
) {
    let metrics = &core.metrics.line;
    Metrics::add(&metrics.connections, 1);
    metrics.active.fetch_add(1, Ordering::Relaxed);
    let mut conn = Conn::new(stream);
    match session(core, tokens, opts, &mut conn).await {
        Ok(()) => debug!(%peer, "connection closed"),
        Err(Close::Auth) => {
            Metrics::add(&metrics.auth_failures, 1);
            info!(%peer, "authentication failed");
        }
        Err(Close::Protocol(why)) => {
            Metrics::add(&metrics.protocol_errors, 1);
            info!(%peer, "closing connection: {why}");
        }
        Err(Close::Io(e)) => debug!(%peer, "connection ended: {e}"),
    }
    conn.close().await;
    metrics.active.fetch_sub(1, Ordering::Relaxed);
}

/// A whole session: the handshake, then requests.
async fn session<S: AsyncRead + AsyncWrite + Unpin + Send>(
    core: &Core,
    tokens: &dyn TokenCheck,
    opts: &LineOptions,
    conn: &mut Conn<S>,
) -> Result<(), Close> {
    let resolve = |name: Option<String>| resolve(core, opts, name);
    let Some(authed) = handshake(conn, tokens, resolve).await? else { return Ok(()) };
    debug!(client = %authed.client, repo = %authed.repo.uuid(), mode = %authed.mode, "authenticated");
    Session::new(core, authed.repo, authed.mode).serve(conn).await
}

/// The repository a connection asked for by name, or the default one: the
/// configured repository, else the only cluster.
async fn resolve(core: &Core, opts: &LineOptions, name: Option<String>) -> Result<Repo, String> {
    if let Some(name) = name.as_ref().or(opts.default_repo.as_ref()) {
        return core
            .mesh
            .repo_by_name(name)
            .await
            .ok_or_else(|| format!("no cluster or node named {name:?} is served here"));
    }
    let _ = core.mesh.refresh().await;
    let snap = core.mesh.snapshot();
    match snap.clusters.as_slice() {
        [only] => core
            .mesh
            .repo_by_uuid(&only.uuid)
            .await
            .ok_or_else(|| "the cluster vanished".to_string()),
        _ => {
            Err("this gateway serves several repositories: name one (address HOST:PORT/NAME)"
                .into())
        }
    }
}
