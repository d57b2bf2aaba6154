//! Clients of a gateway's line-protocol listener (`annexmesh gateway --p2p`),
//! for the two ways git-annex reaches a peer over a byte stream:
//!
//! * `git-annex-p2p-annexmesh ADDRESS`: a generic P2P transport program.
//!   For a remote `p2p-annex::annexmesh:ADDRESS`, git-annex runs it and
//!   speaks the protocol (AUTH first) on its stdin/stdout; we relay the bytes
//!   unchanged to the gateway, after announcing the repository.
//! * `git-annex-shell` on a gateway host reached over ssh (`annexmesh
//!   shell`): git-annex runs `configlist` to learn the repository's UUID and
//!   `p2pstdio` to speak the protocol after the server's AUTH-SUCCESS. We
//!   authenticate to the gateway with the host's token on the user's behalf.
//!
//! Both are the `annexmesh` binary itself, called by those names.
//!
//! `address` parses gateway addresses, `connect` opens plain or TLS
//! connections, `shell` reads git-annex-shell's command line and
//! environment, `relay` authenticates and relays, `links` names the
//! programs. Nothing here depends on the gateway: the two sides share only
//! `p2p` (the protocol, its codec and the preamble) and `tls`.

mod address;
mod connect;
mod git;
mod links;
mod relay;
mod shell;

use anyhow::{Context, bail};
use tokio::io::{AsyncWriteExt, BufReader};

pub use address::GatewayAddress;
pub use connect::{GatewayStream, TLS_CA_ENV, connect};
pub use links::{P2P_PROGRAM, SHELL_PROGRAM, install_links};
pub use relay::{GatewayReader, NIL_UUID, Session, relay};
pub use shell::{
    DEFAULT_GATEWAY, DEFAULT_TOKEN_FILE, ShellCommand, ShellEnv, ShellRequest, check_directory,
    parse_shell_args, repo_name_from_dir,
};

use crate::p2p::message::{Message, Uuid};
use crate::p2p::preamble::Preamble;
use relay::COPY_BUF;

mod refusals;

/// Run one relayed connection on a single-threaded runtime.
/// Run one relayed connection on a single-threaded runtime.
fn block_on<T>(f: impl Future<Output = T>) -> T {
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let out = rt.block_on(f);
    // A read of stdin may still be pending on a blocking thread, which a
    // plain drop would wait for: after the gateway closed, stdin may never
    // see EOF.
    rt.shutdown_background();
    out
}

/// `git-annex-p2p-annexmesh ARGS...` (or `annexmesh p2p-relay`). Returns the
/// exit code; the caller should exit promptly, as the blocking thread
/// reading stdin may still be there.
pub fn p2p_program_main(args: &[String]) -> i32 {
    match block_on(p2p_program(args)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{P2P_PROGRAM}: {e:#}");
            1
        }
    }
}

async fn p2p_program(args: &[String]) -> anyhow::Result<()> {
    match args {
        [a] if a == "address" => bail!(
            "annexmesh gateways are reached as clients only, so this repository cannot be \
             offered on the annexmesh network (`git annex p2p --enable annexmesh`); link to \
             a gateway with `git annex p2p --link` instead"
        ),
        [address] => {
            let addr: GatewayAddress = address.parse().map_err(anyhow::Error::msg)?;
            let stream = connect(&addr)
                .await
                .with_context(|| format!("cannot connect to the annexmesh gateway at {addr}"))?;
            let (rd, mut wr) = tokio::io::split(stream);
            if let Some(repo) = &addr.repo {
                let preamble = Preamble { repo: repo.clone(), mode: None };
                wr.write_all(format!("{preamble}\n").as_bytes()).await?;
            }
            relay(
                tokio::io::stdin(),
                tokio::io::stdout(),
                BufReader::with_capacity(COPY_BUF, refusals::Watch::new(rd)),
                wr,
            )
            .await
        }
        [_, _] => bail!(
            "annexmesh gateways are reached as clients only; `git annex remotedaemon` cannot \
             listen for peers on the annexmesh network"
        ),
        _ => bail!("usage: {P2P_PROGRAM} HOST:PORT[/NAME]"),
    }
}

/// `annexmesh shell ARGS...` (or `git-annex-shell ARGS...`). Returns the exit
/// code; as with [`p2p_program_main`], the caller should exit promptly.
pub fn shell_main(args: &[String]) -> i32 {
    let env = ShellEnv::from_process();
    match block_on(shell(args, &env)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("annexmesh shell: {e:#}");
            1
        }
    }
}

/// The exit code: git's, for git's commands.
async fn shell(args: &[String], env: &ShellEnv) -> anyhow::Result<i32> {
    // The original command only counts when we were given no arguments: that
    // is how sshd runs a ForceCommand.
    let original = if args.is_empty() { env.ssh_original_command.as_deref() } else { None };
    let req = parse_shell_args(args, original).map_err(anyhow::Error::msg)?;
    check_directory(&req.repo, env.shell_directory.as_deref()).map_err(anyhow::Error::msg)?;
    let gateway = env.gateway().map_err(anyhow::Error::msg)?;
    let token = env.token().map_err(anyhow::Error::msg)?;
    let client = match &req.command {
        ShellCommand::ConfigList => Uuid::new(NIL_UUID).expect("nil UUID is valid"),
        ShellCommand::P2pStdio { client } => client.clone(),
        ShellCommand::Git(_) => Uuid::new(NIL_UUID).expect("nil UUID is valid"),
    };
    // The login's restriction applies to every connection it makes.
    // git-annex names the repository it expects with `--uuid`; for a
    // cluster's node (a proxied remote) that is the node, reached through
    // the cluster's path. So the UUID picks the repository, unless the login
    // is limited to one repository by name.
    let target = match &req.expected_uuid {
        Some(u) if env.shell_directory.is_none() && uuid::Uuid::parse_str(u).is_ok() => u.as_str(),
        _ => req.repo.as_str(),
    };
    let session = Session::open(&gateway, target, env.mode(), client, token).await?;
    if let Some(expected) = &req.expected_uuid
        && expected != session.repo_uuid.as_str()
    {
        bail!("expected repository UUID {expected} but found {}", session.repo_uuid);
    }
    match req.command {
        ShellCommand::ConfigList => {
            let mut out = tokio::io::stdout();
            out.write_all(
                format!("annex.uuid={}\ncore.gcrypt-id=\n", session.repo_uuid).as_bytes(),
            )
            .await?;
            out.flush().await?;
            Ok(0)
        }
        ShellCommand::P2pStdio { .. } => {
            let mut out = tokio::io::stdout();
            // What git-annex-shell p2pstdio says first; the client's AUTH
            // was ours to send, with the token it does not have.
            out.write_all(Message::AuthSuccess(session.repo_uuid.clone()).serialize().as_bytes())
                .await?;
            out.write_all(b"\n").await?;
            out.flush().await?;
            relay(tokio::io::stdin(), out, session.reader, session.writer).await?;
            Ok(0)
        }
        ShellCommand::Git(service) => {
            git::connect(session, service, tokio::io::stdin(), tokio::io::stdout()).await
        }
    }
}
