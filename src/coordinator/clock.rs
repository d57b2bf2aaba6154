//! The cluster clock behind GETTIMESTAMP: one monotonic clock for every
//! gateway, that never runs backwards, also across coordinator restarts.
//!
//! A lease is persisted ahead of the clock: after a restart (or a crash) the
//! clock resumes at the lease, which is never below any value handed out.
//! Jumping forward is harmless for REMOVE-BEFORE: it only makes deadlines
//! pass sooner, never later.
//!
//! On a store that several coordinators share, the clock is the store's:
//! every reading goes through it (`Backend::shared_clock_ms`), so readings
//! through any coordinator never run backwards, whichever is asked.

use crate::tasks::Tasks;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::Stopwatch;

use super::store::{Result, Store};

const LEASE_MS: u64 = 60_000;
const META_LEASE: &str = "clock_lease_ms";

pub struct ClusterClock {
    base_ms: u64,
    started: Stopwatch,
    lease_ms: AtomicU64,
    /// The store, when the clock is the shared store's.
    shared: Option<Arc<Store>>,
    /// The largest value handed out here, a floor for the next.
    last_ms: AtomicU64,
}

impl ClusterClock {
    /// Resumes the clock at the persisted lease and persists the next one;
    /// on a shared store, reads the store's clock instead.
    pub async fn open(store: &Arc<Store>) -> Result<ClusterClock> {
        let base_ms = store.meta(META_LEASE).await?.unwrap_or(1000);
        let clock = |lease| ClusterClock {
            base_ms,
            started: Stopwatch::start(),
            lease_ms: AtomicU64::new(lease),
            shared: None,
            last_ms: AtomicU64::new(0),
        };
        if store.shared() {
            // The lease of a store moved here from an embedded one is a floor.
            let first = store.shared_clock_ms(base_ms).await?;
            return Ok(ClusterClock { shared: Some(store.clone()), ..clock(first) });
        }
        let lease = base_ms + LEASE_MS;
        store.set_meta(META_LEASE, lease).await?;
        Ok(clock(lease))
    }

    /// The cluster's time in milliseconds.
    pub async fn now(&self) -> Result<u64> {
        let Some(store) = &self.shared else { return Ok(self.now_ms()) };
        let ms = store.shared_clock_ms(self.last_ms.load(Ordering::Acquire)).await?;
        self.last_ms.fetch_max(ms, Ordering::AcqRel);
        Ok(ms)
    }

    /// The embedded store's clock in milliseconds.
    fn now_ms(&self) -> u64 {
        // Never hand out a value at or past the persisted lease: should the
        // renewal fall behind, the clock waits at the lease instead.
        let t = self.base_ms + self.started.elapsed_ms();
        t.min(self.lease_ms.load(Ordering::Acquire) - 1)
    }

    /// Extends the lease when less than half of it remains.
    pub async fn renew(&self, store: &Store) -> Result<()> {
        if self.shared.is_some() {
            return Ok(());
        }
        let now = self.base_ms + self.started.elapsed_ms();
        if now + LEASE_MS / 2 > self.lease_ms.load(Ordering::Acquire) {
            let lease = now + LEASE_MS;
            store.set_meta(META_LEASE, lease).await?;
            self.lease_ms.store(lease, Ordering::Release);
        }
        Ok(())
    }

    /// Renews the lease every few seconds, until the coordinator stops.
    pub fn spawn_renewal(self: &Arc<Self>, store: Arc<Store>, tasks: &Tasks) {
        let clock = self.clone();
        tasks.spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                if let Err(e) = clock.renew(&store).await {
                    tracing::error!("cannot persist the cluster clock: {e}");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn clock_never_goes_back_across_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let c1 = ClusterClock::open(&store).await.unwrap();
        let t1 = c1.now_ms();
        let _ = c1;
        let c2 = ClusterClock::open(&store).await.unwrap();
        assert!(c2.now_ms() > t1);
        let t2 = c2.now_ms();
        std::thread::sleep(Duration::from_millis(5));
        assert!(c2.now_ms() >= t2);
    }
}
