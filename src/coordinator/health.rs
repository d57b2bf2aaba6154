//! Node health as heartbeats report it: kept in memory only, since a
//! restarted coordinator hears from every live node within seconds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A node that missed this long of heartbeats is unhealthy.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(7);

/// What the last heartbeat (or registration) of a node said.
#[derive(Debug, Clone)]
pub struct Health {
    pub last_seen: Instant,
    pub last_seen_unix_ms: u64,
    /// The boot id the agent last reported: another one is another run.
    pub boot_id: String,
    /// None until the first heartbeat reports it.
    pub free_bytes: Option<u64>,
    pub active_transfers: u32,
}

/// Every node's last report, by node UUID.
#[derive(Debug, Default)]
pub struct HealthBoard {
    nodes: Mutex<HashMap<String, Health>>,
}

impl HealthBoard {
    /// Whether the node was heard from within `HEALTH_TIMEOUT`, and its last
    /// report.
    pub fn get(&self, uuid: &str) -> (bool, Option<Health>) {
        let health = self.nodes.lock().unwrap().get(uuid).cloned();
        let healthy = health.as_ref().is_some_and(|h| h.last_seen.elapsed() < HEALTH_TIMEOUT);
        (healthy, health)
    }

    /// Notes that the node was heard from now.
    pub fn touch(&self, uuid: &str, boot_id: &str, free_bytes: Option<u64>, active_transfers: u32) {
        self.nodes.lock().unwrap().insert(
            uuid.to_string(),
            Health {
                last_seen: Instant::now(),
                last_seen_unix_ms: crate::clock::unix_ms(),
                boot_id: boot_id.to_string(),
                free_bytes,
                active_transfers,
            },
        );
    }
}

impl HealthBoard {
    /// Forgets a node, as when it is removed from the mesh.
    pub fn forget(&self, uuid: &str) {
        self.nodes.lock().unwrap().remove(uuid);
    }
}
