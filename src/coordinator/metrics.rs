//! The coordinator's Prometheus metrics (`--metrics ADDR`, `GET /metrics`):
//! repair's progress and what the agents' heartbeats say of each node, read
//! from the store at each scrape, besides `process_*`, build info and the
//! gRPC latencies. Read-only, and off unless asked for.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::core::Core;
use super::repair::Repairer;
use crate::metrics::grpc::{TimingLayer, timing_layer};
use crate::metrics::{PREFIX, Scrape, encode, role_registry};
use crate::rpc;

/// What a scrape read from the store.
#[derive(Debug, Default)]
struct Figures {
    nodes: Vec<rpc::NodeInfo>,
    repair: rpc::RepairStatusReply,
}

/// Renders the latest [`Figures`].
#[derive(Debug, Default, Clone)]
struct FiguresCollector(Arc<Mutex<Figures>>);

/// The coordinator's registry and what fills it.
pub struct CoordinatorMetrics {
    registry: Registry,
    figures: FiguresCollector,
    core: Arc<Core>,
    repair: Arc<Repairer>,
    /// Serialises scrapes: each refreshes the figures, then renders them.
    scraping: tokio::sync::Mutex<()>,
    timing: TimingLayer,
}

impl CoordinatorMetrics {
    pub fn new(core: Arc<Core>, repair: Arc<Repairer>) -> CoordinatorMetrics {
        let mut registry = role_registry("coordinator");
        let figures = FiguresCollector::default();
        let sub = registry.sub_registry_with_prefix(PREFIX);
        sub.register_collector(Box::new(figures.clone()));
        let timing = timing_layer(sub);
        CoordinatorMetrics { registry, figures, core, repair, scraping: Default::default(), timing }
    }

    /// The layer timing the coordinator's gRPC calls into this registry.
    pub fn timing(&self) -> TimingLayer {
        self.timing.clone()
    }
}

impl Scrape for CoordinatorMetrics {
    fn scrape(&self) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>> {
        Box::pin(async move {
            let _one = self.scraping.lock().await;
            let nodes = self.core.all_nodes().await.map_err(|e| e.message().to_string())?;
            let repair = self.repair.status().await.map_err(|e| e.to_string())?;
            *self.figures.0.lock().unwrap() = Figures { nodes, repair };
            Ok(encode(&self.registry))
        })
    }
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    ConstCounter::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    ConstGauge::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Collector for FiguresCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let f = self.0.lock().unwrap();
        let repair = &f.repair;
        let last = repair.last.unwrap_or_default();
        counter(&mut e, "repair_passes", "Repair passes finished.", repair.passes)?;
        counter(
            &mut e,
            "repair_copies",
            "Copies repair made, agent to agent.",
            repair.total_copies_made,
        )?;
        counter(
            &mut e,
            "repair_failures",
            "Copies or drain removals that failed.",
            repair.total_failures,
        )?;
        let gauges = [
            ("repair_running", "1 while a repair pass runs.", u64::from(repair.running)),
            (
                "repair_backlog_keys",
                "Keys still below their target copies when the last repair pass ended.",
                last.short,
            ),
            ("repair_last_keys_checked", "Keys the last pass checked.", last.keys_checked),
            (
                "repair_last_under_replicated",
                "Keys the last pass found below their target copies.",
                last.under_replicated,
            ),
            (
                "repair_last_short",
                "Keys still below their target when the last pass ended.",
                last.short,
            ),
            ("repair_last_copied_bytes", "Bytes the last pass copied.", last.bytes_copied),
            (
                "repair_last_finished_timestamp_seconds",
                "When the last pass ended, in seconds since the epoch (0: never).",
                repair.last_finished_unix_ms / 1000,
            ),
            ("repair_draining_nodes", "Nodes being drained.", repair.draining.len() as u64),
        ];
        for (name, help, v) in gauges {
            gauge(&mut e, name, help, v)?;
        }
        type Series = (&'static str, &'static str, fn(&rpc::NodeInfo) -> u64);
        let per_node: [Series; 6] = [
            ("node_up", "1 while the node heartbeats.", |n| u64::from(n.healthy)),
            ("node_degraded", "1 while the node is degraded.", |n| u64::from(n.degraded)),
            ("node_free_bytes", "Free space the node last reported.", |n| n.free_bytes),
            ("node_partial_bytes", "Bytes in partial uploads the node last reported.", |n| {
                n.partial_bytes
            }),
            (
                "node_quarantined",
                "Corrupt copies the node quarantined since its agent started.",
                |n| n.quarantined,
            ),
            (
                "node_active_transfers",
                "Transfers in progress on the node, as last reported.",
                |n| u64::from(n.active_transfers),
            ),
        ];
        for (name, help, value) in per_node {
            let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for n in &f.nodes {
                let labels = [("node", n.name.as_str()), ("uuid", n.uuid.as_str())];
                ConstGauge::new(value(n)).encode(m.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repair_and_node_figures_render_as_prometheus_text() {
        let nodes = vec![rpc::NodeInfo {
            name: "node\"1".into(),
            uuid: "u1".into(),
            healthy: true,
            degraded: true,
            partial_bytes: 4096,
            quarantined: 2,
            ..Default::default()
        }];
        let repair = rpc::RepairStatusReply {
            passes: 3,
            total_copies_made: 7,
            last: Some(rpc::RepairCounts { short: 1, ..Default::default() }),
            ..Default::default()
        };
        let figures = FiguresCollector::default();
        *figures.0.lock().unwrap() = Figures { nodes, repair };
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register_collector(Box::new(figures));
        let text = encode(&registry);
        for line in [
            "annexmesh_repair_passes_total 3",
            "annexmesh_repair_copies_total 7",
            "annexmesh_repair_last_short 1",
            "annexmesh_repair_backlog_keys 1",
            "annexmesh_node_degraded{node=\"node\\\"1\",uuid=\"u1\"} 1",
            "annexmesh_node_partial_bytes{node=\"node\\\"1\",uuid=\"u1\"} 4096",
            "annexmesh_node_quarantined{node=\"node\\\"1\",uuid=\"u1\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }
}
