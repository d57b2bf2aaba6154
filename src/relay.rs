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

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::auth::Mode;
use crate::gateway::p2p::PREAMBLE;
use crate::p2p::message::{AuthToken, Message, Uuid};

/// The program name git-annex runs for `p2p-annex::annexmesh:` remotes.
pub const P2P_PROGRAM: &str = "git-annex-p2p-annexmesh";
/// The program name ssh remotes run on the server.
pub const SHELL_PROGRAM: &str = "git-annex-shell";
/// Gateway listener `annexmesh shell` uses without `ANNEXMESH_P2P`.
pub const DEFAULT_GATEWAY: &str = "127.0.0.1:9418";
/// Token file `annexmesh shell` reads when the environment names none.
pub const DEFAULT_TOKEN_FILE: &str = "/etc/annexmesh/shell-token";
/// The client UUID `configlist` authenticates with: it only asks who the
/// repository is, on behalf of no repository.
pub const NIL_UUID: &str = "00000000-0000-0000-0000-000000000000";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the gateway's answer to AUTH. Generous: it may
/// consult the coordinator; but a wedged gateway must not hang git-annex.
const AUTH_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_ANSWER_LINE: usize = 64 * 1024;
/// Copy buffer: large enough that bulk transfers take few trips through
/// tokio's blocking stdin/stdout threads.
const COPY_BUF: usize = 256 * 1024;

/// Where a gateway listens: `HOST:PORT`, `[IPV6]:PORT`, optionally with the
/// repository (cluster or node name) to ask for: `HOST:PORT/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayAddress {
    /// `tls:` before the address: the listener speaks TLS.
    pub tls: bool,
    /// Without brackets, ready for name resolution.
    pub host: String,
    pub port: u16,
    pub repo: Option<String>,
}

impl FromStr for GatewayAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<GatewayAddress, String> {
        let bad = |why: &str| {
            format!(
                "bad gateway address {s:?}: {why} (expected [tls:]HOST:PORT or [tls:]HOST:PORT/NAME)"
            )
        };
        let (tls, s) = match s.strip_prefix("tls:") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (hostport, repo) = match s.split_once('/') {
            Some((hp, name)) => {
                let name = valid_repo_name(name).map_err(|e| bad(&e))?;
                (hp, Some(name.to_owned()))
            }
            None => (s, None),
        };
        let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            let port = after.strip_prefix(':').ok_or_else(|| bad("missing port"))?;
            (host, port)
        } else {
            let (host, port) = hostport.rsplit_once(':').ok_or_else(|| bad("missing port"))?;
            if host.contains(':') {
                return Err(bad("an IPv6 address must be in brackets"));
            }
            (host, port)
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("bad host"));
        }
        let port = match port.parse::<u16>() {
            Ok(p) if p != 0 && port.bytes().all(|b| b.is_ascii_digit()) => p,
            _ => return Err(bad("bad port")),
        };
        Ok(GatewayAddress { tls, host: host.to_owned(), port, repo })
    }
}

impl fmt::Display for GatewayAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tls {
            f.write_str("tls:")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "{}:{}", self.host, self.port)?;
        }
        if let Some(r) = &self.repo {
            write!(f, "/{r}")?;
        }
        Ok(())
    }
}

/// A repository name as the gateway knows it (see `names::validate`).
fn valid_repo_name(name: &str) -> Result<&str, String> {
    crate::names::validate(name).map(|()| name).map_err(|e| e.to_string())
}

/// The line a client may send before AUTH to choose a repository other than
/// the gateway's default, and optionally restrict its own access.
pub fn preamble(repo: &str, mode: Option<Mode>) -> String {
    match mode {
        Some(m) => format!("{PREAMBLE} repo={repo} mode={m}\n"),
        None => format!("{PREAMBLE} repo={repo}\n"),
    }
}

/// A connection to a gateway, plain or TLS.
pub trait GatewayStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> GatewayStream for T {}

/// Extra certificate authorities to trust for `tls:` gateways (a PEM file),
/// besides the usual public ones.
pub const TLS_CA_ENV: &str = "ANNEXMESH_TLS_CA";

async fn connect(addr: &GatewayAddress) -> anyhow::Result<Box<dyn GatewayStream>> {
    let (host, port) = (addr.host.as_str(), addr.port);
    let stream =
        tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
            .await
            .map_err(|_| anyhow::anyhow!("timed out after {}s", CONNECT_TIMEOUT.as_secs()))??;
    // Protocol lines are small and each waits for an answer.
    stream.set_nodelay(true)?;
    if !addr.tls {
        return Ok(Box::new(stream));
    }
    let connector = tls_connector()?;
    let name = rustls_pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| anyhow::anyhow!("{host:?} cannot be checked against a certificate: {e}"))?;
    let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, stream))
        .await
        .map_err(|_| {
            anyhow::anyhow!("TLS handshake timed out after {}s", CONNECT_TIMEOUT.as_secs())
        })?
        .context("TLS handshake failed")?;
    Ok(Box::new(tls))
}

/// Trusts the public web roots plus the CAs in `$ANNEXMESH_TLS_CA`.
fn tls_connector() -> anyhow::Result<tokio_rustls::TlsConnector> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(file) = std::env::var_os(TLS_CA_ENV).filter(|f| !f.is_empty()) {
        let path = PathBuf::from(file);
        let certs = CertificateDer::pem_file_iter(&path)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .with_context(|| {
                format!("cannot read certificates from {} (${TLS_CA_ENV})", path.display())
            })?;
        anyhow::ensure!(!certs.is_empty(), "no certificate in {} (${TLS_CA_ENV})", path.display());
        for c in certs {
            roots.add(c).with_context(|| format!("bad certificate in {}", path.display()))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)))
}

/// Relay between a local byte stream pair and a gateway connection until the
/// gateway closes. At EOF on `input` the connection's write half is shut
/// down so the gateway sees the client go, and its remaining output is still
/// delivered; when the gateway closes first, we are done even though
/// `input` may still be open (git-annex waits for us to exit).
pub async fn relay<I, O, R, W>(
    input: I,
    mut output: O,
    from_gateway: R,
    mut to_gateway: W,
) -> anyhow::Result<()>
where
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut from_gateway = from_gateway;
    let upstream = async {
        let mut input = BufReader::with_capacity(COPY_BUF, input);
        // A failed write means the gateway went away; the downstream copy
        // then sees it close, so only the outcome of that one matters.
        let _ = tokio::io::copy_buf(&mut input, &mut to_gateway).await;
        let _ = to_gateway.shutdown().await;
        std::future::pending::<()>().await
    };
    let downstream = async {
        match tokio::io::copy_buf(&mut from_gateway, &mut output).await {
            Ok(_) => output.flush().await.or_else(ignore_broken_pipe),
            // The local reader hung up: it has finished with the session.
            Err(e) => ignore_broken_pipe(e),
        }
    };
    tokio::select! {
        r = downstream => r.context("relaying from the gateway"),
        _ = upstream => unreachable!(),
    }
}

fn ignore_broken_pipe(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::BrokenPipe { Ok(()) } else { Err(e) }
}

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
                wr.write_all(preamble(repo, None).as_bytes()).await?;
            }
            relay(
                tokio::io::stdin(),
                tokio::io::stdout(),
                BufReader::with_capacity(COPY_BUF, rd),
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

/// What an `annexmesh shell` invocation asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellRequest {
    pub command: ShellCommand,
    /// The repository name the directory maps to.
    pub repo: String,
    /// `--uuid`: the repository UUID the client expects to reach.
    pub expected_uuid: Option<String>,
    /// The `-- field=value ... --` section (git-annex sends `autoinit=1`
    /// with configlist); none of them changes what we do.
    pub fields: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellCommand {
    ConfigList,
    P2pStdio { client: Uuid },
}

/// Parse git-annex-shell's command line: `[-c] CMD DIR [params...]
/// [-- field=value ... --] [options]`, or a single shell-quoted
/// `git-annex-shell ...` string (when we are the login shell), or, with no
/// arguments, sshd's `SSH_ORIGINAL_COMMAND` (under ForceCommand).
pub fn parse_shell_args(
    args: &[String],
    ssh_original_command: Option<&str>,
) -> Result<ShellRequest, String> {
    let mut args = args;
    while let [first, rest @ ..] = args
        && first == "-c"
    {
        args = rest;
    }
    let words: Vec<String> = match args {
        [] => {
            let Some(cmdline) = ssh_original_command.filter(|c| !c.trim().is_empty()) else {
                return Err(format!(
                    "bad parameters: usage: {SHELL_PROGRAM} [-c] COMMAND DIRECTORY [PARAMS...] [OPTIONS...]"
                ));
            };
            let mut words = split_command_line(cmdline)?;
            if words
                .first()
                .is_some_and(|w| Path::new(w).file_name() == Some(SHELL_PROGRAM.as_ref()))
            {
                words.remove(0);
            }
            words
        }
        [one] if one.starts_with("git-annex-shell ") => split_command_line(one)?.split_off(1),
        _ => args.to_vec(),
    };
    let Some((cmd, rest)) = words.split_first() else {
        return Err("bad parameters: no command".into());
    };
    if cmd != "configlist" && cmd != "p2pstdio" {
        return Err(unsupported(cmd));
    }
    let Some((dir, params)) = rest.split_first() else {
        return Err(format!("{cmd}: missing directory parameter"));
    };
    let repo = repo_name_from_dir(dir)?;

    // Like git-annex-shell: parameters, then fields between two "--", then
    // (after the second "--") options for rsync, which we have no use for.
    let mut segments = params.split(|p| p == "--");
    let params = segments.next().unwrap_or_default();
    let fields = segments
        .next()
        .unwrap_or_default()
        .iter()
        .map(|f| match f.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (f.clone(), String::new()),
        })
        .collect();

    let mut expected_uuid = None;
    let mut positional = Vec::new();
    let mut it = params.iter();
    while let Some(p) = it.next() {
        if let Some(u) = p.strip_prefix("--uuid=") {
            expected_uuid = Some(u.to_owned());
            continue;
        }
        match p.as_str() {
            "--uuid" => {
                let u = it.next().ok_or("--uuid needs a value")?;
                expected_uuid = Some(u.clone());
            }
            // Output options that make no difference to a relay.
            "--debug" | "--no-debug" | "--quiet" | "-q" | "--verbose" | "-v" => {}
            _ if p.starts_with('-') && p.len() > 1 => {
                return Err(format!("{cmd}: unsupported option {p}"));
            }
            _ => positional.push(p.clone()),
        }
    }

    let command = match (cmd.as_str(), positional.as_slice()) {
        ("configlist", []) => ShellCommand::ConfigList,
        ("p2pstdio", [client]) => ShellCommand::P2pStdio {
            client: Uuid::new(client.clone())
                .ok_or_else(|| format!("p2pstdio: bad UUID {client:?}"))?,
        },
        ("p2pstdio", []) => return Err("p2pstdio: missing UUID parameter".into()),
        _ => return Err(format!("{cmd}: unexpected parameters {positional:?}")),
    };
    Ok(ShellRequest { command, repo, expected_uuid, fields })
}

fn split_command_line(s: &str) -> Result<Vec<String>, String> {
    shlex::split(s).ok_or_else(|| format!("cannot parse command line {s:?} (unbalanced quotes?)"))
}

fn unsupported(cmd: &str) -> String {
    format!(
        "only configlist and p2pstdio are served here, not {cmd:?}: git-annex uses p2pstdio \
         for annexed content when the server supports it, and git push/pull to an annexmesh \
         cluster is not served"
    )
}

/// Map the repository directory of an ssh URL to a repository name:
/// `/~/mesh`, `~/mesh`, `/mesh`, `mesh/` and `mesh.git` all name `mesh`.
pub fn repo_name_from_dir(dir: &str) -> Result<String, String> {
    let name = ["/~/", "~/", "/"]
        .iter()
        .find_map(|p| dir.strip_prefix(p))
        .unwrap_or(dir)
        .trim_end_matches('/');
    let name = name.strip_suffix(".git").unwrap_or(name);
    valid_repo_name(name)
        .map(str::to_owned)
        .map_err(|e| format!("directory {dir:?} does not name an annexmesh repository: {e}"))
}

/// Honour `GIT_ANNEX_SHELL_DIRECTORY` as git-annex-shell does: the login may
/// only reach that one repository, named by the directory's last component.
pub fn check_directory(repo: &str, allowed: Option<&str>) -> Result<(), String> {
    let Some(allowed) = allowed else {
        return Ok(());
    };
    let base = allowed.trim_end_matches('/').rsplit('/').next().unwrap_or_default();
    let base = base.strip_suffix(".git").unwrap_or(base);
    if base == repo && valid_repo_name(base).is_ok() {
        Ok(())
    } else {
        Err(format!("Only allowed to access {allowed} not {repo}"))
    }
}

/// The environment `annexmesh shell` reads, gathered once so that parsing
/// and configuration can be tested without touching the process's own.
#[derive(Debug, Clone, Default)]
pub struct ShellEnv {
    pub ssh_original_command: Option<String>,
    pub gateway: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub shell_directory: Option<String>,
    pub readonly: bool,
    pub appendonly: bool,
}

impl ShellEnv {
    pub fn from_process() -> ShellEnv {
        let var = |k: &str| std::env::var(k).ok();
        let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
        ShellEnv {
            ssh_original_command: var("SSH_ORIGINAL_COMMAND"),
            gateway: var("ANNEXMESH_P2P"),
            token: var("ANNEXMESH_TOKEN"),
            token_file: std::env::var_os("ANNEXMESH_TOKEN_FILE").map(PathBuf::from),
            shell_directory: var("GIT_ANNEX_SHELL_DIRECTORY"),
            readonly: set("GIT_ANNEX_SHELL_READONLY"),
            appendonly: set("GIT_ANNEX_SHELL_APPENDONLY"),
        }
    }

    /// The access this login is restricted to, as git-annex-shell's
    /// environment variables say (read-only wins).
    pub fn mode(&self) -> Option<Mode> {
        if self.readonly {
            Some(Mode::ReadOnly)
        } else if self.appendonly {
            Some(Mode::AppendOnly)
        } else {
            None
        }
    }

    pub fn gateway(&self) -> Result<GatewayAddress, String> {
        let s = self.gateway.as_deref().filter(|s| !s.is_empty()).unwrap_or(DEFAULT_GATEWAY);
        let addr: GatewayAddress = s.parse().map_err(|e| format!("ANNEXMESH_P2P: {e}"))?;
        if addr.repo.is_some() {
            return Err(format!(
                "ANNEXMESH_P2P: {s:?} names a repository; the repository comes from the ssh URL"
            ));
        }
        Ok(addr)
    }

    /// `ANNEXMESH_TOKEN`, else the first line of `ANNEXMESH_TOKEN_FILE`,
    /// else of the default token file if it can be read.
    pub fn token(&self) -> Result<AuthToken, String> {
        let (text, from) = if let Some(t) = self.token.as_deref().filter(|t| !t.is_empty()) {
            (t.to_owned(), "ANNEXMESH_TOKEN".to_owned())
        } else if let Some(f) = &self.token_file {
            let text = std::fs::read_to_string(f).map_err(|e| {
                format!("cannot read token file {} (ANNEXMESH_TOKEN_FILE): {e}", f.display())
            })?;
            (text, f.display().to_string())
        } else if let Ok(text) = std::fs::read_to_string(DEFAULT_TOKEN_FILE) {
            (text, DEFAULT_TOKEN_FILE.to_owned())
        } else {
            return Err(format!(
                "no gateway token: set ANNEXMESH_TOKEN or ANNEXMESH_TOKEN_FILE, or create {DEFAULT_TOKEN_FILE}"
            ));
        };
        let line = text.lines().next().unwrap_or_default().trim();
        if line.is_empty() {
            return Err(format!("no gateway token in {from}"));
        }
        AuthToken::new(line)
            .ok_or_else(|| format!("the token in {from} may only contain letters and digits"))
    }
}

/// `annexmesh shell ARGS...` (or `git-annex-shell ARGS...`). Returns the exit
/// code; as with [`p2p_program_main`], the caller should exit promptly.
pub fn shell_main(args: &[String]) -> i32 {
    let env = ShellEnv::from_process();
    match block_on(shell(args, &env)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("annexmesh shell: {e:#}");
            1
        }
    }
}

async fn shell(args: &[String], env: &ShellEnv) -> anyhow::Result<()> {
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
    };
    // The login's restriction applies to every connection it makes.
    let session = Session::open(&gateway, &req.repo, env.mode(), client, token).await?;
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
            Ok(())
        }
        ShellCommand::P2pStdio { .. } => {
            let mut out = tokio::io::stdout();
            // What git-annex-shell p2pstdio says first; the client's AUTH
            // was ours to send, with the token it does not have.
            out.write_all(Message::AuthSuccess(session.repo_uuid.clone()).serialize().as_bytes())
                .await?;
            out.write_all(b"\n").await?;
            out.flush().await?;
            relay(tokio::io::stdin(), out, session.reader, session.writer).await
        }
    }
}

/// A gateway connection past AUTH.
pub struct Session {
    pub repo_uuid: Uuid,
    /// Buffered: whatever the gateway sent after AUTH-SUCCESS is kept.
    pub reader: BufReader<tokio::io::ReadHalf<Box<dyn GatewayStream>>>,
    pub writer: tokio::io::WriteHalf<Box<dyn GatewayStream>>,
}

impl Session {
    /// Connect, choose `repo` (restricted to `mode`) and authenticate.
    pub async fn open(
        gateway: &GatewayAddress,
        repo: &str,
        mode: Option<Mode>,
        client: Uuid,
        token: AuthToken,
    ) -> anyhow::Result<Session> {
        let stream = connect(gateway)
            .await
            .with_context(|| format!("cannot connect to the annexmesh gateway at {gateway}"))?;
        let (rd, mut writer) = tokio::io::split(stream);
        let mut hello = preamble(repo, mode);
        hello.push_str(&Message::Auth { uuid: client, token }.serialize());
        hello.push('\n');
        writer.write_all(hello.as_bytes()).await?;
        let mut reader = BufReader::with_capacity(COPY_BUF, rd);
        let line = tokio::time::timeout(AUTH_TIMEOUT, read_line(&mut reader))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "the gateway did not answer AUTH within {}s",
                    AUTH_TIMEOUT.as_secs()
                )
            })?
            .context("reading the gateway's answer to AUTH")?;
        let Some(line) = line else {
            bail!("the gateway closed the connection: no repository {repo:?}, or access refused");
        };
        match Message::parse_bytes(&line) {
            Ok(Message::AuthSuccess(u)) => Ok(Session { repo_uuid: u, reader, writer }),
            Ok(Message::AuthFailure) => {
                bail!("the gateway refused the token for repository {repo:?} (AUTH-FAILURE)")
            }
            Ok(Message::Error(text)) => bail!("the gateway refused repository {repo:?}: {text}"),
            _ => bail!(
                "unexpected answer from the gateway: {:?}",
                String::from_utf8_lossy(&line[..line.len().min(200)])
            ),
        }
    }
}

/// One `\n`-terminated line without its terminator (and a `\r` before it);
/// `None` at EOF before any byte. Reads nothing past the newline.
async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return if line.is_empty() {
                Ok(None)
            } else {
                Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "line cut short"))
            };
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        line.extend_from_slice(chunk);
        let n = chunk.len();
        r.consume(n);
        if done {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(line));
        }
        if line.len() > MAX_ANSWER_LINE {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "line too long"));
        }
    }
}

/// `annexmesh install-links DIR`: make `DIR/git-annex-p2p-annexmesh` and
/// `DIR/git-annex-shell` symlinks to this executable. Existing symlinks are
/// replaced; anything else there is left alone and reported.
pub fn install_links(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut made = Vec::new();
    for name in [P2P_PROGRAM, SHELL_PROGRAM] {
        let link = dir.join(name);
        match std::fs::symlink_metadata(&link) {
            Ok(m) if !m.file_type().is_symlink() => {
                bail!("{} exists and is not a symlink; not replacing it", link.display())
            }
            _ => {}
        }
        // Create beside it and rename over, so the name never goes missing.
        let mut tmp = OsString::from(".");
        tmp.push(name);
        tmp.push(format!(".{}.tmp", std::process::id()));
        let tmp = dir.join(tmp);
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&exe, &tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        std::fs::rename(&tmp, &link)
            .with_context(|| format!("cannot create {}", link.display()))?;
        made.push(link);
    }
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    const U: &str = "5c2f9a34-1111-4222-8333-944445555666";
    const C: &str = "0b1c3a3e-2b1f-4c53-9d1e-6f7a2f2f0a11";

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn p2p(client: &str) -> ShellCommand {
        ShellCommand::P2pStdio { client: Uuid::new(client).unwrap() }
    }

    #[test]
    fn addresses() {
        let a: GatewayAddress = "gw.example:9418/mesh".parse().unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.repo.as_deref()),
            ("gw.example", 9418, Some("mesh"))
        );
        let a: GatewayAddress = "10.0.0.1:1".parse().unwrap();
        assert_eq!((a.host.as_str(), a.port, a.repo), ("10.0.0.1", 1, None));
        let a: GatewayAddress = "[::1]:9418/node-a".parse().unwrap();
        assert_eq!((a.host.as_str(), a.port, a.repo.as_deref()), ("::1", 9418, Some("node-a")));
        assert_eq!(a.to_string(), "[::1]:9418/node-a");
        let a: GatewayAddress = "[fe80::1]:7".parse().unwrap();
        assert_eq!(a.host, "fe80::1");
        assert!(!a.tls);
        let a: GatewayAddress = "tls:gw.example:9418/mesh".parse().unwrap();
        assert!(a.tls);
        assert_eq!((a.host.as_str(), a.port), ("gw.example", 9418));
        assert_eq!(a.to_string(), "tls:gw.example:9418/mesh");
        for bad in [
            "tls:",
            "tls:host",
            "",
            "host",
            "host:",
            ":9418",
            "host:0",
            "host:65536",
            "host:+1",
            "host:x",
            "::1:9418",
            "[::1]9418",
            "[::1",
            "host:9418/",
            "host:9418/a/b",
            "host:9418/a b",
            "ho st:1",
        ] {
            assert!(bad.parse::<GatewayAddress>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn preambles() {
        assert_eq!(preamble("mesh", None), "ANNEXMESH repo=mesh\n");
        assert_eq!(preamble("n1", Some(Mode::ReadOnly)), "ANNEXMESH repo=n1 mode=readonly\n");
        assert_eq!(preamble("n1", Some(Mode::AppendOnly)), "ANNEXMESH repo=n1 mode=appendonly\n");
    }

    #[test]
    fn plain_arguments() {
        let r = parse_shell_args(&s(&["configlist", "/~/mesh"]), None).unwrap();
        assert_eq!(r.command, ShellCommand::ConfigList);
        assert_eq!(r.repo, "mesh");
        assert_eq!(r.expected_uuid, None);
        // As git-annex sends them: command, dir, params, --uuid, fields.
        let r = parse_shell_args(
            &s(&["p2pstdio", "/mesh", "--debug", C, "--uuid", U, "--", "remoteuuid=x", "--"]),
            None,
        )
        .unwrap();
        assert_eq!(r.command, p2p(C));
        assert_eq!(r.expected_uuid.as_deref(), Some(U));
        assert_eq!(r.fields, vec![("remoteuuid".to_owned(), "x".to_owned())]);
        let r = parse_shell_args(
            &s(&["-c", "-c", "p2pstdio", "mesh.git", &format!("--uuid={U}"), C]),
            None,
        )
        .unwrap();
        assert_eq!((r.repo.as_str(), r.expected_uuid.as_deref()), ("mesh", Some(U)));
    }

    #[test]
    fn login_shell_string() {
        let line = format!("git-annex-shell 'p2pstdio' '/mesh' '--uuid' '{U}' '{C}'");
        let r = parse_shell_args(&s(&["-c", &line]), None).unwrap();
        assert_eq!(r.command, p2p(C));
        assert_eq!((r.repo.as_str(), r.expected_uuid.as_deref()), ("mesh", Some(U)));
        let r = parse_shell_args(
            &s(&["-c", "git-annex-shell 'configlist' '/~/mesh.git/' -- autoinit=1 --"]),
            None,
        )
        .unwrap();
        assert_eq!(r.command, ShellCommand::ConfigList);
        assert_eq!(r.repo, "mesh");
        assert_eq!(r.fields, vec![("autoinit".to_owned(), "1".to_owned())]);
        assert!(parse_shell_args(&s(&["-c", "git-annex-shell 'configlist"]), None).is_err());
    }

    #[test]
    fn ssh_original_command() {
        let orig = format!("git-annex-shell 'p2pstdio' '/~/mesh' '{C}' --uuid {U}");
        let r = parse_shell_args(&[], Some(&orig)).unwrap();
        assert_eq!(r.command, p2p(C));
        assert_eq!(r.expected_uuid.as_deref(), Some(U));
        let r = parse_shell_args(&[], Some("/usr/bin/git-annex-shell configlist mesh")).unwrap();
        assert_eq!(r.command, ShellCommand::ConfigList);
        // git fetch/push over the same login is refused with the reason.
        let e = parse_shell_args(&[], Some("git-upload-pack '/mesh'")).unwrap_err();
        assert!(e.contains("only configlist and p2pstdio"), "{e}");
        assert!(parse_shell_args(&[], None).is_err());
        assert!(parse_shell_args(&[], Some("  ")).is_err());
    }

    #[test]
    fn other_commands_and_bad_parameters() {
        for cmd in [
            "inannex",
            "sendkey",
            "recvkey",
            "dropkey",
            "notifychanges",
            "gcryptsetup",
            "git-receive-pack",
        ] {
            let e = parse_shell_args(&s(&[cmd, "/mesh", "k"]), None).unwrap_err();
            assert!(e.contains("only configlist and p2pstdio"), "{e}");
        }
        assert!(parse_shell_args(&s(&["configlist"]), None).is_err());
        assert!(parse_shell_args(&s(&["configlist", "/mesh", "extra"]), None).is_err());
        assert!(parse_shell_args(&s(&["p2pstdio", "/mesh"]), None).is_err());
        assert!(parse_shell_args(&s(&["p2pstdio", "/mesh", C, C]), None).is_err());
        assert!(parse_shell_args(&s(&["p2pstdio", "/mesh", "--uuid"]), None).is_err());
        assert!(parse_shell_args(&s(&["p2pstdio", "/mesh", "--force", C]), None).is_err());
        // Fields and rsync options after "--" are not positional.
        let r = parse_shell_args(
            &s(&["p2pstdio", "/mesh", C, "--", "a=1", "b", "--", "--inplace"]),
            None,
        )
        .unwrap();
        assert_eq!(r.fields, vec![("a".into(), "1".into()), ("b".into(), String::new())]);
    }

    #[test]
    fn directories() {
        for (dir, name) in [
            ("/~/mesh", "mesh"),
            ("~/mesh", "mesh"),
            ("/mesh", "mesh"),
            ("mesh", "mesh"),
            ("/mesh/", "mesh"),
            ("/mesh.git", "mesh"),
            ("/~/node-1.git/", "node-1"),
        ] {
            assert_eq!(repo_name_from_dir(dir).unwrap(), name, "{dir}");
        }
        for bad in ["", "/", "/~/", ".git", "/srv/mesh", "/a b", "/a\tb", "/a\u{1}b", "~/x/y.git"] {
            assert!(repo_name_from_dir(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_shell_args(&s(&["configlist", "/srv/annex/mesh"]), None).is_err());
    }

    #[test]
    fn directory_restriction() {
        assert!(check_directory("mesh", None).is_ok());
        assert!(check_directory("mesh", Some("/srv/annex/mesh.git/")).is_ok());
        assert!(check_directory("mesh", Some("mesh")).is_ok());
        let e = check_directory("other", Some("/srv/mesh")).unwrap_err();
        assert!(e.contains("Only allowed to access /srv/mesh"), "{e}");
        assert!(check_directory("mesh", Some("")).is_err());
    }

    #[test]
    fn shell_environment() {
        let mut env = ShellEnv::default();
        assert_eq!(env.mode(), None);
        assert_eq!(env.gateway().unwrap().to_string(), DEFAULT_GATEWAY);
        env.appendonly = true;
        assert_eq!(env.mode(), Some(Mode::AppendOnly));
        env.readonly = true;
        assert_eq!(env.mode(), Some(Mode::ReadOnly));
        env.gateway = Some("gw:1/mesh".into());
        assert!(env.gateway().is_err());

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "FileToken1\nignored\n").unwrap();
        env.token_file = Some(file);
        assert_eq!(env.token().unwrap().as_str(), "filetoken1");
        env.token = Some("envtoken".into());
        assert_eq!(env.token().unwrap().as_str(), "envtoken");
        env.token = Some("not a token".into());
        assert!(env.token().is_err());
        env.token = None;
        env.token_file = Some(dir.path().join("missing"));
        assert!(env.token().unwrap_err().contains("cannot read token file"));
    }

    /// A gateway that expects `hello` (preamble and AUTH lines), answers
    /// `answer`, then echoes until the client shuts down its side.
    async fn fake_gateway(
        hello: String,
        answer: &'static str,
    ) -> (GatewayAddress, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut got = vec![0; hello.len()];
            sock.read_exact(&mut got).await.unwrap();
            assert_eq!(String::from_utf8(got).unwrap(), hello);
            sock.write_all(answer.as_bytes()).await.unwrap();
            let (mut rd, mut wr) = sock.split();
            tokio::io::copy(&mut rd, &mut wr).await.unwrap();
        });
        let addr = GatewayAddress { tls: false, host: "127.0.0.1".into(), port, repo: None };
        (addr, task)
    }

    #[tokio::test]
    async fn session_then_relay() {
        let token = AuthToken::new("tok").unwrap();
        let hello = format!("ANNEXMESH repo=mesh mode=readonly\nAUTH {C} tok\n");
        let (addr, gw) =
            fake_gateway(hello, "AUTH-SUCCESS 5c2f9a34-1111-4222-8333-944445555666\nVERSION 1\n")
                .await;
        let s = Session::open(&addr, "mesh", Some(Mode::ReadOnly), Uuid::new(C).unwrap(), token)
            .await
            .unwrap();
        assert_eq!(s.repo_uuid.as_str(), U);

        // Bytes the gateway sent right after AUTH-SUCCESS are not lost, and
        // the client's bytes come back through the echo.
        let (mut client_in, relay_in) = tokio::io::duplex(1024);
        let (relay_out, mut client_out) = tokio::io::duplex(1024);
        let relaying = tokio::spawn(relay(relay_in, relay_out, s.reader, s.writer));
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let sent = payload.clone();
        let writer = tokio::spawn(async move {
            client_in.write_all(&sent).await.unwrap();
            // EOF here must reach the gateway, which then closes.
        });
        let mut got = Vec::new();
        client_out.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        relaying.await.unwrap().unwrap();
        gw.await.unwrap();
        assert_eq!(&got[..10], b"VERSION 1\n");
        assert!(got[10..] == payload[..], "echoed bytes differ");
    }

    #[tokio::test]
    async fn refusals() {
        let token = || AuthToken::new("tok").unwrap();
        let nil = || Uuid::new(NIL_UUID).unwrap();
        let hello = format!("ANNEXMESH repo=mesh\nAUTH {NIL_UUID} tok\n");
        let (addr, gw) = fake_gateway(hello.clone(), "AUTH-FAILURE\n").await;
        let e = Session::open(&addr, "mesh", None, nil(), token()).await.err().unwrap();
        assert!(format!("{e:#}").contains("AUTH-FAILURE"), "{e:#}");
        gw.abort();
        let (addr, gw) = fake_gateway(hello, "ERROR no such repository mesh\n").await;
        let e = Session::open(&addr, "mesh", None, nil(), token()).await.err().unwrap();
        assert!(format!("{e:#}").contains("no such repository mesh"), "{e:#}");
        gw.abort();
    }

    #[tokio::test]
    async fn relay_ends_when_the_gateway_closes_even_with_input_open() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            sock.write_all(b"bye\n").await.unwrap();
        });
        let addr: GatewayAddress = format!("127.0.0.1:{port}").parse().unwrap();
        let (rd, wr) = tokio::io::split(connect(&addr).await.unwrap());
        let (_keep_open, relay_in) = tokio::io::duplex(64);
        let (relay_out, mut client_out) = tokio::io::duplex(64);
        tokio::time::timeout(
            Duration::from_secs(10),
            relay(relay_in, relay_out, BufReader::new(rd), wr),
        )
        .await
        .expect("relay did not end")
        .unwrap();
        let mut got = Vec::new();
        client_out.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye\n");
    }

    #[test]
    fn links_replace_symlinks_but_not_files() {
        let dir = tempfile::tempdir().unwrap();
        let made = install_links(dir.path()).unwrap();
        assert_eq!(made.len(), 2);
        let exe = std::env::current_exe().unwrap();
        for l in &made {
            assert_eq!(std::fs::read_link(l).unwrap(), exe);
        }
        std::fs::remove_file(&made[0]).unwrap();
        std::os::unix::fs::symlink("/nonexistent", &made[0]).unwrap();
        install_links(dir.path()).unwrap();
        assert_eq!(std::fs::read_link(&made[0]).unwrap(), exe);
        std::fs::remove_file(&made[1]).unwrap();
        std::fs::write(&made[1], "#!/bin/sh\n").unwrap();
        let e = install_links(dir.path()).unwrap_err();
        assert!(e.to_string().contains("not a symlink"), "{e}");
        assert_eq!(std::fs::read(&made[1]).unwrap(), b"#!/bin/sh\n");
    }
}
