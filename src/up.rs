//! `annexmesh up`: a whole mesh in one process on loopback, for trying it out
//! and for development: a coordinator, one gateway and three agents serving
//! the cluster `mesh`, all state under one directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::agent::{self, AgentConfig};
use crate::auth;
use crate::coordinator::Coordinator;
use crate::gateway;
use crate::pki::{Identity, MemberTlsArgs};

pub const CLUSTER: &str = "mesh";
pub const NODES: usize = 3;

#[derive(Debug, Clone, clap::Args)]
pub struct UpConfig {
    /// Directory for all state; reused on the next start.
    #[arg(long, env = "ANNEXMESH_DATA", default_value = "annexmesh-data")]
    pub data: PathBuf,
    /// Address for the gateway's P2P over HTTP.
    #[arg(long, env = "ANNEXMESH_HTTP", default_value = "127.0.0.1:9417")]
    pub http: SocketAddr,
    /// Address for the coordinator's gRPC and admin API.
    #[arg(long, env = "ANNEXMESH_COORDINATOR_LISTEN", default_value = "127.0.0.1:7400")]
    pub coordinator_listen: SocketAddr,
    /// Address for the gateway's line-based P2P protocol (AUTH with tokens).
    #[arg(long, env = "ANNEXMESH_P2P", default_value = "127.0.0.1:9418")]
    pub p2p: SocketAddr,
    /// PEM certificate chain: serve P2P over HTTP as HTTPS. Needs
    /// --http-tls-key.
    #[arg(long, env = "ANNEXMESH_HTTP_TLS_CERT", requires = "http_tls_key")]
    pub http_tls_cert: Option<PathBuf>,
    /// PEM private key for --http-tls-cert.
    #[arg(long, env = "ANNEXMESH_HTTP_TLS_KEY", requires = "http_tls_cert")]
    pub http_tls_key: Option<PathBuf>,
    /// Where the coordinator keeps the mesh's state: `redb:DIRECTORY` or
    /// `postgres://...` (default: an embedded database in the data directory).
    #[arg(long, env = "ANNEXMESH_COORDINATOR_STORE")]
    pub store: Option<crate::coordinator::StoreSpec>,
    /// Plaintext gRPC between the roles instead of mutually authenticated
    /// TLS with the mesh CA in the data directory.
    #[arg(long, env = "ANNEXMESH_INSECURE", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure: bool,
}

/// The user `up` makes for its client recipe.
pub const USER: &str = "annexmesh";

/// The git credential store file `up` writes, in its data directory.
pub const CREDENTIALS: &str = "git-credentials";

/// The password of `up`'s user: the one in the credential file when the
/// coordinator still knows it, else a new one (replacing the old user).
async fn up_user(store: &crate::coordinator::store::Store, file: &Path) -> anyhow::Result<String> {
    use crate::coordinator::store::{Created, Token};
    let old = std::fs::read_to_string(file).ok().and_then(|s| {
        let line = s.lines().next()?.to_string();
        let (_, rest) = line.split_once("://")?;
        let (userinfo, _) = rest.rsplit_once('@')?;
        let (user, password) = userinfo.split_once(':')?;
        (user == USER).then(|| password.to_string())
    });
    if let Some(pw) = old
        && store
            .token(&auth::hash_token(&pw))
            .await?
            .is_some_and(|t| t.user.as_deref() == Some(USER))
    {
        return Ok(pw);
    }
    store.remove_user(USER).await?;
    let password = auth::generate_token();
    let token = Token {
        sha256: auth::hash_token(&password),
        mode: auth::Mode::ReadWrite,
        label: "annexmesh up".to_string(),
        created_unix_ms: crate::clock::unix_ms(),
        user: Some(USER.to_string()),
    };
    match store.create_token(token).await? {
        Created::Done => Ok(password),
        other => anyhow::bail!("cannot create the user {USER}: {other:?}"),
    }
}

pub async fn run(cfg: UpConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data)
        .with_context(|| format!("cannot create {}", cfg.data.display()))?;
    let coordinator_data = cfg.data.join("coordinator");
    let spec = cfg
        .store
        .clone()
        .unwrap_or_else(|| crate::coordinator::StoreSpec::Redb(coordinator_data.clone()));
    let mut coordinator = Coordinator::open_with(
        &coordinator_data,
        &spec,
        crate::coordinator::DEFAULT_RESERVE,
        crate::coordinator::store::system_clock(),
        Default::default(),
    )
    .await?;
    if !cfg.insecure {
        coordinator = coordinator.with_tls(&coordinator_data, None, None)?;
    }
    // The roles here are issued certificates directly, without joining.
    let ca = coordinator.ca();
    // Where `annexmesh admin` looks for them by itself.
    let admin_token = cfg.data.join(crate::coordinator::join::ADMIN_TOKEN_FILE);
    let token =
        std::fs::read_to_string(coordinator_data.join(crate::coordinator::join::ADMIN_TOKEN_FILE))
            .context("cannot read the coordinator's admin token")?;
    crate::pki::write_private(&admin_token, &token)?;
    let ca_file = cfg.data.join(crate::coordinator::join::CA_FILE);
    if let Some(ca) = &ca {
        std::fs::write(&ca_file, ca.cert_pem())
            .with_context(|| format!("cannot write {}", ca_file.display()))?;
    }
    let (cluster, _) = coordinator.store.create_cluster(CLUSTER).await?;
    let repo = coordinator_data.join("git").join(format!("{}.git", cluster.uuid));
    let data = std::fs::canonicalize(&cfg.data)
        .with_context(|| format!("cannot resolve {}", cfg.data.display()))?;
    let credentials = data.join(CREDENTIALS);
    let password = up_user(&coordinator.store, &credentials).await?;
    let listener = TcpListener::bind(cfg.coordinator_listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.coordinator_listen))?;
    let scheme = if ca.is_some() { "https" } else { "http" };
    let coordinator_url = format!("{scheme}://{}", listener.local_addr()?);
    let http = TcpListener::bind(cfg.http)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.http))?;
    let http_addr = http.local_addr()?;
    let p2p = TcpListener::bind(cfg.p2p)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.p2p))?;
    let p2p_addr = p2p.local_addr()?;

    let mut tasks = tokio::task::JoinSet::new();
    // Each role keeps its own registry; the gateway serves them all on its
    // HTTP listener, at /metrics/coordinator and /metrics/NODE.
    let mut roles = vec![("coordinator".to_string(), coordinator.metrics())];
    tasks.spawn(coordinator.serve(listener, shutdown.clone()));
    for i in 1..=NODES {
        let name = format!("node{i}");
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let store = cfg.data.join("nodes").join(&name);
        if let Some(ca) = &ca {
            let uuid = agent::store::Store::open(&store)?.uuid()?;
            ca.issue_new(&Identity::Agent(uuid))?.save_dir(&agent::tls_dir(&store))?;
        }
        let cfg = AgentConfig {
            coordinator: coordinator_url.clone(),
            failover: Default::default(),
            listen: listener.local_addr()?,
            advertise: None,
            store,
            name,
            cluster: CLUSTER.to_string(),
            metrics: None,
            safety: Default::default(),
            grpc: Default::default(),
            tls: MemberTlsArgs { insecure: cfg.insecure, ..Default::default() },
        };
        let metrics = std::sync::Arc::new(agent::metrics::AgentMetrics::new(cfg.store.clone()));
        roles.push((cfg.name.clone(), metrics.clone()));
        tasks.spawn(agent::serve_with_metrics(cfg, listener, metrics, None, shutdown.clone()));
    }
    {
        let creds = match &ca {
            Some(ca) => Some(ca.issue_new(&Identity::Gateway("up".into()))?),
            None => None,
        };
        let dialer = crate::rpc::Dialer::new(creds, cfg.insecure);
        let url = coordinator_url.clone();
        let shutdown = shutdown.clone();
        let opts = gateway::line::LineOptions {
            default_repo: Some(CLUSTER.to_string()),
            ..Default::default()
        };
        let policy =
            gateway::http::auth::Policy::new(true, gateway::http::auth::Unauth::None, false)?;
        let mut http_opts = gateway::http::HttpOptions::new(policy);
        http_opts.role_metrics = gateway::http::observe::RoleMetrics(roles);
        let tls = match (&cfg.http_tls_cert, &cfg.http_tls_key) {
            (Some(c), Some(k)) => Some(crate::tls::acceptor(c, k)?),
            _ => None,
        };
        http_opts.tls = tls.is_some();
        let serving =
            gateway::http::HttpServing { opts: http_opts, limits: Default::default(), tls };
        tasks.spawn(async move {
            gateway::serve(&url, dialer, http, serving, Some((p2p, opts)), shutdown).await
        });
    }
    // A client that clones as soon as the recipe is printed must learn the
    // nodes from the git-annex branch: wait (a little) for the branch to
    // name them all.
    if !branch_names_nodes(&repo, NODES, Duration::from_secs(30)).await {
        tracing::warn!(
            "the cluster's git-annex branch does not name all {NODES} nodes yet; \
             clients that clone now learn them with their next `git annex pull`"
        );
    }
    let scheme = if cfg.http_tls_cert.is_some() { "https" } else { "http" };
    // git's store helper matches on scheme, host and port (not the path).
    crate::pki::write_private(
        &credentials,
        &format!("{scheme}://{USER}:{password}@{http_addr}\n"),
    )?;
    let info = serde_json::json!({ "http": http_addr.to_string(), "p2p": p2p_addr.to_string(), "coordinator": coordinator_url });
    std::fs::write(cfg.data.join("up.json"), info.to_string())?;
    println!(
        "annexmesh is up: cluster '{CLUSTER}' with {NODES} nodes, state in {}",
        cfg.data.display()
    );
    println!("coordinator (admin API): {coordinator_url}");
    println!(
        "The admin CLI finds this mesh's admin token ({}) by itself when run here; elsewhere:",
        admin_token.display()
    );
    let ca_arg = if ca.is_some() { format!(" --ca {}", ca_file.display()) } else { String::new() };
    println!(
        "  annexmesh admin --coordinator {coordinator_url}{ca_arg} --admin-token-file {} node list",
        admin_token.display()
    );
    let ip = http_addr.ip();
    let helper = format!("store --file={}", credentials.display());
    println!("Clone the cluster's repository and get its files:");
    println!(
        "  git clone -c annex.security.allowed-ip-addresses={ip} -c credential.helper='{helper}' \\\n    {scheme}://{http_addr}/{CLUSTER} && cd {CLUSTER} && git annex init"
    );
    println!("Or, in a git-annex repository you have, add the mesh with:");
    println!("  git remote add {CLUSTER} {scheme}://{http_addr}/{CLUSTER}");
    println!("  git config annex.security.allowed-ip-addresses {ip}");
    println!("  git config credential.helper '{helper}'");
    println!("  git annex pull {CLUSTER}");
    println!(
        "Or, over git-annex's P2P protocol, with a token from `annexmesh admin token create` (or the password in {}):",
        credentials.display()
    );
    println!(
        "  git annex p2p --link --name {CLUSTER}   # address: p2p-annex::annexmesh:{p2p_addr}/{CLUSTER}:TOKEN"
    );
    println!("Stop with Ctrl-C.");

    // One role failing takes the whole mesh down rather than limping on.
    let mut result = Ok(());
    if let Some(r) = tasks.join_next().await {
        result = r.context("a role panicked").and_then(|r| r);
        shutdown.cancel();
    }
    while tasks.join_next().await.is_some() {}
    result
}

/// Whether, within `limit`, the git-annex branch of `repo` comes to name
/// `nodes` proxied nodes (`proxy.log`).
async fn branch_names_nodes(repo: &Path, nodes: usize, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let log = crate::coordinator::git::run(
            crate::coordinator::git::git(Some(repo)).args(["show", "git-annex:proxy.log"]),
        )
        .await;
        if log.is_ok_and(|l| String::from_utf8_lossy(&l).matches(':').count() >= nodes) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
