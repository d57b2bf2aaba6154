//! Members given several coordinators (`--coordinator URL,URL`) with the
//! first one dead, against the real git-annex; and the topology watch
//! stream a gateway follows.

mod common;

use std::time::Duration;

use annexmesh::rpc;
use common::{Client, Mesh, free_port, objects_named};

#[test]
fn a_mesh_whose_members_list_a_dead_coordinator_first_serves_clients() {
    let mut mesh = Mesh::separate(0);
    let live = mesh.coordinator.clone();
    // A port nothing listens on, first in every member's list.
    let dead = format!("https://127.0.0.1:{}", free_port());
    mesh.coordinator = format!("{dead},{live}");
    // The gateway, the agents (which join through the list) and the admin
    // CLI the harness runs all take the list from here on.
    mesh.restart_gateway_with(&["--wideopen"]);
    for i in 1..=3 {
        mesh.start_agent(&format!("node{i}"));
    }
    mesh.wait_ready(3);
    let nodes = mesh.admin_ok(&["node", "list"]);
    for n in ["node1", "node2", "node3"] {
        assert!(nodes.contains(n), "{n} missing from:\n{nodes}");
    }

    let client = Client::new();
    client.add_remote("mesh", &format!("{}/mesh", mesh.url()));
    let (data, key) = client.annex_file("f.bin", 3 * 1024 * 1024, 7);
    client.ok(&["git", "annex", "copy", "--to", "mesh", "f.bin"]);
    let stores = mesh.assert_held_everywhere(&key, &data);

    client.ok(&["git", "annex", "drop", "f.bin"]);
    client.ok(&["git", "annex", "get", "--from", "mesh", "f.bin"]);
    assert_eq!(std::fs::read(client.path().join("f.bin")).unwrap(), data);

    client.ok(&["git", "annex", "drop", "--from", "mesh", "f.bin"]);
    for s in &stores {
        assert!(objects_named(s, &key).is_empty(), "{} still holds {key}", s.display());
    }

    // The gateway said once which coordinator failed and which it uses.
    let log = std::fs::read_to_string(mesh.dir.path().join("gateway.log")).unwrap();
    assert!(log.contains(&format!("coordinator {dead} failed")), "{log}");
    assert!(log.contains(&format!("now using {live}")), "{log}");
    // And it follows the topology watch stream, through the list too.
    assert!(log.contains("watching the topology"), "{log}");
}

#[test]
fn the_admin_cli_names_every_coordinator_it_could_not_reach() {
    let mesh = Mesh::separate(0);
    let (a, b) = (free_port(), free_port());
    let mut cmd = common::annexmesh();
    let list = format!("https://127.0.0.1:{a},https://127.0.0.1:{b}");
    cmd.args(["admin", "--coordinator", &list, "node", "list"]);
    for (k, v) in mesh.admin_env() {
        cmd.env(k, v);
    }
    let (ok, log) = common::run_to_exit(&mut cmd);
    assert!(!ok, "{log}");
    assert!(log.contains(&format!("127.0.0.1:{a}")) && log.contains(&format!("127.0.0.1:{b}")));
}

#[test]
fn a_subscribed_gateway_hears_a_node_drain() {
    let mesh = Mesh::separate(1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let channel = mesh.gateway_channel().await;
        let mut c = rpc::coordinator_client::CoordinatorClient::new(channel);
        let mut stream = c.watch_topology(rpc::WatchTopologyRequest {}).await.unwrap().into_inner();
        let guard = Duration::from_secs(60);
        let first = tokio::time::timeout(guard, stream.message()).await.unwrap().unwrap();
        let first = first.expect("a message at once");
        assert!(!first.keepalive);

        let out = mesh.admin_ok(&["node", "drain", "node1"]);
        assert!(out.contains("node1"), "{out}");
        // The next message that is not a keep-alive tells of the drain.
        let mut changed = None;
        for _ in 0..10 {
            let msg = tokio::time::timeout(guard, stream.message()).await.unwrap().unwrap();
            let msg = msg.expect("the stream stays open");
            if !msg.keepalive {
                changed = Some(msg);
                break;
            }
        }
        let changed = changed.expect("a change after the drain");
        assert!(changed.version >= first.version);
        let t = c.topology(rpc::TopologyRequest {}).await.unwrap().into_inner();
        assert!(t.nodes.iter().any(|n| n.name == "node1" && n.draining), "{t:?}");
    });
}
