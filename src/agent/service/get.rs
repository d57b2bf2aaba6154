//! Serving GETs: an object's content from an offset on, as a header with
//! the length, data chunks and an end marker saying whether all of it was
//! sent and, for checksum keys, whether it matched the key.
//!
//! A checksum object not verified since it last changed is verified in full
//! before the first byte goes out, so a corrupt copy is refused with
//! DATA_LOSS rather than half sent; a verified one is hashed as it streams
//! (a resumed GET hashes the skipped prefix too), and a mismatch found at
//! the end turns the end marker invalid. Either way the copy is quarantined
//! and struck from the location log before the answer.

use std::fs::{File, Metadata};
use std::io::Seek;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::{debug, info, warn};

use super::{Active, AgentService, parse_key, read_chunk};
use crate::agent::integrity::{Integrity, hash_prefix, verify_rest};
use crate::p2p::key::Key;
use crate::p2p::verify::Verifier;
use crate::rpc::{self, get_reply};

/// The replies to a GET.
pub(super) type GetStream = ReceiverStream<Result<rpc::GetReply, Status>>;

type Replies = mpsc::Sender<Result<rpc::GetReply, Status>>;

/// The object, made ready to stream from the requested offset.
enum Ready {
    /// The content does not match its key.
    Corrupt,
    /// Verified in full just now; nothing left to check while streaming.
    JustVerified(File),
    /// To stream, hashing as it goes when there is a verifier.
    Stream(File, Option<Verifier>),
}

/// Checks the stream against the key as it goes, and acts on a mismatch.
struct Check {
    verifier: Verifier,
    integrity: Integrity,
    meta: Metadata,
}

impl AgentService {
    /// Opens the object, verifies it first if it has not been verified since
    /// it last changed, and streams it from the requested offset on a task
    /// of its own; the transfer counts as active until the stream ends.
    pub(super) async fn serve_get(&self, req: rpc::GetRequest) -> Result<GetStream, Status> {
        let key = parse_key(&req.key)?;
        let path = self.store.object_path(&key);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Status::not_found(format!("{key} is not present")));
            }
            Err(e) => return Err(Status::internal(format!("cannot open {}: {e}", path.display()))),
        };
        let meta = file.metadata().map_err(|e| Status::internal(e.to_string()))?;
        let size = meta.len();
        if req.offset > size {
            return Err(Status::invalid_argument(format!(
                "offset {} is beyond the size {size} of {key}",
                req.offset
            )));
        }
        let verifier = Verifier::for_key(&key);
        let verified = verifier.is_some() && self.integrity.is_verified(&key, &meta);
        let offset = req.offset;
        let ready = tokio::task::spawn_blocking(move || prepare(file, offset, verifier, verified))
            .await
            .expect("get preparation panicked")
            .map_err(|e| Status::internal(format!("cannot read {}: {e}", path.display())))?;
        let (file, check) = match ready {
            Ready::Corrupt => {
                self.integrity.quarantine(&key, &meta).await?;
                return Err(self.integrity.corrupt_status(&key));
            }
            Ready::JustVerified(file) => {
                self.integrity.record_verified(&key, &meta);
                (file, None)
            }
            Ready::Stream(file, verifier) => (
                file,
                verifier.map(|verifier| Check {
                    verifier,
                    integrity: self.integrity.clone(),
                    meta,
                }),
            ),
        };
        let length = size - req.offset;
        info!(%key, node = %self.name, offset = req.offset, length, "serving get");
        let (tx, rx) = mpsc::channel(4);
        let active = Active::enter(&self.active);
        self.tasks.spawn(async move {
            let _active = active;
            send_file(key, file, length, tx, check).await;
        });
        Ok(ReceiverStream::new(rx))
    }
}

/// Positions `file` at `offset`: a checksum object not `verified` before is
/// verified in full first; a verified one has its prefix hashed so the
/// stream can be checked to the end. Blocking.
fn prepare(
    mut file: File,
    offset: u64,
    verifier: Option<Verifier>,
    verified: bool,
) -> std::io::Result<Ready> {
    let Some(mut verifier) = verifier else {
        file.seek(std::io::SeekFrom::Start(offset))?;
        return Ok(Ready::Stream(file, None));
    };
    if !verified {
        if !verify_rest(&mut file, verifier)? {
            return Ok(Ready::Corrupt);
        }
        file.seek(std::io::SeekFrom::Start(offset))?;
        return Ok(Ready::JustVerified(file));
    }
    hash_prefix(&mut file, &mut verifier, offset)?;
    Ok(Ready::Stream(file, Some(verifier)))
}

/// Sends the header, then `file` from its current position to the end, then
/// the end marker: valid when exactly `length` bytes were sent and, under a
/// `check`, the content matched the key.
async fn send_file(key: Key, file: File, length: u64, tx: Replies, check: Option<Check>) {
    let msg = |m| Ok(rpc::GetReply { msg: Some(m) });
    if tx.send(msg(get_reply::Msg::Header(rpc::GetHeader { length }))).await.is_err() {
        return;
    }
    let mut sent = 0u64;
    let mut file = Some(file);
    // The verifier travels with the file to each read and back.
    let (mut verifier, check) = match check {
        Some(c) => (Some(c.verifier), Some((c.integrity, c.meta))),
        None => (None, None),
    };
    loop {
        // Each chunk is read straight into the buffer it is sent in, and
        // hashed while it is still in the cache, on a blocking thread held
        // only for that (a slow client must not pin a thread); the channel
        // lets reads run ahead. Hashing here rather than on the runtime
        // keeps the link's tasks from waiting behind it.
        let mut f = file.take().expect("the file is put back after every read");
        let mut v = verifier.take();
        let (f, v, read) = tokio::task::spawn_blocking(move || {
            let read = read_chunk(&mut f, rpc::CHUNK_SIZE);
            if let (Ok(buf), Some(v)) = (&read, v.as_mut()) {
                v.update(buf);
            }
            (f, v, read)
        })
        .await
        .expect("read task panicked");
        file = Some(f);
        verifier = v;
        match read {
            Ok(buf) if buf.is_empty() => break,
            Ok(buf) => {
                sent += buf.len() as u64;
                if tx.send(msg(get_reply::Msg::Data(buf))).await.is_err() {
                    debug!(%key, sent, "get ended by the receiver");
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(Status::internal(format!("read failed: {e}")))).await;
                return;
            }
        }
    }
    let check = match (check, verifier) {
        (Some((integrity, meta)), Some(verifier)) => Some(Check { verifier, integrity, meta }),
        _ => None,
    };
    let mut valid = sent == length;
    if let Some(c) = check
        && valid
    {
        valid = finish_check(&key, c).await;
    }
    let _ = tx.send(msg(get_reply::Msg::End(rpc::GetEnd { valid }))).await;
}

/// Whether the streamed content matched the key; a mismatch quarantines the
/// copy before the end marker goes out.
async fn finish_check(key: &Key, c: Check) -> bool {
    if c.verifier.finish() {
        c.integrity.record_verified(key, &c.meta);
        return true;
    }
    warn!(%key, "content changed on disk since it was verified; the stream is marked invalid");
    if let Err(e) = c.integrity.quarantine(key, &c.meta).await {
        warn!(%key, error = %e, "cannot quarantine the corrupt copy");
    }
    false
}
