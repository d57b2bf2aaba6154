//! The coordinator role: registry, health, location log, cluster clock and
//! the admin API, shared by every gateway.
//!
//! `store` keeps the durable state behind one writer thread; `service`
//! (agents and gateways) and `admin` (operators) are the gRPC services,
//! thin over `core`, which they share; `placement` chooses the nodes of a
//! PUT with the pure `crate::preferred` expressions.

pub mod admin;
pub mod branch;
pub mod clock;
mod cluster_delete;
pub mod core;
pub mod fsck;
pub mod git;
pub mod health;
pub mod identity;
pub mod join;
pub mod metrics;
pub mod placement;
pub mod probe;
pub mod repair;
pub mod scrub;
pub mod service;
pub mod store;
pub mod validate;
pub mod watch;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use self::core::Core;
use crate::rpc::{self, admin_server::AdminServer, coordinator_server::CoordinatorServer};
use crate::tasks::{SHUTDOWN_GRACE, Tasks, serve_until};
use admin::AdminService;
use clock::ClusterClock;
use repair::{RepairConfig, Repairer};
use service::CoordinatorService;

pub use self::core::DEFAULT_RESERVE;
pub use health::HEALTH_TIMEOUT;
pub use store::{Store, StoreSpec, WallClock};

#[derive(Debug, Clone, clap::Args)]
pub struct CoordinatorConfig {
    /// Address to serve gRPC (coordinator and admin API) on.
    #[arg(long, env = "ANNEXMESH_COORDINATOR_LISTEN", default_value = "127.0.0.1:7400")]
    pub listen: SocketAddr,
    /// Address to serve Prometheus metrics on (`GET /metrics`: repair's
    /// progress, each node's health, partial uploads and quarantined copies).
    /// Off unless given.
    #[arg(long, env = "ANNEXMESH_COORDINATOR_METRICS")]
    pub metrics: Option<SocketAddr>,
    /// Directory for the coordinator's own files: the mesh CA (unless
    /// --ca-cert), the admin token, the clusters' git repositories and,
    /// unless --store says otherwise, the database.
    #[arg(long, env = "ANNEXMESH_DATA")]
    pub data: PathBuf,
    /// Where the mesh's state is kept: `redb:DIRECTORY` (an embedded
    /// database, for one coordinator; the default is in --data) or
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE` (shared by any number of
    /// coordinators, all active; see docs/ha.md).
    #[arg(long, env = "ANNEXMESH_COORDINATOR_STORE")]
    pub store: Option<store::StoreSpec>,
    /// MiB of the embedded store's page cache (redb): the most of the
    /// database the coordinator keeps in its own memory, whatever the size
    /// of the location log. Unused with PostgreSQL, which caches in its
    /// own server.
    #[arg(long, env = "ANNEXMESH_STORE_CACHE", default_value_t = store::REDB_DEFAULT_CACHE_MIB)]
    pub store_cache: usize,
    /// Free space a PUT must leave on a node, for clusters that set none
    /// (`annexmesh admin cluster reserve`): bytes or a size such as 500MB, 2GiB.
    #[arg(long, env = "ANNEXMESH_RESERVE", default_value = "100MB", value_parser = parse_reserve)]
    pub reserve: u64,
    /// How long a node may be down before repair replaces its copies
    /// elsewhere (e.g. 90s, 10m, 1h): shorter restarts cause no copying.
    #[arg(long, env = "ANNEXMESH_REPAIR_GRACE", default_value = "10m", value_parser = crate::clock::parse_duration)]
    pub repair_grace: std::time::Duration,
    /// Time between background repair passes (e.g. 30s, 5m); 0 turns them
    /// off (`annexmesh admin repair` still runs one).
    #[arg(long, env = "ANNEXMESH_REPAIR_INTERVAL", default_value = "60s", value_parser = crate::clock::parse_duration)]
    pub repair_interval: std::time::Duration,
    /// MiB per second repair copies may use; 0 for no limit.
    #[arg(long, env = "ANNEXMESH_REPAIR_RATE", default_value_t = 100)]
    pub repair_rate: u64,
    /// For tests only: shifts the wall clock location stamps start from by
    /// this many milliseconds (negative sets it back), to show that a clock
    /// stepped back across a restart loses no change.
    #[arg(
        long,
        env = "ANNEXMESH_TEST_CLOCK_OFFSET_MS",
        hide = true,
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub test_clock_offset_ms: i64,
    #[command(flatten)]
    pub grpc: crate::limits::GrpcLimits,
    #[command(flatten)]
    pub git: git::serve::GitLimits,
    #[command(flatten)]
    pub branch: branch::BranchConfig,
    /// Serve plaintext gRPC: only on a network where every host is trusted.
    /// The admin API still needs the admin token.
    #[arg(long, env = "ANNEXMESH_INSECURE", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure: bool,
    /// PEM certificate of the operator's own CA for the mesh (default: a CA
    /// created in the data directory on first start). Needs --ca-key.
    #[arg(long, env = "ANNEXMESH_CA_CERT", requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,
    /// PEM private key of --ca-cert.
    #[arg(long, env = "ANNEXMESH_CA_KEY", requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,
}

/// The system's wall clock shifted by `offset_ms`.
fn shifted_clock(offset_ms: i64) -> WallClock {
    if offset_ms == 0 {
        return store::system_clock();
    }
    Arc::new(move || crate::clock::unix_ms().saturating_add_signed(offset_ms))
}

fn parse_reserve(s: &str) -> Result<u64, String> {
    crate::preferred::parse_size(s)
}

/// A coordinator with its database open, ready to serve.
pub struct Coordinator {
    pub store: Arc<Store>,
    clock: Arc<ClusterClock>,
    pub service: CoordinatorService,
    pub admin: AdminService,
    repair: Arc<Repairer>,
    core: Arc<Core>,
    /// Where to serve `/metrics`, when asked to.
    metrics_listener: Option<TcpListener>,
    /// The coordinator's metrics, served there (or by `annexmesh up`).
    metrics: Arc<metrics::CoordinatorMetrics>,
    /// Limits of the gRPC server.
    limits: crate::limits::GrpcLimits,
    /// This coordinator's certificate, when it serves TLS.
    tls: Option<crate::pki::Credentials>,
    /// Where the admin token was written, for refusals to point at.
    admin_token_file: PathBuf,
    /// How the git-annex branch writer paces itself.
    branch: branch::BranchConfig,
}

impl Coordinator {
    /// Opens the database in `data`, with the default reserve.
    pub async fn open(data: &std::path::Path) -> anyhow::Result<Coordinator> {
        Coordinator::open_with_reserve(data, DEFAULT_RESERVE).await
    }

    /// `reserve`: the free space a PUT must leave on a node, for clusters
    /// that set none.
    pub async fn open_with_reserve(
        data: &std::path::Path,
        reserve: u64,
    ) -> anyhow::Result<Coordinator> {
        let spec = StoreSpec::Redb(data.to_path_buf());
        let wall = store::system_clock();
        Coordinator::open_with(data, &spec, reserve, wall, RepairConfig::default()).await
    }

    /// As `open_with_reserve`, with location stamps starting from `wall`
    /// and the repair loop run as `repair` says.
    pub async fn open_with(
        data: &std::path::Path,
        spec: &StoreSpec,
        reserve: u64,
        wall: WallClock,
        repair: RepairConfig,
    ) -> anyhow::Result<Coordinator> {
        let cache = store::REDB_DEFAULT_CACHE_MIB;
        Coordinator::open_with_cache(data, spec, reserve, wall, repair, cache).await
    }

    /// As `open_with`, with the embedded store's page cache at most
    /// `cache_mib` MiB.
    pub async fn open_with_cache(
        data: &std::path::Path,
        spec: &StoreSpec,
        reserve: u64,
        wall: WallClock,
        repair: RepairConfig,
        cache_mib: usize,
    ) -> anyhow::Result<Coordinator> {
        // The data directory holds the CA and the admin token even when the
        // state is elsewhere.
        std::fs::create_dir_all(data)
            .with_context(|| format!("cannot create the data directory {}", data.display()))?;
        let store =
            Store::connect_with_cache(spec, wall, cache_mib).await.with_context(|| match spec {
                StoreSpec::Redb(dir) => {
                    format!("cannot open the coordinator database in {}", dir.display())
                }
                StoreSpec::Postgres(_) => "cannot open the coordinator's PostgreSQL store".into(),
            })?;
        info!(store = %store.describe(), "coordinator store open");
        let store = Arc::new(store);
        let clock = Arc::new(ClusterClock::open(&store).await?);
        let repos = Arc::new(git::Repos::new(data));
        let core = Arc::new(Core::new(store.clone(), reserve, repos));
        let service = CoordinatorService::new(core.clone(), clock.clone());
        let repair = Arc::new(Repairer::new(core.clone(), repair));
        let admin = AdminService::new(core.clone(), repair.clone(), clock.clone());
        let metrics = Arc::new(metrics::CoordinatorMetrics::new(core.clone(), repair.clone()));
        let admin_token_file = join::bootstrap_admin(&store, data).await?;
        for c in store.clusters().await? {
            if !store::is_cluster_uuid(&c.uuid) {
                tracing::warn!(
                    cluster = %c.name,
                    uuid = %c.uuid,
                    "this cluster's UUID is not in git-annex's form for clusters, so clients \
                     count it as a copy of its own; clusters created now get one that is"
                );
            }
        }
        Ok(Coordinator {
            store,
            clock,
            service,
            admin,
            repair,
            core,
            metrics_listener: None,
            metrics,
            tls: None,
            admin_token_file,
            limits: Default::default(),
            branch: Default::default(),
        })
    }

    /// Runs git processes for gateways within `limits`.
    pub fn with_git_limits(mut self, limits: git::serve::GitLimits) -> Coordinator {
        self.service.set_git_limits(limits);
        self
    }

    /// Serves with these gRPC limits rather than the defaults.
    pub fn with_limits(mut self, limits: crate::limits::GrpcLimits) -> Coordinator {
        self.limits = limits;
        self
    }

    /// Paces the git-annex branch writer so rather than by default.
    pub fn with_branch(mut self, branch: branch::BranchConfig) -> Coordinator {
        self.branch = branch;
        self
    }

    /// Serves mutually authenticated TLS with the mesh CA: the operator's
    /// (`ca_cert`, `ca_key`) or the one kept in `data`, created if missing.
    pub fn with_tls(
        mut self,
        data: &std::path::Path,
        ca_cert: Option<&std::path::Path>,
        ca_key: Option<&std::path::Path>,
    ) -> anyhow::Result<Coordinator> {
        let (ca, own) = join::coordinator_tls(data, ca_cert, ca_key)?;
        self.core.set_tls(ca, rpc::Dialer::new(Some(own.clone()), false));
        self.tls = Some(own);
        Ok(self)
    }

    /// The mesh CA, when serving TLS: `annexmesh up` issues its members'
    /// certificates with it.
    pub fn ca(&self) -> Option<Arc<crate::pki::Ca>> {
        self.core.ca().cloned()
    }

    /// Also serves Prometheus metrics on `listener` (`GET /metrics`).
    pub fn with_metrics(mut self, listener: TcpListener) -> Coordinator {
        self.metrics_listener = Some(listener);
        self
    }

    /// The coordinator's metrics, for a server of someone else's to serve.
    pub fn metrics(&self) -> crate::metrics::Source {
        self.metrics.clone()
    }

    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        info!(addr = %listener.local_addr()?, "coordinator serving");
        let tasks = Tasks::new(&shutdown);
        self.clock.spawn_renewal(self.store.clone(), &tasks);
        self.repair.start(&tasks);
        probe::spawn(self.core.clone(), &tasks);
        health::spawn_sharing(self.core.clone(), &tasks);
        self.core.me.lock().unwrap().address = listener.local_addr()?.to_string();
        announce(self.core.clone(), &tasks);
        ensure_repositories(&self.core).await;
        branch::spawn(self.core.clone(), self.branch.clone(), &tasks);
        if let Some(l) = self.metrics_listener {
            crate::metrics::spawn_server(l, self.metrics.clone(), &tasks, "coordinator");
        }
        let (reporter, health_service) = tonic_health::server::health_reporter();
        // Not serving until the store has answered once.
        crate::metrics::grpc::set_health(&reporter, &SERVICES, false).await;
        spawn_readiness(self.store.clone(), reporter, &tasks);
        let (reflection, reflection_alpha) = crate::metrics::grpc::reflection();
        let hint = format!(
            "the coordinator wrote one to {}; give it with --admin-token-file FILE or \
             ANNEXMESH_ADMIN_TOKEN_FILE",
            self.admin_token_file.display()
        );
        let guard = crate::pki::guard::GuardLayer::with_admin(
            crate::pki::guard::coordinator_policy,
            self.tls.is_some(),
            join::admin_check(self.store.clone(), &tasks).await?,
            hint,
        );
        let mut builder = self.limits.server();
        if let Some(own) = &self.tls {
            // Client certificates are optional here only so that joining
            // members can call Join; the guard requires one everywhere else.
            builder = builder.tls_config(own.server_tls(true)).context("bad TLS configuration")?;
            info!("serving mutually authenticated TLS");
        } else {
            tracing::warn!("serving plaintext gRPC (--insecure)");
        }
        let server = builder
            .layer(guard)
            .layer(crate::telemetry::GrpcTraceLayer)
            .layer(self.metrics.timing())
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_alpha)
            .add_service(
                CoordinatorServer::new(self.service)
                    .max_decoding_message_size(rpc::MAX_MESSAGE)
                    .max_encoding_message_size(rpc::MAX_MESSAGE),
            )
            .add_service(AdminServer::new(self.admin))
            .serve_with_incoming_shutdown(
                rpc::incoming_nodelay(listener),
                tasks.token().clone().cancelled_owned(),
            );
        let result = serve_until(server, tasks.token(), SHUTDOWN_GRACE, "coordinator").await;
        tasks.shutdown(SHUTDOWN_GRACE).await;
        result.context("coordinator gRPC server failed")
    }
}

/// The gRPC services whose health the coordinator reports.
const SERVICES: [&str; 2] = ["annexmesh.v1.Coordinator", "annexmesh.v1.Admin"];

/// How often readiness reads the store.
const READINESS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Reports SERVING while a store read succeeds, checked every
/// `READINESS_INTERVAL`, and NOT_SERVING (with a warning, once) while it
/// fails.
fn spawn_readiness(
    store: Arc<Store>,
    reporter: tonic_health::server::HealthReporter,
    tasks: &Tasks,
) {
    tasks.spawn(async move {
        let mut was = None;
        loop {
            let read = tokio::time::timeout(READINESS_INTERVAL * 2, store.clusters()).await;
            let ok = matches!(read, Ok(Ok(_)));
            if was != Some(ok) {
                match read {
                    Ok(Ok(_)) => info!("store answers: serving"),
                    Ok(Err(e)) => tracing::warn!("store read failed, not serving: {e}"),
                    Err(_) => tracing::warn!("store read timed out, not serving"),
                }
                crate::metrics::grpc::set_health(&reporter, &SERVICES, ok).await;
                was = Some(ok);
            }
            tokio::time::sleep(READINESS_INTERVAL).await;
        }
    });
}

/// On a shared store, tells the other coordinators (and `admin status`)
/// that this one serves, every few seconds.
fn announce(core: Arc<Core>, tasks: &Tasks) {
    if !core.store.shared() {
        return;
    }
    tasks.spawn(async move {
        loop {
            let me = core.me.lock().unwrap().clone();
            if let Err(e) = core.store.announce(me).await {
                tracing::warn!("cannot announce this coordinator in the store: {e}");
            }
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        }
    });
}

/// Every cluster's git repository, made if missing. A coordinator that
/// cannot run git still serves content; git requests then fail with why.
async fn ensure_repositories(core: &Core) {
    let clusters = match core.store.clusters().await {
        Ok(c) => c,
        Err(e) => return tracing::warn!("cannot list clusters for their git repositories: {e}"),
    };
    for c in clusters {
        if let Err(e) = core.repos.ensure(&c.uuid).await {
            tracing::warn!(cluster = %c.name, "cannot create the cluster's git repository: {e:#}");
        }
    }
}

pub async fn run(cfg: CoordinatorConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    if cfg.test_clock_offset_ms != 0 {
        tracing::warn!(
            offset_ms = cfg.test_clock_offset_ms,
            "location stamps use a shifted wall clock (a test option)"
        );
    }
    let wall = shifted_clock(cfg.test_clock_offset_ms);
    let repair = RepairConfig {
        grace: cfg.repair_grace,
        interval: cfg.repair_interval,
        rate: cfg.repair_rate.saturating_mul(1024 * 1024),
    };
    let spec = cfg.store.clone().unwrap_or_else(|| StoreSpec::Redb(cfg.data.clone()));
    let mut coordinator =
        Coordinator::open_with_cache(&cfg.data, &spec, cfg.reserve, wall, repair, cfg.store_cache)
            .await?
            .with_limits(cfg.grpc)
            .with_git_limits(cfg.git)
            .with_branch(cfg.branch);
    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    if let Some(addr) = cfg.metrics {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for metrics"))?;
        coordinator = coordinator.with_metrics(l);
    }
    if !cfg.insecure {
        coordinator =
            coordinator.with_tls(&cfg.data, cfg.ca_cert.as_deref(), cfg.ca_key.as_deref())?;
    }
    coordinator.serve(listener, shutdown).await
}
