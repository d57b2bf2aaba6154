//! The accept loop: a bounded number of connections, each optionally over
//! TLS, each served to its end and counted, until shutdown. Connections wait
//! for AUTH in a smaller pool of their own (`admission`) and must
//! authenticate within a deadline; only then do they join the main pool.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

use super::LineOptions;
use super::admission::{PreAuth, PreAuthSlot, Refused, Throttled};
use super::conn::{Close, Conn};
use super::handshake::{Served, TokenCheck, handshake};
use super::session::Session;
use crate::gateway::core::Core;
use crate::gateway::mesh::Repo;
use crate::gateway::metrics::Metrics;
use crate::p2p::message::Message;
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
    let pre_auth = Arc::new(PreAuth::default());
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
        // An address that failed AUTH too often is turned away before it
        // takes a place or any work.
        let admitted = match opts.throttle.check(peer.ip()) {
            Err(wait) => Err(Refused::Throttled(wait)),
            Ok(()) => pre_auth.admit(
                peer.ip(),
                opts.max_unauthenticated,
                opts.max_unauthenticated_per_address,
            ),
        };
        let pre = match admitted {
            Ok(slot) => slot,
            Err(why) => {
                debug!(%peer, "refusing connection: {why}");
                let line = format!("ERROR {why}; try again later\n");
                core.tasks.spawn(async move {
                    // Bounded: a peer that reads nothing cannot keep this.
                    let write = stream.write_all(line.as_bytes());
                    let _ = tokio::time::timeout(Duration::from_secs(2), write).await;
                    // What the peer already sent (its AUTH) is read before
                    // closing, briefly: closing with unread input resets
                    // the connection, and the peer may lose the ERROR.
                    let _ = stream.shutdown().await;
                    let drain = async {
                        let mut buf = [0u8; 4096];
                        while let Ok(1..) = stream.read(&mut buf).await {}
                    };
                    let _ = tokio::time::timeout(Duration::from_millis(250), drain).await;
                });
                continue;
            }
        };
        let deadline = tokio::time::Instant::now() + opts.auth_timeout;
        let (tasks, core, tokens, opts, slots) =
            (core.tasks.clone(), core.clone(), tokens.clone(), opts.clone(), slots.clone());
        let serve_one = async move {
            let admit = Admit { tokens: tokens.as_ref(), slots, pre, deadline };
            match opts.tls.clone() {
                None => connection(&core, admit, &opts, stream, peer).await,
                Some(acceptor) => {
                    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => connection(&core, admit, &opts, s, peer).await,
                        Ok(Err(e)) => info!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => info!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        };
        tasks.spawn_graceful(serve_one, SHUTDOWN_GRACE);
    }
}

/// What a connection needs to get past AUTH: its pre-AUTH slot (given back
/// once it authenticates or leaves), the main pool it then joins, and when
/// it must have authenticated by.
struct Admit<'a> {
    tokens: &'a dyn TokenCheck,
    slots: Arc<Semaphore>,
    pre: PreAuthSlot,
    deadline: tokio::time::Instant,
}

/// A repository with the main-pool slot its connection holds.
struct Admitted {
    repo: Repo,
    _slot: OwnedSemaphorePermit,
}

impl Served for Admitted {
    fn uuid(&self) -> &str {
        self.repo.uuid()
    }
}

/// Serves one connection to its end and accounts for it.
async fn connection<S: AsyncRead + AsyncWrite + Unpin + Send>(
    core: &Core,
    admit: Admit<'_>,
    opts: &LineOptions,
    stream: S,
    peer: SocketAddr,
) {
    let metrics = &core.metrics.line;
    Metrics::add(&metrics.connections, 1);
    metrics.active.inc();
    let mut conn = Conn::new(stream);
    match session(core, admit, opts, &mut conn, peer).await {
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
    metrics.active.dec();
}

/// A whole session: the handshake within the AUTH deadline, then requests.
/// Its span carries a trace id of its own, which its requests' calls pass on.
#[tracing::instrument(
    name = "line_session",
    skip_all,
    fields(%peer, trace_id = %crate::telemetry::traceparent::TraceId::random())
)]
async fn session<S: AsyncRead + AsyncWrite + Unpin + Send>(
    core: &Core,
    admit: Admit<'_>,
    opts: &LineOptions,
    conn: &mut Conn<S>,
    peer: SocketAddr,
) -> Result<(), Close> {
    let Admit { tokens, slots, pre, deadline } = admit;
    let tokens = Throttled { inner: tokens, throttle: &opts.throttle, ip: peer.ip() };
    // The main pool's slot is taken before AUTH-SUCCESS, so a full gateway
    // says so in answer to AUTH rather than to the first request.
    let resolve = |name: Option<String>| async move {
        let repo = resolve(core, opts, name).await?;
        let slot = slots.try_acquire_owned().map_err(|_| {
            format!("too many connections ({} open); try again later", opts.max_connections)
        })?;
        Ok(Admitted { repo, _slot: slot })
    };
    let authed = match tokio::time::timeout_at(deadline, handshake(conn, &tokens, resolve)).await {
        Ok(r) => r?,
        Err(_) => {
            let why = format!("no AUTH within {} s", opts.auth_timeout.as_secs());
            let _ = conn.send(&Message::Error(why.clone())).await;
            return Err(Close::Protocol(why));
        }
    };
    let Some(authed) = authed else { return Ok(()) };
    drop(pre);
    debug!(client = %authed.client, repo = %authed.repo.uuid(), mode = %authed.mode, "authenticated");
    let Admitted { repo, _slot } = authed.repo;
    let mut session = Session::new(core, repo, authed.mode);
    session.idle = opts.idle_timeout;
    session.serve(conn).await
}

/// The repository a connection asked for by name, or the default one: the
/// configured repository, else the only cluster.
async fn resolve(core: &Core, opts: &LineOptions, name: Option<String>) -> Result<Repo, String> {
    if let Some(name) = name.as_ref().or(opts.default_repo.as_ref()) {
        let found = match core.mesh.repo_by_name(name).await {
            // A UUID names a repository too: git-annex reaches a cluster's
            // nodes through its gateway by their UUIDs.
            None if uuid::Uuid::parse_str(name).is_ok() => core.mesh.repo_by_uuid(name).await,
            found => found,
        };
        return found.ok_or_else(|| format!("no cluster or node named {name:?} is served here"));
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
