//! Replication: this agent fetches a key from another agent's `Get` stream
//! and stores it through the upload writer a PUT uses (partial file, hash
//! checked against the key, fsync, rename), so a copy made for repair is
//! trusted exactly as far as one a client uploaded. Sources are tried in
//! order; a transfer cut off keeps its partial file and the next source
//! resumes from it.

use std::time::Duration;

use tokio::sync::mpsc;
use tonic::Status;
use tracing::{info, warn};

use super::put::{UPLOAD_WAIT, Upload, write_upload};
use super::{Active, AgentService, parse_key};
use crate::p2p::key::Key;
use crate::rpc::{self, ReplicateOutcome, agent_client::AgentClient, get_reply};

/// How long a source may send nothing before it is given up on.
const STALL: Duration = Duration::from_secs(30);

/// Received chunks the writer has yet to write: bounded, so memory stays
/// at a few chunks whatever the object's size.
const WRITER_QUEUE: usize = 8;

/// Why one source could not provide the key.
#[derive(Debug, thiserror::Error)]
enum PullError {
    #[error("cannot reach the source: {0}")]
    Connect(#[from] rpc::DialError),
    #[error("{}", .0.message())]
    Status(#[from] Status),
    #[error("the source sent {0} where its header was due")]
    NoHeader(&'static str),
    #[error("the source offers {offered} bytes from offset {offset}, but the key's size is {size}")]
    WrongLength { offset: u64, offered: u64, size: u64 },
    #[error("the source sent nothing for {} s", STALL.as_secs())]
    Stalled,
    #[error("{0}")]
    NotStored(String),
}

impl AgentService {
    /// Brings `req.key` here from the first of `req.sources` that delivers
    /// it intact.
    pub(super) async fn serve_replicate(
        &self,
        req: rpc::ReplicateRequest,
    ) -> Result<rpc::ReplicateReply, Status> {
        let key = parse_key(&req.key)?;
        if req.sources.is_empty() {
            return Err(Status::invalid_argument("replicate needs at least one source"));
        }
        let _active = Active::enter(&self.active);
        if self.store.object_size(&key).await?.is_some() {
            return Ok(reply(ReplicateOutcome::AlreadyHad, String::new(), 0, String::new()));
        }
        let _upload = self.uploads.begin(&key, UPLOAD_WAIT).await.ok_or_else(|| {
            Status::aborted(format!("another upload of {key} to this node is still under way"))
        })?;
        let mut errors = Vec::new();
        for (i, source) in req.sources.iter().enumerate() {
            let uuid = req.source_uuids.get(i).map_or("", |u| u.as_str());
            match self.pull(&key, source, uuid).await {
                Ok(bytes) => {
                    info!(%key, %source, bytes, "replicated");
                    return Ok(reply(
                        ReplicateOutcome::Stored,
                        String::new(),
                        bytes,
                        source.clone(),
                    ));
                }
                Err(e) => {
                    warn!(%key, %source, error = %e, "replication from this source failed");
                    errors.push(format!("{source}: {e}"));
                }
            }
        }
        Ok(reply(ReplicateOutcome::Failed, errors.join("\n"), 0, String::new()))
    }

    /// One transfer from `source`, resumed from the partial file; the bytes
    /// received once the object is committed.
    async fn pull(&self, key: &Key, source: &str, uuid: &str) -> Result<u64, PullError> {
        let mut offset = self.store.partial_len(key).await.map_err(Status::from)?;
        if key.size.is_some_and(|size| offset > size) {
            self.discard_partial(key).await?;
            offset = 0;
        }
        let mut client = AgentClient::new(self.dialer.channel(source, rpc::Peer::Agent(uuid))?)
            .max_decoding_message_size(rpc::MAX_MESSAGE)
            .max_encoding_message_size(rpc::MAX_MESSAGE);
        let get = rpc::GetRequest { key: key.to_string(), offset, associated_file: String::new() };
        let mut stream = match client.get(get).await {
            Ok(r) => r.into_inner(),
            // A partial that the source's copy is shorter than is of no use.
            Err(s) if s.code() == tonic::Code::InvalidArgument && offset > 0 => {
                self.discard_partial(key).await?;
                return Err(s.into());
            }
            Err(s) => return Err(rpc::unreachable_node(uuid, source, s).into()),
        };
        let length = match next(&mut stream).await? {
            Some(get_reply::Msg::Header(h)) => h.length,
            Some(_) => return Err(PullError::NoHeader("data")),
            None => return Err(PullError::NoHeader("nothing")),
        };
        if let Some(size) = key.size
            && offset.checked_add(length) != Some(size)
        {
            return Err(PullError::WrongLength { offset, offered: length, size });
        }
        let (chunks, rx) = mpsc::channel::<Upload>(WRITER_QUEUE);
        let (store, k) = (self.store.clone(), key.clone());
        let writer =
            tokio::task::spawn_blocking(move || write_upload(&store, &k, offset, length, rx, None));
        let forwarded = forward(&mut stream, &chunks).await;
        // Without an end marker the writer keeps the partial for a resume.
        drop(chunks);
        let stored =
            writer.await.map_err(|e| Status::internal(format!("writer failed: {e}")))??;
        forwarded?;
        if stored.stored { Ok(length) } else { Err(PullError::NotStored(stored.error)) }
    }

    async fn discard_partial(&self, key: &Key) -> Result<(), PullError> {
        let (store, k) = (self.store.clone(), key.clone());
        tokio::task::spawn_blocking(move || store.discard_partial(&k))
            .await
            .map_err(|e| Status::internal(format!("discard failed: {e}")))?
            .map_err(|e| PullError::Status(e.into()))
    }
}

/// The next message of a source's stream, or an error when it fails or
/// stalls; None at its end.
async fn next(
    stream: &mut tonic::Streaming<rpc::GetReply>,
) -> Result<Option<get_reply::Msg>, PullError> {
    match tokio::time::timeout(STALL, stream.message()).await {
        Err(_) => Err(PullError::Stalled),
        Ok(Err(s)) => Err(s.into()),
        Ok(Ok(m)) => Ok(m.and_then(|m| m.msg)),
    }
}

/// Hands the source's chunks and its end marker to the writer. A broken or
/// stalled stream ends the hand-over without the marker (the writer then
/// keeps the partial) and is reported.
async fn forward(
    stream: &mut tonic::Streaming<rpc::GetReply>,
    chunks: &mpsc::Sender<Upload>,
) -> Result<(), PullError> {
    loop {
        let msg = match next(stream).await? {
            Some(get_reply::Msg::Data(d)) => Upload::Data(d),
            Some(get_reply::Msg::End(e)) => Upload::End { valid: e.valid },
            Some(get_reply::Msg::Header(_)) => {
                return Err(Status::invalid_argument("a second header from the source").into());
            }
            None => return Ok(()),
        };
        let last = matches!(msg, Upload::End { .. });
        // A send fails only when the writer stopped; its result says why.
        if chunks.send(msg).await.is_err() || last {
            return Ok(());
        }
    }
}

fn reply(
    outcome: ReplicateOutcome,
    error: String,
    bytes: u64,
    source: String,
) -> rpc::ReplicateReply {
    rpc::ReplicateReply { outcome: outcome as i32, error, bytes, source }
}

#[cfg(test)]
mod tests;
