//! The gateway's flags for P2P over HTTP: who may use it, HTTPS, proxies
//! and limits.

use std::path::PathBuf;

use super::auth::{NoAccessChoice, Policy, Unauth};
use super::forwarded::Proxy;
use super::serve::Limits;
use super::{DEFAULT_MAX_LOCKS, DEFAULT_MAX_LOCKS_PER_CLIENT, HttpOptions};
use crate::clock::parse_duration;

/// Access, HTTPS and limits of P2P over HTTP. One of --auth-users,
/// --unauth readonly|appendonly or --wideopen must be given.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// Accept HTTP basic auth from users (`annexmesh admin user add`) and
    /// tokens (`annexmesh admin token create`, with any user name).
    #[arg(long, env = "ANNEXMESH_AUTH_USERS")]
    pub auth_users: bool,
    /// What clients without credentials may do: none, readonly (get,
    /// checkpresent, lock) or appendonly (also store, never remove).
    #[arg(long, env = "ANNEXMESH_UNAUTH", value_enum, default_value = "none")]
    pub unauth: Unauth,
    /// Anyone who reaches the port may read, store and remove, without
    /// credentials.
    #[arg(long, env = "ANNEXMESH_WIDEOPEN", conflicts_with_all = ["auth_users", "unauth"])]
    pub wideopen: bool,
    /// PEM certificate chain: serve P2P over HTTP as HTTPS. Needs
    /// --http-tls-key.
    #[arg(long, env = "ANNEXMESH_HTTP_TLS_CERT", requires = "http_tls_key")]
    pub http_tls_cert: Option<PathBuf>,
    /// PEM private key for --http-tls-cert.
    #[arg(long, env = "ANNEXMESH_HTTP_TLS_KEY", requires = "http_tls_cert")]
    pub http_tls_key: Option<PathBuf>,
    /// Addresses (IP or IP/prefix, comma-separated) of TLS-terminating
    /// proxies whose Forwarded / X-Forwarded-Proto / X-Forwarded-Host
    /// headers give the URL clients use; ignored from anyone else.
    #[arg(long, env = "ANNEXMESH_TRUSTED_PROXY", value_delimiter = ',')]
    pub trusted_proxy: Vec<Proxy>,
    /// Most HTTP connections open at once; new ones over it are closed.
    #[arg(long, env = "ANNEXMESH_HTTP_MAX_CONNECTIONS", default_value_t = 4096)]
    pub http_max_connections: usize,
    /// Time a client has to send a request's headers, from connecting or
    /// from its previous request (closes idle and slowloris connections).
    #[arg(long, env = "ANNEXMESH_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub http_header_timeout: std::time::Duration,
    /// Time a client has to finish the TLS handshake.
    #[arg(long, env = "ANNEXMESH_HTTP_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub http_tls_handshake_timeout: std::time::Duration,
    /// Most HTTP requests handled at once; more are answered 503.
    #[arg(long, env = "ANNEXMESH_HTTP_MAX_REQUESTS", default_value_t = 1024)]
    pub http_max_requests: usize,
    /// Most `lockcontent` locks held at once; over it, locking answers
    /// "not locked".
    #[arg(long, env = "ANNEXMESH_MAX_LOCKS", default_value_t = DEFAULT_MAX_LOCKS)]
    pub max_locks: usize,
    /// Most locks one client address holds at once.
    #[arg(long, env = "ANNEXMESH_MAX_LOCKS_PER_CLIENT", default_value_t = DEFAULT_MAX_LOCKS_PER_CLIENT)]
    pub max_locks_per_client: usize,
}

/// What serving P2P over HTTP needs, from the flags.
pub struct HttpServing {
    pub opts: HttpOptions,
    pub limits: Limits,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Why the flags do not make a server.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error(transparent)]
    NoAccessChoice(#[from] NoAccessChoice),
    #[error("--http-tls-cert/--http-tls-key: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

impl HttpArgs {
    /// The access policy alone; an error unless the operator chose one.
    pub fn policy(&self) -> Result<Policy, NoAccessChoice> {
        Policy::new(self.auth_users, self.unauth, self.wideopen)
    }

    pub fn serving(&self) -> Result<HttpServing, ArgsError> {
        let tls = match (&self.http_tls_cert, &self.http_tls_key) {
            (Some(c), Some(k)) => Some(crate::tls::acceptor(c, k)?),
            _ => None,
        };
        let opts = HttpOptions {
            policy: self.policy()?,
            tls: tls.is_some(),
            trusted_proxies: self.trusted_proxy.clone(),
            max_locks: self.max_locks,
            max_locks_per_client: self.max_locks_per_client,
            // The gateway puts its shared one here (`--auth-throttle-*`).
            throttle: Default::default(),
            role_metrics: Default::default(),
        };
        let limits = Limits {
            max_connections: self.http_max_connections,
            header_timeout: self.http_header_timeout,
            tls_handshake_timeout: self.http_tls_handshake_timeout,
            max_requests: self.http_max_requests,
        };
        Ok(HttpServing { opts, limits, tls })
    }
}
