//! The line-based P2P protocol front-end, versions 0 to 4: what git-annex
//! speaks over ssh (`git-annex-shell p2pstdio`) and over P2P networks
//! (`p2p-annex::` remotes). Every request goes through the same `Core` as
//! the HTTP front-end.
//!
//! A TCP connection may start with one annexmesh line,
//! `ANNEXMESH repo=NAME[ mode=readonly|appendonly]` (`p2p::preamble`),
//! naming the cluster or node to serve and optionally restricting access
//! further; then AUTH with a token the coordinator knows. Without the line
//! the gateway's default repository is served.
//!
//! `listener` accepts connections; `conn` frames them with the shared line
//! codec; `handshake` reads the preamble and AUTH; `session` serves
//! requests, with PUT's body in `put`.

mod conn;
mod handshake;
mod listener;
mod put;
mod session;
#[cfg(test)]
mod tests;

pub use conn::MAX_LINE;
pub use handshake::{CoordinatorTokens, TokenCheck};
pub use listener::serve;

/// How the line-protocol listener serves.
#[derive(Clone)]
pub struct LineOptions {
    /// The repository served to connections that do not name one; without
    /// it, the only cluster when there is exactly one.
    pub default_repo: Option<String>,
    pub max_connections: usize,
    /// Serve over TLS (see `crate::tls::acceptor`).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Default for LineOptions {
    fn default() -> Self {
        LineOptions { default_repo: None, max_connections: 512, tls: None }
    }
}
