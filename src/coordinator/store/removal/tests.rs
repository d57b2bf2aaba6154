use super::*;
use crate::coordinator::store::Registration;

const K1: &str = "SHA256E-s1--1111111111111111111111111111111111111111111111111111111111111111";
const K2: &str = "SHA256E-s2--2222222222222222222222222222222222222222222222222222222222222222";

fn node(uuid: &str, name: &str) -> Node {
    Node { uuid: uuid.into(), name: name.into(), cluster_uuid: "c".into(), address: "a".into() }
}

async fn store_with_two_nodes(dir: &std::path::Path) -> Redb {
    let s = Redb::open(dir).unwrap();
    for n in [node("u1", "node1"), node("u2", "node2")] {
        assert_eq!(s.register_node(n).await.unwrap(), Registration::Saved);
    }
    // K1 on both nodes, K2 on u2 alone.
    s.record(vec![(K1.into(), "u1".into(), true), (K1.into(), "u2".into(), true)]).await.unwrap();
    s.record(vec![(K2.into(), "u2".into(), true)]).await.unwrap();
    s
}

#[tokio::test]
async fn a_node_with_the_only_copy_of_a_key_is_not_removed() {
    let dir = tempfile::tempdir().unwrap();
    let s = store_with_two_nodes(dir.path()).await;
    let r = s.remove_node("u2", false).await.unwrap();
    assert_eq!(r, Removal::SoleCopies { count: 1, sample: vec![K2.to_string()] });
    assert!(s.node("u2").unwrap().is_some());
    assert_eq!(s.locations(K2).unwrap().len(), 1);
    // u1 holds no key alone: it goes, and its entries are struck.
    assert_eq!(
        s.remove_node("u1", false).await.unwrap(),
        Removal::Done { struck: 1, lost_keys: 0 }
    );
    let k1: Vec<_> = s.locations(K1).unwrap().into_iter().map(|e| e.node_uuid).collect();
    assert_eq!(k1, vec!["u2".to_string()]);
}

#[tokio::test]
async fn a_lost_node_is_removed_its_name_freed_and_its_identity_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = store_with_two_nodes(dir.path()).await;
    assert_eq!(s.remove_node("u2", true).await.unwrap(), Removal::Done { struck: 2, lost_keys: 1 });
    assert!(s.locations(K2).unwrap().is_empty());
    assert_eq!(s.nodes().unwrap(), vec![node("u1", "node1")]);
    let removed = s.removed_nodes().unwrap();
    assert_eq!((removed.len(), removed[0].lost), (1, true));
    // A late report on the removed node is not recorded.
    s.record(vec![(K2.into(), "u2".into(), true)]).await.unwrap();
    assert!(s.locations(K2).unwrap().is_empty());
    // The name is free for a new node; the old identity may not return.
    assert_eq!(s.register_node(node("u3", "node2")).await.unwrap(), Registration::Saved);
    assert!(matches!(
        s.register_node(node("u2", "node9")).await.unwrap(),
        Registration::Removed(_)
    ));
}
