//! REMOVE-BEFORE deadlines translated into each agent's own clock, without
//! asking every agent for its time on every remove.
//!
//! One GetTimestamp round trip gives a lower bound of the agent's clock as a
//! function of ours: the agent read its clock at some moment between our
//! request and its reply, so at the reply it was at least at its reading.
//! A deadline computed from that bound is never later than the true one. The
//! bound is re-measured after a while (clock rates differ slightly), and when
//! the agent's clock restarted (a new boot_id), which the agent detects
//! itself by refusing a deadline tied to another boot_id.

use std::collections::HashMap;
use std::sync::Mutex;

use tonic::Status;

use super::mesh::api::NodeClient;
use crate::clock::boottime_ms;

/// How long one measurement is trusted.
const RESYNC_AFTER_MS: u64 = 60_000;
/// Allowance for two hosts' clocks running at different rates, in parts per
/// million of the time since the measurement: well above real oscillators.
const DRIFT_PPM: u64 = 500;

#[derive(Debug, Clone)]
struct Sync {
    boot_id: String,
    /// Agent clock minus our clock, a lower bound.
    offset_ms: i64,
    measured_at_ms: u64,
}

#[derive(Default)]
pub struct AgentClocks {
    syncs: Mutex<HashMap<String, Sync>>,
}

/// A deadline in an agent's clock and the clock run it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentDeadline {
    pub before_ms: u64,
    pub boot_id: String,
}

impl AgentClocks {
    /// Translates `deadline_ms` of our clock (`crate::clock::boottime_ms`)
    /// into `node`'s clock. None when the deadline has already passed.
    pub async fn translate(
        &self,
        node: &str,
        agent: &dyn NodeClient,
        deadline_ms: u64,
    ) -> Result<Option<AgentDeadline>, Status> {
        let cached = self.syncs.lock().unwrap().get(node).cloned();
        let now = boottime_ms();
        let sync = match cached {
            Some(s) if now.saturating_sub(s.measured_at_ms) < RESYNC_AFTER_MS => s,
            _ => self.measure(node, agent).await?,
        };
        Ok(Self::apply(&sync, deadline_ms, boottime_ms()))
    }

    fn apply(sync: &Sync, deadline_ms: u64, now_ms: u64) -> Option<AgentDeadline> {
        if deadline_ms <= now_ms {
            return None;
        }
        let age = deadline_ms.saturating_sub(sync.measured_at_ms);
        let margin = (age * DRIFT_PPM).div_ceil(1_000_000) as i64 + 1;
        let before = deadline_ms as i64 + sync.offset_ms - margin;
        (before > 0)
            .then(|| AgentDeadline { before_ms: before as u64, boot_id: sync.boot_id.clone() })
    }

    /// Drops what is known of `node`'s clock, after it refused a deadline
    /// because its clock restarted; the next translation measures again.
    pub fn forget(&self, node: &str) {
        self.syncs.lock().unwrap().remove(node);
    }

    async fn measure(&self, node: &str, agent: &dyn NodeClient) -> Result<Sync, Status> {
        let r = agent.clock().await?;
        let received = boottime_ms();
        let sync = Sync {
            boot_id: r.boot_id,
            offset_ms: r.timestamp_ms as i64 - received as i64,
            measured_at_ms: received,
        };
        self.syncs.lock().unwrap().insert(node.to_string(), sync.clone());
        Ok(sync)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync(offset_ms: i64, at: u64) -> Sync {
        Sync { boot_id: "b".into(), offset_ms, measured_at_ms: at }
    }

    #[test]
    fn translated_deadlines_are_never_later() {
        // The agent's clock reads 5_000 when ours reads 1_000_000.
        let s = sync(5_000 - 1_000_000, 1_000_000);
        let d = AgentClocks::apply(&s, 1_010_000, 1_000_000).unwrap();
        assert!(d.before_ms <= 15_000, "{d:?}");
        assert!(d.before_ms >= 14_990, "{d:?}");
    }

    #[test]
    fn past_deadlines_translate_to_nothing() {
        let s = sync(0, 1_000);
        assert_eq!(AgentClocks::apply(&s, 999, 1_000), None);
        assert_eq!(AgentClocks::apply(&s, 1_000, 1_000), None);
    }

    #[test]
    fn the_margin_grows_with_the_age_of_the_measurement() {
        let s = sync(0, 0);
        let soon = AgentClocks::apply(&s, 1_000, 0).unwrap().before_ms;
        let late = AgentClocks::apply(&s, 3_600_000, 0).unwrap().before_ms;
        assert_eq!(1_000 - soon, 2);
        assert_eq!(3_600_000 - late, 1_801);
    }
}
