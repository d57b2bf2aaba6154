//! Prometheus counters and gauges operators scrape from the coordinator
//! (`--metrics ADDR`, `GET /metrics`): repair's progress and what the
//! agents' heartbeats say of each node. Read-only, and off unless asked for.

use std::fmt::Write;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tracing::info;

use super::core::Core;
use super::repair::Repairer;
use crate::rpc;
use crate::tasks::{SHUTDOWN_GRACE, Tasks, serve_until};

#[derive(Clone)]
struct Sources {
    core: Arc<Core>,
    repair: Arc<Repairer>,
}

/// Serves `/metrics` on `listener` until the coordinator stops.
pub fn spawn(listener: TcpListener, core: Arc<Core>, repair: Arc<Repairer>, tasks: &Tasks) {
    let app = Router::new().route("/metrics", get(metrics)).with_state(Sources { core, repair });
    let token = tasks.token().clone();
    tasks.spawn_owned(async move {
        let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        info!(%addr, "coordinator serving metrics");
        let server = axum::serve(listener, app)
            .with_graceful_shutdown(token.clone().cancelled_owned())
            .into_future();
        let served = serve_until(server, &token, SHUTDOWN_GRACE, "coordinator metrics").await;
        if let Err(e) = served.context("coordinator metrics server failed") {
            tracing::warn!("{e:#}");
        }
    });
}

async fn metrics(State(s): State<Sources>) -> Result<String, (StatusCode, String)> {
    let fail = |e: String| (StatusCode::INTERNAL_SERVER_ERROR, e);
    let nodes = s.core.all_nodes().await.map_err(|e| fail(e.message().to_string()))?;
    let repair = s.repair.status().await.map_err(|e| fail(e.to_string()))?;
    Ok(render(&nodes, &repair))
}

/// The metrics text for `nodes` and the repair status.
pub fn render(nodes: &[rpc::NodeInfo], repair: &rpc::RepairStatusReply) -> String {
    let mut out = String::new();
    let last = repair.last.unwrap_or_default();
    let counters = [
        ("annexmesh_repair_passes_total", "Repair passes finished.", repair.passes),
        (
            "annexmesh_repair_copies_total",
            "Copies repair made, agent to agent.",
            repair.total_copies_made,
        ),
        (
            "annexmesh_repair_failures_total",
            "Copies or drain removals that failed.",
            repair.total_failures,
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    }
    let gauges = [
        ("annexmesh_repair_running", "1 while a repair pass runs.", u64::from(repair.running)),
        ("annexmesh_repair_last_keys_checked", "Keys the last pass checked.", last.keys_checked),
        (
            "annexmesh_repair_last_under_replicated",
            "Keys the last pass found below their target copies.",
            last.under_replicated,
        ),
        (
            "annexmesh_repair_last_short",
            "Keys still below their target when the last pass ended.",
            last.short,
        ),
        ("annexmesh_repair_last_bytes_copied", "Bytes the last pass copied.", last.bytes_copied),
        (
            "annexmesh_repair_last_finished_unix_ms",
            "When the last pass ended.",
            repair.last_finished_unix_ms,
        ),
    ];
    for (name, help, v) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    }
    type Gauge = (&'static str, &'static str, fn(&rpc::NodeInfo) -> u64);
    let per_node: [Gauge; 5] = [
        ("annexmesh_node_up", "1 while the node heartbeats.", |n| u64::from(n.healthy)),
        ("annexmesh_node_degraded", "1 while the node is degraded.", |n| u64::from(n.degraded)),
        ("annexmesh_node_free_bytes", "Free space the node last reported.", |n| n.free_bytes),
        ("annexmesh_node_partial_bytes", "Bytes in partial uploads the node last reported.", |n| {
            n.partial_bytes
        }),
        (
            "annexmesh_node_quarantined",
            "Corrupt copies the node quarantined since its agent started.",
            |n| n.quarantined,
        ),
    ];
    for (name, help, value) in per_node {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for n in nodes {
            let _ = writeln!(out, "{name}{{node=\"{}\",uuid=\"{}\"}} {}", n.name, n.uuid, value(n));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repair_and_node_figures_render_as_prometheus_text() {
        let nodes = vec![rpc::NodeInfo {
            name: "node1".into(),
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
        let text = render(&nodes, &repair);
        for line in [
            "annexmesh_repair_passes_total 3",
            "annexmesh_repair_copies_total 7",
            "annexmesh_repair_last_short 1",
            "annexmesh_node_degraded{node=\"node1\",uuid=\"u1\"} 1",
            "annexmesh_node_partial_bytes{node=\"node1\",uuid=\"u1\"} 4096",
            "annexmesh_node_quarantined{node=\"node1\",uuid=\"u1\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }
}
