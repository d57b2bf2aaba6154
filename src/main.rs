use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use annexmesh::{admin, agent, client, coordinator, gateway, up};

/// A distributed proxy mesh serving git-annex clusters.
#[derive(Debug, Parser)]
#[command(version = annexmesh::VERSION, about)]
struct Cli {
    #[command(subcommand)]
    role: Role,
    #[command(flatten)]
    log: annexmesh::telemetry::LogArgs,
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
    /// Relay stdin/stdout to a gateway's line-protocol listener, as
    /// git-annex-p2p-annexmesh does for `p2p-annex::annexmesh:ADDRESS` remotes.
    P2pRelay {
        /// HOST:PORT or HOST:PORT/NAME (NAME: a cluster or node).
        #[arg(required = true, num_args = 1..=2)]
        args: Vec<String>,
    },
    /// Serve an ssh login as git-annex-shell does, through the gateway
    /// (configlist and p2pstdio only).
    Shell {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
    /// Create the symlinks git-annex-p2p-annexmesh and git-annex-shell to this
    /// executable in DIR.
    InstallLinks { dir: std::path::PathBuf },
}

fn main() -> anyhow::Result<()> {
    // Called by the names git-annex runs: no subcommand, git-annex's arguments.
    let mut argv = std::env::args_os();
    let argv0 = argv.next().unwrap_or_default();
    let called_as =
        std::path::Path::new(&argv0).file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if called_as == client::P2P_PROGRAM || called_as == client::SHELL_PROGRAM {
        let args: Vec<String> = match argv.map(|a| a.into_string()).collect() {
            Ok(args) => args,
            Err(a) => {
                eprintln!("{called_as}: argument {a:?} is not UTF-8");
                std::process::exit(1);
            }
        };
        // Exit at once: a read of stdin may still be pending on a thread.
        std::process::exit(if called_as == client::P2P_PROGRAM {
            client::p2p_program_main(&args)
        } else {
            client::shell_main(&args)
        });
    }

    let cli = Cli::parse();
    let _telemetry = annexmesh::telemetry::init(&cli.log)?;
    match &cli.role {
        Role::P2pRelay { args } => std::process::exit(client::p2p_program_main(args)),
        Role::Shell { args } => std::process::exit(client::shell_main(args)),
        Role::InstallLinks { dir } => {
            for link in client::install_links(dir)? {
                println!("{}", link.display());
            }
            return Ok(());
        }
        _ => {}
    }
    // An agent holds one blocking thread per upload in progress (its disk
    // writer), so the pool is larger than tokio's default of 512; idle
    // threads cost only address space and exit after ten seconds.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(4096)
        .build()?;
    let result = rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let on_signal = shutdown.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
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
            // Served above, without this runtime.
            Role::P2pRelay { .. } | Role::Shell { .. } | Role::InstallLinks { .. } => {
                unreachable!()
            }
        }
    });
    // Each role has ended its own tasks by now; what is left (connections a
    // server let go of, blocking reads) must not hold the exit up.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}
