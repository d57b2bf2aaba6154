//! The topology watch stream: a gateway hears at once when clusters, nodes,
//! their settings or their health change, and reads the topology then,
//! instead of finding out on its next poll.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior, interval_at};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::core::Core;
use crate::rpc;

/// A message at least this often, so that a dead stream is noticed by the
/// gateway and kept open through idle-closing middleboxes.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// How often node health, which the store does not announce, is compared
/// with what the stream last reported.
const HEALTH_CHECK: Duration = Duration::from_secs(1);

/// What one subscriber receives.
pub type WatchStream = ReceiverStream<Result<rpc::TopologyChanged, Status>>;

/// What routing depends on: the topology without the figures that move
/// with every heartbeat (free space, transfers, last seen).
async fn routing_view(core: &Core) -> Option<(Vec<rpc::ClusterInfo>, Vec<rpc::NodeInfo>)> {
    let clusters = core.all_clusters().await.ok()?;
    let mut nodes = core.all_nodes().await.ok()?;
    for n in &mut nodes {
        n.last_seen_unix_ms = 0;
        n.free_bytes = 0;
        n.active_transfers = 0;
        n.partial_bytes = 0;
    }
    Some((clusters, nodes))
}

/// A stream with the current version now, then a message after every
/// change and every `KEEPALIVE`; it ends when the subscriber goes.
pub fn watch(core: Arc<Core>) -> WatchStream {
    let (tx, rx) = mpsc::channel(4);
    let mut changes = core.store.subscribe_changes();
    tokio::spawn(async move {
        let mut version = *changes.borrow_and_update();
        let mut last = routing_view(&core).await;
        let mut keepalive = interval_at(Instant::now() + KEEPALIVE, KEEPALIVE);
        let mut health = interval_at(Instant::now() + HEALTH_CHECK, HEALTH_CHECK);
        health.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // What to send next: None, or whether it is only a keep-alive.
        let mut send = Some(false);
        loop {
            if let Some(idle) = send {
                keepalive.reset();
                let msg = rpc::TopologyChanged { version, keepalive: idle };
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
            send = tokio::select! {
                _ = tx.closed() => return,
                changed = changes.changed() => {
                    if changed.is_err() {
                        // The store is gone: the coordinator is stopping.
                        return;
                    }
                    version = *changes.borrow_and_update();
                    last = routing_view(&core).await;
                    Some(false)
                }
                _ = keepalive.tick() => Some(true),
                _ = health.tick() => {
                    let now = routing_view(&core).await;
                    if now.is_some() && now != last {
                        last = now;
                        Some(false)
                    } else {
                        None
                    }
                }
            };
        }
    });
    ReceiverStream::new(rx)
}
