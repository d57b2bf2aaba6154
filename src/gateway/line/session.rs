//! An authenticated session: the request loop, translating each message
//! into a `Core` call and its answer back into messages. PUT is in `put`.

use std::collections::BTreeSet;

use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::warn;

use super::conn::{Close, Conn, Next, Res};
use crate::auth::Mode;
use crate::gateway::core::{Core, CoreError, Download, Outcome};
use crate::gateway::mesh::Repo;
use crate::p2p::codec::Inbound;
use crate::p2p::key::Key;
use crate::p2p::message::{MAX_PROTOCOL_VERSION, Message, Uuid};

/// A GET whose node fails with more than this left to send closes the
/// connection instead of padding the promised length with zeros.
const MAX_PADDING: u64 = 64 * 1024 * 1024;

/// An authenticated session with one repository.
pub(super) struct Session<'a> {
    pub core: &'a Core,
    /// As of the current request: a connection may live for hours (git-annex
    /// pools them), and nodes come, go and change health meanwhile.
    pub repo: Repo,
    /// Nodes the client asked to avoid (BYPASS).
    pub bypass: BTreeSet<String>,
    pub mode: Mode,
    pub version: u64,
    /// How long the client may leave the connection idle between requests.
    pub idle: std::time::Duration,
}

/// What a client with read-only access is told when it writes: what was
/// refused, why, and how to get more access.
pub(super) const READ_ONLY_WRITE: &str = "write access denied: this connection's access (its \
     AUTH token, or anonymous access) is read-only; an operator can create a token that may \
     store with `annexmesh admin token create --appendonly` (or without options for read-write)";
/// The same for a removal with append-only access.
pub(super) const APPEND_ONLY_REMOVE: &str = "removal denied: this connection's access (its AUTH \
     token) is append-only; an operator can create a read-write token with `annexmesh admin \
     token create`";
/// The same for a push with read-only access.
pub(super) const READ_ONLY_PUSH: &str = "git push denied: this connection's access (its AUTH \
     token, or anonymous access) is read-only; an operator can create a token that may push \
     with `annexmesh admin token create --appendonly`";

pub(super) fn uuids(list: &[String]) -> Vec<Uuid> {
    list.iter().filter_map(|u| Uuid::new(u.as_str())).collect()
}

impl<'a> Session<'a> {
    /// A session at protocol version 0 until the client sends VERSION.
    pub fn new(core: &'a Core, repo: Repo, mode: Mode) -> Self {
        let idle = super::DEFAULT_IDLE_TIMEOUT;
        Session { core, repo, bypass: BTreeSet::new(), mode, version: 0, idle }
    }

    /// Serves requests until the client leaves.
    pub async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send>(
        mut self,
        conn: &mut Conn<S>,
    ) -> Res<()> {
        loop {
            let Ok(next) = tokio::time::timeout(self.idle, conn.next()).await else {
                let why = format!("idle for {} s", self.idle.as_secs());
                let _ = conn.send(&Message::Error(why.clone())).await;
                return Err(Close::Protocol(why));
            };
            let msg = match next? {
                Some(Inbound::Message(Message::Connect(service))) => {
                    if self.connect(conn, service).await? {
                        return Ok(());
                    }
                    continue;
                }
                Some(Inbound::Message(m)) => m,
                None => return Ok(()),
                Some(Inbound::Unparsable(e)) => {
                    conn.unparsable(e).await?;
                    continue;
                }
                Some(Inbound::Data(_) | Inbound::Preamble(_)) => {
                    return Err(Close::Protocol("unexpected DATA payload".into()));
                }
            };
            let op = operation(&msg);
            let start = std::time::Instant::now();
            let done = self.request(conn, msg).await;
            if let Some(op) = op {
                let outcome = if done.is_ok() { "ok" } else { "failed" };
                self.core.metrics.request("line", op, outcome, start);
            }
            done?;
        }
    }

    pub fn error(e: CoreError) -> Message {
        Message::Error(e.to_string())
    }

    /// SUCCESS or FAILURE, with the nodes affected from v2 on.
    pub fn outcome(&self, out: &Outcome) -> Message {
        match (out.ok, self.version >= 2 && !out.plus.is_empty()) {
            (true, false) => Message::Success,
            (true, true) => Message::SuccessPlus(uuids(&out.plus)),
            (false, false) => Message::Failure,
            (false, true) => Message::FailurePlus(uuids(&out.plus)),
        }
    }

    async fn request<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &mut self,
        conn: &mut Conn<S>,
        msg: Message,
    ) -> Res<()> {
        let core = self.core;
        if let Some(now) = core.mesh.repo_by_uuid(self.repo.uuid()).await {
            self.repo = now.bypassing(self.bypass.clone());
        }
        match msg {
            Message::Version(v) => {
                self.version = v.min(MAX_PROTOCOL_VERSION);
                conn.send(&Message::Version(self.version)).await?;
            }
            Message::Bypass(set) => {
                let set: BTreeSet<String> =
                    set.into_iter().map(|u| u.as_str().to_string()).collect();
                self.bypass = set.clone();
                self.repo = self.repo.clone().bypassing(set);
            }
            Message::CheckPresent(key) => {
                let reply = match core.checkpresent(&self.repo, &key).await {
                    Ok(true) => Message::Success,
                    Ok(false) => Message::Failure,
                    Err(e) => Self::error(e),
                };
                conn.send(&reply).await?;
            }
            Message::LockContent(key) => self.lock(conn, key).await?,
            Message::Remove(key) => self.remove(conn, key, None).await?,
            Message::RemoveBefore { timestamp, key } => {
                self.remove(conn, key, Some(timestamp)).await?
            }
            Message::GetTimestamp => {
                let reply = match core.timestamp(&self.repo).await {
                    Ok(t) => Message::Timestamp(t),
                    Err(e) => Self::error(e),
                };
                conn.send(&reply).await?;
            }
            Message::Get { offset, file: _, key } => self.get(conn, key, offset).await?,
            Message::Put { file, key } => self.put(conn, file, key).await?,
            other => refuse(conn, other).await?,
        }
        Ok(())
    }

    async fn lock<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &mut self,
        conn: &mut Conn<S>,
        key: Key,
    ) -> Res<()> {
        let lock = match self.core.lock(&self.repo, &key).await {
            Ok(Some(l)) => l,
            Ok(None) => return Ok(conn.send(&Message::Failure).await?),
            Err(e) => return Ok(conn.send(&Self::error(e)).await?),
        };
        conn.send(&Message::Success).await?;
        // The lock is held on one node's stream until UNLOCKCONTENT, which
        // goes down that same stream. Dropping the lock any other way (the
        // client vanishes or says something else) leaves the node holding it
        // for the safety window, as git-annex requires. A client that says
        // nothing for the idle timeout gives the lock up too.
        let Ok(next) = tokio::time::timeout(self.idle, conn.message()).await else {
            drop(lock);
            let why = format!("held a lock idle for {} s", self.idle.as_secs());
            let _ = conn.send(&Message::Error(why.clone())).await;
            return Err(Close::Protocol(why));
        };
        match next {
            Ok(Next::Msg(Message::UnlockContent)) => {
                lock.unlock().await;
                Ok(())
            }
            Ok(Next::Eof) => {
                drop(lock);
                Ok(())
            }
            Ok(Next::Msg(Message::Data(_))) => {
                drop(lock);
                conn.send(&Message::Error("expected UNLOCKCONTENT".into())).await?;
                Err(Close::Protocol("DATA instead of UNLOCKCONTENT".into()))
            }
            Ok(_) => {
                drop(lock);
                Ok(conn.send(&Message::Error("expected UNLOCKCONTENT".into())).await?)
            }
            Err(e) => {
                drop(lock);
                Err(e)
            }
        }
    }

    async fn remove<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &mut self,
        conn: &mut Conn<S>,
        key: Key,
        before: Option<u64>,
    ) -> Res<()> {
        let reply = match self.mode {
            Mode::ReadOnly => Message::Error(READ_ONLY_WRITE.into()),
            Mode::AppendOnly => Message::Error(APPEND_ONLY_REMOVE.into()),
            Mode::ReadWrite => match self.core.remove(&self.repo, &key, before).await {
                Ok(out) => self.outcome(&out),
                Err(e) => Self::error(e),
            },
        };
        Ok(conn.send(&reply).await?)
    }

    async fn get<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &mut self,
        conn: &mut Conn<S>,
        key: Key,
        offset: u64,
    ) -> Res<()> {
        let valid = match self.core.get(&self.repo, &key, offset).await {
            Err(e) => return Ok(conn.send(&Self::error(e)).await?),
            // Not present: empty data, marked invalid, as git-annex does.
            Ok(None) => {
                conn.send(&Message::Data(0)).await?;
                false
            }
            Ok(Some(dl)) => self.send_download(conn, &key, dl).await?,
        };
        if self.version >= 1 {
            conn.send(if valid { &Message::Valid } else { &Message::Invalid }).await?;
        }
        conn.flush().await?;
        // The client says whether it got the content (not a promise to keep it).
        match conn.message().await? {
            Next::Msg(
                Message::Success
                | Message::Failure
                | Message::SuccessPlus(_)
                | Message::FailurePlus(_),
            ) => Ok(()),
            Next::Msg(Message::Error(e)) => {
                Err(Close::Protocol(format!("client error after GET: {e}")))
            }
            Next::Msg(Message::Data(_)) => {
                conn.send(&Message::Error("expected SUCCESS or FAILURE".into())).await?;
                Err(Close::Protocol("DATA after GET".into()))
            }
            Next::Eof => Ok(()),
            Next::Unparsable => Ok(()),
            Next::Msg(_) => {
                Ok(conn.send(&Message::Error("expected SUCCESS or FAILURE".into())).await?)
            }
        }
    }

    /// DATA and the download's bytes; false when the node failed part-way
    /// and the rest was padded.
    async fn send_download<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &self,
        conn: &mut Conn<S>,
        key: &Key,
        mut dl: Download,
    ) -> Res<bool> {
        conn.send(&Message::Data(dl.length)).await?;
        let mut sent = 0u64;
        let mut failure = None;
        while sent < dl.length {
            match dl.body.next().await {
                Some(Ok(chunk)) => {
                    let take = (chunk.len() as u64).min(dl.length - sent) as usize;
                    conn.write_data(&chunk[..take]).await?;
                    sent += take as u64;
                }
                Some(Err(e)) => {
                    failure = Some(e.to_string());
                    break;
                }
                None => {
                    failure = Some("the node sent less than promised".into());
                    break;
                }
            }
        }
        let total = dl.length;
        drop(dl);
        match failure {
            None => Ok(true),
            Some(why) => {
                self.pad(conn, key, total - sent, &why).await?;
                Ok(false)
            }
        }
    }

    /// After a GET failed mid-stream: the promised length must be sent
    /// whatever happens; from v1 on INVALID then tells the client to discard
    /// it. v0 cannot say so: closing is the only signal.
    async fn pad<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &self,
        conn: &mut Conn<S>,
        key: &Key,
        left: u64,
        why: &str,
    ) -> Res<()> {
        if self.version == 0 || left > MAX_PADDING {
            return Err(Close::Protocol(format!("GET of {key} failed mid-stream: {why}")));
        }
        let zeros = vec![0u8; 64 * 1024];
        let mut n = left;
        while n > 0 {
            let k = n.min(zeros.len() as u64) as usize;
            conn.write_data(&zeros[..k]).await?;
            n -= k as u64;
        }
        warn!(%key, "GET failed mid-stream ({why}); padded {left} bytes and marked it invalid");
        Ok(())
    }
}

/// Messages a session does not serve, each with the answer git-annex
/// expects.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin + Send>(
    conn: &mut Conn<S>,
    msg: Message,
) -> Res<()> {
    match msg {
        Message::NotifyChange => {
            conn.send(&Message::Error(
                "NOTIFYCHANGE is not served: annexmesh has no git refs to watch".into(),
            ))
            .await?;
        }
        Message::Error(e) => {
            // The client's state is unknown after it reports an error.
            return Err(Close::Protocol(format!("client error: {e}")));
        }
        Message::Data(_) => {
            conn.send(&Message::Error("unexpected DATA".into())).await?;
            return Err(Close::Protocol("DATA outside a transfer".into()));
        }
        Message::Auth { .. } => conn.send(&Message::Error("already authenticated".into())).await?,
        other => {
            conn.send(&Message::Error(format!("unexpected command {}", other.command()))).await?
        }
    }
    Ok(())
}

/// The operation a request asks for, as the latency metric labels it;
/// None for messages that only set up the session.
fn operation(msg: &Message) -> Option<&'static str> {
    Some(match msg {
        Message::CheckPresent(_) => "checkpresent",
        Message::LockContent(_) => "lockcontent",
        Message::Remove(_) => "remove",
        Message::RemoveBefore { .. } => "remove-before",
        Message::GetTimestamp => "gettimestamp",
        Message::Get { .. } => "get",
        Message::Put { .. } => "put",
        _ => return None,
    })
}
