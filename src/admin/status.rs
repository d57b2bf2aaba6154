//! `annexmesh admin status`: one screen. Every coordinator given
//! (`--coordinator URL,URL,...`) asked for its own view, side by side, the
//! coordinators their store lists, then (from the first that answered) the
//! clusters, the nodes with health, free space and transfers, and the
//! repair backlog.

use serde_json::{Value, json};

use super::connect::{self, ConnectArgs};
use super::output::{Out, Table, human_age};
use super::{clusters, nodes, repair};
use crate::rpc;

fn coordinator_json(url: &str, r: &Result<rpc::StatusReply, tonic::Status>) -> Value {
    match r {
        Ok(s) => json!({
            "url": url,
            "up": true,
            "address": s.address,
            "version": s.version,
            "store": s.store,
            "shared": s.shared,
            "clock_ms": s.clock_ms,
            "clusters": s.clusters,
            "nodes": s.nodes,
            "nodes_up": s.nodes_up,
            "nodes_degraded": s.nodes_degraded,
        }),
        Err(e) => json!({ "url": url, "up": false, "error": e.message() }),
    }
}

pub async fn run(args: &ConnectArgs, out: Out) -> anyhow::Result<()> {
    let urls: Vec<String> = args
        .coordinator
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(String::from)
        .collect();
    let (mut replies, mut client) = (Vec::new(), None);
    for url in &urls {
        // Each one on its own: no failover to another, and no long wait.
        let mut one = ConnectArgs { coordinator: url.clone(), ..args.clone() };
        one.failover.coordinator_failover =
            one.failover.coordinator_failover.min(std::time::Duration::from_secs(3));
        let reply = match connect::connect(&one).await {
            Ok(mut c) => {
                let r = c.status(rpc::StatusRequest {}).await.map(|r| r.into_inner());
                if r.is_ok() && client.is_none() {
                    client = Some(c);
                }
                r
            }
            Err(e) => Err(tonic::Status::unavailable(format!("{e:#}"))),
        };
        replies.push((url.clone(), reply));
    }
    let mut listed: Vec<rpc::CoordinatorStatus> = Vec::new();
    for s in replies.iter().filter_map(|(_, r)| r.as_ref().ok()) {
        for c in &s.coordinators {
            if !listed.iter().any(|l| l.id == c.id) {
                listed.push(c.clone());
            }
        }
    }
    // The mesh as the first coordinator that answered sees it.
    let (mut cls, mut nds, mut rep) = (Vec::new(), Vec::new(), None);
    if let Some(c) = client.as_mut() {
        cls = c
            .list_clusters(rpc::ListClustersRequest {})
            .await
            .map_err(super::status)?
            .into_inner()
            .clusters;
        cls.sort_by(|a, b| a.name.cmp(&b.name));
        nds = c
            .list_nodes(rpc::ListNodesRequest::default())
            .await
            .map_err(super::status)?
            .into_inner()
            .nodes;
        nds.retain(|n| !n.removed);
        rep = c.repair_status(rpc::RepairStatusRequest {}).await.ok().map(|r| r.into_inner());
    }
    let draining = rep.as_ref().map(|r| r.draining.clone()).unwrap_or_default();
    if out.json {
        let v = json!({
            "coordinators": replies.iter().map(|(u, r)| coordinator_json(u, r)).collect::<Vec<_>>(),
            "store_coordinators": listed.iter().map(|c| json!({
                "address": c.address,
                "version": c.version,
                "last_seen_seconds": c.age_ms / 1000,
            })).collect::<Vec<_>>(),
            "clusters": cls.iter().map(|c| {
                let mut v = clusters::cluster_json(c);
                v["nodes"] = json!(nds.iter().filter(|n| n.cluster_uuid == c.uuid).count());
                v
            }).collect::<Vec<_>>(),
            "nodes": nds.iter().map(|n| nodes::node_json(n, &cls, &draining)).collect::<Vec<_>>(),
            "repair": rep.as_ref().map(repair::status_json),
        });
        out.json(&v);
    } else {
        print_text(&replies, &listed, &cls, &nds, rep.as_ref());
    }
    let answered = replies.iter().filter(|(_, r)| r.is_ok()).count();
    if answered == 0 {
        anyhow::bail!("no coordinator answered ({})", urls.join(", "));
    }
    if answered < urls.len() {
        anyhow::bail!("{} of {} coordinators did not answer", urls.len() - answered, urls.len());
    }
    Ok(())
}

fn print_text(
    replies: &[(String, Result<rpc::StatusReply, tonic::Status>)],
    listed: &[rpc::CoordinatorStatus],
    cls: &[rpc::ClusterInfo],
    nds: &[rpc::NodeInfo],
    rep: Option<&rpc::RepairStatusReply>,
) {
    let mut t = Table::new(&["COORDINATOR", "STATE", "STORE", "CLOCK_MS", "NODES UP"]);
    for (url, r) in replies {
        t.row(match r {
            Ok(s) => vec![
                url.clone(),
                format!("up (v{}, listens on {})", s.version, s.address),
                format!("{}{}", s.store, if s.shared { " (shared)" } else { "" }),
                s.clock_ms.to_string(),
                format!("{}/{} ({} degraded)", s.nodes_up, s.nodes, s.nodes_degraded),
            ],
            Err(e) => vec![url.clone(), format!("unreachable: {}", e.message())],
        });
    }
    println!("{}", t.render());
    if !listed.is_empty() {
        let mut t = Table::new(&["COORDINATORS THE STORE LISTS", "VERSION", "LAST SEEN"]);
        for c in listed {
            t.row(vec![c.address.clone(), format!("v{}", c.version), human_age(c.age_ms / 1000)]);
        }
        println!("\n{}", t.render());
    }
    if replies.iter().all(|(_, r)| r.is_err()) {
        return;
    }
    println!("\n{}", clusters::table(cls, nds));
    let draining = rep.map(|r| r.draining.clone()).unwrap_or_default();
    println!("\n{}", nodes::table(nds, &draining, false));
    if let Some(r) = rep {
        let last = r.last.unwrap_or_default();
        let backlog = if r.passes == 0 {
            "no repair pass has finished yet".to_string()
        } else {
            format!(
                "{} keys under-replicated at the last pass, {} short of target after it",
                last.under_replicated, last.short
            )
        };
        let running = if r.running { "; a pass is running now" } else { "" };
        println!("\nrepair: {backlog}{running}");
    }
}
