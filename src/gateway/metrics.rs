//! The gateway's Prometheus metrics, served at `GET /metrics` on its HTTP
//! listener. The front-ends and the core count into these; the per-node
//! figures come from the mesh at each scrape (`mesh::metrics`).

use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::metrics::{Labels, PREFIX, encode, latency_histogram, role_registry};

/// Latency per front-end, operation and outcome.
pub type Latency = Family<Labels, Histogram, fn() -> Histogram>;

/// See the module's documentation.
pub struct Metrics {
    registry: Registry,
    /// Content bytes received from clients in PUTs.
    pub put_client_bytes: Counter,
    /// Content bytes sent to agents in PUTs: a fan-out sends each client
    /// byte once to every target that lacks it.
    pub put_agent_bytes: Counter,
    pub puts: Counter,
    pub puts_failed: Counter,
    pub puts_interrupted: Counter,
    /// Content bytes sent to clients in GETs.
    pub get_bytes: Counter,
    pub gets: Counter,
    pub removes: Counter,
    pub removes_failed: Counter,
    /// GETs continued on another node after the serving node failed.
    pub get_failovers: Counter,
    /// Copies a node reported corrupt when asked for them; each is struck
    /// from the location log and the request served from another holder.
    pub corrupt_copies: Counter,
    /// Uploads stored on nodes whose locations could not be recorded.
    pub puts_unrecorded: Counter,
    /// Request latency, labelled `frontend` (http, line), `operation`
    /// and `outcome` (ok, refused, failed).
    pub requests: Latency,
    /// The line-protocol front-end's connections.
    pub line: LineMetrics,
}

/// The line-protocol front-end's connection counters. Their names keep the
/// `p2p` of the protocol's name, as dashboards know them.
#[derive(Default)]
pub struct LineMetrics {
    pub connections: Counter,
    pub active: Gauge,
    pub auth_failures: Counter,
    pub protocol_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = role_registry("gateway");
        let r = registry.sub_registry_with_prefix(PREFIX);
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            r.register(name, help, c.clone());
            c
        };
        let put_client_bytes =
            counter("put_client_bytes", "Content bytes received from clients in PUTs.");
        let put_agent_bytes = counter("put_agent_bytes", "Content bytes sent to agents in PUTs.");
        let puts = counter("puts", "PUT requests that reached the agents.");
        let puts_failed = counter("puts_failed", "PUTs that stored too few copies.");
        let puts_interrupted =
            counter("puts_interrupted", "PUTs whose client stopped sending mid-way.");
        let get_bytes = counter("get_bytes", "Content bytes sent to clients in GETs.");
        let gets = counter("gets", "GET requests served.");
        let removes = counter("removes", "REMOVE and REMOVE-BEFORE requests.");
        let removes_failed = counter("removes_failed", "Removes that failed on some node.");
        let get_failovers = counter(
            "get_failovers",
            "GETs continued on another node after the serving node failed.",
        );
        let corrupt_copies = counter(
            "corrupt_copies",
            "Copies nodes reported corrupt, struck from the location log.",
        );
        let puts_unrecorded = counter(
            "puts_unrecorded",
            "PUTs that stored content but could not record its locations.",
        );
        let line = LineMetrics::default();
        r.register(
            "p2p_connections",
            "Line-protocol connections accepted.",
            line.connections.clone(),
        );
        r.register(
            "p2p_connections_active",
            "Line-protocol connections open now.",
            line.active.clone(),
        );
        r.register("p2p_auth_failures", "AUTH attempts refused.", line.auth_failures.clone());
        r.register(
            "p2p_protocol_errors",
            "Connections closed for malformed or unexpected input.",
            line.protocol_errors.clone(),
        );
        let requests = Latency::new_with_constructor(latency_histogram as fn() -> Histogram);
        r.register(
            "request_duration_seconds",
            "Time from a request's arrival to its answer (a GET's: to its first byte), \
             per front-end, operation and outcome.",
            requests.clone(),
        );
        Metrics {
            registry,
            put_client_bytes,
            put_agent_bytes,
            puts,
            puts_failed,
            puts_interrupted,
            get_bytes,
            gets,
            removes,
            removes_failed,
            get_failovers,
            corrupt_copies,
            puts_unrecorded,
            requests,
            line,
        }
    }
}

impl Metrics {
    pub fn add(counter: &Counter, n: u64) {
        counter.inc_by(n);
    }

    /// Also renders what `collector` reports at each scrape (the mesh's
    /// per-node figures), under the `annexmesh_` prefix.
    pub fn with_collector(mut self, collector: Box<dyn Collector>) -> Metrics {
        self.registry.sub_registry_with_prefix(PREFIX).register_collector(collector);
        self
    }

    /// Records a request of `frontend` (http, line) doing `operation` that
    /// began at `start` and ended with `outcome` (ok, refused, failed).
    pub fn request(&self, frontend: &str, operation: &str, outcome: &str, start: Instant) {
        let labels = vec![
            ("frontend".into(), frontend.into()),
            ("operation".into(), operation.into()),
            ("outcome".into(), outcome.into()),
        ];
        self.requests.get_or_create(&labels).observe(start.elapsed().as_secs_f64());
    }

    /// The metrics text.
    pub fn render(&self) -> String {
        encode(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_counters_and_latencies_render() {
        let m = Metrics::default();
        Metrics::add(&m.line.connections, 3);
        Metrics::add(&m.line.auth_failures, 1);
        m.line.active.inc();
        m.request("http", "put", "ok", Instant::now());
        let text = m.render();
        for line in [
            "# TYPE annexmesh_p2p_connections counter",
            "annexmesh_p2p_connections_total 3",
            "annexmesh_p2p_connections_active 1",
            "annexmesh_p2p_auth_failures_total 1",
            "annexmesh_p2p_protocol_errors_total 0",
            "annexmesh_request_duration_seconds_count{frontend=\"http\",operation=\"put\",outcome=\"ok\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }
}
