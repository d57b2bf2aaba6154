//! The agent role: one node's object store, served over gRPC, registered with
//! the coordinator. Content is verified before it is trusted (`integrity`),
//! re-verified at rest (`scrub`), partial uploads expire (`partials`), and
//! one agent at a time owns a store (`store_lock`).

pub mod config;
pub mod integrity;
pub mod locks;
pub mod metrics;
pub mod partials;
pub mod scrub;
pub mod service;
pub mod store;
pub mod store_check;
pub mod store_lock;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::pki::guard::GuardLayer;
use crate::pki::{Identity, Role};
use crate::rpc::{self, agent_server::AgentServer};
use crate::tasks::{SHUTDOWN_GRACE, Tasks, serve_until};
use service::AgentService;
use store::Store;

#[derive(Debug, Clone, clap::Args)]
pub struct AgentConfig {
    /// Coordinator gRPC URL, e.g. https://10.0.0.1:7400, or several
    /// separated by commas (a host name stands for each of its addresses):
    /// calls fail over between them.
    #[arg(long, env = "ANNEXMESH_COORDINATOR")]
    pub coordinator: String,
    #[command(flatten)]
    pub failover: rpc::FailoverArgs,
    /// Address to serve gRPC on.
    #[arg(long, env = "ANNEXMESH_AGENT_LISTEN", default_value = "127.0.0.1:7500")]
    pub listen: SocketAddr,
    /// URL gateways use to reach this agent (default: https://<listen
    /// address>, or http:// with --insecure); required when listening on
    /// every address (0.0.0.0 or ::).
    #[arg(long, env = "ANNEXMESH_AGENT_ADVERTISE")]
    pub advertise: Option<String>,
    /// The node's store: objects in git-annex's bare layout under annex/objects.
    #[arg(long, env = "ANNEXMESH_STORE")]
    pub store: PathBuf,
    /// Node name, unique in the mesh.
    #[arg(long, env = "ANNEXMESH_NODE_NAME")]
    pub name: String,
    /// Cluster the node belongs to.
    #[arg(long, env = "ANNEXMESH_CLUSTER")]
    pub cluster: String,
    /// Address to serve Prometheus metrics on (`GET /metrics`: the store's
    /// free space, scrub progress, gRPC latencies). Off unless given.
    #[arg(long, env = "ANNEXMESH_AGENT_METRICS")]
    pub metrics: Option<SocketAddr>,
    #[command(flatten)]
    pub safety: config::SafetyConfig,
    #[command(flatten)]
    pub grpc: crate::limits::GrpcLimits,
    #[command(flatten)]
    pub tls: crate::pki::MemberTlsArgs,
}

/// Where an agent keeps the credentials it obtained by joining.
pub fn tls_dir(store: &std::path::Path) -> PathBuf {
    store.join(".annexmesh").join("tls")
}

pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);

/// Binds, serves and keeps the registration alive until `shutdown`.
pub async fn run(cfg: AgentConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    serve(cfg, listener, shutdown).await
}

pub async fn serve(
    cfg: AgentConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = Arc::new(metrics::AgentMetrics::new(cfg.store.clone()));
    let metrics_listener = match cfg.metrics {
        Some(addr) => Some(crate::metrics::bind(addr).await?),
        None => None,
    };
    serve_with_metrics(cfg, listener, metrics, metrics_listener, shutdown).await
}

/// As `serve`, counting into `metrics`, served on `metrics_listener` when
/// given (`annexmesh up` serves them itself).
pub async fn serve_with_metrics(
    cfg: AgentConfig,
    listener: TcpListener,
    metrics: Arc<metrics::AgentMetrics>,
    metrics_listener: Option<TcpListener>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    // Other members would be told to dial 0.0.0.0, which reaches nothing.
    if cfg.advertise.is_none() && local.ip().is_unspecified() {
        anyhow::bail!(
            "the agent listens on every address ({local}) and so cannot tell the mesh which one \
             reaches it: pass --advertise URL (ANNEXMESH_AGENT_ADVERTISE), e.g. \
             --advertise https://node1.example.net:{}",
            local.port()
        );
    }
    // Before anything else touches the store or the registration.
    let _lock = store_lock::StoreLock::acquire(&cfg.store, &cfg.name)?;
    let store = Store::open(&cfg.store)?;
    let uuid = store.uuid()?;
    let creds = cfg
        .tls
        .credentials(&cfg.coordinator, Some(&tls_dir(&cfg.store)), Role::Agent, &uuid)
        .await?;
    if let Some(c) = &creds {
        let want = Identity::Agent(uuid.clone());
        match c.identity() {
            Some(id) if id == want => {}
            other => anyhow::bail!(
                "the TLS certificate names {}, not this node ({uuid})",
                other.map_or("no mesh member".to_string(), |i| i.to_string())
            ),
        }
    }
    let scheme = if creds.is_some() { "https" } else { "http" };
    let advertise = cfg.advertise.clone().unwrap_or_else(|| format!("{scheme}://{local}"));
    let dialer = rpc::Dialer::new(creds.clone(), cfg.tls.insecure)
        .with_failover(cfg.failover.coordinator_failover);
    let coordinator = dialer
        .coordinator_client(&cfg.coordinator)
        .with_context(|| format!("cannot use coordinator URL {}", cfg.coordinator))?;
    let tasks = Tasks::new(&shutdown);
    if let Some(l) = metrics_listener {
        crate::metrics::spawn_server(l, metrics.clone(), &tasks, "agent");
    }
    // Not serving until registered with a writable store.
    let (reporter, health_service) = tonic_health::server::health_reporter();
    crate::metrics::grpc::set_health(&reporter, &[SERVICE], false).await;
    let mut service = AgentService::new(
        store.clone(),
        uuid.clone(),
        cfg.name.clone(),
        cfg.cluster.clone(),
        tasks.clone(),
        Some(coordinator.clone()),
    );
    service.limit_locks(cfg.safety.max_locks);
    service.integrity.limit_stamps(cfg.safety.verified_cache);
    service.dialer = dialer;
    service.metrics = Some(metrics.clone());
    let service = Arc::new(service);
    info!(%uuid, name = %cfg.name, cluster = %cfg.cluster, %local, "agent serving");

    let reg = rpc::RegisterRequest {
        uuid,
        name: cfg.name.clone(),
        cluster: cfg.cluster.clone(),
        address: advertise,
        boot_id: service.boot_id.clone(),
    };
    // A registration the coordinator refuses for good ends the agent.
    let refused = Arc::new(std::sync::OnceLock::new());
    tasks.spawn({
        let (refused, token) = (refused.clone(), tasks.token().clone());
        let watch = Watch { metrics: metrics.clone(), health: reporter };
        let registration = keep_registered(coordinator, reg, service.clone(), watch);
        async move {
            if let Err(e) = registration.await {
                let _ = refused.set(e);
                token.cancel();
            }
        }
    });
    spawn_safety(&tasks, &cfg.safety, &service, &metrics);
    let svc = AgentServer::from_arc(service)
        .max_decoding_message_size(rpc::MAX_MESSAGE)
        .max_encoding_message_size(rpc::MAX_MESSAGE);
    // The agent receives whole objects over one HTTP/2 stream: the default
    // 64 KiB flow-control window would stall every upload on window updates.
    let mut builder = cfg.grpc.server();
    if let Some(c) = &creds {
        // Every caller shows a mesh certificate; the guard checks its role.
        builder = builder.tls_config(c.server_tls(false)).context("bad TLS configuration")?;
    }
    let guard = GuardLayer::new(crate::pki::guard::agent_policy, creds.is_some());
    let (reflection, reflection_alpha) = crate::metrics::grpc::reflection();
    let server = builder
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(rpc::STREAM_WINDOW))
        .initial_connection_window_size(Some(rpc::CONNECTION_WINDOW))
        .max_frame_size(Some(rpc::MAX_FRAME))
        .layer(guard)
        .layer(crate::telemetry::GrpcTraceLayer)
        .layer(metrics.timing())
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(svc)
        .serve_with_incoming_shutdown(
            rpc::incoming_nodelay(listener),
            tasks.token().clone().cancelled_owned(),
        );
    let result = serve_until(server, tasks.token(), SHUTDOWN_GRACE, "agent").await;
    tasks.shutdown(SHUTDOWN_GRACE).await;
    if let Some(e) = refused.get() {
        anyhow::bail!("{e}");
    }
    result.context("agent gRPC server failed")
}

/// The background work that looks after the store: the scrubber and the
/// expiry of partial uploads.
fn spawn_safety(
    tasks: &Tasks,
    cfg: &config::SafetyConfig,
    service: &AgentService,
    metrics: &Arc<metrics::AgentMetrics>,
) {
    let store = service.store.clone();
    if cfg.scrub_rate > 0.0 {
        info!(rate_mb_s = cfg.scrub_rate, interval = ?cfg.scrub_interval, "scrubbing");
        tasks.spawn(scrub::run(
            store.clone(),
            service.integrity.clone(),
            cfg.scrub_rate,
            cfg.scrub_interval,
            metrics.clone(),
        ));
    } else {
        info!("scrubbing disabled");
    }
    let min_free = partials::min_free(&store, cfg.min_free);
    let held = service.partial_bytes.clone();
    let uploads = service.uploads.clone();
    tasks.spawn(partials::expire(store, uploads, cfg.partial_max_age, min_free, held));
}

/// The gRPC service whose health the agent reports.
const SERVICE: &str = "annexmesh.v1.Agent";

/// Where the registration loop reports what it learns.
struct Watch {
    metrics: Arc<metrics::AgentMetrics>,
    health: tonic_health::server::HealthReporter,
}

impl Watch {
    /// SERVING while registered with a writable store.
    async fn report(&self, registered: bool, store_ok: bool, service: &AgentService) {
        let m = &self.metrics;
        m.registered.set(u64::from(registered));
        m.writable.set(u64::from(store_ok));
        m.partial.set(service.partial_bytes.load(Ordering::Relaxed));
        m.quarantined.set(service.integrity.quarantined());
        m.active.set(u64::from(service.active.load(Ordering::Relaxed)));
        crate::metrics::grpc::set_health(&self.health, &[SERVICE], registered && store_ok).await;
    }
}

/// Registers, then heartbeats; registers again whenever the coordinator
/// forgets the agent or cannot be reached. Returns only when the
/// coordinator refuses the registration for a reason retrying cannot fix.
async fn keep_registered(
    mut client: rpc::CoordinatorApi,
    reg: rpc::RegisterRequest,
    service: Arc<AgentService>,
    watch: Watch,
) -> Result<(), String> {
    let mut backoff = Duration::from_millis(200);
    let mut registered = false;
    let checker = store_check::StoreChecker::new(service.store.root());
    let mut store_ok = true;
    loop {
        let c = &mut client;
        let ok = if !registered {
            match c.register(reg.clone()).await {
                Ok(_) => {
                    info!(node = %reg.name, "registered");
                    registered = true;
                    true
                }
                Err(s) if refused_for_good(s.code()) => {
                    return Err(format!("the coordinator refused this node: {}", s.message()));
                }
                Err(s) => {
                    warn!("registration failed: {}", s.message());
                    false
                }
            }
        } else {
            let free = free_bytes(service.store.root());
            // The latest finished check; None says nothing of the store.
            let check = checker.poll();
            // Said once per change, not every heartbeat.
            match &check {
                Some(Err(e)) if store_ok => warn!(node = %reg.name, "store not writable: {e}"),
                Some(Ok(())) if !store_ok => info!(node = %reg.name, "store writable again"),
                _ => {}
            }
            if let Some(c) = &check {
                store_ok = c.is_ok();
            }
            let hb = rpc::HeartbeatRequest {
                uuid: reg.uuid.clone(),
                boot_id: reg.boot_id.clone(),
                free_bytes: free,
                active_transfers: service.active.load(Ordering::Relaxed),
                writable: matches!(check, Some(Ok(()))),
                store_error: match &check {
                    Some(Err(e)) => e.clone(),
                    _ => String::new(),
                },
                store_checked: check.is_some(),
                partial_bytes: service.partial_bytes.load(Ordering::Relaxed),
                quarantined: service.integrity.quarantined(),
            };
            match c.heartbeat(hb).await {
                Ok(r) => {
                    registered = r.into_inner().known;
                    true
                }
                Err(s) => {
                    warn!("heartbeat failed: {}", s.message());
                    registered = false;
                    false
                }
            }
        };
        watch.report(registered, store_ok, &service).await;
        let wait = if ok {
            backoff = Duration::from_millis(200);
            if registered { HEARTBEAT_INTERVAL } else { Duration::ZERO }
        } else {
            backoff = (backoff * 2).min(Duration::from_secs(5));
            backoff
        };
        tokio::time::sleep(wait).await;
    }
}

/// Codes with which the coordinator refuses a registration that retrying
/// cannot fix: a taken name, identity or address, an unknown cluster, a bad
/// request, a certificate for another node.
fn refused_for_good(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::InvalidArgument
            | Code::PermissionDenied
            | Code::Unauthenticated
    )
}

/// Free space on the filesystem holding `path` (0 when unknown).
pub(crate) fn free_bytes(path: &std::path::Path) -> u64 {
    nix::sys::statvfs::statvfs(path).map(|s| s.blocks_available() * s.fragment_size()).unwrap_or(0)
}
