//! The line-based P2P protocol front-end, versions 0 to 4: what git-annex
//! speaks over ssh (`git-annex-shell p2pstdio`) and over P2P networks
//! (`p2p-annex::` remotes). Every request goes through the same `Core` as
//! the HTTP front-end.
//!
//! A TCP connection may start with one annexmesh line,
//! `ANNEXMESH repo=NAME[ mode=readonly|appendonly]`, naming the cluster or
//! node to serve and optionally restricting access further; then AUTH with
//! a token the coordinator knows. Without the line the gateway's default
//! repository is served.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::core::{Core, CoreError, Outcome, PutOffset};
use super::mesh::Repo;
use super::metrics::Metrics;
use crate::auth::Mode;
use crate::p2p::key::Key;
use crate::p2p::line::{DecodeError, Frame, LineDecoder};
use crate::p2p::message::{AssociatedFile, MAX_PROTOCOL_VERSION, Message, Uuid};
use crate::rpc;

/// The optional first line of a TCP connection.
pub const PREAMBLE: &str = "ANNEXMESH";

/// Longest accepted protocol line. git-annex itself gives up at 32768
/// characters; no valid message comes near that.
pub const MAX_LINE: usize = 32 * 1024;

/// Time allowed from connecting to a successful AUTH.
const HANDSHAKE: Duration = Duration::from_secs(30);

/// Messages tolerated before AUTH, so a confused peer cannot hold a
/// connection slot forever.
const MAX_PRE_AUTH: usize = 8;

/// How long a transfer may wait for the client's next bytes. Between
/// requests a connection may idle: git-annex keeps a pool of them.
const STALL: Duration = Duration::from_secs(300);

/// A GET whose node fails with more than this left to send closes the
/// connection instead of padding the promised length with zeros.
const MAX_PADDING: u64 = 64 * 1024 * 1024;

/// Checks AUTH tokens: the mode a token grants, or None when it is unknown.
pub trait TokenCheck: Send + Sync {
    fn check<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<Mode>, String>>;
}

/// Tokens as the coordinator keeps them (only their hashes).
pub struct CoordinatorTokens(pub Arc<super::mesh::Mesh>);

impl TokenCheck for CoordinatorTokens {
    fn check<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<Mode>, String>> {
        Box::pin(async move {
            let req = rpc::CheckTokenRequest { token_sha256: crate::auth::hash_token(token) };
            let r = self
                .0
                .coordinator()
                .check_token(req)
                .await
                .map_err(|s| s.message().to_string())?
                .into_inner();
            if !r.valid {
                return Ok(None);
            }
            r.mode.parse::<Mode>().map(Some)
        })
    }
}

#[derive(Clone)]
pub struct P2pOptions {
    /// The repository served to connections that do not name one; without
    /// it, the only cluster when there is exactly one.
    pub default_repo: Option<String>,
    pub max_connections: usize,
    /// Serve over TLS.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Default for P2pOptions {
    fn default() -> Self {
        P2pOptions { default_repo: None, max_connections: 512, tls: None }
    }
}

/// Connection counters for /metrics.
#[derive(Default)]
pub struct P2pMetrics {
    pub connections: AtomicU64,
    pub active: AtomicU64,
    pub auth_failures: AtomicU64,
    pub protocol_errors: AtomicU64,
}

impl P2pMetrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, kind, help, c) in [
            (
                "annexmesh_p2p_connections_total",
                "counter",
                "Line-protocol connections accepted.",
                &self.connections,
            ),
            (
                "annexmesh_p2p_connections_active",
                "gauge",
                "Line-protocol connections open now.",
                &self.active,
            ),
            (
                "annexmesh_p2p_auth_failures_total",
                "counter",
                "AUTH attempts refused.",
                &self.auth_failures,
            ),
            (
                "annexmesh_p2p_protocol_errors_total",
                "counter",
                "Connections closed for malformed or unexpected input.",
                &self.protocol_errors,
            ),
        ] {
            out += &format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}\n",
                c.load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// Accepts line-protocol connections until `shutdown`.
pub async fn serve(
    core: Core,
    tokens: Arc<dyn TokenCheck>,
    listener: TcpListener,
    opts: P2pOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
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
            tokio::spawn(async move {
                let _ = stream.write_all(b"ERROR too many connections; try again later\n").await;
            });
            continue;
        };
        let (core, tokens, opts) = (core.clone(), tokens.clone(), opts.clone());
        tokio::spawn(async move {
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
        });
    }
}

/// Serves one connection to its end and accounts for it.
async fn connection<S: AsyncRead + AsyncWrite + Unpin + Send>(
    core: &Core,
    tokens: &dyn TokenCheck,
    opts: &P2pOptions,
    stream: S,
    peer: std::net::SocketAddr,
) {
    let metrics = &core.metrics.p2p;
    Metrics::add(&metrics.connections, 1);
    metrics.active.fetch_add(1, Ordering::Relaxed);
    let (rd, wr) = tokio::io::split(stream);
    let mut conn = Conn::new(rd, wr);
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
    let _ = conn.wr.shutdown().await;
    // Closing with unread input makes the kernel reset the connection, and
    // the peer may then lose our last ERROR: read (and drop) what it still
    // sends, for a bounded time.
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.drain(8 << 20)).await;
    metrics.active.fetch_sub(1, Ordering::Relaxed);
}

/// A TLS acceptor from PEM files: the certificate chain and its private key.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use anyhow::Context;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read certificates from {}", cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in {}", cert.display());
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read a private key from {}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("the certificate and key do not make a TLS configuration")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Why a connection ends early.
#[derive(Debug)]
pub enum Close {
    Auth,
    /// The peer broke the protocol; an ERROR was sent where possible.
    Protocol(String),
    /// The peer went away or the socket failed.
    Io(std::io::Error),
}

impl From<std::io::Error> for Close {
    fn from(e: std::io::Error) -> Close {
        Close::Io(e)
    }
}

type Res<T> = Result<T, Close>;

/// One connection's framing: a decoder over the read half, and the write half.
pub struct Conn<R, W> {
    rd: R,
    pub wr: W,
    dec: LineDecoder,
    inbuf: BytesMut,
    out: BytesMut,
}

impl<R: AsyncRead + Unpin + Send, W: AsyncWrite + Unpin + Send> Conn<R, W> {
    pub fn new(rd: R, wr: W) -> Self {
        Conn {
            rd,
            wr,
            dec: LineDecoder::with_limits(MAX_LINE, rpc::CHUNK_SIZE),
            inbuf: BytesMut::with_capacity(64 * 1024),
            out: BytesMut::new(),
        }
    }

    /// Reads more input; false at end of input.
    async fn fill(&mut self) -> std::io::Result<bool> {
        if self.inbuf.capacity() - self.inbuf.len() < 16 * 1024 {
            self.inbuf.reserve(64 * 1024);
        }
        Ok(self.rd.read_buf(&mut self.inbuf).await? > 0)
    }

    /// The next frame; None at a clean end of input (between messages).
    /// A line that cannot be parsed comes back as Err(Ok(error)) so the
    /// caller can answer it and go on.
    async fn frame(&mut self) -> Res<Result<Option<Frame>, crate::p2p::message::ParseError>> {
        loop {
            match self.dec.decode(&mut self.inbuf) {
                Ok(Some(f)) => return Ok(Ok(Some(f))),
                Ok(None) => {}
                Err(DecodeError::Parse(e)) => return Ok(Err(e)),
                Err(e @ DecodeError::LineTooLong { .. }) => {
                    self.send(&Message::Error(e.to_string())).await?;
                    return Err(Close::Protocol(e.to_string()));
                }
            }
            if !self.fill().await? {
                if self.inbuf.is_empty() && self.dec.data_remaining() == 0 {
                    return Ok(Ok(None));
                }
                return Err(Close::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed mid-message",
                )));
            }
        }
    }

    /// The next message; an unparsable line is answered with ERROR.
    async fn message(&mut self) -> Res<Next> {
        match self.frame().await? {
            Ok(Some(Frame::Message(m))) => Ok(Next::Msg(m)),
            // Payload of a DATA the caller did not expect: out of step.
            Ok(Some(Frame::Data(_))) => Err(Close::Protocol("unexpected DATA payload".into())),
            Ok(None) => Ok(Next::Eof),
            Err(e) => self.unparsable(e).await.map(|_| Next::Unparsable),
        }
    }

    /// git-annex answers a line it cannot parse with ERROR and carries on,
    /// so the protocol can grow; a DATA line it cannot read leaves an
    /// unknown number of payload bytes behind, so that closes.
    async fn unparsable(&mut self, e: crate::p2p::message::ParseError) -> Res<()> {
        self.send(&Message::Error(format!("unknown command: {e}"))).await?;
        if e.command() == Some("DATA") {
            return Err(Close::Protocol(format!("unreadable DATA line: {e}")));
        }
        Ok(())
    }

    pub async fn send(&mut self, msg: &Message) -> std::io::Result<()> {
        self.out.clear();
        crate::p2p::line::encode_message(msg, &mut self.out);
        self.wr.write_all(&self.out).await?;
        self.wr.flush().await
    }

    async fn write_data(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.wr.write_all(data).await
    }

    /// Reads and drops input until its end or `limit` bytes.
    async fn drain(&mut self, limit: usize) {
        let mut seen = 0;
        while seen < limit {
            self.inbuf.clear();
            match self.rd.read_buf(&mut self.inbuf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen += n,
            }
        }
    }

    /// Reads and drops `n` payload bytes.
    async fn skip_data(&mut self, mut n: u64) -> Res<()> {
        while n > 0 {
            match tokio::time::timeout(STALL, self.frame()).await {
                Err(_) => return Err(Close::Protocol("client stalled mid-DATA".into())),
                Ok(r) => match r? {
                    Ok(Some(Frame::Data(b))) => n -= b.len() as u64,
                    _ => return Err(Close::Io(std::io::ErrorKind::UnexpectedEof.into())),
                },
            }
        }
        Ok(())
    }
}

enum Next {
    Msg(Message),
    Eof,
    /// A line that could not be parsed, already answered with ERROR.
    Unparsable,
}

/// Reads the optional `ANNEXMESH ...` line: the repository name and a mode
/// restriction.
async fn preamble<R: AsyncRead + Unpin + Send, W: AsyncWrite + Unpin + Send>(
    conn: &mut Conn<R, W>,
) -> Res<(Option<String>, Mode)> {
    let prefix = format!("{PREAMBLE} ");
    // Enough bytes to tell whether the first line is ours.
    while conn.inbuf.len() < prefix.len() && !conn.inbuf.contains(&b'\n') {
        if !conn.fill().await? {
            return Ok((None, Mode::ReadWrite));
        }
    }
    if !conn.inbuf.starts_with(prefix.as_bytes()) {
        return Ok((None, Mode::ReadWrite));
    }
    let end = loop {
        if let Some(i) = conn.inbuf.iter().position(|&b| b == b'\n') {
            break i;
        }
        if conn.inbuf.len() > 1024 || !conn.fill().await? {
            conn.send(&Message::Error("bad ANNEXMESH line".into())).await?;
            return Err(Close::Protocol("bad ANNEXMESH line".into()));
        }
    };
    let line = conn.inbuf.split_to(end + 1);
    let text = String::from_utf8_lossy(&line[prefix.len()..end]).trim_end_matches('\r').to_string();
    let mut repo = None;
    let mut mode = Mode::ReadWrite;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let bad = |why: String| Close::Protocol(why);
        match word.split_once('=') {
            Some(("repo", v)) if !v.is_empty() && v.chars().all(|c| !c.is_control()) => {
                repo = Some(v.to_string())
            }
            Some(("mode", v)) => match v.parse::<Mode>() {
                Ok(m) => mode = m,
                Err(e) => {
                    conn.send(&Message::Error(e.clone())).await?;
                    return Err(bad(e));
                }
            },
            _ => {
                let e = format!("unknown ANNEXMESH setting {word:?}");
                conn.send(&Message::Error(e.clone())).await?;
                return Err(bad(e));
            }
        }
    }
    Ok((repo, mode))
}

async fn default_repo(core: &Core, opts: &P2pOptions) -> Result<Repo, String> {
    if let Some(name) = &opts.default_repo {
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

/// A whole TCP session: the optional annexmesh line, AUTH, then requests.
pub async fn session<R: AsyncRead + Unpin + Send, W: AsyncWrite + Unpin + Send>(
    core: &Core,
    tokens: &dyn TokenCheck,
    opts: &P2pOptions,
    conn: &mut Conn<R, W>,
) -> Res<()> {
    let handshake = async {
        let (name, cap) = preamble(conn).await?;
        for _ in 0..MAX_PRE_AUTH {
            let msg = match conn.message().await? {
                Next::Msg(m) => m,
                Next::Eof => return Ok(None),
                Next::Unparsable => continue,
            };
            match msg {
                Message::Auth { uuid, token } => {
                    let granted = match tokens.check(token.as_str()).await {
                        Ok(g) => g,
                        Err(e) => {
                            // Not the client's fault: say so rather than
                            // AUTH-FAILURE, which git-annex reports as a bad token.
                            warn!("cannot check token: {e}");
                            conn.send(&Message::Error(format!("cannot check the token now: {e}")))
                                .await?;
                            return Err(Close::Protocol("token check unavailable".into()));
                        }
                    };
                    let Some(granted) = granted else {
                        conn.send(&Message::AuthFailure).await?;
                        return Err(Close::Auth);
                    };
                    let repo = match &name {
                        Some(n) => core.mesh.repo_by_name(n).await.ok_or_else(|| {
                            format!("no cluster or node named {n:?} is served here")
                        }),
                        None => default_repo(core, opts).await,
                    };
                    let repo = match repo {
                        Ok(r) => r,
                        Err(e) => {
                            conn.send(&Message::Error(e.clone())).await?;
                            return Err(Close::Protocol(e));
                        }
                    };
                    let server =
                        Uuid::new(repo.uuid()).expect("repository UUIDs are protocol words");
                    conn.send(&Message::AuthSuccess(server)).await?;
                    return Ok(Some((repo, granted.min(cap), uuid)));
                }
                Message::Error(e) => {
                    return Err(Close::Protocol(format!("client error before AUTH: {e}")));
                }
                Message::Data(_) => {
                    conn.send(&Message::Error("unexpected DATA".into())).await?;
                    return Err(Close::Protocol("DATA before AUTH".into()));
                }
                other => {
                    conn.send(&Message::Error(format!(
                        "{} before AUTH: authenticate first",
                        other.command()
                    )))
                    .await?
                }
            }
        }
        conn.send(&Message::Error("too many messages before AUTH".into())).await?;
        Err(Close::Protocol("too many messages before AUTH".into()))
    };
    let authed = match tokio::time::timeout(HANDSHAKE, handshake).await {
        Ok(r) => r?,
        Err(_) => return Err(Close::Protocol("no AUTH within the handshake time".into())),
    };
    let Some((repo, mode, client)) = authed else { return Ok(()) };
    debug!(client = %client, repo = %repo.uuid(), %mode, "authenticated");
    Session { core, repo, bypass: BTreeSet::new(), mode, version: 0 }.serve(conn).await
}

/// An authenticated session with one repository.
pub struct Session<'a> {
    pub core: &'a Core,
    /// As of the current request: a connection may live for hours (git-annex
    /// pools them), and nodes come, go and change health meanwhile.
    pub repo: Repo,
    /// Nodes the client asked to avoid (BYPASS).
    pub bypass: BTreeSet<String>,
    pub mode: Mode,
    pub version: u64,
}

fn uuids(list: &[String]) -> Vec<Uuid> {
    list.iter().filter_map(|u| Uuid::new(u.as_str())).collect()
}

impl Session<'_> {
    /// Serves requests until the client leaves.
    pub async fn serve<R: AsyncRead + Unpin + Send, W: AsyncWrite + Unpin + Send>(
        mut self,
        conn: &mut Conn<R, W>,
    ) -> Res<()> {
        loop {
            let msg = match conn.frame().await? {
                Ok(Some(Frame::Message(m))) => m,
                Ok(Some(Frame::Data(_))) => {
                    return Err(Close::Protocol("unexpected DATA payload".into()));
                }
                Ok(None) => return Ok(()),
                Err(e) => {
                    conn.unparsable(e).await?;
                    continue;
                }
            };
            self.request(conn, msg).await?;
        }
    }

    fn error(e: CoreError) -> Message {
        Message::Error(e.to_string())
    }

    /// SUCCESS or FAILURE, with the nodes affected from v2 on.
    fn outcome(&self, out: &Outcome) -> Message {
        match (out.ok, self.version >= 2 && !out.plus.is_empty()) {
            (true, false) => Message::Success,
            (true, true) => Message::SuccessPlus(uuids(&out.plus)),
            (false, false) => Message::Failure,
            (false, true) => Message::FailurePlus(uuids(&out.plus)),
        }
    }

    async fn request<R: AsyncRead + Unpin + Send, W: AsyncWrite + Unpin + Send>(
        &mut self,
        conn: &mut Conn<R, W>,
        msg: Message,
    ) -> Res<()> {
        let core = self.core;
        if let Some(now) = core.mesh.repo_by_uuid(self.repo.uuid()).await {
            self.repo = now.bypassing(self.bypass.clone());
        }
        match msg {
            Message::Version(v) => {
                self.version = v.min(MAX_PROTOCOL_VERSION);
                conn.send(&Message::Version(self.version)).await?;
            }
            Message::Bypass(set) => {
                let set: BTreeSet<String> =
                    set.into_iter().map(|u| u.as_str().to_string()).collect();
                self.bypass = set.clone();
                self.repo = self.repo.clone().bypassing(set);
            }
            Message::CheckPresent(key) => {
                let reply = match core.checkpresent(&self.repo, &key).await {
                    Ok(true) => Message::Success,
                    Ok(false) => Message::Failure,
                    Err(e) => Self::error(e),
                };
                conn.send(&reply).await?;
            }
            Message::LockContent(key) => self.lock(conn, key).await?,
            Message::Remove(key) => self.remove(conn, key, None).await?,
            Message::RemoveBefore { timestamp, key } => {
                self.remove(conn, key, Some(timestamp)).await?
            }
            Message::GetTimestamp => {
                let reply = match core.timestamp(&self.repo).await {
                    Ok(t) => Message::Timestamp(t),
                    Err(e) => Self::error(e),
                };
                conn.send(&reply).await?;
            }
            Message::Get { offset, file: _, key } => self.get(conn, key, offset).await?,
            Message::Put { file, key } => self.put(conn, file, key).await?,
            Message::Connect(service) => {
                conn.send(&Message::Error(format!(
                    "CONNECT {} is not served: annexmesh serves annexed content, not git repositories",
                    service.as_str()
                )))
                .await?;
            }
            Message::NotifyChange => {
                conn.send(&Message::Error(
                    "NOTIFYCHANGE is not served: annexmesh has no git refs to watch".into(),
                ))
                .await?;
            }
            Message::Error(e) => {
                // The client's state is unknown after it reports an error.
                return Err(Close::Protocol(format!("client error: {e}")));
            }
            Message::Data(_) => {
                conn.send(&Message::Error("unexpected DATA".into())).await?;
                return Err(Close::Protocol("DATA outside a transfer".into()));
            }
            Message::Auth { .. } => {
                conn.send(&Message::Error("already authenticated".into())).await?
            }
            other => {
                conn.send(&Message::Error(format!("unexpected command {}", other.command())))
                    .await?
            }
        }
        Ok(())
    }

    async fn lock<R: AsyncRead + Unpin + Send, W: AsyncWrite + Unpin + Send>(
        &mut self,
        conn: &mut Conn<R, W>,
        key: Key,
    ) -> Res<()> {
        let lock = match self.core.lock(&self.repo, &key).await {
            Ok(Some(l)) => l,
            Ok(None) => return Ok(conn.send(&Message::Failure).await?),
            Err(e) => return Ok(conn.send(&Self::error(e)).await?),
        };
        conn.send(&Message::Success).await?;
        // The lock is held on one node's stream until UNLOCKCONTENT, which
        // goes down that same stream. Dropping the lock any other way (the
        // client vanishes or says something else) leaves the node holding it
        // for the safety window, as git-annex requires.
        match conn.message().await {
            Ok(Next::Msg(Message::UnlockContent)) => {
                lock.unlock().await;
                Ok(())
            }
            Ok(Next::Eof) => {
                drop(lock);
                Ok(())
            }
            Ok(Next::Msg(Message::Data(_))) => {
                drop(lock);
                conn.send(&Message::Error("expected UNLOCKCONTENT".into())).await?;
                Err(Close::Protocol("DATA instead of UNLOCKCONTENT".into()))
            }
            Ok(_) => {
                drop(lock);
                Ok(conn.send(&Message::Error("expected UNLOCKCONTENT".into())).await?)
            }
            Err(e) => {
                drop(lock);
                Err(e)
            }
        }
    }

    async fn remove<R: AsyncRead + Unpin + Send, W: AsyncWrite + Unpin + Send>(
        &mut self,
        conn: &mut Conn<R, W>,
        key: Key,
        before: Option<u64>,
    ) -> Res<()> {
        let reply = match self.mode {
            Mode::ReadOnly => {
                Message::Error("this repository is read-only; write access denied".into())
            }
            Mode::AppendOnly => {
                Message::Error("this repository is append-only; removal denied".into())
            }
            Mode::ReadWrite => match self.core.remove(&self.repo, &key, before).await {
                Ok(out) => self.outcome(&out),
                Err(e) => Self::error(e),
            },
        };
        Ok(conn.send(&reply).await?)
    }

    async fn get<R: AsyncRead + Unpin + Send, W: AsyncWrite + Unpin + Send>(
        &mut self,
        conn: &mut Conn<R, W>,
        key: Key,
        offset: u64,
    ) -> Res<()> {
        let valid = match self.core.get(&self.repo, &key, offset).await {
            Err(e) => return Ok(conn.send(&Self::error(e)).await?),
            // Not present: empty data, marked invalid, as git-annex does.
            Ok(None) => {
                conn.send(&Message::Data(0)).await?;
                false
            }
            Ok(Some(mut dl)) => {
                conn.send(&Message::Data(dl.length)).await?;
                let mut sent = 0u64;
                let mut failure = None;
                while sent < dl.length {
                    match dl.body.next().await {
                        Some(Ok(chunk)) => {
                            let take = (chunk.len() as u64).min(dl.length - sent) as usize;
                            conn.write_data(&chunk[..take]).await?;
                            sent += take as u64;
                        }
                        Some(Err(e)) => {
                            failure = Some(e.to_string());
                            break;
                        }
                        None => {
                            failure = Some("the node sent less than promised".into());
                            break;
                        }
                    }
                }
                let total = dl.length;
                drop(dl);
                match failure {
                    None => true,
                    Some(why) => {
                        // The promised length must be sent whatever happens;
                        // from v1 on INVALID then tells the client to discard
                        // it. v0 cannot say so: closing is the only signal.
                        let left = total - sent;
                        if self.version == 0 || left > MAX_PADDING {
                            return Err(Close::Protocol(format!(
                                "GET of {key} failed mid-stream: {why}"
                            )));
                        }
                        let zeros = vec![0u8; 64 * 1024];
                        let mut n = left;
                        while n > 0 {
                            let k = n.min(zeros.len() as u64) as usize;
                            conn.write_data(&zeros[..k]).await?;
                            n -= k as u64;
                        }
                        warn!(%key, "GET failed mid-stream ({why}); padded {left} bytes and marked it invalid");
                        false
                    }
                }
            }
        };
        if self.version >= 1 {
            conn.send(if valid { &Message::Valid } else { &Message::Invalid }).await?;
        }
        conn.wr.flush().await?;
        // The client says whether it got the content (not a promise to keep it).
        match conn.message().await? {
            Next::Msg(
                Message::Success
                | Message::Failure
                | Message::SuccessPlus(_)
                | Message::FailurePlus(_),
            ) => Ok(()),
            Next::Msg(Message::Error(e)) => {
                Err(Close::Protocol(format!("client error after GET: {e}")))
            }
            Next::Msg(Message::Data(_)) => {
                conn.send(&Message::Error("expected SUCCESS or FAILURE".into())).await?;
                Err(Close::Protocol("DATA after GET".into()))
            }
            Next::Eof => Ok(()),
            Next::Unparsable => Ok(()),
            Next::Msg(_) => {
                Ok(conn.send(&Message::Error("expected SUCCESS or FAILURE".into())).await?)
            }
        }
    }

    async fn put<R: AsyncRead + Unpin + Send, W: AsyncWrite + Unpin + Send>(
        &mut self,
        conn: &mut Conn<R, W>,
        file: AssociatedFile,
        key: Key,
    ) -> Res<()> {
        if self.mode == Mode::ReadOnly {
            return Ok(conn
                .send(&Message::Error("this repository is read-only; write access denied".into()))
                .await?);
        }
        let core = self.core;
        let file = file.0;
        let offset = match core.put_offset(&self.repo, &key, file.as_deref()).await {
            Err(e) => return Ok(conn.send(&Self::error(e)).await?),
            Ok(PutOffset::AlreadyHave(plus)) => {
                let reply = if self.version >= 2 && !plus.is_empty() {
                    Message::AlreadyHavePlus(uuids(&plus))
                } else {
                    Message::AlreadyHave
                };
                return Ok(conn.send(&reply).await?);
            }
            Ok(PutOffset::Offset(o)) => o,
        };
        conn.send(&Message::PutFrom(offset)).await?;
        let (length, data_present) = match conn.message().await? {
            Next::Msg(Message::Data(len)) => (len, false),
            Next::Msg(Message::DataPresent) if self.version >= 4 => (0, true),
            // The client gave up on this PUT; git-annex carries on.
            Next::Msg(Message::Error(_)) => return Ok(()),
            Next::Eof | Next::Unparsable => return Ok(()),
            Next::Msg(_) => return Ok(conn.send(&Message::Error("expected DATA".into())).await?),
        };
        if !data_present
            && let Some(size) = key.size
            && offset.checked_add(length) != Some(size)
        {
            let e = format!(
                "DATA {length} from offset {offset} does not match the size {size} of {key}"
            );
            conn.send(&Message::Error(e.clone())).await?;
            return Err(Close::Protocol(e));
        }
        // DATA-PRESENT is followed by no payload and no VALID.
        let end = data_present.then_some(End::Valid);
        let mut body = PutBody { conn, remaining: length, version: self.version, end };
        let result = if data_present {
            let req = super::core::PutRequest {
                repo: &self.repo,
                key: &key,
                file: file.as_deref(),
                offset,
                length: 0,
                data_present: true,
            };
            core.put(req, futures::stream::empty::<Result<Bytes, String>>()).await
        } else {
            let stream = futures::stream::unfold(&mut body, |b| async move {
                b.next().await.map(|item| (item, b))
            });
            let req = super::core::PutRequest {
                repo: &self.repo,
                key: &key,
                file: file.as_deref(),
                offset,
                length,
                data_present: false,
            };
            core.put(req, Box::pin(stream)).await
        };
        // Whatever the core did not read (no node wanted the data, or it
        // stopped early) is read and dropped, so the next message lines up.
        if body.end.is_none() {
            let left = body.remaining;
            body.conn.skip_data(left).await?;
            body.remaining = 0;
            body.end = Some(body.validity().await?);
        }
        let conn = body.conn;
        match body.end {
            Some(End::Lost(e)) => return Err(e),
            Some(End::Unexpected) => {
                conn.send(&Message::Error("expected VALID or INVALID".into())).await?
            }
            _ => {}
        }
        let reply = match result {
            Ok(out) => {
                if let Some(e) = &out.error {
                    debug!(%key, "put failed: {e}");
                }
                self.outcome(&out)
            }
            Err(e) => Self::error(e),
        };
        Ok(conn.send(&reply).await?)
    }
}

/// How a PUT's DATA ended, as seen by the body stream.
enum End {
    Valid,
    Invalid,
    /// Neither VALID nor INVALID came (v1+).
    Unexpected,
    /// The connection failed.
    Lost(Close),
}

/// The client's DATA payload as a stream for `Core::put`: chunks until the
/// promised length, then (v1+) VALID, or an error that makes the core close
/// every node's stream without completing it, keeping the partial content.
struct PutBody<'c, R, W> {
    conn: &'c mut Conn<R, W>,
    remaining: u64,
    version: u64,
    end: Option<End>,
}

impl<R: AsyncRead + Unpin + Send, W: AsyncWrite + Unpin + Send> PutBody<'_, R, W> {
    async fn next(&mut self) -> Option<Result<Bytes, String>> {
        if self.end.is_some() {
            return None;
        }
        if self.remaining > 0 {
            return match tokio::time::timeout(STALL, self.conn.frame()).await {
                Err(_) => {
                    self.end = Some(End::Lost(Close::Protocol("client stalled mid-DATA".into())));
                    Some(Err("client stalled mid-DATA".into()))
                }
                Ok(Ok(Ok(Some(Frame::Data(b))))) => {
                    self.remaining -= b.len() as u64;
                    Some(Ok(b))
                }
                // The decoder yields data until the DATA length is reached;
                // anything else means the stream is out of step.
                Ok(Ok(_)) => {
                    self.end = Some(End::Lost(Close::Protocol("DATA payload out of step".into())));
                    Some(Err("DATA payload out of step".into()))
                }
                Ok(Err(e)) => {
                    let why = match &e {
                        Close::Io(io) => format!("client connection lost mid-DATA: {io}"),
                        Close::Protocol(why) => why.clone(),
                        Close::Auth => "authentication lost".to_string(),
                    };
                    self.end = Some(End::Lost(e));
                    Some(Err(why))
                }
            };
        }
        let end = match self.validity().await {
            Ok(end) => end,
            Err(e) => End::Lost(e),
        };
        let item = match end {
            End::Valid => None,
            End::Invalid => Some(Err("the client reported the content invalid".into())),
            End::Unexpected => Some(Err("expected VALID or INVALID".into())),
            End::Lost(_) => Some(Err("client connection lost before VALID".into())),
        };
        self.end = Some(end);
        item
    }

    /// After the payload: VALID or INVALID from v1 on; v0 has neither.
    async fn validity(&mut self) -> Res<End> {
        if self.version == 0 {
            return Ok(End::Valid);
        }
        Ok(match tokio::time::timeout(STALL, self.conn.frame()).await {
            Err(_) => End::Lost(Close::Protocol("client stalled before VALID".into())),
            Ok(r) => match r? {
                Ok(Some(Frame::Message(Message::Valid))) => End::Valid,
                Ok(Some(Frame::Message(Message::Invalid))) => End::Invalid,
                // Another payload would follow: no way to stay in step.
                Ok(Some(Frame::Message(Message::Data(_)))) => {
                    End::Lost(Close::Protocol("DATA where VALID or INVALID belongs".into()))
                }
                Ok(None) => End::Lost(Close::Io(std::io::ErrorKind::UnexpectedEof.into())),
                _ => End::Unexpected,
            },
        })
    }
}
