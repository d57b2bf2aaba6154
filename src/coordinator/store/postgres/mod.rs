//! The coordinator's state in PostgreSQL, shared by any number of
//! coordinators at once.
//!
//! Every check and the write it guards run in one transaction that another
//! coordinator cannot interleave with: unique constraints with
//! `ON CONFLICT`, row locks (`FOR UPDATE`), and table locks in a mode that
//! excludes the other writers of the same table (`SHARE ROW EXCLUSIVE`),
//! always taken in one order (registry tables, then the location stamp
//! counter), so no two of them deadlock. Location changes are batched
//! (`locations`), topology changes are announced with `NOTIFY` and heard by
//! one listening connection (`listen`), and the schema is migrated at start
//! (`migrate`).

mod credentials;
mod listen;
mod locations;
mod migrate;
mod registry;
mod shared;
mod trait_impl;
mod transfer;
mod url;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::config::{Host, SslMode};

use super::{Result, StoreError};

pub use url::DEFAULT_POOL_MAX_SIZE;

/// The channel topology changes are announced on.
const TOPOLOGY_CHANNEL: &str = "annexmesh_topology";
/// How long a connection attempt may take when the URL sets no
/// `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long sent data may go unacknowledged (`tcp_user_timeout`) and a
/// connection idle before it is probed (`keepalives_idle`), unless the URL
/// sets them.
const LINK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a request waits for a free connection of the pool.
const POOL_WAIT: Duration = Duration::from_secs(60);

/// A coordinator store in a PostgreSQL database.
pub struct Postgres {
    pool: Pool,
    /// The URL without its password.
    describe: String,
    /// HOST:PORT, for error messages.
    at: Arc<str>,
    writer: locations::Writer,
    listener: tokio::task::JoinHandle<()>,
}

/// How connections are made: with TLS unless the URL says `sslmode=disable`.
#[derive(Clone)]
enum Tls {
    None,
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

impl Postgres {
    /// Connects to the database at `url` (`postgres://USER:PASSWORD@HOST:PORT/DB`,
    /// with PostgreSQL's parameters such as `sslmode`, plus `pool_max_size`
    /// (connections kept at most, default 16) and `sslrootcert` (a PEM file
    /// of authorities trusted beside the public roots)), brings its schema
    /// up to date, and starts hearing topology changes: `on_change` is
    /// called for every one, whichever coordinator made it.
    pub async fn connect(url: &str, on_change: Arc<dyn Fn() + Send + Sync>) -> Result<Postgres> {
        let o = url::parse(url).map_err(StoreError::Backend)?;
        let mut config: tokio_postgres::Config = o
            .client_url
            .parse()
            .map_err(|e| StoreError::Backend(format!("{}: {}", o.describe, chain(&e))))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // A database cut off must fail requests, not hang them: unless the
        // URL says otherwise, unacknowledged data fails a connection after
        // this long, and idle ones are probed.
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(LINK_TIMEOUT);
        }
        if config.get_keepalives_idle() > LINK_TIMEOUT {
            config.keepalives_idle(LINK_TIMEOUT);
        }
        let at: Arc<str> = endpoint(&config).into();
        let tls = tls(&config, o.sslrootcert.as_deref())?;
        let manager = match &tls {
            Tls::None => Manager::from_config(config.clone(), tokio_postgres::NoTls, manager()),
            Tls::Rustls(t) => Manager::from_config(config.clone(), t.clone(), manager()),
        };
        let pool = Pool::builder(manager)
            .max_size(o.pool_max_size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot set up the connection pool: {e}")))?;
        let mut client = pool.get().await.map_err(|e| {
            let why = chain(&e);
            let hint = if why.contains("TLS") {
                " (to trust the server's certificate authority add sslrootcert=PATH to the \
                 URL; on a trusted network sslmode=disable goes without TLS)"
            } else {
                ""
            };
            StoreError::Backend(format!("cannot reach PostgreSQL at {at}: {why}{hint}"))
        })?;
        migrate::run(&mut client, &at).await?;
        drop(client);
        let writer = locations::Writer::start(pool.clone(), at.clone());
        let (ready, listening) = tokio::sync::oneshot::channel();
        let listener = tokio::spawn(listen::run(config, tls, at.clone(), on_change, ready));
        // Changes made once this returns are heard.
        if !matches!(tokio::time::timeout(CONNECT_TIMEOUT, listening).await, Ok(Ok(()))) {
            listener.abort();
            return Err(StoreError::Backend(format!(
                "cannot listen for topology changes on PostgreSQL at {at}; see the log"
            )));
        }
        Ok(Postgres { pool, describe: o.describe, at, writer, listener })
    }

    /// A connection of the pool.
    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.ctx(&self.at)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

fn manager() -> ManagerConfig {
    ManagerConfig { recycling_method: RecyclingMethod::Fast }
}

/// HOST:PORT (the first of them), or the socket directory.
fn endpoint(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

fn tls(config: &tokio_postgres::Config, extra_ca: Option<&std::path::Path>) -> Result<Tls> {
    if config.get_ssl_mode() == SslMode::Disable {
        return Ok(Tls::None);
    }
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = extra_ca {
        let certs = crate::tls::load_certificates(path)
            .map_err(|e| StoreError::Backend(format!("sslrootcert: {e}")))?;
        for c in certs {
            roots
                .add(c)
                .map_err(|e| StoreError::Backend(format!("sslrootcert {}: {e}", path.display())))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Backend(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Tls::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new(config)))
}

/// An error and its causes, as one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !out.ends_with(&s) {
            out = format!("{out}: {s}");
        }
        cause = c.source();
    }
    out
}

/// Turns a client error into the store's, naming the server.
trait Ctx<T> {
    fn ctx(self, at: &str) -> Result<T>;
}

impl<T, E: std::error::Error + 'static> Ctx<T> for std::result::Result<T, E> {
    fn ctx(self, at: &str) -> Result<T> {
        self.map_err(|e| StoreError::Backend(format!("PostgreSQL at {at}: {}", chain(&e))))
    }
}

/// A counter as PostgreSQL stores it (bigint); values beyond are clamped.
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn uint(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A record stored as JSON.
fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("records serialise")
}

fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T> {
    serde_json::from_value(v.clone()).map_err(|e| StoreError::Corrupt(format!("{e}: {v}")))
}

/// Announces a topology change; delivered when the transaction commits.
async fn notify(txn: &deadpool_postgres::Transaction<'_>, at: &str) -> Result<()> {
    txn.execute("SELECT pg_notify($1, '')", &[&TOPOLOGY_CHANNEL]).await.ctx(at)?;
    Ok(())
}

/// The database's clock, in Unix milliseconds, as SQL.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";
