//! Tests of the gRPC services over a real store: names stay unique under
//! concurrent requests, and the errors say what to do.

use std::sync::Arc;

use tonic::{Code, Request};

use super::Coordinator;
use crate::rpc::{self, admin_server::Admin as _, coordinator_server::Coordinator as _};

async fn open() -> (tempfile::TempDir, Arc<Coordinator>) {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::open(dir.path()).await.unwrap();
    (dir, Arc::new(c))
}

fn registration(uuid: &uuid::Uuid, name: &str) -> Request<rpc::RegisterRequest> {
    Request::new(rpc::RegisterRequest {
        uuid: uuid.to_string(),
        name: name.into(),
        cluster: "mesh".into(),
        address: "127.0.0.1:1".into(),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_cluster_creates_make_one_cluster() {
    let (_dir, c) = open().await;
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move {
                c.admin
                    .create_cluster(Request::new(rpc::CreateClusterRequest { name: "mesh".into() }))
                    .await
            })
        })
        .collect();
    let mut created = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(info) => created.push(info.into_inner()),
            Err(e) => {
                assert_eq!(e.code(), Code::AlreadyExists);
                assert!(e.message().contains("cluster \"mesh\" exists already"), "{}", e.message());
            }
        }
    }
    assert_eq!(created.len(), 1);
    let listed = c.admin.list_clusters(Request::new(rpc::ListClustersRequest {})).await.unwrap();
    assert_eq!(listed.into_inner().clusters, created);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_registering_one_name_at_once_get_one_success_and_one_clear_error() {
    let (_dir, c) = open().await;
    c.store.create_cluster("mesh").await.unwrap();
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let register = |id| {
        let c = c.clone();
        tokio::spawn(async move { c.service.register(registration(&id, "node1")).await })
    };
    let (ra, rb) = (register(a), register(b));
    let (ra, rb) = (ra.await.unwrap(), rb.await.unwrap());
    let (winner, err) = match (ra, rb) {
        (Ok(_), Err(e)) => (a, e),
        (Err(e), Ok(_)) => (b, e),
        (ra, rb) => panic!("expected one success and one error, got {ra:?} and {rb:?}"),
    };
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(
        err.message(),
        format!("node name \"node1\" is taken by node {winner}; choose another --name")
    );
    let nodes = c.store.nodes().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].uuid, winner.to_string());
}

#[tokio::test]
async fn a_node_registering_again_after_a_restart_is_welcome() {
    let (_dir, c) = open().await;
    let mesh = c.store.create_cluster("mesh").await.unwrap().0;
    let id = uuid::Uuid::new_v4();
    for _ in 0..2 {
        let reply = c.service.register(registration(&id, "node1")).await.unwrap();
        assert_eq!(reply.into_inner().cluster_uuid, mesh.uuid);
    }
    let topology =
        c.service.topology(Request::new(rpc::TopologyRequest {})).await.unwrap().into_inner();
    assert_eq!(topology.nodes.len(), 1);
    assert_eq!(topology.nodes[0].name, "node1");
    assert!(topology.nodes[0].healthy, "a registration counts as being heard from");
}
