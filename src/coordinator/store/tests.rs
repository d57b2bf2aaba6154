//! Tests of the store as a whole: the on-disk format and the writer.

use std::sync::Arc;

use redb::{Database, ReadableDatabase, TableDefinition};

use super::*;
use crate::auth::{self, Mode};

/// The tables as earlier versions wrote them, spelled out here so that a
/// change to the definitions in `mod.rs` shows up as a failure.
mod v1 {
    use super::TableDefinition;
    pub const CLUSTERS: TableDefinition<&str, &str> = TableDefinition::new("clusters");
    pub const NODES: TableDefinition<&str, &str> = TableDefinition::new("nodes");
    pub const LOCATIONS: TableDefinition<&str, (u64, bool)> = TableDefinition::new("locations");
    pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
    pub const NODE_SETTINGS: TableDefinition<&str, &str> = TableDefinition::new("node_settings");
    pub const CLUSTER_SETTINGS: TableDefinition<&str, &str> =
        TableDefinition::new("cluster_settings");
    pub const TOKENS: TableDefinition<&str, &str> = TableDefinition::new("tokens");
}

const KEY: &str = "SHA256E-s6--5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";

fn write_v1(path: &std::path::Path, token_hash: &str) {
    let db = Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(v1::CLUSTERS).unwrap().insert("c1", r#"{"uuid":"c1","name":"mesh"}"#).unwrap();
    txn.open_table(v1::NODES)
        .unwrap()
        .insert("n1", r#"{"uuid":"n1","name":"node1","cluster_uuid":"c1","address":"127.0.0.1:9"}"#)
        .unwrap();
    txn.open_table(v1::LOCATIONS)
        .unwrap()
        .insert(format!("{KEY}\tn1").as_str(), (1234, true))
        .unwrap();
    txn.open_table(v1::META).unwrap().insert("clock_lease_ms", 5000).unwrap();
    txn.open_table(v1::NODE_SETTINGS)
        .unwrap()
        .insert("n1", r#"{"wanted":"largerthan=1MB","draining":true,"cost":7}"#)
        .unwrap();
    // A field left out reads as its default.
    txn.open_table(v1::CLUSTER_SETTINGS).unwrap().insert("c1", r#"{"min_copies":2}"#).unwrap();
    txn.open_table(v1::TOKENS)
        .unwrap()
        .insert(token_hash, r#"{"mode":"readonly","label":"ci","created_unix_ms":1700000000000}"#)
        .unwrap();
    txn.commit().unwrap();
}

#[tokio::test]
async fn an_existing_data_directory_opens_and_reads_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let hash = auth::hash_token("secret");
    write_v1(&dir.path().join("coordinator.redb"), &hash);
    {
        let s = Redb::open(dir.path()).unwrap();
        let mesh = Cluster { uuid: "c1".into(), name: "mesh".into() };
        assert_eq!(s.clusters().unwrap(), vec![mesh.clone()]);
        let node1 = Node {
            uuid: "n1".into(),
            name: "node1".into(),
            cluster_uuid: "c1".into(),
            address: "127.0.0.1:9".into(),
        };
        assert_eq!(s.node("n1").unwrap(), Some(node1));
        assert_eq!(
            s.locations(KEY).unwrap(),
            vec![LocationEntry { node_uuid: "n1".into(), present: true, changed_unix_ms: 1234 }]
        );
        assert_eq!(s.meta("clock_lease_ms").unwrap(), Some(5000));
        assert_eq!(
            s.node_settings().unwrap()["n1"],
            NodeSettings { wanted: Some("largerthan=1MB".into()), draining: true, cost: Some(7) }
        );
        assert_eq!(
            s.cluster_settings().unwrap()["c1"],
            ClusterSettings { min_copies: Some(2), ..Default::default() }
        );
        assert_eq!(
            s.token(&hash).unwrap(),
            Some(Token {
                sha256: hash.clone(),
                mode: Mode::ReadOnly,
                label: "ci".into(),
                created_unix_ms: 1_700_000_000_000,
                user: None,
            })
        );
        // What this version writes, earlier versions read.
        let (other, _) = s.create_cluster("other").await.unwrap();
        s.update_cluster_settings("c1", |c| c.reserve_bytes = Some(5)).await.unwrap();
        assert_eq!(s.create_cluster("mesh").await.unwrap(), (mesh, false));
        drop(s);
        let db = Database::create(dir.path().join("coordinator.redb")).unwrap();
        let txn = db.begin_read().unwrap();
        let clusters = txn.open_table(v1::CLUSTERS).unwrap();
        let raw = clusters.get(other.uuid.as_str()).unwrap().unwrap().value().to_string();
        assert_eq!(raw, format!(r#"{{"uuid":"{}","name":"other"}}"#, other.uuid));
        let settings = txn.open_table(v1::CLUSTER_SETTINGS).unwrap();
        let raw = settings.get("c1").unwrap().unwrap().value().to_string();
        assert_eq!(raw, r#"{"min_copies":2,"reserve_bytes":5}"#);
    }
}

#[tokio::test]
async fn writes_commit_on_the_writer_thread() {
    let dir = tempfile::tempdir().unwrap();
    let s = Redb::open(dir.path()).unwrap();
    let thread = s.write(|_| Ok(std::thread::current().name().map(String::from))).await.unwrap();
    assert_eq!(thread.as_deref(), Some(writer::THREAD_NAME));
}

#[tokio::test]
async fn a_failed_write_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let s = Redb::open(dir.path()).unwrap();
    let err = s
        .write(|txn| {
            txn.open_table(META)?.insert("half", 1)?;
            Err::<(), _>(StoreError::Corrupt("refused".into()))
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(ref why) if why == "refused"), "{err}");
    assert_eq!(s.meta("half").unwrap(), None);
    // The writer goes on.
    s.set_meta("after", 2).await.unwrap();
    assert_eq!(s.meta("after").unwrap(), Some(2));
}

#[tokio::test]
async fn a_panicking_write_fails_alone_and_the_writer_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let s = Redb::open(dir.path()).unwrap();
    let err = s
        .write(|txn| -> Result<()> {
            txn.open_table(META)?.insert("half", 1)?;
            panic!("a bug in a write");
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Abandoned), "{err}");
    assert_eq!(s.meta("half").unwrap(), None);
    s.set_meta("after", 2).await.unwrap();
    assert_eq!(s.meta("after").unwrap(), Some(2));
}

/// More writers than the queue holds wait their turn; none is lost and each
/// sees its own writes once answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_beyond_the_queue_all_commit() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(Redb::open(dir.path()).unwrap());
    let tasks: Vec<_> = (0..2 * writer::QUEUE as u64)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let key = format!("SHA256E-s{i}--{i:064x}");
                s.record(vec![(key.clone(), "n1".into(), true)]).await.unwrap();
                assert_eq!(s.locations(&key).unwrap().len(), 1);
                // Some writes of their own transaction in between.
                if i % 64 == 0 {
                    s.set_meta(&format!("m{i}"), i).await.unwrap();
                    assert_eq!(s.meta(&format!("m{i}")).unwrap(), Some(i));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    for i in (0..2 * writer::QUEUE as u64).step_by(64) {
        assert_eq!(s.meta(&format!("m{i}")).unwrap(), Some(i));
        assert_eq!(s.locations(&format!("SHA256E-s{i}--{i:064x}")).unwrap().len(), 1);
    }
}

#[tokio::test]
async fn a_cluster_with_nodes_is_not_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let s = Redb::open(dir.path()).unwrap();
    let (c, _) = s.create_cluster("mesh").await.unwrap();
    s.update_cluster_settings(&c.uuid, |x| x.min_copies = Some(2)).await.unwrap();
    let n = Node {
        uuid: "n1".into(),
        name: "node1".into(),
        cluster_uuid: c.uuid.clone(),
        address: "a".into(),
    };
    s.register_node(n).await.unwrap();
    let refused = s.delete_cluster(&c.uuid).await.unwrap();
    assert_eq!(refused, ClusterDeletion::HasNodes(vec!["node1".into()]));
    assert_eq!(s.clusters().unwrap().len(), 1);
    s.remove_node("n1", true).await.unwrap();
    assert_eq!(s.delete_cluster(&c.uuid).await.unwrap(), ClusterDeletion::Deleted);
    assert!(s.clusters().unwrap().is_empty());
    assert!(s.cluster_settings().unwrap().is_empty(), "its settings went with it");
    assert_eq!(s.delete_cluster(&c.uuid).await.unwrap(), ClusterDeletion::NotFound);
}
