use std::sync::Arc;

use super::*;
use crate::preferred::Expr;

fn node(name: &str, state: NodeState) -> NodeView {
    NodeView {
        candidate: Candidate {
            uuid: name.into(),
            name: name.into(),
            healthy: matches!(state, NodeState::Up | NodeState::Draining),
            degraded: false,
            draining: state == NodeState::Draining,
            free_bytes: Some(1_000_000_000),
            wanted: None,
        },
        state,
        address: format!("http://{name}"),
    }
}

fn key() -> Key {
    "SHA256E-s1000--5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        .parse()
        .unwrap()
}

fn set(names: &[&str]) -> HashSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn node_states_follow_health_drain_and_grace() {
    let grace = Duration::from_secs(600);
    let s = |healthy, draining, silent| NodeState::of(healthy, draining, silent, grace);
    assert_eq!(s(true, false, Duration::ZERO), NodeState::Up);
    assert_eq!(s(true, true, Duration::ZERO), NodeState::Draining);
    assert_eq!(s(false, false, Duration::from_secs(599)), NodeState::Grace);
    assert_eq!(s(false, true, Duration::from_secs(600)), NodeState::Lost);
}

#[test]
fn a_lost_copy_is_replaced_from_an_up_holder() {
    use NodeState::*;
    let nodes = [node("n1", Lost), node("n2", Up), node("n3", Up)];
    let p = plan_key(&key(), &nodes, &set(&["n1", "n2"]), 2, 0);
    assert_eq!(p.target, 2);
    assert_eq!(p.counted, ["n2"]);
    assert_eq!(p.sources, ["n2"]);
    assert_eq!(p.copy_to, ["n3"]);
    assert_eq!(p.short, 0);
    assert!(p.needs_work());
}

#[test]
fn a_node_down_within_the_grace_still_counts() {
    use NodeState::*;
    let nodes = [node("n1", Grace), node("n2", Up), node("n3", Up)];
    let p = plan_key(&key(), &nodes, &set(&["n1", "n2"]), 2, 0);
    assert_eq!(p.counted, ["n1", "n2"]);
    assert!(p.copy_to.is_empty() && !p.needs_work());
}

#[test]
fn without_a_source_or_a_destination_the_key_is_short() {
    use NodeState::*;
    let nodes = [node("n1", Lost), node("n2", Grace), node("n3", Up)];
    let p = plan_key(&key(), &nodes, &set(&["n1", "n2"]), 3, 0);
    assert!(p.sources.is_empty() && p.copy_to.is_empty());
    assert_eq!(p.short, 2);
    // Every up node holds it already: nowhere to put a third copy.
    let nodes = [node("n1", Up), node("n2", Up)];
    let p = plan_key(&key(), &nodes, &set(&["n1", "n2"]), 3, 0);
    assert_eq!((p.copy_to.len(), p.short), (0, 1));
}

#[test]
fn draining_copies_do_not_count_and_are_moved_off() {
    use NodeState::*;
    let nodes = [node("n1", Draining), node("n2", Up), node("n3", Up)];
    let p = plan_key(&key(), &nodes, &set(&["n1"]), 1, 0);
    assert!(p.counted.is_empty());
    assert_eq!(p.sources, ["n1"]);
    assert_eq!(p.drop_from, ["n1"]);
    // Placement would store it on both other nodes.
    assert_eq!(p.target, 2);
    assert_eq!(p.copy_to.len(), 2);
    assert!(!p.copy_to.contains(&"n1".to_string()));
    // Up holders serve before draining ones.
    let p = plan_key(&key(), &nodes, &set(&["n1", "n2"]), 2, 0);
    assert_eq!(p.sources, ["n2", "n1"]);
    assert_eq!(p.copy_to, ["n3"]);
}

#[test]
fn wanting_nodes_raise_the_target_and_are_chosen_first() {
    use NodeState::*;
    let mut nodes = [node("n1", Up), node("n2", Up), node("n3", Up), node("n4", Up)];
    let wants = |text: &str| Some(Arc::new(Expr::parse(text).unwrap()));
    nodes[1].candidate.wanted = wants("nothing");
    nodes[2].candidate.wanted = wants("largerthan=100");
    nodes[3].candidate.wanted = wants("largerthan=100");
    // n1 (no expression: it wants everything), n3 and n4 want it: the
    // target is 3, above the minimum of 1, and n2 gets nothing.
    let p = plan_key(&key(), &nodes, &set(&["n1"]), 1, 0);
    assert_eq!(p.target, 3);
    let mut to = p.copy_to.clone();
    to.sort();
    assert_eq!(to, ["n3", "n4"], "{p:?}");
    // For the minimum's sake even a node that wants nothing takes a copy,
    // after the others.
    nodes[1].candidate.free_bytes = Some(u64::MAX);
    let p = plan_key(&key(), &nodes, &set(&["n1"]), 4, 0);
    assert_eq!(p.copy_to.len(), 3);
    assert_eq!(p.copy_to[2], "n2");
}

#[test]
fn full_nodes_take_no_copy() {
    use NodeState::*;
    let mut nodes = [node("n1", Up), node("n2", Up), node("n3", Up)];
    nodes[1].candidate.free_bytes = Some(500);
    let p = plan_key(&key(), &nodes, &set(&["n1"]), 3, 0);
    assert_eq!(p.copy_to, ["n3"]);
    assert_eq!(p.short, 1);
}

#[test]
fn without_preferred_content_every_up_node_keeps_a_copy() {
    use NodeState::*;
    // As an upload to such a cluster stores on every node, so does repair:
    // a copy quarantined on n1 is made again there.
    let nodes = [node("n1", Up), node("n2", Up), node("n3", Up)];
    let p = plan_key(&key(), &nodes, &set(&["n2", "n3"]), 1, 0);
    assert_eq!(p.target, 3);
    assert_eq!(p.copy_to, ["n1"]);
    // A node down past the grace is not part of the target.
    let nodes = [node("n1", Lost), node("n2", Up), node("n3", Up)];
    let p = plan_key(&key(), &nodes, &set(&["n2", "n3"]), 1, 0);
    assert_eq!(p.target, 2);
    assert!(!p.needs_work());
}

#[test]
fn a_degraded_node_takes_no_copy_until_it_recovers() {
    use NodeState::*;
    let mut nodes = [node("n1", Up), node("n2", Up), node("n3", Up)];
    nodes[1].candidate.degraded = true;
    // A PUT stored on n1 and n3 while n2 was degraded: nothing to do yet,
    // and even the cluster's minimum does not send a copy to n2.
    let p = plan_key(&key(), &nodes, &set(&["n1", "n3"]), 1, 0);
    assert_eq!(p.target, 2);
    assert!(!p.needs_work());
    let p = plan_key(&key(), &nodes, &set(&["n1", "n3"]), 3, 0);
    assert!(p.copy_to.is_empty());
    assert_eq!(p.short, 1);
    // Recovered: n2 gets its copy back.
    nodes[1].candidate.degraded = false;
    let p = plan_key(&key(), &nodes, &set(&["n1", "n3"]), 1, 0);
    assert_eq!(p.target, 3);
    assert_eq!(p.copy_to, ["n2"]);
}
