use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use annexmesh::{admin, agent, coordinator, gateway, up};

/// A distributed proxy mesh serving git-annex clusters.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// Run the coordinator: registry, location log, cluster clock, admin API.
    Coordinator(coordinator::CoordinatorConfig),
    /// Run an agent: one node's object store.
    Agent(agent::AgentConfig),
    /// Run a gateway: the front-end git-annex clients talk to.
    Gateway(gateway::GatewayConfig),
    /// Operate the mesh through the coordinator's admin API.
    Admin(admin::AdminArgs),
    /// Run a whole mesh (coordinator, gateway, three agents) in one process.
    Up(up::UpConfig),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ANNEXMESH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let on_signal = shutdown.clone();
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            on_signal.cancel();
        });
        match cli.role {
            Role::Coordinator(c) => coordinator::run(c, shutdown).await,
            Role::Agent(c) => agent::run(c, shutdown).await,
            Role::Gateway(c) => gateway::run(c, shutdown).await,
            Role::Admin(a) => admin::run(a).await,
            Role::Up(c) => up::run(c, shutdown).await,
        }
    })
}
