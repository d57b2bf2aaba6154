//! The start of a connection: the optional `ANNEXMESH` line, then AUTH.
//! Independent of the request core: which repository a name stands for is
//! the caller's to say.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::warn;

use super::conn::{Close, Conn, Next, Res};
use crate::auth::Mode;
use crate::gateway::mesh::{Mesh, Repo};
use crate::p2p::codec::Inbound;
use crate::p2p::message::{Message, Uuid};
use crate::rpc;

/// Time allowed from connecting to a successful AUTH.
pub(super) const HANDSHAKE: Duration = Duration::from_secs(30);

/// Messages tolerated before AUTH, so a confused peer cannot hold a
/// connection slot forever.
pub(super) const MAX_PRE_AUTH: usize = 8;

/// Checks AUTH tokens: the mode a token grants, or None when it is unknown.
pub trait TokenCheck: Send + Sync {
    fn check<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<Mode>, String>>;
}

/// Tokens as the coordinator keeps them (only their hashes).
pub struct CoordinatorTokens(pub Arc<Mesh>);

impl TokenCheck for CoordinatorTokens {
    fn check<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<Mode>, String>> {
        Box::pin(async move {
            let req = rpc::CheckTokenRequest { token_sha256: crate::auth::hash_token(token) };
            // A failed call is the coordinator being unreachable, not a bad
            // token: the caller reports it as an error, not AUTH-FAILURE.
            let r = self.0.control().check_token(req).await.map_err(|s| s.message().to_string())?;
            if !r.valid {
                return Ok(None);
            }
            r.mode.parse::<Mode>().map(Some)
        })
    }
}

/// What the handshake needs of the repository it is given: the UUID that
/// AUTH-SUCCESS announces.
pub(super) trait Served {
    fn uuid(&self) -> &str;
}

impl Served for Repo {
    fn uuid(&self) -> &str {
        Repo::uuid(self)
    }
}

/// A client past AUTH.
#[derive(Debug)]
pub(super) struct Authed<R> {
    pub repo: R,
    /// What the token grants, narrowed by the `ANNEXMESH` line.
    pub mode: Mode,
    pub client: Uuid,
}

/// Reads the optional `ANNEXMESH` line and AUTH, within [`HANDSHAKE`].
/// `resolve` finds the repository the line named (None: no line). Ok(None)
/// when the client left before authenticating.
pub(super) async fn handshake<S, R, F, Fut>(
    conn: &mut Conn<S>,
    tokens: &dyn TokenCheck,
    resolve: F,
) -> Res<Option<Authed<R>>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    R: Served,
    F: FnOnce(Option<String>) -> Fut,
    Fut: Future<Output = Result<R, String>>,
{
    match tokio::time::timeout(HANDSHAKE, authenticate(conn, tokens, resolve)).await {
        Ok(r) => r,
        Err(_) => Err(Close::Protocol("no AUTH within the handshake time".into())),
    }
}

async fn authenticate<S, R, F, Fut>(
    conn: &mut Conn<S>,
    tokens: &dyn TokenCheck,
    resolve: F,
) -> Res<Option<Authed<R>>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    R: Served,
    F: FnOnce(Option<String>) -> Fut,
    Fut: Future<Output = Result<R, String>>,
{
    let (name, cap, mut first) = match conn.next().await? {
        Some(Inbound::Preamble(Ok(p))) => (Some(p.repo), p.mode.unwrap_or(Mode::ReadWrite), None),
        Some(Inbound::Preamble(Err(e))) => {
            conn.send(&Message::Error(e.to_string())).await?;
            return Err(Close::Protocol(e.to_string()));
        }
        other => (None, Mode::ReadWrite, Some(other)),
    };
    for _ in 0..MAX_PRE_AUTH {
        let item = match first.take() {
            Some(item) => item,
            None => conn.next().await?,
        };
        let msg = match conn.classify(item).await? {
            Next::Msg(m) => m,
            Next::Eof => return Ok(None),
            Next::Unparsable => continue,
        };
        match msg {
            Message::Auth { uuid, token } => {
                let Some(granted) = check(conn, tokens, token.as_str()).await? else {
                    conn.send(&Message::AuthFailure).await?;
                    return Err(Close::Auth);
                };
                let repo = match resolve(name).await {
                    Ok(r) => r,
                    Err(e) => {
                        conn.send(&Message::Error(e.clone())).await?;
                        return Err(Close::Protocol(e));
                    }
                };
                let server = Uuid::new(repo.uuid()).expect("repository UUIDs are protocol words");
                conn.send(&Message::AuthSuccess(server)).await?;
                return Ok(Some(Authed { repo, mode: granted.min(cap), client: uuid }));
            }
            Message::Error(e) => {
                return Err(Close::Protocol(format!("client error before AUTH: {e}")));
            }
            Message::Data(_) => {
                conn.send(&Message::Error("unexpected DATA".into())).await?;
                return Err(Close::Protocol("DATA before AUTH".into()));
            }
            other => {
                let e = format!("{} before AUTH: authenticate first", other.command());
                conn.send(&Message::Error(e)).await?
            }
        }
    }
    conn.send(&Message::Error("too many messages before AUTH".into())).await?;
    Err(Close::Protocol("too many messages before AUTH".into()))
}

/// The mode `token` grants, or None for an unknown token.
async fn check<S: AsyncRead + AsyncWrite + Unpin + Send>(
    conn: &mut Conn<S>,
    tokens: &dyn TokenCheck,
    token: &str,
) -> Res<Option<Mode>> {
    match tokens.check(token).await {
        Ok(granted) => Ok(granted),
        Err(e) => {
            // Not the client's fault: say so rather than AUTH-FAILURE,
            // which git-annex reports as a bad token.
            warn!("cannot check token: {e}");
            conn.send(&Message::Error(format!("cannot check the token now: {e}"))).await?;
            Err(Close::Protocol("token check unavailable".into()))
        }
    }
}

#[cfg(test)]
mod tests;
