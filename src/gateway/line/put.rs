//! PUT: the offset exchange, then the client's DATA payload streamed into
//! `Core::put` as it arrives, then VALID or INVALID.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use super::conn::{Close, Conn, Next, Res, STALL};
use super::session::{Session, uuids};
use crate::auth::Mode;
use crate::gateway::core::{PutOffset, PutRequest};
use crate::p2p::codec::Inbound;
use crate::p2p::key::Key;
use crate::p2p::message::{AssociatedFile, Message};

impl Session<'_> {
    pub(super) async fn put<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &mut self,
        conn: &mut Conn<S>,
        file: AssociatedFile,
        key: Key,
    ) -> Res<()> {
        let file = file.0;
        let Some(Announced { offset, length, data_present }) =
            self.announce(conn, file.as_deref(), &key).await?
        else {
            return Ok(());
        };
        let core = self.core;
        // DATA-PRESENT is followed by no payload and no VALID.
        let end = data_present.then_some(End::Valid);
        let mut body = PutBody { conn, remaining: length, version: self.version, end };
        let req = |length| PutRequest {
            repo: &self.repo,
            key: &key,
            file: file.as_deref(),
            offset,
            length,
            data_present,
        };
        let result = if data_present {
            core.put(req(0), futures::stream::empty::<Result<Bytes, String>>()).await
        } else {
            let stream = futures::stream::unfold(&mut body, |b| async move {
                b.next().await.map(|item| (item, b))
            });
            core.put(req(length), Box::pin(stream)).await
        };
        let conn = body.finish().await?;
        let reply = match result {
            Ok(out) => {
                if let Some(e) = &out.error {
                    debug!(%key, "put failed: {e}");
                }
                self.outcome(&out)
            }
            Err(e) => Self::error(e),
        };
        Ok(conn.send(&reply).await?)
    }

    /// PUT's opening: the access check, PUT-FROM (or ALREADY-HAVE), then the
    /// client's DATA or DATA-PRESENT. None when the PUT ends there.
    async fn announce<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &self,
        conn: &mut Conn<S>,
        file: Option<&str>,
        key: &Key,
    ) -> Res<Option<Announced>> {
        if self.mode == Mode::ReadOnly {
            conn.send(&Message::Error(super::session::READ_ONLY_WRITE.into())).await?;
            return Ok(None);
        }
        let offset = match self.core.put_offset(&self.repo, key, file).await {
            Err(e) => {
                conn.send(&Self::error(e)).await?;
                return Ok(None);
            }
            Ok(PutOffset::AlreadyHave(plus)) => {
                let reply = if self.version >= 2 && !plus.is_empty() {
                    Message::AlreadyHavePlus(uuids(&plus))
                } else {
                    Message::AlreadyHave
                };
                conn.send(&reply).await?;
                return Ok(None);
            }
            Ok(PutOffset::Offset(o)) => o,
        };
        conn.send(&Message::PutFrom(offset)).await?;
        let (length, data_present) = match conn.message().await? {
            Next::Msg(Message::Data(len)) => (len, false),
            Next::Msg(Message::DataPresent) if self.version >= 4 => (0, true),
            // The client gave up on this PUT; git-annex carries on.
            Next::Msg(Message::Error(_)) | Next::Eof | Next::Unparsable => return Ok(None),
            Next::Msg(_) => {
                conn.send(&Message::Error("expected DATA".into())).await?;
                return Ok(None);
            }
        };
        if !data_present
            && let Some(size) = key.size
            && offset.checked_add(length) != Some(size)
        {
            let e = format!(
                "DATA {length} from offset {offset} does not match the size {size} of {key}"
            );
            conn.send(&Message::Error(e.clone())).await?;
            return Err(Close::Protocol(e));
        }
        Ok(Some(Announced { offset, length, data_present }))
    }
}

/// What the client is about to send for a PUT.
struct Announced {
    offset: u64,
    length: u64,
    /// DATA-PRESENT (v4): the content is already on the nodes' side.
    data_present: bool,
}

/// How a PUT's DATA ended, as seen by the body stream.
enum End {
    Valid,
    Invalid,
    /// Neither VALID nor INVALID came (v1+).
    Unexpected,
    /// The connection failed.
    Lost(Close),
}

/// The client's DATA payload as a stream for `Core::put`: chunks until the
/// promised length, then (v1+) VALID, or an error that makes the core close
/// every node's stream without completing it, keeping the partial content.
struct PutBody<'c, S> {
    conn: &'c mut Conn<S>,
    remaining: u64,
    version: u64,
    end: Option<End>,
}

impl<'c, S: AsyncRead + AsyncWrite + Unpin + Send> PutBody<'c, S> {
    async fn next(&mut self) -> Option<Result<Bytes, String>> {
        if self.end.is_some() {
            return None;
        }
        if self.remaining > 0 {
            return match tokio::time::timeout(STALL, self.conn.next()).await {
                Err(_) => {
                    self.end = Some(End::Lost(Close::Protocol("client stalled mid-DATA".into())));
                    Some(Err("client stalled mid-DATA".into()))
                }
                Ok(Ok(Some(Inbound::Data(b)))) => {
                    self.remaining -= b.len() as u64;
                    Some(Ok(b))
                }
                // The decoder yields data until the DATA length is reached;
                // anything else means the stream is out of step.
                Ok(Ok(_)) => {
                    self.end = Some(End::Lost(Close::Protocol("DATA payload out of step".into())));
                    Some(Err("DATA payload out of step".into()))
                }
                Ok(Err(e)) => {
                    let why = match &e {
                        Close::Io(io) => format!("client connection lost mid-DATA: {io}"),
                        Close::Protocol(why) => why.clone(),
                        Close::Auth => "authentication lost".to_string(),
                    };
                    self.end = Some(End::Lost(e));
                    Some(Err(why))
                }
            };
        }
        let end = match self.validity().await {
            Ok(end) => end,
            Err(e) => End::Lost(e),
        };
        let item = match end {
            End::Valid => None,
            End::Invalid => Some(Err("the client reported the content invalid".into())),
            End::Unexpected => Some(Err("expected VALID or INVALID".into())),
            End::Lost(_) => Some(Err("client connection lost before VALID".into())),
        };
        self.end = Some(end);
        item
    }

    /// After the payload: VALID or INVALID from v1 on; v0 has neither.
    async fn validity(&mut self) -> Res<End> {
        if self.version == 0 {
            return Ok(End::Valid);
        }
        Ok(match tokio::time::timeout(STALL, self.conn.next()).await {
            Err(_) => End::Lost(Close::Protocol("client stalled before VALID".into())),
            Ok(r) => match r? {
                Some(Inbound::Message(Message::Valid)) => End::Valid,
                Some(Inbound::Message(Message::Invalid)) => End::Invalid,
                // Another payload would follow: no way to stay in step.
                Some(Inbound::Message(Message::Data(_))) => {
                    End::Lost(Close::Protocol("DATA where VALID or INVALID belongs".into()))
                }
                None => End::Lost(Close::Io(std::io::ErrorKind::UnexpectedEof.into())),
                _ => End::Unexpected,
            },
        })
    }

    /// Once the core is done: whatever it did not read (no node wanted the
    /// data, or it stopped early) is read and dropped, so the next message
    /// lines up. The connection back, unless it was lost.
    async fn finish(mut self) -> Res<&'c mut Conn<S>> {
        if self.end.is_none() {
            let left = self.remaining;
            self.conn.skip_data(left).await?;
            self.remaining = 0;
            self.end = Some(self.validity().await?);
        }
        match self.end {
            Some(End::Lost(e)) => return Err(e),
            Some(End::Unexpected) => {
                self.conn.send(&Message::Error("expected VALID or INVALID".into())).await?
            }
            _ => {}
        }
        Ok(self.conn)
    }
}
