//! What repair does for one key of one cluster, decided without I/O: how
//! many copies the key should have, which copies count, where new copies go
//! and which copies on draining nodes may go once the target is met.

use std::collections::HashSet;
use std::time::Duration;

use crate::coordinator::placement::{self, Candidate};
use crate::p2p::key::Key;

/// A node as repair sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Up and not draining: its copies count, it serves and it takes copies.
    Up,
    /// Up and draining: it serves, but its copies do not count.
    Draining,
    /// Down for less than the grace period: its copies still count (a node
    /// restarting must not cause a wave of copies), but it cannot serve.
    Grace,
    /// Down for longer than the grace period: its copies are written off.
    Lost,
}

impl NodeState {
    /// `healthy`: heard from within the health timeout; `silent`: how long
    /// since it was last heard from.
    pub fn of(healthy: bool, draining: bool, silent: Duration, grace: Duration) -> NodeState {
        match (healthy, draining) {
            (true, false) => NodeState::Up,
            (true, true) => NodeState::Draining,
            (false, _) if silent < grace => NodeState::Grace,
            (false, _) => NodeState::Lost,
        }
    }
}

/// One node of the cluster: what placement knows of it, its state and how
/// agents reach it.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub candidate: Candidate,
    pub state: NodeState,
    pub address: String,
}

/// The repair of one key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyPlan {
    /// Copies the key should have.
    pub target: usize,
    /// Holders whose copies count toward the target.
    pub counted: Vec<String>,
    /// Holders that can serve a copy: up nodes, draining ones last.
    pub sources: Vec<String>,
    /// Nodes to copy to, best first.
    pub copy_to: Vec<String>,
    /// Draining holders, to drop once the target is met elsewhere.
    pub drop_from: Vec<String>,
    /// Copies missing that no node can take now.
    pub short: usize,
}

impl KeyPlan {
    /// Whether the key needs any work.
    pub fn needs_work(&self) -> bool {
        self.counted.len() < self.target || !self.drop_from.is_empty()
    }
}

/// Plans `key` on `nodes` (one cluster), of which `holders` are listed in
/// the location log as holding it.
///
/// The target is what placement would ask for if the key were uploaded now
/// (the eligible up nodes that want it, a node without an expression
/// wanting everything; all eligible nodes when none wants it, as git-annex's
/// own clusters store), and never less than the cluster's minimum copies.
/// So a cluster without preferred content keeps every key on every node,
/// as its uploads do, and a node that joins receives the existing keys too.
/// New copies go where placement would put them (nodes that want the key
/// first), then, for the minimum's sake, to other eligible nodes.
pub fn plan_key(
    key: &Key,
    nodes: &[NodeView],
    holders: &HashSet<String>,
    min_copies: u32,
    reserve: u64,
) -> KeyPlan {
    use NodeState::{Draining, Grace, Up};
    let counted = holding(nodes, holders, &[Up, Grace]);
    let drop_from = holding(nodes, holders, &[Draining]);
    let mut sources = holding(nodes, holders, &[Up]);
    sources.extend(drop_from.iter().cloned());
    let up: Vec<Candidate> =
        nodes.iter().filter(|n| n.state == Up).map(|n| n.candidate.clone()).collect();
    let planned = placement::plan(&up, key, None, counted.len() as u64, reserve)
        .map_or(0, |p| p.targets.len());
    let target = (min_copies as usize).max(planned);
    let missing = target.saturating_sub(counted.len());
    let mut copy_to = Vec::new();
    if missing > 0 && !sources.is_empty() {
        copy_to = destinations(key, nodes, holders, counted.len(), reserve);
        copy_to.truncate(missing);
    }
    let short = missing - copy_to.len();
    KeyPlan { target, counted, sources, copy_to, drop_from, short }
}

/// The holders among `nodes` in one of `states`.
fn holding(nodes: &[NodeView], holders: &HashSet<String>, states: &[NodeState]) -> Vec<String> {
    nodes
        .iter()
        .filter(|n| holders.contains(&n.candidate.uuid) && states.contains(&n.state))
        .map(|n| n.candidate.uuid.clone())
        .collect()
}

/// Nodes that could take a new copy, in placement's order: those placement
/// picks (the ones that want the key), then the other eligible ones, each
/// group with the most free space first.
fn destinations(
    key: &Key,
    nodes: &[NodeView],
    holders: &HashSet<String>,
    copies: usize,
    reserve: u64,
) -> Vec<String> {
    let free: Vec<Candidate> = nodes
        .iter()
        .filter(|n| n.state == NodeState::Up && !holders.contains(&n.candidate.uuid))
        .map(|n| n.candidate.clone())
        .collect();
    let Ok(plan) = placement::plan(&free, key, None, copies as u64, reserve) else {
        return Vec::new();
    };
    let by_space = |mut v: Vec<&Candidate>| {
        v.sort_by_key(|c| std::cmp::Reverse(c.free_bytes.unwrap_or(0)));
        v.into_iter().map(|c| c.uuid.clone()).collect::<Vec<_>>()
    };
    let size = key.size.unwrap_or(0);
    let (first, rest): (Vec<&Candidate>, Vec<&Candidate>) = free
        .iter()
        .filter(|c| placement::skip(c, size, reserve).is_none())
        .partition(|c| plan.targets.contains(&c.uuid));
    let mut out = by_space(first);
    out.extend(by_space(rest));
    out
}

#[cfg(test)]
mod tests;
