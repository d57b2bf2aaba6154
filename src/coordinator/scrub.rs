//! `admin scrub`: one scrub pass now on the chosen nodes. The coordinator
//! asks each agent at once and passes on each node's summary as it comes;
//! the agents quarantine and strike bad copies themselves, and the repair
//! loop makes them again from good holders.

use std::pin::Pin;

use futures::stream::{FuturesUnordered, Stream, StreamExt};
use tonic::Status;
use tracing::{info, warn};

use super::store::Node;
use crate::rpc::{self, agent_client::AgentClient};

/// One summary per node, in the order the nodes finish.
pub type ScrubStream = Pin<Box<dyn Stream<Item = Result<rpc::NodeScrubResult, Status>> + Send>>;

/// Asks every node in `nodes` for a pass at `rate` bytes per second (0: full
/// speed).
pub fn scrub_nodes(dialer: rpc::Dialer, nodes: Vec<Node>, rate: u64) -> ScrubStream {
    let passes: FuturesUnordered<_> =
        nodes.into_iter().map(|n| scrub_node(dialer.clone(), n, rate)).collect();
    Box::pin(passes.map(Ok))
}

async fn scrub_node(dialer: rpc::Dialer, n: Node, rate: u64) -> rpc::NodeScrubResult {
    let mut result = rpc::NodeScrubResult {
        node_uuid: n.uuid.clone(),
        node_name: n.name.clone(),
        ..Default::default()
    };
    match ask(&dialer, &n, rate).await {
        Ok(r) => {
            if !r.bad_keys.is_empty() {
                warn!(node = %n.name, bad = r.bad_keys.len(), "scrub found bad copies");
            }
            info!(node = %n.name, objects = r.objects, bytes = r.bytes, "node scrubbed");
            result.objects = r.objects;
            result.bytes = r.bytes;
            result.bad_keys = r.bad_keys;
        }
        Err(s) => {
            warn!(node = %n.name, error = %s.message(), "cannot ask the node to scrub");
            result.error = s.message().to_string();
        }
    }
    result
}

async fn ask(dialer: &rpc::Dialer, n: &Node, rate: u64) -> Result<rpc::ScrubReply, Status> {
    let channel = dialer
        .channel(&n.address, rpc::Peer::Agent(&n.uuid))
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let req = rpc::ScrubRequest { rate_bytes_per_s: rate };
    Ok(AgentClient::new(channel).scrub(crate::telemetry::traced(req)).await?.into_inner())
}
