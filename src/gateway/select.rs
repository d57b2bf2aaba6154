//! Which holder serves a GET or CHECKPRESENT: the lowest cost first, then the
//! least busy node, not a random one.
//!
//! A node's load is the larger of what its agent last reported to the
//! coordinator (up to a heartbeat old) and the GETs this gateway has in
//! flight on it right now. The second count is taken as a node is picked, so
//! two GETs in quick succession go to different nodes when one holder is
//! busy, without waiting for the next heartbeat. Taking the larger rather
//! than the sum avoids counting our own transfers twice once the heartbeat
//! reports them. Among equals the choice is random, so that several gateways
//! with nothing in flight do not all pile onto the same node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::rpc;

/// GETs in flight from this gateway, per node UUID.
#[derive(Default)]
pub struct Loads {
    in_flight: Arc<Mutex<HashMap<String, u32>>>,
}

/// One GET counted on a node for as long as it lives.
pub struct Busy {
    in_flight: Arc<Mutex<HashMap<String, u32>>>,
    node: String,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut m = self.in_flight.lock().unwrap();
        if let Some(n) = m.get_mut(&self.node) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.node);
            }
        }
    }
}

/// Sort key: unreachable nodes last, then cost, then load, then a random
/// tie-break.
type Rank = (bool, u32, u32, u64);

fn rank_of(
    n: &rpc::NodeInfo,
    in_flight: &HashMap<String, u32>,
    unreachable: &impl Fn(&rpc::NodeInfo) -> bool,
) -> Rank {
    let mine = in_flight.get(&n.uuid).copied().unwrap_or(0);
    (unreachable(n), n.cost, n.active_transfers.max(mine), rand::random())
}

impl Loads {
    /// GETs in flight from this gateway on `node`.
    pub fn in_flight(&self, node: &str) -> u32 {
        self.in_flight.lock().unwrap().get(node).copied().unwrap_or(0)
    }

    /// `nodes`, best first. `unreachable` tells the nodes this gateway failed
    /// to reach a moment ago: they are tried only when nothing else is left.
    pub fn rank(
        &self,
        nodes: Vec<rpc::NodeInfo>,
        unreachable: impl Fn(&rpc::NodeInfo) -> bool,
    ) -> Vec<rpc::NodeInfo> {
        let in_flight = self.in_flight.lock().unwrap();
        let mut ranked: Vec<_> =
            nodes.into_iter().map(|n| (rank_of(&n, &in_flight, &unreachable), n)).collect();
        ranked.sort_by_key(|(rank, _)| *rank);
        ranked.into_iter().map(|(_, n)| n).collect()
    }

    /// The best of `nodes`, counted as busy with one more GET until the
    /// returned guard is dropped. Choosing and counting happen under one
    /// lock, so concurrent requests see each other's choices.
    pub fn pick(
        &self,
        nodes: &[rpc::NodeInfo],
        unreachable: impl Fn(&rpc::NodeInfo) -> bool,
    ) -> Option<(rpc::NodeInfo, Busy)> {
        let mut in_flight = self.in_flight.lock().unwrap();
        let best = nodes.iter().min_by_key(|n| rank_of(n, &in_flight, &unreachable))?.clone();
        *in_flight.entry(best.uuid.clone()).or_insert(0) += 1;
        let busy = Busy { in_flight: self.in_flight.clone(), node: best.uuid.clone() };
        Some((best, busy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(uuid: &str, cost: u32, active: u32) -> rpc::NodeInfo {
        rpc::NodeInfo {
            uuid: uuid.into(),
            name: uuid.into(),
            cost,
            active_transfers: active,
            healthy: true,
            ..Default::default()
        }
    }

    fn uuids(nodes: &[rpc::NodeInfo]) -> Vec<&str> {
        nodes.iter().map(|n| n.uuid.as_str()).collect()
    }

    #[test]
    fn cost_comes_before_load() {
        let loads = Loads::default();
        let ranked =
            loads.rank(vec![node("a", 100, 0), node("b", 50, 5), node("c", 100, 2)], |_| false);
        assert_eq!(uuids(&ranked), ["b", "a", "c"]);
    }

    #[test]
    fn unreachable_nodes_come_last_whatever_their_cost() {
        let loads = Loads::default();
        let ranked = loads.rank(vec![node("a", 10, 0), node("b", 100, 3)], |n| n.uuid == "a");
        assert_eq!(uuids(&ranked), ["b", "a"]);
    }

    #[test]
    fn gets_in_flight_spread_over_equal_nodes_before_any_heartbeat() {
        let loads = Loads::default();
        let nodes = [node("a", 100, 0), node("b", 100, 0), node("c", 100, 0)];
        let (first, g1) = loads.pick(&nodes, |_| false).unwrap();
        let (second, g2) = loads.pick(&nodes, |_| false).unwrap();
        let (third, g3) = loads.pick(&nodes, |_| false).unwrap();
        let mut got = vec![first.uuid, second.uuid, third.uuid];
        got.sort();
        assert_eq!(got, ["a", "b", "c"]);
        drop((g1, g2, g3));
        assert_eq!(loads.in_flight("a") + loads.in_flight("b") + loads.in_flight("c"), 0);
    }

    #[test]
    fn our_own_gets_are_not_counted_twice_once_reported() {
        let loads = Loads::default();
        let (_, _g) = loads.pick(&[node("a", 100, 0)], |_| false).unwrap();
        // The heartbeat now reports our GET on a; b has one from elsewhere.
        let (n, _g2) = loads.pick(&[node("a", 100, 1), node("b", 100, 2)], |_| false).unwrap();
        assert_eq!(n.uuid, "a");
    }

    #[test]
    fn a_busy_cheap_node_still_wins_over_an_idle_expensive_one() {
        let loads = Loads::default();
        let nodes = [node("cheap", 10, 0), node("dear", 200, 0)];
        let (a, _g1) = loads.pick(&nodes, |_| false).unwrap();
        let (b, _g2) = loads.pick(&nodes, |_| false).unwrap();
        assert_eq!((a.uuid.as_str(), b.uuid.as_str()), ("cheap", "cheap"));
    }
}
