//! Counters an operator scrapes from `GET /metrics` (Prometheus text format).

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
    /// The line-protocol front-end's connections.
    pub p2p: super::p2p::P2pMetrics,
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
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.load(Ordering::Relaxed)
            );
        }
        out + &self.p2p.render()
    }
}
