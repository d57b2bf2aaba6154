//! `annexmesh admin node ...` and `admin wanted`: the nodes, their health
//! and the operators' settings on them.

use serde_json::{Value, json};

use super::cli::NodeCommand;
use super::connect::Client;
use super::output::{Out, Table, age_secs, human_age, human_bytes};
use super::{repair, status};
use crate::names::Named;
use crate::rpc;

/// "up", "degraded", "down", or "-" for a removed node.
pub(super) fn health(n: &rpc::NodeInfo) -> &'static str {
    match (n.removed, n.healthy, n.degraded) {
        (true, _, _) => "-",
        (false, true, true) => "degraded",
        (false, true, false) => "up",
        (false, false, _) => "down",
    }
}

/// "active", "draining", "removed" or "lost".
pub(super) fn state(n: &rpc::NodeInfo) -> &'static str {
    match (n.removed, n.lost, n.draining) {
        (true, true, _) => "lost",
        (true, false, _) => "removed",
        (false, _, true) => "draining",
        (false, _, false) => "active",
    }
}

/// Whether the node ever reported (free space is unknown before).
fn reported(n: &rpc::NodeInfo) -> bool {
    n.last_seen_unix_ms != 0 && !n.removed
}

/// A node for --json: sizes in bytes, ages in seconds, null when unknown.
pub(super) fn node_json(
    n: &rpc::NodeInfo,
    clusters: &[rpc::ClusterInfo],
    draining: &[rpc::DrainProgress],
) -> Value {
    let left = draining.iter().find(|d| d.node_uuid == n.uuid && d.counted).map(|d| d.keys_left);
    let cluster = clusters.iter().find(|c| c.uuid == n.cluster_uuid).map(|c| c.name.clone());
    json!({
        "name": n.name,
        "uuid": n.uuid,
        "cluster": cluster,
        "cluster_uuid": n.cluster_uuid,
        "health": health(n),
        "state": state(n),
        "address": n.address,
        "free_bytes": reported(n).then_some(n.free_bytes),
        "last_heard_seconds": if n.removed { None } else { age_secs(n.last_seen_unix_ms) },
        "active_transfers": n.active_transfers,
        "wanted": n.wanted,
        "cost": n.cost,
        "keys_left": left,
        "partial_bytes": n.partial_bytes,
        "quarantined": n.quarantined,
    })
}

/// The nodes' table for people.
pub(super) fn table(
    nodes: &[rpc::NodeInfo],
    draining: &[rpc::DrainProgress],
    wide: bool,
) -> String {
    let mut headers = vec!["NAME", "HEALTH", "STATE", "FREE", "LAST HEARD", "TRANSFERS"];
    if wide {
        headers.extend(["ADDRESS", "COST", "WANTED", "LEFT", "PARTIAL", "QUARANTINED", "UUID"]);
    }
    let mut t = Table::new(&headers);
    for n in nodes {
        let free = if reported(n) { human_bytes(n.free_bytes) } else { "unknown".into() };
        let heard = match (n.removed, age_secs(n.last_seen_unix_ms)) {
            (true, _) => "-".to_string(),
            (false, Some(s)) => human_age(s),
            (false, None) => "unknown".to_string(),
        };
        let mut row = vec![
            n.name.clone(),
            health(n).to_string(),
            state(n).to_string(),
            free,
            heard,
            n.active_transfers.to_string(),
        ];
        if wide {
            let left = draining
                .iter()
                .find(|d| d.node_uuid == n.uuid)
                .map_or("-".into(), repair::keys_left);
            let wanted = if n.wanted.is_empty() { "-" } else { n.wanted.as_str() };
            row.extend([
                n.address.clone(),
                n.cost.to_string(),
                wanted.to_string(),
                left,
                human_bytes(n.partial_bytes),
                n.quarantined.to_string(),
                n.uuid.clone(),
            ]);
        }
        t.row(row);
    }
    t.render()
}

/// Keys left on draining nodes; none from a coordinator without repair.
pub(super) async fn draining(c: &mut Client) -> Vec<rpc::DrainProgress> {
    match c.repair_status(rpc::RepairStatusRequest {}).await {
        Ok(r) => r.into_inner().draining,
        Err(_) => Vec::new(),
    }
}

fn node_brief(n: &rpc::NodeInfo) -> Value {
    json!({ "name": n.name, "uuid": n.uuid, "state": state(n), "cost": n.cost })
}

pub(super) async fn run(c: &mut Client, out: Out, cmd: NodeCommand) -> anyhow::Result<()> {
    match cmd {
        NodeCommand::List { cluster } => {
            let req = rpc::ListNodesRequest { cluster: cluster.unwrap_or_default() };
            let nodes = c.list_nodes(req).await.map_err(status)?.into_inner().nodes;
            let clusters =
                c.list_clusters(rpc::ListClustersRequest {}).await.map_err(status)?.into_inner();
            let draining = draining(c).await;
            let v: Vec<Value> =
                nodes.iter().map(|n| node_json(n, &clusters.clusters, &draining)).collect();
            out.either(json!(v), || table(&nodes, &draining, true));
        }
        NodeCommand::Drain { node, wait } => {
            let n = c
                .set_draining(rpc::SetDrainingRequest { node, draining: true })
                .await
                .map_err(status)?
                .into_inner();
            if !out.json {
                println!(
                    "{} is draining: it gets no new content, its content moves to other nodes, and it serves what it has meanwhile",
                    n.name
                );
            }
            let mut v = node_brief(&n);
            if wait {
                let passes = repair::wait_drained(c, &n, out).await?;
                v["drained"] = json!(true);
                v["passes"] = json!(passes);
            }
            if out.json {
                out.json(&v);
            }
        }
        NodeCommand::Undrain { node } => {
            let n = c
                .set_draining(rpc::SetDrainingRequest { node, draining: false })
                .await
                .map_err(status)?
                .into_inner();
            out.either(node_brief(&n), || format!("{} takes new content again", n.name));
        }
        NodeCommand::Remove { node, lost } => {
            let r = c
                .remove_node(rpc::RemoveNodeRequest { node, lost })
                .await
                .map_err(status)?
                .into_inner();
            let v = json!({
                "name": r.node_name,
                "uuid": r.node_uuid,
                "struck": r.struck,
                "lost_keys": r.lost_keys,
            });
            out.either(v, || {
                format!(
                    "removed {} ({}) from the mesh; struck {} location entries",
                    r.node_name, r.node_uuid, r.struck
                )
            });
            if r.lost_keys > 0 {
                eprintln!(
                    "{} key(s) had their only known copy on {}: the mesh no longer holds them",
                    r.lost_keys, r.node_name
                );
            }
        }
        NodeCommand::Cost { node, n } => {
            let info = match n {
                Some(cost) => c
                    .set_node_cost(rpc::SetNodeCostRequest { node, cost })
                    .await
                    .map_err(status)?
                    .into_inner(),
                None => {
                    let nodes = c
                        .list_nodes(rpc::ListNodesRequest::default())
                        .await
                        .map_err(status)?
                        .into_inner()
                        .nodes;
                    let known = super::known(nodes.iter().filter(|n| !n.removed).map(|n| &n.name));
                    nodes.into_iter().find(|n| n.is(&node)).ok_or_else(|| {
                        anyhow::anyhow!("unknown node {node:?}; known nodes: {known}")
                    })?
                }
            };
            out.either(node_brief(&info), || info.cost.to_string());
        }
    }
    Ok(())
}

/// `admin wanted NODE [EXPR]`.
pub(super) async fn wanted(
    c: &mut Client,
    out: Out,
    node: String,
    expr: Vec<String>,
) -> anyhow::Result<()> {
    let r = if expr.is_empty() {
        c.get_wanted(rpc::GetWantedRequest { node }).await.map_err(status)?.into_inner()
    } else {
        let req = rpc::SetWantedRequest { node, expression: expr.join(" ") };
        c.set_wanted(req).await.map_err(status)?.into_inner()
    };
    if out.json {
        out.json(&json!({ "name": r.node_name, "uuid": r.node_uuid, "expression": r.expression }));
    } else if r.expression.is_empty() {
        eprintln!("{} has no preferred content expression: it wants everything", r.node_name);
    } else {
        println!("{}", r.expression);
    }
    Ok(())
}
