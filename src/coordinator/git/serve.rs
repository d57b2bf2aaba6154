//! The `Git` call: one `git upload-pack` or `git receive-pack` on a
//! cluster's repository, its standard input fed from the gateway's requests
//! and its standard output streamed back. The gateways hold no git state;
//! git's own ref locking serialises pushes to one ref.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::{debug, info, warn};

use super::Repos;
use crate::rpc::{GitExit, GitReply, GitRequest, GitService, GitStart, git_reply, git_request};

/// Default of `--git-max-processes`.
pub const DEFAULT_MAX_PROCESSES: usize = 32;
/// Default of `--git-max-push`: 2 GiB.
pub const DEFAULT_MAX_PUSH: u64 = 2 << 30;
/// Default of `--git-idle-timeout`.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(300);

/// Bounds on the git processes the coordinator runs for gateways.
#[derive(Debug, Clone, clap::Args)]
pub struct GitLimits {
    /// Most git processes (fetches and pushes being served) at once; more
    /// are refused with UNAVAILABLE.
    #[arg(long, env = "ANNEXMESH_GIT_MAX_PROCESSES", default_value_t = DEFAULT_MAX_PROCESSES)]
    pub git_max_processes: usize,
    /// Most bytes a client may send to one git process (a push's pack):
    /// bytes or a size such as 500MB, 2GiB.
    #[arg(long, env = "ANNEXMESH_GIT_MAX_PUSH", default_value = "2GiB", value_parser = crate::preferred::parse_size)]
    pub git_max_push: u64,
    /// A git process that neither reads nor writes for this long is killed
    /// (e.g. 90s, 5m).
    #[arg(long, env = "ANNEXMESH_GIT_IDLE_TIMEOUT", default_value = "5m", value_parser = crate::clock::parse_duration)]
    pub git_idle_timeout: Duration,
}

impl Default for GitLimits {
    fn default() -> Self {
        GitLimits {
            git_max_processes: DEFAULT_MAX_PROCESSES,
            git_max_push: DEFAULT_MAX_PUSH,
            git_idle_timeout: DEFAULT_IDLE,
        }
    }
}

/// Longest GIT_PROTOCOL value accepted.
const MAX_GIT_PROTOCOL: usize = 256;
/// Standard error kept for the error message of a failing process.
const MAX_STDERR: usize = 8 * 1024;
/// Standard output is read in pieces of this size.
const READ_BUF: usize = 64 * 1024;

/// Whether `value` may be handed to git as GIT_PROTOCOL: colon-separated
/// `key` or `key=value` entries of a safe alphabet, as git sends them
/// (`version=2`). Git ignores entries it does not know.
pub fn valid_git_protocol(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= MAX_GIT_PROTOCOL
            && value.split(':').all(|entry| {
                !entry.is_empty()
                    && entry.bytes().all(|b| b.is_ascii_alphanumeric() || b"=._-".contains(&b))
            }))
}

/// The arguments of git for `start` on the repository at `dir`.
pub fn git_args(start: &GitStart, dir: &std::path::Path, max_push: u64) -> Vec<String> {
    let mut args = Vec::new();
    let receive = start.service() == GitService::ReceivePack;
    if receive {
        // git's own refusal of an oversize pack, with a message the client
        // shows; the byte count in `serve` backs it.
        args.extend(["-c".into(), format!("receive.maxInputSize={max_push}")]);
        if start.append_only {
            for c in ["receive.denyDeletes=true", "receive.denyNonFastForwards=true"] {
                args.extend(["-c".into(), c.into()]);
            }
        }
    }
    args.push(if receive { "receive-pack" } else { "upload-pack" }.into());
    if !receive {
        args.push("--strict".into());
    }
    if start.stateless {
        args.push("--stateless-rpc".into());
        if start.advertise_refs {
            args.push("--advertise-refs".into());
        }
    }
    args.push(dir.display().to_string());
    args
}

/// Runs the git processes of `Git` calls within their limits.
pub struct GitServer {
    repos: Arc<Repos>,
    limits: GitLimits,
    slots: Arc<Semaphore>,
}

/// Why a process was stopped before it ended by itself.
enum Stopped {
    /// The gateway's request stream failed: the client went away.
    Gone(String),
    TooBig,
    Idle,
}

impl GitServer {
    pub fn new(repos: Arc<Repos>, limits: GitLimits) -> GitServer {
        let slots = Arc::new(Semaphore::new(limits.git_max_processes));
        GitServer { repos, limits, slots }
    }

    /// Serves one call: checks its first request, starts git and returns
    /// the reply stream. `known` says whether a cluster UUID is one the
    /// coordinator has.
    pub async fn serve<S>(
        &self,
        mut requests: S,
        known: impl FnOnce(&str) -> Result<bool, Status>,
    ) -> Result<ReceiverStream<Result<GitReply, Status>>, Status>
    where
        S: Stream<Item = Result<GitRequest, Status>> + Send + Unpin + 'static,
    {
        let first = tokio::time::timeout(self.limits.git_idle_timeout, requests.next())
            .await
            .map_err(|_| Status::deadline_exceeded("no git request arrived"))?;
        let start = match first {
            Some(Ok(GitRequest { msg: Some(git_request::Msg::Start(s)) })) => s,
            Some(Err(e)) => return Err(e),
            _ => return Err(Status::invalid_argument("a Git call starts with `start`")),
        };
        if start.service() == GitService::Unspecified {
            return Err(Status::invalid_argument("no git service named"));
        }
        if !valid_git_protocol(&start.git_protocol) {
            return Err(Status::invalid_argument(format!(
                "bad GIT_PROTOCOL {:?}",
                start.git_protocol
            )));
        }
        let uuid = start.cluster_uuid.to_ascii_lowercase();
        let dir = self.repos.path(&uuid).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if !known(&uuid)? {
            return Err(Status::not_found(format!("no cluster {uuid}")));
        }
        // A cluster made before its repository was (or whose repository an
        // operator removed) gets an empty one.
        self.repos
            .ensure(&uuid)
            .await
            .map_err(|e| Status::internal(format!("cannot create the repository: {e:#}")))?;
        let permit = self.slots.clone().try_acquire_owned().map_err(|_| {
            Status::unavailable(format!(
                "the coordinator runs {} git processes already (--git-max-processes); try again",
                self.limits.git_max_processes
            ))
        })?;
        let mut cmd = super::git(None);
        cmd.args(git_args(&start, &dir, self.limits.git_max_push))
            .env("GIT_COMMITTER_NAME", "annexmesh")
            .env("GIT_COMMITTER_EMAIL", "annexmesh@localhost")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if !start.git_protocol.is_empty() {
            cmd.env("GIT_PROTOCOL", &start.git_protocol);
        }
        let child = cmd.spawn().map_err(|e| {
            Status::internal(format!("cannot run git on the coordinator (is it installed?): {e}"))
        })?;
        let (tx, rx) = mpsc::channel(8);
        let repos = self.repos.clone();
        let limits = self.limits.clone();
        tokio::spawn(async move {
            let reply = run(child, requests, &tx, &limits, &start).await;
            drop(permit);
            let reply = match reply {
                Ok(exit) => {
                    let pushed =
                        start.service() == GitService::ReceivePack && !start.advertise_refs;
                    if pushed && exit.code == 0 {
                        info!(cluster = %uuid, "push received");
                        repos.pushed(&uuid);
                    }
                    Ok(GitReply { msg: Some(git_reply::Msg::Exit(exit)) })
                }
                Err(Stopped::Gone(why)) => {
                    debug!(cluster = %uuid, "git client went away: {why}");
                    return;
                }
                Err(Stopped::TooBig) => Err(Status::resource_exhausted(format!(
                    "the push is larger than the coordinator takes (--git-max-push, {} bytes)",
                    limits.git_max_push
                ))),
                Err(Stopped::Idle) => Err(Status::deadline_exceeded(format!(
                    "git made no progress for {} s (--git-idle-timeout)",
                    limits.git_idle_timeout.as_secs()
                ))),
            };
            if let Err(e) = &reply {
                warn!(cluster = %uuid, "git stopped: {}", e.message());
            }
            let _ = tx.send(reply).await;
        });
        Ok(ReceiverStream::new(rx))
    }
}

fn now_ms(base: Instant) -> u64 {
    base.elapsed().as_millis() as u64
}

/// Drives `child` to its end: feeds it, relays its output, watches the
/// limits. Killed (on drop) when it returns early.
async fn run<S>(
    mut child: tokio::process::Child,
    requests: S,
    tx: &mpsc::Sender<Result<GitReply, Status>>,
    limits: &GitLimits,
    start: &GitStart,
) -> Result<GitExit, Stopped>
where
    S: Stream<Item = Result<GitRequest, Status>> + Send + Unpin + 'static,
{
    let base = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut feeder = tokio::spawn(feed(requests, stdin, limits.git_max_push, last.clone(), base));
    let errors = tokio::spawn(collect(stderr));
    let mut buf = vec![0u8; READ_BUF];
    let mut tick = tokio::time::interval(Duration::from_secs(1).min(limits.git_idle_timeout));
    let mut out_open = true;
    let mut fed = false;
    let status = loop {
        tokio::select! {
            n = stdout.read(&mut buf), if out_open => match n {
                Ok(0) | Err(_) => out_open = false,
                Ok(n) => {
                    last.store(now_ms(base), Ordering::Relaxed);
                    let reply = GitReply {
                        msg: Some(git_reply::Msg::Stdout(bytes::Bytes::copy_from_slice(&buf[..n]))),
                    };
                    match tokio::time::timeout(limits.git_idle_timeout, tx.send(Ok(reply))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return Err(Stopped::Gone("the reply stream closed".into())),
                        Err(_) => return Err(Stopped::Idle),
                    }
                }
            },
            r = &mut feeder, if !fed => {
                fed = true;
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(stop)) => return Err(stop),
                    Err(e) => return Err(Stopped::Gone(e.to_string())),
                }
            },
            _ = tick.tick() => {
                let idle = now_ms(base).saturating_sub(last.load(Ordering::Relaxed));
                if idle > limits.git_idle_timeout.as_millis() as u64 {
                    return Err(Stopped::Idle);
                }
            },
            st = child.wait(), if !out_open => break st,
        }
    };
    feeder.abort();
    let code = match status {
        Ok(s) => s.code().unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            128 + s.signal().unwrap_or(0)
        }),
        Err(e) => return Err(Stopped::Gone(format!("cannot wait for git: {e}"))),
    };
    let stderr = errors.await.unwrap_or_default();
    let text = String::from_utf8_lossy(&stderr).trim().to_string();
    let service =
        if start.service() == GitService::ReceivePack { "receive-pack" } else { "upload-pack" };
    if code != 0 {
        warn!(service, code, "git failed: {text}");
    } else if !text.is_empty() {
        debug!(service, "git said: {text}");
    }
    let error = if code == 0 { String::new() } else { text };
    Ok(GitExit { code, error })
}

/// Feeds the requests' bytes to git's standard input until `eof` (or the
/// stream's end), counting them against `max`.
async fn feed<S>(
    mut requests: S,
    mut stdin: tokio::process::ChildStdin,
    max: u64,
    last: Arc<AtomicU64>,
    base: Instant,
) -> Result<(), Stopped>
where
    S: Stream<Item = Result<GitRequest, Status>> + Send + Unpin + 'static,
{
    let mut total = 0u64;
    while let Some(r) = requests.next().await {
        let msg = r.map_err(|e| Stopped::Gone(e.message().to_string()))?;
        last.store(now_ms(base), Ordering::Relaxed);
        match msg.msg {
            Some(git_request::Msg::Stdin(b)) => {
                total += b.len() as u64;
                if total > max {
                    return Err(Stopped::TooBig);
                }
                // git stopped reading (it exited or refused the input): its
                // exit tells the rest.
                if stdin.write_all(&b).await.is_err() {
                    return Ok(());
                }
            }
            Some(git_request::Msg::Eof(_)) => {
                let _ = stdin.shutdown().await;
                return Ok(());
            }
            Some(git_request::Msg::Start(_)) | None => {
                return Err(Stopped::Gone("a second start".into()));
            }
        }
    }
    // Without `eof` the input may be cut short (the client went away
    // mid-request): git must not act on it.
    Err(Stopped::Gone("the input ended without eof".into()))
}

/// Standard error, logged line by line and its head kept for the error.
async fn collect(mut stderr: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 4096];
    while let Ok(n) = stderr.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let take = n.min(MAX_STDERR - kept.len().min(MAX_STDERR));
        kept.extend_from_slice(&buf[..take]);
    }
    kept
}

/// For the gateway's side and tests: the first request of a call.
pub fn start_request(start: GitStart) -> GitRequest {
    GitRequest { msg: Some(git_request::Msg::Start(start)) }
}

#[cfg(test)]
mod tests;
