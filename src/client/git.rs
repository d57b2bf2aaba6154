//! git over ssh through `annexmesh shell`: git's bytes go to the gateway in
//! the line protocol's CONNECT (DATA frames both ways), and the process's
//! exit code comes back in CONNECTDONE.

use anyhow::{Context, bail};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::FramedRead;

use super::relay::{COPY_BUF, Session};
use crate::p2p::codec::{Inbound, LineCodec};
use crate::p2p::message::{Message, Service};

/// Longest line accepted from the gateway.
const MAX_LINE: usize = 64 * 1024;

/// Runs `service` on the session's repository with `input` and `output` as
/// git's ends; the exit code of the process on the far side.
pub async fn connect<I, O>(
    session: Session,
    service: Service,
    mut input: I,
    mut output: O,
) -> anyhow::Result<i32>
where
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
{
    let Session { reader, mut writer, .. } = session;
    let request = format!("{}\n", Message::Connect(service).serialize());
    writer.write_all(request.as_bytes()).await?;
    writer.flush().await?;
    let upstream = async {
        let mut buf = vec![0u8; COPY_BUF];
        loop {
            let n = match input.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let head = format!("{}\n", Message::Data(n as u64).serialize());
            if writer.write_all(head.as_bytes()).await.is_err()
                || writer.write_all(&buf[..n]).await.is_err()
                || writer.flush().await.is_err()
            {
                break;
            }
        }
        // The gateway takes the end of our input as the end of git's.
        let _ = writer.shutdown().await;
        std::future::pending::<()>().await
    };
    let downstream = async {
        let mut frames = FramedRead::new(reader, LineCodec::new(MAX_LINE, COPY_BUF));
        loop {
            match frames.next().await.transpose().context("reading from the gateway")? {
                Some(Inbound::Data(b)) => output.write_all(&b).await?,
                Some(Inbound::Message(Message::Data(_))) => {}
                Some(Inbound::Message(Message::ConnectDone(code))) => {
                    output.flush().await?;
                    return Ok(code);
                }
                Some(Inbound::Message(Message::Error(e))) => bail!("the gateway refused: {e}"),
                Some(Inbound::Message(m)) => {
                    bail!("unexpected answer from the gateway: {}", m.serialize())
                }
                Some(Inbound::Unparsable(e)) => bail!("unexpected answer from the gateway: {e}"),
                Some(Inbound::Preamble(_)) => bail!("unexpected answer from the gateway"),
                None => bail!("the gateway closed the connection before git finished"),
            }
            output.flush().await?;
        }
    };
    tokio::select! {
        r = downstream => r,
        _ = upstream => unreachable!(),
    }
}
