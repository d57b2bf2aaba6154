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
}

pub async fn run(cfg: UpConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data)
        .with_context(|| format!("cannot create {}", cfg.data.display()))?;
    let coordinator = Coordinator::open(&cfg.data.join("coordinator")).await?;
    coordinator.store.create_cluster(CLUSTER).await?;
    let listener = TcpListener::bind(cfg.coordinator_listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.coordinator_listen))?;
    let coordinator_url = format!("http://{}", listener.local_addr()?);
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
        let cfg = AgentConfig {
            coordinator: coordinator_url.clone(),
            listen: listener.local_addr()?,
            advertise: None,
            store: cfg.data.join("nodes").join(&name),
            name,
            cluster: CLUSTER.to_string(),
            safety: Default::default(),
            grpc: Default::default(),
        };
        tasks.spawn(agent::serve(cfg, listener, shutdown.clone()));
    }
    {
        let url = coordinator_url.clone();
        let shutdown = shutdown.clone();
        let opts = gateway::line::LineOptions {
            default_repo: Some(CLUSTER.to_string()),
            ..Default::default()
        };
        tasks.spawn(async move { gateway::serve(&url, http, Some((p2p, opts)), shutdown).await });
    }
    let info = serde_json::json!({ "http": http_addr.to_string(), "p2p": p2p_addr.to_string(), "coordinator": coordinator_url });
    std::fs::write(cfg.data.join("up.json"), info.to_string())?;
    println!(
        "annexmesh is up: cluster '{CLUSTER}' with {NODES} nodes, state in {}",
        cfg.data.display()
    );
    println!("coordinator (admin API): {coordinator_url}");
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
