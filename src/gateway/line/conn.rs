//! One connection's framing: `p2p::codec::LineCodec` over the socket, with
//! the gateway's limits, and the ways a connection ends early.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Framed;

use crate::p2p::codec::{CodecError, Inbound, LineCodec};
use crate::p2p::message::{Message, ParseError};
use crate::rpc;

/// Longest accepted protocol line. git-annex itself gives up at 32768
/// characters; no valid message comes near that.
pub const MAX_LINE: usize = 32 * 1024;

/// How long a transfer may wait for the client's next bytes. Between
/// requests a connection may idle: git-annex keeps a pool of them.
pub(super) const STALL: Duration = Duration::from_secs(300);

/// Read buffer: a few socket reads' worth, so payloads arrive in few chunks.
const READ_BUF: usize = 64 * 1024;

/// Why a connection ends early.
#[derive(Debug)]
pub(super) enum Close {
    Auth,
    /// The peer broke the protocol; an ERROR was sent where possible.
    Protocol(String),
    /// The peer went away or the socket failed.
    Io(std::io::Error),
}

impl From<std::io::Error> for Close {
    fn from(e: std::io::Error) -> Close {
        Close::Io(e)
    }
}

pub(super) type Res<T> = Result<T, Close>;

/// A request-level view of the next input.
pub(super) enum Next {
    Msg(Message),
    Eof,
    /// A line that could not be parsed, already answered with ERROR.
    Unparsable,
}

/// A framed connection: protocol lines both ways, DATA payloads as raw bytes.
pub(super) struct Conn<S> {
    framed: Framed<S, LineCodec>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Conn<S> {
    /// A connection whose first line may be an `ANNEXMESH` line.
    pub fn new(stream: S) -> Self {
        let codec = LineCodec::new(MAX_LINE, rpc::CHUNK_SIZE).accepting_preamble();
        Conn { framed: Framed::with_capacity(stream, codec, READ_BUF) }
    }

    /// The next input; None at a clean end of input (between messages). A
    /// line too long to follow is answered with ERROR and ends the
    /// connection.
    pub async fn next(&mut self) -> Res<Option<Inbound>> {
        match self.framed.next().await {
            None => Ok(None),
            Some(Ok(item)) => Ok(Some(item)),
            Some(Err(CodecError::Io(e))) => Err(Close::Io(e)),
            Some(Err(CodecError::Truncated)) => Err(Close::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                CodecError::Truncated.to_string(),
            ))),
            Some(Err(e @ (CodecError::LineTooLong { .. } | CodecError::BadPreamble))) => {
                let why = e.to_string();
                self.send(&Message::Error(why.clone())).await?;
                Err(Close::Protocol(why))
            }
        }
    }

    /// `item` as a request-level input; an unparsable line is answered.
    pub async fn classify(&mut self, item: Option<Inbound>) -> Res<Next> {
        match item {
            Some(Inbound::Message(m)) => Ok(Next::Msg(m)),
            None => Ok(Next::Eof),
            Some(Inbound::Unparsable(e)) => self.unparsable(e).await.map(|_| Next::Unparsable),
            // Payload of a DATA the caller did not expect: out of step.
            Some(Inbound::Data(_)) => Err(Close::Protocol("unexpected DATA payload".into())),
            // The codec yields one only as the first line, which the
            // handshake reads.
            Some(Inbound::Preamble(_)) => Err(Close::Protocol("unexpected ANNEXMESH line".into())),
        }
    }

    /// The next message; an unparsable line is answered with ERROR.
    pub async fn message(&mut self) -> Res<Next> {
        let item = self.next().await?;
        self.classify(item).await
    }

    /// git-annex answers a line it cannot parse with ERROR and carries on,
    /// so the protocol can grow; a DATA line it cannot read leaves an
    /// unknown number of payload bytes behind, so that closes.
    pub async fn unparsable(&mut self, e: ParseError) -> Res<()> {
        self.send(&Message::Error(format!("unknown command: {e}"))).await?;
        if e.command() == Some("DATA") {
            return Err(Close::Protocol(format!("unreadable DATA line: {e}")));
        }
        Ok(())
    }

    /// Sends one message line, flushed.
    pub async fn send(&mut self, msg: &Message) -> std::io::Result<()> {
        self.framed.send(msg).await.map_err(|e| match e {
            CodecError::Io(e) => e,
            other => std::io::Error::other(other),
        })
    }

    /// Writes payload bytes straight to the socket, past the codec's buffer
    /// (which `send` leaves empty), so content is not copied once more.
    pub async fn write_data(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.framed.get_mut().write_all(data).await
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        self.framed.get_mut().flush().await
    }

    /// Reads and drops `n` payload bytes.
    pub async fn skip_data(&mut self, mut n: u64) -> Res<()> {
        while n > 0 {
            match tokio::time::timeout(STALL, self.next()).await {
                Err(_) => return Err(Close::Protocol("client stalled mid-DATA".into())),
                Ok(r) => match r? {
                    Some(Inbound::Data(b)) => n -= b.len() as u64,
                    _ => return Err(Close::Io(std::io::ErrorKind::UnexpectedEof.into())),
                },
            }
        }
        Ok(())
    }

    /// Ends the connection: our side is shut down, then what the peer still
    /// sends is read and dropped, for a bounded time and amount. Closing
    /// with unread input makes the kernel reset the connection, and the
    /// peer may then lose our last ERROR.
    pub async fn close(self) {
        let mut stream = self.framed.into_inner();
        let _ = stream.shutdown().await;
        let drain = async {
            let mut buf = vec![0u8; 64 * 1024];
            let mut seen = 0;
            while seen < 8 << 20 {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen += n,
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::p2p::message::ParseError;
    use tokio::io::DuplexStream;

    async fn pair(input: &'static [u8]) -> (Conn<DuplexStream>, DuplexStream) {
        let (ours, mut theirs) = tokio::io::duplex(1 << 20);
        theirs.write_all(input).await.unwrap();
        (Conn::new(ours), theirs)
    }

    async fn read_all(mut peer: DuplexStream) -> String {
        let mut out = String::new();
        peer.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn data_bodies_are_raw_bytes_of_the_announced_length() {
        let (mut conn, peer) = pair(b"DATA 13\nSUCCESS\nab\ncdVALID\n").await;
        drop(peer);
        assert!(matches!(conn.message().await, Ok(Next::Msg(Message::Data(13)))));
        let mut body = Vec::new();
        while body.len() < 13 {
            let Some(Inbound::Data(b)) = conn.next().await.unwrap() else { panic!("not data") };
            body.extend_from_slice(&b);
        }
        assert_eq!(body, b"SUCCESS\nab\ncd");
        assert!(matches!(conn.message().await, Ok(Next::Msg(Message::Valid))));
        assert!(matches!(conn.message().await, Ok(Next::Eof)));
    }

    #[tokio::test]
    async fn unparsable_lines_are_answered_and_skipped_but_not_data_lines() {
        let (mut conn, peer) = pair(b"FROB 1\nVERSION 1\nDATA x\n").await;
        assert!(matches!(conn.message().await, Ok(Next::Unparsable)));
        assert!(matches!(conn.message().await, Ok(Next::Msg(Message::Version(1)))));
        assert!(matches!(conn.message().await, Err(Close::Protocol(w)) if w.contains("DATA")));
        conn.close().await;
        let answers = read_all(peer).await;
        let lines: Vec<&str> = answers.lines().collect();
        assert_eq!(lines.len(), 2, "{answers}");
        assert!(lines[0].starts_with("ERROR unknown command: ") && lines[0].contains("FROB"));
        assert!(lines[1].starts_with("ERROR unknown command: "), "{answers}");
    }

    #[tokio::test]
    async fn an_over_long_line_is_answered_and_closes() {
        let (ours, mut peer) = tokio::io::duplex(1 << 20);
        let mut conn = Conn::new(ours);
        peer.write_all(&vec![b'x'; MAX_LINE + 1]).await.unwrap();
        assert!(matches!(conn.next().await, Err(Close::Protocol(w)) if w.contains("longer than")));
        conn.close().await;
        let answer = read_all(peer).await;
        assert_eq!(answer, format!("ERROR protocol line longer than {MAX_LINE} bytes\n"));
    }

    #[tokio::test]
    async fn end_of_input_mid_message_is_an_io_error() {
        let (mut conn, peer) = pair(b"DATA 5\nab").await;
        drop(peer);
        assert!(matches!(conn.message().await, Ok(Next::Msg(Message::Data(5)))));
        assert!(matches!(conn.next().await, Ok(Some(Inbound::Data(_)))));
        let e = conn.next().await.unwrap_err();
        assert!(matches!(&e, Close::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof));
    }

    #[tokio::test]
    async fn skip_data_reads_exactly_the_payload() {
        let (mut conn, _peer) = pair(b"DATA 4\n1234SUCCESS\n").await;
        assert!(matches!(conn.message().await, Ok(Next::Msg(Message::Data(4)))));
        conn.skip_data(4).await.unwrap();
        assert!(matches!(conn.message().await, Ok(Next::Msg(Message::Success))));
        let e = ParseError::UnknownCommand("X".into());
        assert!(conn.unparsable(e).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn skip_data_gives_up_on_a_stalled_client() {
        let (mut conn, _peer) = pair(b"DATA 4\n12").await;
        assert!(matches!(conn.message().await, Ok(Next::Msg(Message::Data(4)))));
        let e = conn.skip_data(4).await.unwrap_err();
        assert!(matches!(e, Close::Protocol(w) if w.contains("stalled")));
    }
}
