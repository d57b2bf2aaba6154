//! `ListKeys`: every key the node holds complete, streamed in batches so
//! that no reply holds a whole store's list.

use std::path::Path;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::agent::store::Store;
use crate::rpc;

/// Keys per reply.
const BATCH: usize = 1000;

/// Walks the store on a blocking thread, sending batches as it goes; the
/// walk stops when the caller goes away.
pub(super) fn list_keys(store: Store) -> ReceiverStream<Result<rpc::ListKeysReply, Status>> {
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let objects = store.root().join("annex/objects");
        let mut batch = Vec::with_capacity(BATCH);
        let result = walk(&objects, &mut |key| {
            batch.push(key);
            if batch.len() < BATCH {
                return true;
            }
            let keys = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            tx.blocking_send(Ok(rpc::ListKeysReply { keys })).is_ok()
        });
        let last = match result {
            Ok(()) => Ok(rpc::ListKeysReply { keys: batch }),
            Err(e) => Err(Status::internal(format!("cannot list {}: {e}", objects.display()))),
        };
        let _ = tx.blocking_send(last);
    });
    ReceiverStream::new(rx)
}

/// Calls `found` with each complete object's key under `objects`
/// (`<h1>/<h2>/KEY/KEY`) until it returns false.
fn walk(objects: &Path, found: &mut dyn FnMut(String) -> bool) -> std::io::Result<()> {
    for h1 in subdirs(objects)? {
        for h2 in subdirs(&h1)? {
            for dir in subdirs(&h2)? {
                let Some(key) = dir.file_name().and_then(|n| n.to_str()) else { continue };
                // Only complete objects that name a valid key.
                if dir.join(key).is_file()
                    && key.parse::<crate::p2p::key::Key>().is_ok()
                    && !found(key.to_string())
                {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

fn subdirs(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.push(p);
        }
    }
    Ok(out)
}
