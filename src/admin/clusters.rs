//! `annexmesh admin cluster ...`: create, list, delete, minimum copies,
//! space reserve and replication.

use serde_json::{Value, json};

use super::cli::{ClusterCommand, ReplicationArg};
use super::connect::Client;
use super::output::{Out, Table, human_bytes};
use super::{find_cluster, status};
use crate::rpc;

/// A cluster for --json.
pub(super) fn cluster_json(c: &rpc::ClusterInfo) -> Value {
    json!({
        "name": c.name,
        "uuid": c.uuid,
        "min_copies": c.min_copies,
        "reserve_bytes": c.reserve_bytes,
        "reserve_default": c.reserve_default,
        "replication": replication_name(c),
    })
}

/// The cluster's replication as the CLI names it.
pub(super) fn replication_name(c: &rpc::ClusterInfo) -> &'static str {
    match rpc::Replication::try_from(c.replication) {
        Ok(rpc::Replication::Chain) => "chain",
        Ok(rpc::Replication::Fanout) => "fanout",
        Err(_) => "unknown",
    }
}

/// The reserve for people.
pub(super) fn reserve(c: &rpc::ClusterInfo) -> String {
    let size = human_bytes(c.reserve_bytes);
    if c.reserve_default { format!("{size} (default)") } else { size }
}

/// The clusters' table for people; `nodes` counts each one's live nodes.
pub(super) fn table(clusters: &[rpc::ClusterInfo], nodes: &[rpc::NodeInfo]) -> String {
    let mut t = Table::new(&["NAME", "UUID", "NODES", "MINCOPIES", "RESERVE", "REPLICATION"]);
    for c in clusters {
        let n = nodes.iter().filter(|n| n.cluster_uuid == c.uuid && !n.removed).count();
        t.row(vec![
            c.name.clone(),
            c.uuid.clone(),
            n.to_string(),
            c.min_copies.to_string(),
            reserve(c),
            replication_name(c).to_string(),
        ]);
    }
    t.render()
}

pub(super) async fn run(c: &mut Client, out: Out, cmd: ClusterCommand) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Create { name } => {
            let info =
                c.create_cluster(rpc::CreateClusterRequest { name }).await.map_err(status)?;
            let info = info.into_inner();
            out.either(cluster_json(&info), || {
                format!("created cluster {} ({})", info.name, info.uuid)
            });
        }
        ClusterCommand::List => {
            let clusters =
                c.list_clusters(rpc::ListClustersRequest {}).await.map_err(status)?.into_inner();
            let nodes = c.list_nodes(rpc::ListNodesRequest::default()).await.map_err(status)?;
            let nodes = nodes.into_inner().nodes;
            let v: Vec<Value> = clusters
                .clusters
                .iter()
                .map(|cl| {
                    let mut v = cluster_json(cl);
                    let n = nodes.iter().filter(|n| n.cluster_uuid == cl.uuid && !n.removed);
                    v["nodes"] = json!(n.count());
                    v
                })
                .collect();
            out.either(json!(v), || table(&clusters.clusters, &nodes));
        }
        ClusterCommand::Delete { name, force } => {
            let r = c
                .delete_cluster(rpc::DeleteClusterRequest { cluster: name, force })
                .await
                .map_err(status)?
                .into_inner();
            let v = json!({
                "name": r.name,
                "uuid": r.uuid,
                "nodes_removed": r.nodes_removed,
                "struck": r.struck,
            });
            out.either(v, || {
                let mut s = format!("deleted cluster {} ({})", r.name, r.uuid);
                if r.nodes_removed > 0 {
                    s += &format!(
                        "; removed {} node(s) and struck {} location entries",
                        r.nodes_removed, r.struck
                    );
                }
                s
            });
        }
        ClusterCommand::Mincopies { cluster, n } => {
            let info = match n {
                Some(min_copies) => {
                    let req = rpc::SetClusterMinCopiesRequest { cluster, min_copies };
                    super::warned(c.set_cluster_min_copies(req).await.map_err(status)?)
                }
                None => find_cluster(c, &cluster).await?,
            };
            out.either(cluster_json(&info), || info.min_copies.to_string());
        }
        ClusterCommand::Reserve { cluster, size } => {
            let info = match size {
                Some(reserve) => {
                    let req = rpc::SetClusterReserveRequest { cluster, reserve };
                    super::warned(c.set_cluster_reserve(req).await.map_err(status)?)
                }
                None => find_cluster(c, &cluster).await?,
            };
            out.either(cluster_json(&info), || reserve(&info));
        }
        ClusterCommand::Replication { cluster, mode } => {
            let info = match mode {
                Some(mode) => {
                    let replication = match mode {
                        ReplicationArg::Fanout => rpc::Replication::Fanout,
                        ReplicationArg::Chain => rpc::Replication::Chain,
                    } as i32;
                    let req = rpc::SetClusterReplicationRequest { cluster, replication };
                    c.set_cluster_replication(req).await.map_err(status)?.into_inner()
                }
                None => find_cluster(c, &cluster).await?,
            };
            out.either(cluster_json(&info), || replication_name(&info).to_string());
        }
    }
    Ok(())
}
