//! Relaying bytes between git-annex and a gateway, and the exchange that
//! opens an authenticated session on the client's behalf. The gateway's
//! answer to AUTH is read with the shared line codec; whatever the gateway
//! sent after it is kept for the relay.

use std::io::Cursor;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use tokio::io::{
    AsyncBufRead, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, Chain, ReadHalf,
    WriteHalf,
};
use tokio_util::codec::Framed;

use super::address::GatewayAddress;
use super::connect::{GatewayStream, connect};
use crate::auth::Mode;
use crate::p2p::codec::{Inbound, LineCodec};
use crate::p2p::message::{AuthToken, Message, Uuid};
use crate::p2p::preamble::Preamble;

/// The client UUID `configlist` authenticates with: it only asks who the
/// repository is, on behalf of no repository.
pub const NIL_UUID: &str = "00000000-0000-0000-0000-000000000000";

/// How long to wait for the gateway's answer to AUTH. Generous: it may
/// consult the coordinator; but a wedged gateway must not hang git-annex.
const AUTH_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_ANSWER_LINE: usize = 64 * 1024;
/// Copy buffer: large enough that bulk transfers take few trips through
/// tokio's blocking stdin/stdout threads.
pub(super) const COPY_BUF: usize = 256 * 1024;

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

/// The gateway's side of a session: what the codec had read past the AUTH
/// answer, then the connection.
pub type GatewayReader = BufReader<Chain<Cursor<BytesMut>, ReadHalf<Box<dyn GatewayStream>>>>;

/// A gateway connection past AUTH.
pub struct Session {
    pub repo_uuid: Uuid,
    /// Buffered: whatever the gateway sent after AUTH-SUCCESS is kept.
    pub reader: GatewayReader,
    pub writer: WriteHalf<Box<dyn GatewayStream>>,
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
        let codec = LineCodec::new(MAX_ANSWER_LINE, COPY_BUF);
        let mut framed = Framed::with_capacity(stream, codec, COPY_BUF);
        // One write: the preamble and AUTH together.
        framed.feed(&Preamble { repo: repo.to_string(), mode }).await?;
        framed.send(&Message::Auth { uuid: client, token }).await?;
        let answer = tokio::time::timeout(AUTH_TIMEOUT, framed.next())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "the gateway did not answer AUTH within {}s",
                    AUTH_TIMEOUT.as_secs()
                )
            })?
            .transpose()
            .context("reading the gateway's answer to AUTH")?;
        let repo_uuid = match answer {
            Some(Inbound::Message(Message::AuthSuccess(u))) => u,
            None => bail!(
                "the gateway closed the connection: no repository {repo:?}, or access refused"
            ),
            Some(Inbound::Message(Message::AuthFailure)) => {
                bail!("the gateway refused the token for repository {repo:?} (AUTH-FAILURE)")
            }
            Some(Inbound::Message(Message::Error(text))) => {
                bail!("the gateway refused repository {repo:?}: {text}")
            }
            Some(Inbound::Message(other)) => {
                bail!("unexpected answer from the gateway: {:?}", other.serialize())
            }
            Some(Inbound::Unparsable(e)) => bail!("unexpected answer from the gateway: {e}"),
            Some(Inbound::Data(_) | Inbound::Preamble(_)) => {
                bail!("unexpected answer from the gateway")
            }
        };
        let parts = framed.into_parts();
        let (rd, writer) = tokio::io::split(parts.io);
        let reader = BufReader::with_capacity(COPY_BUF, Cursor::new(parts.read_buf).chain(rd));
        Ok(Session { repo_uuid, reader, writer })
    }
}

#[cfg(test)]
mod tests;
