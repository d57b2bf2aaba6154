//! Content locks and removal: a lock keeps its content from being removed
//! until it is released, or for the protocol's safety window when its
//! holder goes away without releasing it.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use tracing::{debug, info};

use super::{AgentService, parse_key};
use crate::agent::locks::LockGuard;
use crate::p2p::LOCK_SAFETY_WINDOW;
use crate::p2p::key::Key;
use crate::rpc::{self, lock_request};

/// The replies to a lock request: whether it was granted.
pub(super) type LockStream = ReceiverStream<Result<rpc::LockReply, Status>>;

impl AgentService {
    /// Locks the content the stream's first message names, if present, and
    /// holds the lock until the stream asks to unlock.
    pub(super) async fn serve_lock(
        &self,
        mut inbound: Streaming<rpc::LockRequest>,
    ) -> Result<LockStream, Status> {
        let key = match inbound.message().await? {
            Some(rpc::LockRequest { msg: Some(lock_request::Msg::Key(k)) }) => parse_key(&k)?,
            _ => return Err(Status::invalid_argument("lock stream must start with a key")),
        };
        let (tx, rx) = mpsc::channel(1);
        // Take the lock before looking, so a remove cannot slip in between.
        let Some(guard) = self.locks.lock(&key).await else {
            info!(%key, "not locked: this node holds as many locks as it may (--max-locks)");
            let _ = tx
                .send(Ok(rpc::LockReply { locked: false, error: "too many locks held".into() }))
                .await;
            return Ok(ReceiverStream::new(rx));
        };
        let present = self.store.object_size(&key).await?.is_some();
        let reply = |locked| Ok(rpc::LockReply { locked, error: String::new() });
        if !present {
            drop(guard);
            let _ = tx.send(reply(false)).await;
            return Ok(ReceiverStream::new(rx));
        }
        let _ = tx.send(reply(true)).await;
        debug!(%key, "locked");
        let locked_at = tokio::time::Instant::now();
        self.tasks.spawn(hold(key, guard, inbound, tx, locked_at));
        Ok(ReceiverStream::new(rx))
    }

    /// Removes the content unless it is locked or the request's deadline
    /// (on this agent's clock) has passed.
    pub(super) async fn serve_remove(
        &self,
        req: rpc::RemoveRequest,
    ) -> Result<rpc::RemoveReply, Status> {
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
        Ok(match outcome {
            Ok(()) => {
                info!(%key, "removed");
                rpc::RemoveReply { removed: true, error: String::new() }
            }
            Err(error) => rpc::RemoveReply { removed: false, error },
        })
    }
}

/// Holds a granted lock until an explicit unlock. A stream that ends without
/// one means the gateway or its client went away, and the client may still
/// count on the lock: it is kept for the protocol's safety window, counted
/// from when it was granted.
async fn hold(
    key: Key,
    guard: LockGuard,
    mut inbound: Streaming<rpc::LockRequest>,
    tx: mpsc::Sender<Result<rpc::LockReply, Status>>,
    locked_at: tokio::time::Instant,
) {
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
}
