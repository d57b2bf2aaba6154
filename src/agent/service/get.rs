//! Serving GETs: an object's content from an offset on, as a header with
//! the length, data chunks and an end marker saying whether all of it was
//! sent.

use tokio::io::AsyncSeekExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::{debug, info};

use super::{Active, AgentService, parse_key, read_chunk};
use crate::p2p::key::Key;
use crate::rpc::{self, get_reply};

/// The replies to a GET.
pub(super) type GetStream = ReceiverStream<Result<rpc::GetReply, Status>>;

type Replies = mpsc::Sender<Result<rpc::GetReply, Status>>;

impl AgentService {
    /// Opens the object and streams it from the requested offset on a task
    /// of its own; the transfer counts as active until the stream ends.
    pub(super) async fn serve_get(&self, req: rpc::GetRequest) -> Result<GetStream, Status> {
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
            send_file(key, file, length, tx).await;
        });
        Ok(ReceiverStream::new(rx))
    }
}

/// Sends the header, then `file` from its current position to the end, then
/// the end marker: valid when exactly `length` bytes were sent.
async fn send_file(key: Key, file: std::fs::File, length: u64, tx: Replies) {
    let msg = |m| Ok(rpc::GetReply { msg: Some(m) });
    if tx.send(msg(get_reply::Msg::Header(rpc::GetHeader { length }))).await.is_err() {
        return;
    }
    let mut sent = 0u64;
    let mut file = Some(file);
    loop {
        // Each chunk is read straight into the buffer it is sent in, on a
        // blocking thread held only for the read (a slow client must not
        // pin a thread); the channel lets reads run ahead.
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
}
