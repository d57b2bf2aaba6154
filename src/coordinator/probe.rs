//! Probes degraded nodes' data addresses from the coordinator's side.
//!
//! Heartbeats only show that an agent reaches the coordinator; a gateway's
//! failure report may mean the way back (the address gateways use) is cut.
//! So a degraded node recovers only once the coordinator itself reached its
//! advertised address after the last failure (see `super::health`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use tracing::debug;

use super::core::Core;
use crate::rpc::{self, agent_client::AgentClient};
use crate::tasks::Tasks;

/// Time between probe rounds, as between heartbeats.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// How long a probe may take before it counts as not reaching the node.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Probes, until the coordinator stops, every degraded node not reached
/// since its last failure.
pub fn spawn(core: Arc<Core>, tasks: &Tasks) {
    tasks.spawn(async move {
        loop {
            round(&core).await;
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    });
}

/// One round: the nodes to probe, in parallel.
pub async fn round(core: &Core) {
    let probes =
        core.health.unreached().into_iter().map(|uuid| async move {
            let address = match core.store.node(&uuid).await {
                Ok(Some(n)) => n.address,
                // Removed meanwhile, or the store cannot say: try next round.
                _ => return,
            };
            let started = Instant::now();
            let reached =
                match tokio::time::timeout(PROBE_TIMEOUT, info(&core.dialer(), &address, &uuid))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(format!("no answer in {PROBE_TIMEOUT:?}")),
                };
            if let Err(e) = &reached {
                debug!(node = %uuid, %address, "degraded node's data address not reached: {e}");
            }
            core.health.probed(&uuid, started, reached.is_ok(), Instant::now());
        });
    join_all(probes).await;
}

/// Asks the agent at `address` who it is, over a new connection; Ok when
/// it is the node `uuid`.
async fn info(dialer: &rpc::Dialer, address: &str, uuid: &str) -> Result<(), String> {
    let channel = dialer.channel(address, rpc::Peer::Agent(uuid)).map_err(|e| e.to_string())?;
    let reply = AgentClient::new(channel)
        .info(rpc::InfoRequest {})
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    if reply.uuid != uuid {
        return Err(format!("another node ({}) answers there", reply.uuid));
    }
    Ok(())
}
