//! `admin fsck`: the location log against what the agents hold. The
//! coordinator asks each agent for its key list (never the data) and
//! reports every difference; a fix records what the nodes hold.

use std::collections::HashSet;

use tokio_stream::StreamExt;
use tonic::Status;
use tracing::info;

use super::core::Core;
use super::store::Node;
use crate::rpc::{self, agent_client::AgentClient};

/// Compares the log with the keys `nodes` hold; with `fix`, records them.
pub async fn fsck(core: &Core, nodes: Vec<Node>, fix: bool) -> Result<rpc::FsckReply, Status> {
    let listed = core.store.present_by_node().await?;
    let mut reply = rpc::FsckReply::default();
    for n in nodes {
        let held = match held_keys(core, &n).await {
            Ok(held) => held,
            Err(e) => {
                reply.unreachable.push(format!("{}: {}", n.name, e.message()));
                continue;
            }
        };
        reply.nodes_checked += 1;
        let empty = HashSet::new();
        let logged = listed.get(&n.uuid).unwrap_or(&empty);
        let mut diffs: Vec<_> = logged
            .difference(&held)
            .map(|k| (k.clone(), true))
            .chain(held.difference(logged).map(|k| (k.clone(), false)))
            .collect();
        diffs.sort();
        if fix && !diffs.is_empty() {
            fix_node(core, &n, &diffs).await?;
        }
        reply.differences.extend(diffs.into_iter().map(|(key, listed)| rpc::FsckDifference {
            node_uuid: n.uuid.clone(),
            node_name: n.name.clone(),
            key,
            listed,
        }));
    }
    reply.fixed = fix;
    Ok(reply)
}

/// Records what `n` holds for the keys of `diffs`. Each key is asked again
/// just before, so that a change since the listing is not undone: the log
/// must never claim a copy the node no longer has.
async fn fix_node(core: &Core, n: &Node, diffs: &[(String, bool)]) -> Result<(), Status> {
    let mut client = agent(core, n)?;
    let mut changes = Vec::with_capacity(diffs.len());
    for (key, _) in diffs {
        let req = rpc::KeyRequest { key: key.clone() };
        let present =
            client.check_present(crate::telemetry::traced(req)).await?.into_inner().present;
        changes.push((key.clone(), n.uuid.clone(), present));
    }
    info!(node = %n.name, changes = changes.len(), "fsck records what the node holds");
    core.store.record(changes).await?;
    Ok(())
}

/// Every key node `n` holds.
async fn held_keys(core: &Core, n: &Node) -> Result<HashSet<String>, Status> {
    let mut client = agent(core, n)?;
    let req = crate::telemetry::traced(rpc::ListKeysRequest {});
    let mut stream = client.list_keys(req).await?.into_inner();
    let mut keys = HashSet::new();
    while let Some(batch) = stream.next().await {
        keys.extend(batch?.keys);
    }
    Ok(keys)
}

fn agent(core: &Core, n: &Node) -> Result<AgentClient<tonic::transport::Channel>, Status> {
    let channel = core.dialer().channel(&n.address, rpc::Peer::Agent(&n.uuid));
    Ok(AgentClient::new(channel.map_err(|e| Status::unavailable(e.to_string()))?))
}
