//! The command line: every role, the admin CLI and the generators
//! (completions, man pages, the configuration reference) share one
//! `clap` definition, reachable from tests through [`command`].

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::{admin, agent, coordinator, gateway, up};

/// A distributed proxy mesh serving git-annex clusters.
#[derive(Debug, Parser)]
#[command(name = "annexmesh", version = crate::VERSION, about)]
pub struct Cli {
    // Global flags go here (with `global = true` and an `env`), before the
    // subcommand; `config::load` skips over them to find the role.
    #[command(subcommand)]
    pub role: Role,
    #[command(flatten)]
    pub log: crate::telemetry::LogArgs,
}

/// A role's settings and the TOML file some of them came from.
#[derive(Debug, Clone, Args)]
pub struct Configured<T: Args> {
    /// A TOML file of this role's settings: keys are the long flag names
    /// (`http = "0.0.0.0:8080"`). A flag or environment variable given
    /// beats the file; the file beats the default.
    #[arg(long, env = "ANNEXMESH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub role: T,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Role {
    /// Run the coordinator: registry, location log, cluster clock, admin API.
    Coordinator(Configured<coordinator::CoordinatorConfig>),
    /// Run an agent: one node's object store.
    Agent(Configured<agent::AgentConfig>),
    /// Run a gateway: the front-end git-annex clients talk to.
    Gateway(Configured<gateway::GatewayConfig>),
    /// Operate the mesh through the coordinator's admin API.
    Admin(Configured<admin::AdminArgs>),
    /// Run a whole mesh (coordinator, gateway, three agents) in one process.
    Up(Configured<up::UpConfig>),
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
    InstallLinks { dir: PathBuf },
    /// Print a shell completion script (e.g. `annexmesh completions bash >
    /// /etc/bash_completion.d/annexmesh`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) on stdout, or with DIR write one page
    /// per command into DIR (annexmesh.1, annexmesh-gateway.1, ...).
    Man { dir: Option<PathBuf> },
    /// Print the configuration reference (Markdown): every setting of every
    /// role with its flag, environment variable, TOML key and default.
    #[command(hide = true)]
    Reference,
    /// Show the settings a role would run with, as TOML, each with where it
    /// came from (flag, env, file, default): `annexmesh config print
    /// gateway --config gateway.toml`.
    #[command(hide = true, subcommand)]
    Config(ConfigCommand),
}

/// `annexmesh config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// The effective settings of ROLE given the rest of the command line,
    /// the environment and its --config file.
    Print {
        /// coordinator, agent, gateway, up or admin.
        role: String,
        /// The role's flags, as they would be given to it.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
}

/// The subcommands that take `--config`.
pub const CONFIGURED_ROLES: &[&str] = &["coordinator", "agent", "gateway", "up", "admin"];

/// The whole command line definition.
pub fn command() -> clap::Command {
    Cli::command()
}

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    clap_complete::generate(shell, &mut command(), "annexmesh", out);
}

/// Writes the main manual page to `out`, or with `dir` one page per
/// command into it, and returns the files written. Each page ends with an
/// ENVIRONMENT section naming the variables of its flags.
pub fn man(
    dir: Option<&std::path::Path>,
    out: &mut dyn std::io::Write,
) -> std::io::Result<Vec<PathBuf>> {
    let mut root = command().disable_help_subcommand(true);
    root.build();
    let Some(dir) = dir else {
        page(&root, out)?;
        return Ok(Vec::new());
    };
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    pages(&root, dir, &mut written)?;
    Ok(written)
}

fn pages(
    cmd: &clap::Command,
    dir: &std::path::Path,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let path = dir.join(clap_mangen::Man::new(cmd.clone()).get_filename());
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
    page(cmd, &mut file)?;
    std::io::Write::flush(&mut file)?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages(sub, dir, written)?;
    }
    Ok(())
}

fn page(cmd: &clap::Command, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    clap_mangen::Man::new(cmd.clone()).render(out)?;
    let vars: Vec<(String, String)> = cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| {
            Some((a.get_env()?.to_string_lossy().into_owned(), a.get_long()?.to_string()))
        })
        .collect();
    if !vars.is_empty() {
        writeln!(out, ".SH ENVIRONMENT")?;
        for (env, long) in vars {
            // Roff: a minus sign is written \-.
            writeln!(out, ".TP\n\\fB{env}\\fR\nas \\fB\\-\\-{}\\fR", long.replace('-', "\\-"))?;
        }
    }
    if cmd.get_name() == "annexmesh" {
        writeln!(
            out,
            ".SH ENVIRONMENT\nEvery flag of every command also reads an environment variable \
             (listed in each command's page, e.g. \\fBannexmesh\\-gateway\\fR(1)).\n\
             .TP\n\\fBANNEXMESH_CONFIG\\fR\nthe TOML config file of a role, as \\fB\\-\\-config\\fR\n\
             .TP\n\\fBANNEXMESH_LOG\\fR\nwhich log lines to write, as a tracing filter (default: info)"
        )?;
    }
    if cmd.get_arguments().any(|a| a.get_id() == "config") {
        writeln!(
            out,
            ".SH FILES\nSettings may also come from the TOML file given with \\fB\\-\\-config\\fR (see docs/configuration.md); a flag beats its environment variable, which beats the file."
        )?;
    }
    Ok(())
}
