//! Keeping the topology snapshot fresh: a poll every second, and the
//! coordinator's watch stream, which triggers a refresh at once on every
//! message; while the stream is up, the poll slows down and is only the
//! fallback.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Notify;
use tonic::Code;
use tracing::{debug, info, warn};

use super::Mesh;

/// How often the snapshot is refreshed while no watch stream is up.
/// Lookups that miss refresh at once, so a newly created cluster is served
/// immediately.
pub const REFRESH: Duration = Duration::from_secs(1);
/// How often it is refreshed while the stream is up: only in case the
/// stream misses something.
pub const REFRESH_WATCHED: Duration = Duration::from_secs(5);
/// A stream silent for this long (the coordinator sends a keep-alive every
/// `coordinator::watch::KEEPALIVE`) is taken for dead.
const SILENCE: Duration = Duration::from_secs(40);
/// The pause before subscribing again, doubling up to WATCH_BACKOFF_MAX
/// while subscribing fails.
const WATCH_BACKOFF_MIN: Duration = Duration::from_secs(1);
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long to wait before asking again a coordinator that has no stream.
const UNSUPPORTED_RETRY: Duration = Duration::from_secs(300);

/// What the two loops share.
#[derive(Default)]
struct Signal {
    /// Whether a stream is up.
    watching: AtomicBool,
    /// Rung on every stream message.
    refresh: Notify,
}

/// The poll loop: refreshes every `REFRESH` (or `REFRESH_WATCHED`) and
/// whenever the stream says so.
async fn poll(mesh: Weak<Mesh>, signal: Arc<Signal>) {
    let mut failing = false;
    while let Some(m) = mesh.upgrade() {
        match m.refresh().await {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                warn!("cannot refresh the topology from the coordinator: {}", e.message());
                failing = true;
            }
            Err(_) => {}
        }
        drop(m);
        let every = if signal.watching.load(Ordering::Relaxed) { REFRESH_WATCHED } else { REFRESH };
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = signal.refresh.notified() => {}
        }
    }
}

/// The watch loop: subscribes, rings the poll loop on every message, and
/// subscribes again (through the failover channel) when the stream ends.
async fn watch(mesh: Weak<Mesh>, signal: Arc<Signal>) {
    let mut delay = WATCH_BACKOFF_MIN;
    loop {
        let Some(m) = mesh.upgrade() else { return };
        let subscribed = m.control().watch_topology().await;
        drop(m);
        match subscribed {
            Ok(mut stream) => {
                debug!("watching the topology");
                signal.watching.store(true, Ordering::Relaxed);
                loop {
                    match tokio::time::timeout(SILENCE, stream.next()).await {
                        Ok(Some(Ok(msg))) => {
                            delay = WATCH_BACKOFF_MIN;
                            if !msg.keepalive {
                                signal.refresh.notify_one();
                            }
                        }
                        Ok(Some(Err(e))) => {
                            info!("the topology watch stream ended: {}", e.message());
                            break;
                        }
                        Ok(None) => {
                            info!("the topology watch stream ended");
                            break;
                        }
                        Err(_) => {
                            warn!("the topology watch stream fell silent; subscribing again");
                            break;
                        }
                    }
                }
                signal.watching.store(false, Ordering::Relaxed);
                // What changed while no stream was up.
                signal.refresh.notify_one();
            }
            Err(e) if e.code() == Code::Unimplemented => {
                info!("the coordinator has no topology watch stream; polling only");
                tokio::time::sleep(UNSUPPORTED_RETRY).await;
                continue;
            }
            Err(e) => debug!("cannot watch the topology: {}", e.message()),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(WATCH_BACKOFF_MAX);
    }
}

impl Mesh {
    /// Refreshes the snapshot, and sends the failure reports, in the
    /// background until the gateway stops.
    pub fn spawn_refresh(self: &Arc<Self>, tasks: &crate::tasks::Tasks) {
        self.spawn_reports(tasks);
        let signal = Arc::new(Signal::default());
        tasks.spawn(poll(Arc::downgrade(self), signal.clone()));
        tasks.spawn(watch(Arc::downgrade(self), signal));
    }
}

#[cfg(test)]
mod tests;
