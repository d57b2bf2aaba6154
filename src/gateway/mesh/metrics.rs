//! The gateway's view of each node, as Prometheus series rendered at each
//! scrape: what it chooses holders by, and the failures it saw.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::Mesh;
use crate::rpc;

/// See the module's documentation.
pub struct NodeCollector(pub Arc<Mesh>);

impl std::fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeCollector")
    }
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let mesh = &self.0;
        let snapshot = mesh.snapshot();
        let off = mesh.backing_off_set();
        type Series<'a> =
            (&'static str, MetricType, &'static str, Box<dyn Fn(&rpc::NodeInfo) -> u64 + 'a>);
        let series: [Series; 9] = [
            (
                "node_up",
                MetricType::Gauge,
                "1 when the coordinator reports the node healthy.",
                Box::new(|n| u64::from(n.healthy)),
            ),
            (
                "node_degraded",
                MetricType::Gauge,
                "1 when the coordinator reports the node degraded: no new content, asked last.",
                Box::new(|n| u64::from(n.degraded)),
            ),
            (
                "node_cost",
                MetricType::Gauge,
                "The node's cost; GETs prefer holders with a lower one.",
                Box::new(|n| u64::from(n.cost)),
            ),
            (
                "node_active_transfers",
                MetricType::Gauge,
                "Transfers in progress on the node, as of its last heartbeat.",
                Box::new(|n| u64::from(n.active_transfers)),
            ),
            (
                "node_gets_in_flight",
                MetricType::Gauge,
                "GETs this gateway is serving from the node.",
                Box::new(|n| u64::from(mesh.loads.in_flight(&n.uuid))),
            ),
            (
                "node_backoff",
                MetricType::Gauge,
                "1 while the gateway avoids the node after failing to reach it.",
                Box::new(|n| u64::from(off.contains(&n.uuid))),
            ),
            (
                "node_put_failures",
                MetricType::Counter,
                "PUTs to the node that failed to store (not cut short by the client).",
                Box::new(|n| mesh.failures(&n.uuid).put),
            ),
            (
                "node_data_failures",
                MetricType::Counter,
                "GET, CHECKPRESENT and REMOVE calls to the node that failed or stalled.",
                Box::new(|n| mesh.failures(&n.uuid).data),
            ),
            (
                "node_failovers",
                MetricType::Counter,
                "GETs continued on another node after this node failed mid-way.",
                Box::new(|n| mesh.failures(&n.uuid).failovers),
            ),
        ];
        for (name, kind, help, value) in series {
            let mut m = encoder.encode_descriptor(name, help, None, kind)?;
            for n in &snapshot.nodes {
                let labels = [("node", n.name.as_str()), ("uuid", n.uuid.as_str())];
                let family = m.encode_family(&labels)?;
                match kind {
                    MetricType::Counter => ConstCounter::new(value(n)).encode(family)?,
                    _ => ConstGauge::new(value(n)).encode(family)?,
                }
            }
        }
        Ok(())
    }
}

impl Mesh {
    /// The per-node series alone, as text (for tests).
    #[cfg(test)]
    pub fn render_metrics(self: &Arc<Mesh>) -> String {
        let mut registry =
            prometheus_client::registry::Registry::with_prefix(crate::metrics::PREFIX);
        registry.register_collector(Box::new(NodeCollector(self.clone())));
        crate::metrics::encode(&registry)
    }
}
