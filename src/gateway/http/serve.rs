//! The HTTP accept loop, with bounds: a cap on open connections (over it a
//! new one is closed at once), a time limit on reading request headers
//! (slowloris, and idle keep-alive connections) and on TLS handshakes, a
//! cap on requests in progress with load shedding (503), and graceful
//! shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::{BoxError, ServiceBuilder, ServiceExt};
use tracing::{debug, info, warn};

/// The limits of one HTTP listener.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, from connecting or
    /// from the end of its previous request.
    pub header_timeout: Duration,
    /// Time a client has to finish the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Most requests being handled at once; more get 503 at once.
    pub max_requests: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            max_requests: 1024,
        }
    }
}

/// Raises this process's soft limit on open files to the hard limit, so
/// that the connection cap, not the descriptor limit, is what bounds
/// clients. Returns the soft limit now in force.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read or write the struct given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        lim.rlim_cur = lim.rlim_max;
    }
    Ok(lim.rlim_cur)
}

/// The answer to a request shed for load (the only error the layers make).
async fn overloaded(e: BoxError) -> axum::response::Response {
    let msg = if e.is::<tower::load_shed::error::Overloaded>() {
        "the gateway is serving too many requests; try again".to_string()
    } else {
        format!("internal error: {e}")
    };
    (StatusCode::SERVICE_UNAVAILABLE, msg + "\n").into_response()
}

/// Serves `app` on `listener` (over TLS when `tls` is given) within
/// `limits`, until `shutdown`; then stops accepting, lets requests in
/// progress finish, and returns once every connection has closed. The
/// caller bounds how long that may take.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // Load shedding answers at once when max_requests are in progress,
    // rather than queueing without bound.
    let svc = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(overloaded))
        .load_shed()
        .concurrency_limit(limits.max_requests.max(1))
        .service(app);
    let conns = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Connection tasks watch this to close gracefully; the loop waits for
    // all of them by waiting for every permit.
    let mut refused: u64 = 0;
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors or similar: back off, keep serving.
                    warn!("HTTP accept error: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                warn!(%peer, refused, "too many HTTP connections; closing new ones");
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let svc = svc.clone();
        let tls = tls.clone();
        let limits = limits.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            match tls {
                None => connection(stream, peer, svc, &limits, &shutdown).await,
                Some(acceptor) => {
                    let hs =
                        tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(stream));
                    let stream = tokio::select! {
                        r = hs => r,
                        _ = shutdown.cancelled() => return,
                    };
                    match stream {
                        Ok(Ok(s)) => connection(s, peer, svc, &limits, &shutdown).await,
                        Ok(Err(e)) => debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
    info!("HTTP listener closed; waiting for open connections");
    drop(listener);
    // Every permit back means every connection task is done.
    let _ = conns.acquire_many(limits.max_connections.max(1) as u32).await;
    Ok(())
}

/// One HTTP/1.1 connection, closed gracefully on shutdown.
async fn connection<S, T>(
    io: S,
    peer: SocketAddr,
    svc: T,
    limits: &Limits,
    shutdown: &CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: tower::Service<Request<Body>, Response = axum::response::Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    T::Future: Send + 'static,
{
    let hyper_svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        svc.clone().oneshot(req.map(Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), hyper_svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        debug!(%peer, "HTTP connection ended: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn start(limits: Limits) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
        let app = Router::new().route("/", get(|| async { "hi" })).route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                "slow"
            }),
        );
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let stop = CancellationToken::new();
        let s = stop.clone();
        let h = tokio::spawn(async move { serve(l, app, None, limits, s).await.unwrap() });
        (addr, stop, h)
    }

    /// Reads until the server closes; None when it did not within 5 s.
    async fn closed_within(s: &mut TcpStream) -> Option<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Err(_) => return None,
            }
        }
    }

    #[tokio::test]
    async fn silent_slow_and_idle_keepalive_connections_are_closed() {
        let limits = Limits { header_timeout: Duration::from_millis(300), ..Limits::default() };
        let (addr, stop, h) = start(limits).await;
        // Sends nothing at all.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        assert!(closed_within(&mut silent).await.is_some(), "a silent connection stayed open");
        // Sends headers a byte at a time, too slowly.
        let mut slow = TcpStream::connect(addr).await.unwrap();
        let mut closed = false;
        for b in b"GET / HTTP/1.1\r\nHost: x\r\n" {
            if slow.write_all(&[*b]).await.is_err() {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(closed || closed_within(&mut slow).await.is_some(), "slowloris stayed open");
        // Makes one request, then idles on the kept-alive connection.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let got =
            closed_within(&mut idle).await.expect("an idle keep-alive connection stayed open");
        assert!(String::from_utf8_lossy(&got).contains("hi"));
        stop.cancel();
        h.await.unwrap();
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_closed_and_requests_over_it_shed() {
        let limits = Limits { max_connections: 2, max_requests: 1, ..Limits::default() };
        let (addr, stop, h) = start(limits).await;
        let mut a = TcpStream::connect(addr).await.unwrap();
        let mut b = TcpStream::connect(addr).await.unwrap();
        a.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        // A third connection is closed without an answer.
        let mut c = TcpStream::connect(addr).await.unwrap();
        let got = closed_within(&mut c).await.expect("a connection over the cap stayed open");
        assert!(got.is_empty());
        // A second request while /slow runs is shed.
        b.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let got = String::from_utf8_lossy(&closed_within(&mut b).await.unwrap()).into_owned();
        assert!(got.starts_with("HTTP/1.1 503"), "{got}");
        // Shutdown lets the request in progress finish.
        stop.cancel();
        let mut resp = Vec::new();
        a.read_to_end(&mut resp).await.unwrap();
        assert!(String::from_utf8_lossy(&resp).contains("slow"));
        h.await.unwrap();
    }

    #[tokio::test]
    async fn a_stalled_tls_handshake_is_closed_and_https_serves() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&c, cert.cert.pem()).unwrap();
        std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
        let tls = crate::tls::acceptor(&c, &k).unwrap();
        let app = Router::new().route("/", get(|| async { "hi" }));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let stop = CancellationToken::new();
        let limits =
            Limits { tls_handshake_timeout: Duration::from_millis(300), ..Limits::default() };
        let s = stop.clone();
        let h = tokio::spawn(async move { serve(l, app, Some(tls), limits, s).await.unwrap() });
        // A client that connects and never starts the handshake.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        assert!(closed_within(&mut silent).await.is_some(), "a stalled handshake stayed open");
        // A client that trusts the certificate is served.
        let connector = crate::tls::connector(Some(&c)).unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let sock = TcpStream::connect(addr).await.unwrap();
        let mut tls = connector.connect(name, sock).await.unwrap();
        tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut resp = Vec::new();
        let _ = tls.read_to_end(&mut resp).await;
        assert!(String::from_utf8_lossy(&resp).contains("hi"));
        stop.cancel();
        h.await.unwrap();
    }

    #[test]
    fn the_descriptor_limit_is_raised_to_the_hard_limit() {
        let soft = raise_nofile_limit().unwrap();
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: reads into the struct given.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(soft, lim.rlim_cur);
        assert_eq!(lim.rlim_cur, lim.rlim_max);
    }
}
