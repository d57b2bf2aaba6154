//! The agent's Prometheus metrics (`--metrics ADDR`, `GET /metrics`): its
//! store's space, scrub progress, registration, and the gRPC latencies,
//! besides `process_*` and build info.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::metrics::grpc::{TimingLayer, timing_layer};
use crate::metrics::{PREFIX, Scrape, encode, role_registry};

type U64Gauge = Gauge<u64, AtomicU64>;

/// See the module's documentation.
pub struct AgentMetrics {
    registry: Registry,
    /// The store's directory, measured at each scrape.
    root: PathBuf,
    free: U64Gauge,
    size: U64Gauge,
    /// As of the last heartbeat.
    pub partial: U64Gauge,
    pub quarantined: U64Gauge,
    pub active: U64Gauge,
    /// 1 while the coordinator knows this agent.
    pub registered: U64Gauge,
    /// 1 while the store's last write check passed.
    pub writable: U64Gauge,
    pub scrub_passes: Counter,
    pub scrub_objects: Counter,
    pub scrub_bytes: Counter,
    pub scrub_corrupt: Counter,
    timing: TimingLayer,
}

impl AgentMetrics {
    /// Metrics of the agent whose store is at `root`.
    pub fn new(root: PathBuf) -> AgentMetrics {
        let mut registry = role_registry("agent");
        let r = registry.sub_registry_with_prefix(PREFIX);
        let (free, size) = (U64Gauge::default(), U64Gauge::default());
        r.register_with_unit(
            "store_free",
            "Free space on the store's file system.",
            Unit::Bytes,
            free.clone(),
        );
        r.register_with_unit(
            "store_size",
            "Size of the store's file system.",
            Unit::Bytes,
            size.clone(),
        );
        let partial = U64Gauge::default();
        r.register_with_unit(
            "store_partial",
            "Bytes held in partial uploads.",
            Unit::Bytes,
            partial.clone(),
        );
        let gauges: [(&str, &str, U64Gauge); 4] = [
            (
                "store_quarantined",
                "Corrupt copies quarantined since the agent started.",
                U64Gauge::default(),
            ),
            ("active_transfers", "Transfers in progress.", U64Gauge::default()),
            ("registered", "1 while the coordinator knows this agent.", U64Gauge::default()),
            ("store_writable", "1 while the store's last write check passed.", U64Gauge::default()),
        ];
        for (name, help, g) in &gauges {
            r.register(*name, *help, g.clone());
        }
        let [quarantined, active, registered, writable] = gauges.map(|g| g.2);
        let c = Counter::default;
        let (scrub_passes, scrub_objects, scrub_bytes, scrub_corrupt) = (c(), c(), c(), c());
        r.register("scrub_passes", "Scrub passes finished.", scrub_passes.clone());
        r.register("scrub_objects", "Objects the scrubber verified.", scrub_objects.clone());
        r.register_with_unit(
            "scrub_read",
            "Bytes the scrubber read to verify objects.",
            Unit::Bytes,
            scrub_bytes.clone(),
        );
        r.register(
            "scrub_corrupt",
            "Corrupt copies the scrubber found and quarantined.",
            scrub_corrupt.clone(),
        );
        let timing = timing_layer(r);
        AgentMetrics {
            registry,
            root,
            free,
            size,
            partial,
            quarantined,
            active,
            registered,
            writable,
            scrub_passes,
            scrub_objects,
            scrub_bytes,
            scrub_corrupt,
            timing,
        }
    }

    /// The layer timing the agent's gRPC calls into this registry.
    pub fn timing(&self) -> TimingLayer {
        self.timing.clone()
    }

    /// Counts one finished scrub pass.
    pub fn scrubbed(&self, pass: &super::scrub::Pass) {
        self.scrub_passes.inc();
        self.scrub_objects.inc_by(pass.objects);
        self.scrub_bytes.inc_by(pass.bytes);
        self.scrub_corrupt.inc_by(pass.bad);
    }
}

impl Scrape for AgentMetrics {
    fn scrape(&self) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>> {
        Box::pin(async move {
            if let Ok(s) = nix::sys::statvfs::statvfs(&self.root) {
                self.free.set(s.blocks_available() * s.fragment_size());
                self.size.set(s.blocks() * s.fragment_size());
            }
            Ok(encode(&self.registry))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn store_space_and_scrub_progress_render() {
        let dir = tempfile::tempdir().unwrap();
        let m = AgentMetrics::new(dir.path().to_path_buf());
        let pass =
            super::super::scrub::Pass { objects: 2, bytes: 23, bad: 1, ..Default::default() };
        m.scrubbed(&pass);
        let text = m.scrape().await.unwrap();
        for line in [
            "annexmesh_scrub_objects_total 2",
            "annexmesh_scrub_read_bytes_total 23",
            "annexmesh_scrub_corrupt_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        let free = text.lines().find_map(|l| l.strip_prefix("annexmesh_store_free_bytes "));
        assert!(free.is_some_and(|v| v.parse::<u64>().unwrap() > 0), "{text}");
    }
}
