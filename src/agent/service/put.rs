//! Receiving uploads: the network side reads the stream of chunks while a
//! blocking writer puts them in the key's partial file, hashing as it goes,
//! and commits the object once the sender vouches for the data and the
//! checksum matches. An interrupted upload keeps its partial file for a
//! resume.

use std::fs::File;

use bytes::Bytes;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};
use tracing::{debug, info, warn};

use super::{Active, AgentService, parse_key, read_chunk};
use crate::agent::store::{Store, StoreError};
use crate::p2p::key::Key;
use crate::p2p::verify::Verifier;
use crate::rpc::{self, put_request};

/// How long an upload waits for an earlier upload of the same key.
pub(super) const UPLOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// How much of an upload is written before the disk is asked to start
/// writing it back (see `Store::start_writeback`).
const WRITEBACK_STEP: u64 = 8 * 1024 * 1024;

/// Chunks received but not yet written: a few MiB, so the network side can
/// run ahead of the disk without buffering a whole object.
const WRITER_QUEUE: usize = 8;

impl AgentService {
    /// Where an upload of the key would resume, or that the node has it.
    pub(super) async fn serve_put_offset(&self, key: &str) -> Result<rpc::PutOffsetReply, Status> {
        let key = parse_key(key)?;
        Ok(if self.store.object_size(&key).await?.is_some() {
            rpc::PutOffsetReply { already_have: true, offset: 0 }
        } else {
            rpc::PutOffsetReply { already_have: false, offset: self.store.partial_len(&key).await? }
        })
    }

    /// An upload: a header, data chunks, then an end marker. One upload of a
    /// key at a time; a later one waits up to [`UPLOAD_WAIT`] for it.
    pub(super) async fn serve_put(
        &self,
        mut stream: Streaming<rpc::PutRequest>,
    ) -> Result<rpc::PutReply, Status> {
        let header = match stream.message().await? {
            Some(rpc::PutRequest { msg: Some(put_request::Msg::Header(h)) }) => h,
            _ => return Err(Status::invalid_argument("put stream must start with a header")),
        };
        // The upload's span (see `put`) learns its key from the header.
        tracing::Span::current().record("key", header.key.as_str());
        let key = parse_key(&header.key)?;
        let _active = Active::enter(&self.active);
        // A chain, or its last node: fed by the node before it, maybe from
        // before its own resume offset.
        if !header.chain.is_empty() || header.forwarded || header.resume_at > header.offset {
            return self.serve_chain_put(key, header, &mut stream).await;
        }
        if self.store.object_size(&key).await?.is_some() {
            return Ok(rpc::PutReply { stored: true, ..Default::default() });
        }
        if header.data_present {
            return Ok(put_failed(format!("{key} is not present here")));
        }
        let _upload = self.uploads.begin(&key, UPLOAD_WAIT).await.ok_or_else(|| {
            Status::aborted(format!("another upload of {key} to this node is still under way"))
        })?;
        self.receive_put(&key, &header, &mut stream).await
    }

    async fn receive_put(
        &self,
        key: &Key,
        header: &rpc::PutHeader,
        stream: &mut Streaming<rpc::PutRequest>,
    ) -> Result<rpc::PutReply, Status> {
        if let Some(size) = key.size
            && header.offset.checked_add(header.length) != Some(size)
        {
            return Err(Status::invalid_argument(format!(
                "offset {} + length {} does not match the size {size} of {key}",
                header.offset, header.length
            )));
        }
        // The whole upload on disk (open, resume, writes, hashing, then
        // commit or discard) runs as one job on a blocking thread, fed the
        // received chunks as they are, while this task keeps receiving: no
        // copy into a tokio file buffer and no hand-off per file operation.
        let (chunks, rx) = mpsc::channel::<Upload>(WRITER_QUEUE);
        let (store, k, offset, length) =
            (self.store.clone(), key.clone(), header.offset, header.length);
        // The writer logs in the upload's span, on its own thread.
        let span = tracing::Span::current();
        if offset > 0 {
            info!(%key, offset, "upload resumes");
        }
        let writer = tokio::task::spawn_blocking(move || {
            span.in_scope(|| write_upload(&store, &k, offset, length, rx, None))
        });
        let refused = forward_chunks(key, header.length, stream, &chunks).await;
        // Without an end marker the writer keeps what it has for a resume.
        drop(chunks);
        let written = writer.await.map_err(|e| Status::internal(format!("writer failed: {e}")));
        let reply = self.own_outcome(key, written.and_then(|r| r))?;
        match refused {
            Some(status) => Err(status),
            None => Ok(reply),
        }
    }

    /// The writer's result as the sender hears it: a full disk names this
    /// node, and a stored object counts as verified.
    pub(super) fn own_outcome(
        &self,
        key: &Key,
        written: Result<rpc::PutReply, Status>,
    ) -> Result<rpc::PutReply, Status> {
        let reply = written.map_err(|s| match s.code() {
            // The gateway passes this to the client: say which node is full.
            tonic::Code::ResourceExhausted => {
                warn!(%key, node = %self.name, "{}", s.message());
                Status::resource_exhausted(format!("{}: {}", self.name, s.message()))
            }
            _ => s,
        })?;
        if reply.stored {
            // The writer verified the checksum: the new object is verified.
            if let Ok(m) = std::fs::metadata(self.store.object_path(key)) {
                self.integrity.record_verified(key, &m);
            }
        }
        Ok(reply)
    }
}

/// Hands the received chunks to the writer until the end marker, the end of
/// the stream or a refusal, which it returns: more data than `length`, or a
/// message that has no place in an upload.
async fn forward_chunks(
    key: &Key,
    length: u64,
    stream: &mut Streaming<rpc::PutRequest>,
    chunks: &mpsc::Sender<Upload>,
) -> Option<Status> {
    let mut received: u64 = 0;
    loop {
        let msg = match stream.message().await {
            Ok(Some(m)) => m.msg,
            Ok(None) => return None,
            Err(status) => {
                debug!(%key, %status, "put stream broke");
                return None;
            }
        };
        let next = match msg {
            Some(put_request::Msg::Data(chunk)) => {
                if received + chunk.len() as u64 > length {
                    return Some(Status::invalid_argument(format!(
                        "more data than the {length} bytes promised for {key}"
                    )));
                }
                received += chunk.len() as u64;
                Upload::Data(chunk)
            }
            Some(put_request::Msg::End(e)) => Upload::End { valid: e.valid },
            Some(put_request::Msg::Header(_)) | None => {
                return Some(Status::invalid_argument("unexpected message in put stream"));
            }
        };
        let last = matches!(next, Upload::End { .. });
        // A send fails only when the writer stopped on an error, which its
        // result reports.
        if chunks.send(next).await.is_err() || last {
            return None;
        }
    }
}

/// What the receiving task hands the upload's writer.
pub(super) enum Upload {
    Data(Bytes),
    /// The sender's end marker: whether it vouches for the data.
    End {
        valid: bool,
    },
}

/// Writes an upload to its partial file from `offset` on, hashing it as it
/// goes (a resumed upload first hashes what is already there, since the
/// checksum covers the whole object), then, on a valid end marker and a
/// matching checksum, commits it as the object. When the chunks stop without
/// an end marker the partial file stays for a resume. `written`, when given,
/// follows how far the file is written (a chain forwards from it).
pub(super) fn write_upload(
    store: &Store,
    key: &Key,
    offset: u64,
    length: u64,
    mut chunks: mpsc::Receiver<Upload>,
    written: Option<tokio::sync::watch::Sender<u64>>,
) -> Result<rpc::PutReply, Status> {
    use std::io::Write;
    let (mut file, mut verifier) = resume_partial(store, key, offset)?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    let (mut received, mut writeback_from) = (0u64, offset);
    let mut end = None;
    while let Some(msg) = chunks.blocking_recv() {
        match msg {
            Upload::Data(chunk) => {
                if let Err(e) = file.write_all(&chunk) {
                    drop(file);
                    return Err(write_failed(store, key, e, length - received));
                }
                if let Some(v) = verifier.as_mut() {
                    v.update(&chunk);
                }
                received += chunk.len() as u64;
                let at = offset + received;
                if let Some(w) = &written {
                    w.send_replace(at);
                }
                if at - writeback_from >= WRITEBACK_STEP {
                    Store::start_writeback(fd, writeback_from, at - writeback_from);
                    writeback_from = at;
                }
            }
            Upload::End { valid } => {
                end = Some(valid);
                break;
            }
        }
    }
    let why = match end {
        None => {
            info!(%key, kept = offset + received, "upload interrupted; partial kept for resume");
            return Ok(put_failed(format!(
                "upload of {key} interrupted after {} bytes; kept for resume",
                offset + received
            )));
        }
        Some(false) => "the sender marked the data invalid".to_string(),
        Some(true) if received != length => {
            format!("received {received} bytes of the {length} promised for {key}")
        }
        Some(true) if !verifier.is_none_or(Verifier::finish) => {
            warn!(%key, "refused content that does not match its checksum");
            format!("content does not match the checksum in key {key}; nothing stored")
        }
        Some(true) => {
            let t = std::time::Instant::now();
            if let Err(e) = store.commit_partial(key, &file) {
                drop(file);
                return Err(match e {
                    StoreError::Io { source, .. } if is_no_space(&source) => {
                        write_failed(store, key, source, 0)
                    }
                    e => e.into(),
                });
            }
            info!(%key, commit = ?t.elapsed(), "stored");
            return Ok(rpc::PutReply { stored: true, ..Default::default() });
        }
    };
    drop(file);
    store.discard_partial(key)?;
    Ok(put_failed(why))
}

/// Opens the key's partial file positioned at `offset` (refused when fewer
/// bytes are held), with what is kept before it already hashed into the
/// key's verifier.
fn resume_partial(
    store: &Store,
    key: &Key,
    offset: u64,
) -> Result<(File, Option<Verifier>), Status> {
    use std::io::Seek;
    let tmp = store.partial_path(key);
    let internal = |e: std::io::Error| Status::internal(format!("{}: {e}", tmp.display()));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&tmp)
        .map_err(|e| Status::internal(format!("cannot open {}: {e}", tmp.display())))?;
    let held = file.metadata().map_err(internal)?.len();
    if offset > held {
        return Err(Status::failed_precondition(format!(
            "cannot resume at offset {offset}: only {held} bytes of {key} are held"
        )));
    }
    file.set_len(offset).map_err(internal)?;
    let mut verifier = Verifier::for_key(key);
    if let Some(v) = verifier.as_mut() {
        let mut remaining = offset;
        while remaining > 0 {
            let part = read_chunk(&mut file, remaining.min(rpc::CHUNK_SIZE as u64) as usize)
                .map_err(internal)?;
            if part.is_empty() {
                return Err(Status::internal("partial file shrank while resuming"));
            }
            v.update(&part);
            remaining -= part.len() as u64;
        }
    }
    file.seek(std::io::SeekFrom::Start(offset)).map_err(internal)?;
    Ok((file, verifier))
}

/// The status of an upload whose write failed. A full disk is said so
/// plainly, and the partial is removed at once: it cannot usefully be
/// resumed on a full disk, and removing it gives the space back.
fn write_failed(store: &Store, key: &Key, e: std::io::Error, needed: u64) -> Status {
    let tmp = store.partial_path(key);
    if !is_no_space(&e) {
        return Status::internal(format!("{}: {e}", tmp.display()));
    }
    if let Err(e) = store.discard_partial(key) {
        warn!(%key, error = %e, "cannot remove the partial of an upload that ran out of space");
    }
    let dir = tmp.parent().unwrap_or(store.root());
    let free = crate::agent::free_bytes(dir);
    Status::resource_exhausted(format!(
        "no space left on device ({free} bytes free, {needed} needed) storing {key}"
    ))
}

fn is_no_space(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC) || e.kind() == std::io::ErrorKind::StorageFull
}

fn put_failed(error: String) -> rpc::PutReply {
    rpc::PutReply { stored: false, error, chain: vec![] }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    fn key_for(data: &[u8]) -> Key {
        format!("SHA256E-s{}--{}", data.len(), hex::encode(Sha256::digest(data))).parse().unwrap()
    }

    /// Runs one upload through the writer as the receiving task would feed it.
    fn upload(
        store: &Store,
        key: &Key,
        offset: u64,
        length: u64,
        msgs: Vec<Upload>,
    ) -> Result<rpc::PutReply, Status> {
        let (tx, rx) = mpsc::channel(msgs.len().max(1));
        for m in msgs {
            tx.try_send(m).unwrap_or_else(|_| panic!("queue full"));
        }
        drop(tx);
        write_upload(store, key, offset, length, rx, None)
    }

    fn data(d: &[u8]) -> Upload {
        Upload::Data(Bytes::copy_from_slice(d))
    }

    #[test]
    fn an_interrupted_upload_is_kept_and_resumed_then_verified_and_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let content: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        let key = key_for(&content);
        let len = content.len() as u64;

        // The stream stops after 300000 bytes without an end marker.
        let r = upload(
            &store,
            &key,
            0,
            len,
            vec![data(&content[..100_000]), data(&content[100_000..300_000])],
        )
        .unwrap();
        assert!(!r.stored && r.error.contains("kept for resume"), "{r:?}");
        assert_eq!(std::fs::read(store.partial_path(&key)).unwrap(), &content[..300_000]);

        // Resuming beyond what is held is refused, and the partial stays.
        let e = upload(&store, &key, 400_000, len - 400_000, vec![]).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
        assert_eq!(std::fs::metadata(store.partial_path(&key)).unwrap().len(), 300_000);

        // Resuming at 250000 hashes what is there and overwrites the rest.
        let r = upload(
            &store,
            &key,
            250_000,
            len - 250_000,
            vec![data(&content[250_000..]), Upload::End { valid: true }],
        )
        .unwrap();
        assert!(r.stored, "{r:?}");
        assert_eq!(std::fs::read(store.object_path(&key)).unwrap(), content);
        assert!(!store.partial_path(&key).exists());
        assert!(std::fs::metadata(store.object_path(&key)).unwrap().permissions().readonly());
    }

    #[test]
    fn bad_content_is_refused_and_nothing_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let content = b"the content the key names".to_vec();
        let key = key_for(&content);
        let len = content.len() as u64;
        let mut wrong = content.clone();
        wrong[0] ^= 1;
        let cases = [
            (vec![data(&wrong), Upload::End { valid: true }], "does not match the checksum"),
            (vec![data(&content), Upload::End { valid: false }], "marked the data invalid"),
            (vec![data(&content[..10]), Upload::End { valid: true }], "received 10 bytes"),
        ];
        for (msgs, why) in cases {
            let r = upload(&store, &key, 0, len, msgs).unwrap();
            assert!(!r.stored && r.error.contains(why), "{why}: {r:?}");
            assert!(!store.partial_path(&key).exists(), "{why}: partial kept");
            assert!(!store.object_path(&key).exists(), "{why}: object stored");
        }
    }
}
