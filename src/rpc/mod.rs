//! The generated gRPC API (see `proto/annexmesh/v1`), and how members dial
//! each other (`Dialer`, and `Failover` over several coordinators).

mod failover;
mod generated {
    #![allow(clippy::all)]
    tonic::include_proto!("annexmesh.v1");
}
mod targets;

pub use failover::{CoordinatorApi, DEFAULT_BOUND as DEFAULT_FAILOVER, Failover, FailoverArgs};
pub use generated::*;
pub use targets::split_urls;

/// The encoded descriptors of every service above, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("annexmesh_descriptor");

/// Largest gRPC message we send or accept: data chunks are at most
/// `CHUNK_SIZE`, so this leaves generous room for headers.
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// Size of the data chunks streamed between gateways and agents.
pub const CHUNK_SIZE: usize = 256 * 1024;

/// HTTP/2 flow-control windows for content streams, on both ends: large
/// enough to keep a loopback or LAN link busy between window updates.
pub const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
pub const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

/// Largest HTTP/2 frame each end accepts: a data chunk fits in one frame
/// rather than sixteen of the protocol's default 16 KiB, which cuts the
/// per-frame work on both ends of every content stream.
pub const MAX_FRAME: u32 = CHUNK_SIZE as u32 + 1024;

/// The connections `listener` accepts, with Nagle's algorithm off. A
/// server given its own listener (`serve_with_incoming`) does not apply the
/// builder's `tcp_nodelay`, and with Nagle on a reply's trailers, written
/// after its message, wait for the peer's delayed acknowledgement (about
/// 40 ms on Linux) whenever no other traffic carries it.
pub fn incoming_nodelay(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
        s.inspect(|s| {
            let _ = s.set_nodelay(true);
        })
    })
}

/// An endpoint with the mesh's transport settings (windows, frame size,
/// keep-alives); `Dialer` adds TLS.
pub fn endpoint(url: &str) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    use std::time::Duration;
    Ok(tonic::transport::Endpoint::from_shared(url.to_string())?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(3))
        // A dead link or a frozen peer is found within about 20 s.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .max_frame_size(Some(MAX_FRAME)))
}

/// Who a client expects to answer at a URL: TLS checks the server's
/// certificate names exactly that member, wherever it listens.
#[derive(Debug, Clone, Copy)]
pub enum Peer<'a> {
    Coordinator,
    /// The agent of this node UUID.
    Agent(&'a str),
}

impl Peer<'_> {
    /// The DNS name in the expected server certificate.
    pub fn dns_name(&self) -> String {
        match self {
            Peer::Coordinator => crate::pki::identity::COORDINATOR_NAME.to_string(),
            Peer::Agent(uuid) => crate::pki::identity::agent_name(uuid),
        }
    }
}

/// Why a channel could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("refusing plaintext URL {0}: use https:// or pass --insecure")]
    Plaintext(String),
    #[error("{0} needs TLS credentials, but this member has none (it runs with --insecure)")]
    NoCredentials(String),
    #[error("URL {0} must start with https:// (or http:// with --insecure)")]
    Scheme(String),
    #[error("no coordinator URL given: pass --coordinator URL[,URL...]")]
    NoCoordinator,
    #[error("bad URL {url}: {source}")]
    Url {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// How this member opens channels to others: mutually authenticated TLS
/// with its mesh certificate for `https://` URLs; plaintext `http://` only
/// when it runs with `--insecure`.
#[derive(Debug, Clone, Default)]
pub struct Dialer {
    tls: Option<std::sync::Arc<crate::pki::Credentials>>,
    insecure: bool,
    /// How long coordinator calls go round the list; None: the default.
    failover: Option<std::time::Duration>,
}

impl Dialer {
    pub fn new(tls: Option<crate::pki::Credentials>, insecure: bool) -> Dialer {
        Dialer { tls: tls.map(std::sync::Arc::new), insecure, failover: None }
    }

    /// Plaintext only: for tests and `--insecure` meshes.
    pub fn insecure() -> Dialer {
        Dialer { tls: None, insecure: true, failover: None }
    }

    /// Coordinator calls give up after `bound` (`--coordinator-failover`).
    pub fn with_failover(mut self, bound: std::time::Duration) -> Dialer {
        self.failover = Some(bound);
        self
    }

    /// A channel over every coordinator of `urls` (see `Failover`).
    pub fn coordinators(&self, urls: &[String]) -> Result<Failover, DialError> {
        let dialer = self.clone();
        let make = std::sync::Arc::new(move |url: &str| dialer.endpoint(url, Peer::Coordinator));
        Failover::new(urls.to_vec(), self.failover.unwrap_or(DEFAULT_FAILOVER), make)
    }

    /// A client of the coordinators of a comma-separated `list`, with the
    /// mesh's message size limit.
    pub fn coordinator_client(&self, list: &str) -> Result<CoordinatorApi, DialError> {
        let channel = self.coordinators(&split_urls(list))?;
        Ok(coordinator_client::CoordinatorClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE))
    }

    pub fn credentials(&self) -> Option<&crate::pki::Credentials> {
        self.tls.as_deref()
    }

    pub fn is_insecure(&self) -> bool {
        self.insecure
    }

    /// A lazily connected channel to `peer` at `url`.
    pub fn channel(
        &self,
        url: &str,
        peer: Peer<'_>,
    ) -> Result<tonic::transport::Channel, DialError> {
        Ok(self.endpoint(url, peer)?.connect_lazy())
    }

    /// The endpoint behind `channel`, for a caller that connects eagerly.
    pub fn endpoint(
        &self,
        url: &str,
        peer: Peer<'_>,
    ) -> Result<tonic::transport::Endpoint, DialError> {
        let bad = |source| DialError::Url { url: url.to_string(), source };
        if url.starts_with("http://") {
            if !self.insecure {
                return Err(DialError::Plaintext(url.to_string()));
            }
            return endpoint(url).map_err(bad);
        }
        if !url.starts_with("https://") {
            return Err(DialError::Scheme(url.to_string()));
        }
        let creds = self.tls.as_ref().ok_or_else(|| DialError::NoCredentials(url.to_string()))?;
        endpoint(url).and_then(|e| e.tls_config(creds.client_tls(&peer.dns_name()))).map_err(bad)
    }
}

/// Why a connection could not be made, in words an operator can act on:
/// tonic says only "transport error" when a TLS handshake fails, which is
/// what an `https://` URL against a plaintext server gives.
pub fn explain_connect(url: &str, e: &tonic::transport::Error) -> String {
    use std::error::Error;
    let mut chain = String::new();
    let mut cur: Option<&dyn Error> = Some(e);
    while let Some(c) = cur {
        chain.push_str(&format!(": {c}"));
        cur = c.source();
    }
    let tls = chain.contains("InvalidContentType")
        || chain.contains("invalid content type")
        || chain.contains("CorruptMessage")
        || chain.contains("corrupt message")
        || chain.contains("HandshakeFailure");
    if url.starts_with("https://") && tls {
        format!(
            "TLS handshake with {url} failed{chain}; is the server plaintext (started with \
             --insecure)? Then use an http:// URL with --insecure"
        )
    } else {
        format!("cannot connect to {url}{chain}")
    }
}

/// A status from a call that failed in this process's transport (it has a
/// source error: the agent sent nothing) as "cannot reach node NAME at
/// ADDRESS: why"; statuses the agent sent pass unchanged.
pub fn unreachable_node(name: &str, address: &str, s: tonic::Status) -> tonic::Status {
    use std::error::Error;
    if !matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown) {
        return s;
    }
    let Some(mut cause) = s.source() else { return s };
    let mut why = s.message().to_string();
    loop {
        let text = cause.to_string();
        // Transport errors repeat their cause in their own text.
        if !why.contains(&text) {
            why.push_str(&format!(": {text}"));
        }
        match cause.source() {
            Some(next) => cause = next,
            None => break,
        }
    }
    tonic::Status::unavailable(format!("cannot reach node {name} at {address}: {why}"))
}
