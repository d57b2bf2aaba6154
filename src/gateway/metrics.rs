//! Counters an operator scrapes from `GET /metrics` (Prometheus text format).
//! The front-ends count into these types; this module depends on none of them.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Metrics {
    /// Content bytes received from clients in PUTs.
    pub put_client_bytes: AtomicU64,
    /// Content bytes sent to agents in PUTs: a fan-out sends each client
    /// byte once to every target that lacks it.
    pub put_agent_bytes: AtomicU64,
    pub puts: AtomicU64,
    pub puts_failed: AtomicU64,
    pub puts_interrupted: AtomicU64,
    /// Content bytes sent to clients in GETs.
    pub get_bytes: AtomicU64,
    pub gets: AtomicU64,
    pub removes: AtomicU64,
    pub removes_failed: AtomicU64,
    /// GETs continued on another node after the serving node failed.
    pub get_failovers: AtomicU64,
    /// Copies a node reported corrupt when asked for them; each is struck
    /// from the location log and the request served from another holder.
    pub corrupt_copies: AtomicU64,
    /// Uploads stored on nodes whose locations could not be recorded.
    pub puts_unrecorded: AtomicU64,
    /// The line-protocol front-end's connections.
    pub line: LineMetrics,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, c) in [
            (
                "annexmesh_put_client_bytes_total",
                "Content bytes received from clients in PUTs.",
                &self.put_client_bytes,
            ),
            (
                "annexmesh_put_agent_bytes_total",
                "Content bytes sent to agents in PUTs.",
                &self.put_agent_bytes,
            ),
            ("annexmesh_puts_total", "PUT requests that reached the agents.", &self.puts),
            ("annexmesh_puts_failed_total", "PUTs that stored too few copies.", &self.puts_failed),
            (
                "annexmesh_puts_interrupted_total",
                "PUTs whose client stopped sending mid-way.",
                &self.puts_interrupted,
            ),
            (
                "annexmesh_get_bytes_total",
                "Content bytes sent to clients in GETs.",
                &self.get_bytes,
            ),
            ("annexmesh_gets_total", "GET requests served.", &self.gets),
            ("annexmesh_removes_total", "REMOVE and REMOVE-BEFORE requests.", &self.removes),
            (
                "annexmesh_removes_failed_total",
                "Removes that failed on some node.",
                &self.removes_failed,
            ),
            (
                "annexmesh_get_failovers_total",
                "GETs continued on another node after the serving node failed.",
                &self.get_failovers,
            ),
            (
                "annexmesh_corrupt_copies_total",
                "Copies nodes reported corrupt, struck from the location log.",
                &self.corrupt_copies,
            ),
            (
                "annexmesh_puts_unrecorded_total",
                "PUTs that stored content but could not record its locations.",
                &self.puts_unrecorded,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.load(Ordering::Relaxed)
            );
        }
        out + &self.line.render()
    }
}

/// The line-protocol front-end's connection counters. Their names keep the
/// `p2p` of the protocol's name, as dashboards know them.
#[derive(Default)]
pub struct LineMetrics {
    pub connections: AtomicU64,
    pub active: AtomicU64,
    pub auth_failures: AtomicU64,
    pub protocol_errors: AtomicU64,
}

impl LineMetrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, kind, help, c) in [
            (
                "annexmesh_p2p_connections_total",
                "counter",
                "Line-protocol connections accepted.",
                &self.connections,
            ),
            (
                "annexmesh_p2p_connections_active",
                "gauge",
                "Line-protocol connections open now.",
                &self.active,
            ),
            (
                "annexmesh_p2p_auth_failures_total",
                "counter",
                "AUTH attempts refused.",
                &self.auth_failures,
            ),
            (
                "annexmesh_p2p_protocol_errors_total",
                "counter",
                "Connections closed for malformed or unexpected input.",
                &self.protocol_errors,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                c.load(Ordering::Relaxed)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_metrics_render_as_before() {
        let m = Metrics::default();
        Metrics::add(&m.line.connections, 3);
        Metrics::add(&m.line.auth_failures, 1);
        let text = m.render();
        assert!(text.ends_with(
            "# HELP annexmesh_p2p_connections_total Line-protocol connections accepted.\n\
             # TYPE annexmesh_p2p_connections_total counter\n\
             annexmesh_p2p_connections_total 3\n\
             # HELP annexmesh_p2p_connections_active Line-protocol connections open now.\n\
             # TYPE annexmesh_p2p_connections_active gauge\n\
             annexmesh_p2p_connections_active 0\n\
             # HELP annexmesh_p2p_auth_failures_total AUTH attempts refused.\n\
             # TYPE annexmesh_p2p_auth_failures_total counter\n\
             annexmesh_p2p_auth_failures_total 1\n\
             # HELP annexmesh_p2p_protocol_errors_total \
             Connections closed for malformed or unexpected input.\n\
             # TYPE annexmesh_p2p_protocol_errors_total counter\n\
             annexmesh_p2p_protocol_errors_total 0\n"
        ));
    }
}
