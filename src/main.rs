use tokio_util::sync::CancellationToken;

use annexmesh::cli::{ConfigCommand, Role};
use annexmesh::{admin, agent, client, config, coordinator, gateway, up};

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

    let cli = config::parse_or_exit(std::env::args_os());
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
        Role::Completions { shell } => {
            annexmesh::cli::completions(*shell, &mut std::io::stdout());
            return Ok(());
        }
        Role::Man { dir } => {
            for page in annexmesh::cli::man(dir.as_deref(), &mut std::io::stdout())? {
                println!("{}", page.display());
            }
            return Ok(());
        }
        Role::Reference => {
            print!("{}", config::reference());
            return Ok(());
        }
        Role::Config(ConfigCommand::Print { role, args }) => {
            print!("{}", config::print(role, args)?);
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
            Role::Coordinator(c) => coordinator::run(c.role, shutdown).await,
            Role::Agent(c) => agent::run(c.role, shutdown).await,
            Role::Gateway(c) => gateway::run(c.role, shutdown).await,
            Role::Admin(a) => admin::run(a.role).await,
            Role::Up(c) => up::run(c.role, shutdown).await,
            // Served above, without this runtime.
            Role::P2pRelay { .. }
            | Role::Shell { .. }
            | Role::InstallLinks { .. }
            | Role::Completions { .. }
            | Role::Man { .. }
            | Role::Reference
            | Role::Config(_) => unreachable!(),
        }
    });
    // Each role has ended its own tasks by now; what is left (connections a
    // server let go of, blocking reads) must not hold the exit up.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    // One line with every cause, for the person who ran it; no backtrace
    // even when RUST_BACKTRACE is set (ANNEXMESH_LOG=debug tells more).
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}
