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
//! requests, with PUT's body in `put` and git's CONNECT in `connect`.

use std::sync::Arc;
use std::time::Duration;

use crate::gateway::throttle::AuthThrottle;

mod admission;
mod conn;
mod connect;
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
    /// Most authenticated connections open at once.
    pub max_connections: usize,
    /// Most connections not yet authenticated, in all and per source
    /// address: they have their own, smaller pool, so connections that never
    /// authenticate cannot keep token holders out.
    pub max_unauthenticated: usize,
    pub max_unauthenticated_per_address: usize,
    /// Time from connecting (TLS included) to a successful AUTH.
    pub auth_timeout: Duration,
    /// How long an authenticated connection may sit between requests.
    pub idle_timeout: Duration,
    /// Failed AUTH attempts per source address.
    pub throttle: Arc<AuthThrottle>,
    /// Serve over TLS (see `crate::tls::acceptor`).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Defaults of the line listener's limits (and of the gateway's flags).
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
pub const DEFAULT_MAX_UNAUTHENTICATED: usize = 64;
pub const DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS: usize = 8;
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// git-annex keeps pooled P2P connections open between commands of one
/// run; ten minutes covers a slow client's pauses without keeping
/// abandoned connections for long.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

impl Default for LineOptions {
    fn default() -> Self {
        LineOptions {
            default_repo: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_unauthenticated: DEFAULT_MAX_UNAUTHENTICATED,
            max_unauthenticated_per_address: DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS,
            auth_timeout: DEFAULT_AUTH_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            throttle: Arc::default(),
            tls: None,
        }
    }
}
