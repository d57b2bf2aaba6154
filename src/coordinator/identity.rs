//! One identity per node: a registration may not move a node (same UUID,
//! another address or name) while that node still runs elsewhere, as when
//! a store was copied and two agents now claim one identity.
//!
//! A node restarting on another port must still be let in, so a recent
//! heartbeat is not proof enough: the coordinator asks the old address
//! which node answers there, and refuses only when the node itself does.

use std::time::Duration;

use tonic::Status;
use tracing::{info, warn};

use super::health::HealthBoard;
use super::store::Node;
use crate::rpc::{self, agent_client::AgentClient};

/// How long the old address gets to answer; a node that does not answer
/// within it is taken to be gone.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Refuses (with `AlreadyExists`) a registration of `new` when the stored
/// `old` record of the same UUID differs and the node still runs there:
/// heard from within the health timeout by another boot id, and answering
/// at its old address with its UUID.
pub async fn check_move(
    dialer: &rpc::Dialer,
    health: &HealthBoard,
    old: &Node,
    new: &Node,
    boot_id: &str,
) -> Result<(), Status> {
    if old.address == new.address && old.name == new.name {
        return Ok(());
    }
    let (healthy, last) = health.get(&old.uuid);
    if !healthy || last.is_some_and(|h| h.boot_id == boot_id) {
        return Ok(());
    }
    if agent_uuid(dialer, &old.address, &old.uuid).await.as_deref() != Some(old.uuid.as_str()) {
        info!(node = %old.uuid, from = %old.address, to = %new.address, "node moved; its old address no longer answers for it");
        return Ok(());
    }
    warn!(node = %old.uuid, running = %old.address, claimed = %new.address, "refused a second agent with one node's identity");
    Err(Status::already_exists(format!(
        "node {} ({}) is running at {} already; an agent at {} claims the same identity (UUID), \
         which happens when a store is copied. Stop one of them, or give this agent a store of its own",
        old.name, old.uuid, old.address, new.address
    )))
}

/// The UUID of the agent answering at `address`, if one does in time;
/// over TLS, only node `expected` can answer.
pub async fn agent_uuid(dialer: &rpc::Dialer, address: &str, expected: &str) -> Option<String> {
    let channel = dialer.channel(address, rpc::Peer::Agent(expected)).ok()?;
    let mut client = AgentClient::new(channel);
    let reply = tokio::time::timeout(PROBE_TIMEOUT, client.info(rpc::InfoRequest {})).await;
    Some(reply.ok()?.ok()?.into_inner().uuid)
}
