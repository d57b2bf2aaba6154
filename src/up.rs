//! `annexmesh up`: a whole mesh in one process on loopback, for trying it out
//! and for development: a coordinator, one gateway and three agents serving
//! the cluster `mesh`, all state under one directory.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::agent::{self, AgentConfig};
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
    #[arg(long, default_value = "127.0.0.1:9417")]
    pub http: SocketAddr,
    /// Address for the coordinator's gRPC and admin API.
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub coordinator_listen: SocketAddr,
    /// Address for the gateway's line-based P2P protocol (AUTH with tokens).
    #[arg(long, default_value = "127.0.0.1:9418")]
    pub p2p: SocketAddr,
    /// Plaintext gRPC between the roles instead of mutually authenticated
    /// TLS with the mesh CA in the data directory.
    #[arg(long, env = "ANNEXMESH_INSECURE", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure: bool,
}

pub async fn run(cfg: UpConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data)
        .with_context(|| format!("cannot create {}", cfg.data.display()))?;
    let coordinator_data = cfg.data.join("coordinator");
    let mut coordinator = Coordinator::open(&coordinator_data).await?;
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
    coordinator.store.create_cluster(CLUSTER).await?;
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
            listen: listener.local_addr()?,
            advertise: None,
            store,
            name,
            cluster: CLUSTER.to_string(),
            safety: Default::default(),
            tls: MemberTlsArgs { insecure: cfg.insecure, ..Default::default() },
        };
        tasks.spawn(agent::serve(cfg, listener, shutdown.clone()));
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
        tasks.spawn(async move {
            gateway::serve(&url, dialer, http, Some((p2p, opts)), shutdown).await
        });
    }
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
    println!("In a git-annex repository, add the mesh with:");
    println!("  git remote add {CLUSTER} http://{http_addr}/{CLUSTER}");
    println!("  git config annex.security.allowed-ip-addresses {}", http_addr.ip());
    println!(
        "Or, over git-annex's P2P protocol, with a token from `annexmesh admin token create`:"
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
