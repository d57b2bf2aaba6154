//! The agent's gRPC service: the node side of every request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use tokio::io::AsyncSeekExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use super::locks::{ContentLocks, Uploads};
use super::store::{Store, StoreError};
use crate::clock::Stopwatch;
use crate::p2p::LOCK_SAFETY_WINDOW;
use crate::p2p::key::Key;
use crate::p2p::verify::Verifier;
use crate::rpc::{self, agent_server, get_reply, lock_request, put_request};
use crate::tasks::Tasks;

mod list;

pub struct AgentService {
    pub(crate) store: Store,
    pub(crate) uuid: String,
    pub(crate) name: String,
    pub(crate) cluster: String,
    pub(crate) boot_id: String,
    started: Stopwatch,
    locks: ContentLocks,
    uploads: Uploads,
    pub(crate) active: Arc<AtomicU32>,
    /// Lock holders and GET readers: they end when the agent stops.
    tasks: Tasks,
}

/// Counts a transfer as active for as long as it lives.
struct Active(Arc<AtomicU32>);

impl Active {
    fn enter(counter: &Arc<AtomicU32>) -> Active {
        counter.fetch_add(1, Ordering::Relaxed);
        Active(counter.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Status {
        match e {
            StoreError::Invalid(m) => Status::invalid_argument(m),
            e @ StoreError::Io { .. } => Status::internal(e.to_string()),
        }
    }
}

/// How long an upload waits for an earlier upload of the same key.
const UPLOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// How much of an upload is written before the disk is asked to start
/// writing it back (see `Store::start_writeback`).
const WRITEBACK_STEP: u64 = 8 * 1024 * 1024;

/// Chunks received but not yet written: a few MiB, so the network side can
/// run ahead of the disk without buffering a whole object.
const WRITER_QUEUE: usize = 8;

pub(crate) fn parse_key(s: &str) -> Result<Key, Status> {
    s.parse::<Key>().map_err(|e| Status::invalid_argument(format!("bad key {s:?}: {e}")))
}

impl AgentService {
    pub fn new(
        store: Store,
        uuid: String,
        name: String,
        cluster: String,
        tasks: Tasks,
    ) -> AgentService {
        AgentService {
            tasks,
            store,
            uuid,
            name,
            cluster,
            boot_id: uuid::Uuid::new_v4().to_string(),
            started: Stopwatch::start(),
            locks: ContentLocks::default(),
            uploads: Uploads::default(),
            active: Arc::new(AtomicU32::new(0)),
        }
    }

    /// Milliseconds of the agent's monotonic clock; it starts at zero when the
    /// process starts, and `boot_id` tells clock readings of different runs
    /// apart.
    fn clock_ms(&self) -> u64 {
        self.started.elapsed_ms()
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
        let writer =
            tokio::task::spawn_blocking(move || write_upload(&store, &k, offset, length, rx));
        let mut received: u64 = 0;
        let mut refused = None;
        loop {
            let msg = match stream.message().await {
                Ok(Some(m)) => m.msg,
                Ok(None) => break,
                Err(status) => {
                    debug!(%key, %status, "put stream broke");
                    break;
                }
            };
            let next = match msg {
                Some(put_request::Msg::Data(chunk)) => {
                    if received + chunk.len() as u64 > header.length {
                        refused = Some(Status::invalid_argument(format!(
                            "more data than the {} bytes promised for {key}",
                            header.length
                        )));
                        break;
                    }
                    received += chunk.len() as u64;
                    Upload::Data(chunk)
                }
                Some(put_request::Msg::End(e)) => Upload::End { valid: e.valid },
                Some(put_request::Msg::Header(_)) | None => {
                    refused = Some(Status::invalid_argument("unexpected message in put stream"));
                    break;
                }
            };
            let last = matches!(next, Upload::End { .. });
            // A send fails only when the writer stopped on an error, which
            // its result reports below.
            if chunks.send(next).await.is_err() || last {
                break;
            }
        }
        // Without an end marker the writer keeps what it has for a resume.
        drop(chunks);
        let reply = writer.await.map_err(|e| Status::internal(format!("writer failed: {e}")))??;
        match refused {
            Some(status) => Err(status),
            None => Ok(reply),
        }
    }
}

/// What the receiving task hands the upload's writer.
enum Upload {
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
/// an end marker the partial file stays for a resume.
fn write_upload(
    store: &Store,
    key: &Key,
    offset: u64,
    length: u64,
    mut chunks: mpsc::Receiver<Upload>,
) -> Result<rpc::PutReply, Status> {
    use std::io::{Seek, Write};
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
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    let (mut received, mut writeback_from) = (0u64, offset);
    let mut end = None;
    while let Some(msg) = chunks.blocking_recv() {
        match msg {
            Upload::Data(chunk) => {
                file.write_all(&chunk).map_err(internal)?;
                if let Some(v) = verifier.as_mut() {
                    v.update(&chunk);
                }
                received += chunk.len() as u64;
                let written = offset + received;
                if written - writeback_from >= WRITEBACK_STEP {
                    Store::start_writeback(fd, writeback_from, written - writeback_from);
                    writeback_from = written;
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
            store.commit_partial(key, &file)?;
            info!(%key, commit = ?t.elapsed(), "stored");
            return Ok(rpc::PutReply { stored: true, error: String::new() });
        }
    };
    drop(file);
    store.discard_partial(key)?;
    Ok(put_failed(why))
}

/// Reads up to `max` bytes (fewer only at the end of the file) into a buffer
/// of their own, filled without being zeroed first; empty at the end.
fn read_chunk(f: &mut std::fs::File, max: usize) -> std::io::Result<Bytes> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(max);
    f.take(max as u64).read_to_end(&mut buf)?;
    Ok(Bytes::from(buf))
}

fn put_failed(error: String) -> rpc::PutReply {
    rpc::PutReply { stored: false, error }
}

#[tonic::async_trait]
impl agent_server::Agent for AgentService {
    async fn info(&self, _: Request<rpc::InfoRequest>) -> Result<Response<rpc::AgentInfo>, Status> {
        Ok(Response::new(rpc::AgentInfo {
            uuid: self.uuid.clone(),
            name: self.name.clone(),
            cluster: self.cluster.clone(),
            boot_id: self.boot_id.clone(),
        }))
    }

    async fn check_present(
        &self,
        req: Request<rpc::KeyRequest>,
    ) -> Result<Response<rpc::CheckPresentReply>, Status> {
        let key = parse_key(&req.get_ref().key)?;
        let present = self.store.object_size(&key).await?.is_some();
        Ok(Response::new(rpc::CheckPresentReply { present }))
    }

    type LockContentStream = ReceiverStream<Result<rpc::LockReply, Status>>;

    async fn lock_content(
        &self,
        req: Request<Streaming<rpc::LockRequest>>,
    ) -> Result<Response<Self::LockContentStream>, Status> {
        let mut inbound = req.into_inner();
        let key = match inbound.message().await? {
            Some(rpc::LockRequest { msg: Some(lock_request::Msg::Key(k)) }) => parse_key(&k)?,
            _ => return Err(Status::invalid_argument("lock stream must start with a key")),
        };
        let (tx, rx) = mpsc::channel(1);
        // Take the lock before looking, so a remove cannot slip in between.
        let guard = self.locks.lock(&key).await;
        let present = self.store.object_size(&key).await?.is_some();
        let reply = |locked| Ok(rpc::LockReply { locked, error: String::new() });
        if !present {
            drop(guard);
            let _ = tx.send(reply(false)).await;
            return Ok(Response::new(ReceiverStream::new(rx)));
        }
        let _ = tx.send(reply(true)).await;
        debug!(%key, "locked");
        let locked_at = tokio::time::Instant::now();
        self.tasks.spawn(async move {
            // Held until an explicit unlock. A stream that ends without one
            // means the gateway or its client went away, and the client may
            // still count on the lock: it is kept for the protocol's safety
            // window, counted from when it was granted.
            let unlocked = loop {
                match inbound.message().await {
                    Ok(Some(rpc::LockRequest { msg: Some(lock_request::Msg::Unlock(true)) })) => {
                        break true;
                    }
                    Ok(None) | Err(_) => break false,
                    Ok(Some(_)) => continue,
                }
            };
            drop(tx);
            if !unlocked {
                debug!(%key, "lock stream ended without unlock; keeping the lock for the safety window");
                tokio::time::sleep_until(locked_at + LOCK_SAFETY_WINDOW).await;
            }
            drop(guard);
            debug!(%key, "unlocked");
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn remove(
        &self,
        req: Request<rpc::RemoveRequest>,
    ) -> Result<Response<rpc::RemoveReply>, Status> {
        let req = req.into_inner();
        let key = parse_key(&req.key)?;
        if req.before_ms.is_some() && !req.boot_id.is_empty() && req.boot_id != self.boot_id {
            return Err(Status::failed_precondition(format!(
                "the deadline refers to clock {} but this agent's clock is {}",
                req.boot_id, self.boot_id
            )));
        }
        let outcome = self
            .locks
            .remove_unless_locked(
                &key,
                || {
                    if let Some(before) = req.before_ms {
                        let now = self.clock_ms();
                        if now >= before {
                            return Err(format!(
                                "not removed: deadline passed ({now} ms >= {before} ms)"
                            ));
                        }
                    }
                    Ok(())
                },
                &self.store,
            )
            .await;
        let reply = match outcome {
            Ok(()) => {
                info!(%key, "removed");
                rpc::RemoveReply { removed: true, error: String::new() }
            }
            Err(error) => rpc::RemoveReply { removed: false, error },
        };
        Ok(Response::new(reply))
    }

    async fn get_timestamp(
        &self,
        _: Request<rpc::TimestampRequest>,
    ) -> Result<Response<rpc::TimestampReply>, Status> {
        let ms = self.clock_ms();
        Ok(Response::new(rpc::TimestampReply {
            timestamp: ms / 1000,
            boot_id: self.boot_id.clone(),
            timestamp_ms: ms,
        }))
    }

    async fn put_offset(
        &self,
        req: Request<rpc::KeyRequest>,
    ) -> Result<Response<rpc::PutOffsetReply>, Status> {
        let key = parse_key(&req.get_ref().key)?;
        let reply = if self.store.object_size(&key).await?.is_some() {
            rpc::PutOffsetReply { already_have: true, offset: 0 }
        } else {
            rpc::PutOffsetReply { already_have: false, offset: self.store.partial_len(&key).await? }
        };
        Ok(Response::new(reply))
    }

    async fn put(
        &self,
        req: Request<Streaming<rpc::PutRequest>>,
    ) -> Result<Response<rpc::PutReply>, Status> {
        let mut stream = req.into_inner();
        let header = match stream.message().await? {
            Some(rpc::PutRequest { msg: Some(put_request::Msg::Header(h)) }) => h,
            _ => return Err(Status::invalid_argument("put stream must start with a header")),
        };
        let key = parse_key(&header.key)?;
        let _active = Active::enter(&self.active);
        if self.store.object_size(&key).await?.is_some() {
            return Ok(Response::new(rpc::PutReply { stored: true, error: String::new() }));
        }
        if header.data_present {
            return Ok(Response::new(put_failed(format!("{key} is not present here"))));
        }
        let _upload = self.uploads.begin(&key, UPLOAD_WAIT).await.ok_or_else(|| {
            Status::aborted(format!("another upload of {key} to this node is still under way"))
        })?;
        let reply = self.receive_put(&key, &header, &mut stream).await?;
        Ok(Response::new(reply))
    }

    type ListKeysStream = ReceiverStream<Result<rpc::ListKeysReply, Status>>;

    async fn list_keys(
        &self,
        _: Request<rpc::ListKeysRequest>,
    ) -> Result<Response<Self::ListKeysStream>, Status> {
        Ok(Response::new(list::list_keys(self.store.clone())))
    }

    type GetStream = ReceiverStream<Result<rpc::GetReply, Status>>;

    async fn get(
        &self,
        req: Request<rpc::GetRequest>,
    ) -> Result<Response<Self::GetStream>, Status> {
        let req = req.into_inner();
        let key = parse_key(&req.key)?;
        let path = self.store.object_path(&key);
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Status::not_found(format!("{key} is not present")));
            }
            Err(e) => return Err(Status::internal(format!("cannot open {}: {e}", path.display()))),
        };
        let size = file.metadata().await.map_err(|e| Status::internal(e.to_string()))?.len();
        if req.offset > size {
            return Err(Status::invalid_argument(format!(
                "offset {} is beyond the size {size} of {key}",
                req.offset
            )));
        }
        file.seek(std::io::SeekFrom::Start(req.offset))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let length = size - req.offset;
        info!(%key, offset = req.offset, length, "serving get");
        let (tx, rx) = mpsc::channel(4);
        let active = Active::enter(&self.active);
        let file = file.into_std().await;
        self.tasks.spawn(async move {
            let _active = active;
            let msg = |m| Ok(rpc::GetReply { msg: Some(m) });
            if tx.send(msg(get_reply::Msg::Header(rpc::GetHeader { length }))).await.is_err() {
                return;
            }
            let mut sent = 0u64;
            let mut file = Some(file);
            loop {
                // Each chunk is read straight into the buffer it is sent in,
                // on a blocking thread held only for the read (a slow client
                // must not pin a thread); the channel lets reads run ahead.
                let mut f = file.take().expect("the file is put back after every read");
                let (f, read) = tokio::task::spawn_blocking(move || {
                    let read = read_chunk(&mut f, rpc::CHUNK_SIZE);
                    (f, read)
                })
                .await
                .expect("read task panicked");
                file = Some(f);
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
            let _ = tx.send(msg(get_reply::Msg::End(rpc::GetEnd { valid: sent == length }))).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
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
        write_upload(store, key, offset, length, rx)
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
