//! The mesh deployed across hosts: each role in its own network namespace
//! with its own address, the git-annex client in the root namespace.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::hosts::HostMesh;
use common::netns::net_or_skip;
use common::{Client, Proc, free_port, wait_until};
use sha2::{Digest, Sha256};

fn reachable(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

/// Whether `host` connects to `addr` (bash's /dev/tcp, at most 3 s).
fn host_reaches(host: &common::netns::Host, addr: SocketAddr) -> bool {
    let script = format!("exec 3<>/dev/tcp/{}/{}", addr.ip(), addr.port());
    host.command("timeout")
        .args(["3", "bash", "-c", &script])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The health column of `node` in `annexmesh admin node list`.
fn health_of(mesh: &common::Mesh, node: &str) -> String {
    let health = mesh.node_field(node, "health");
    assert!(!health.is_empty(), "no {node} in the node list");
    health
}

#[test]
fn hosts_reach_each_other_and_a_cut_link_stops_connections() {
    let Some(net) = net_or_skip(2) else { return };
    let dir = tempfile::tempdir().unwrap();
    // A listener on host 1: the coordinator, plaintext, is enough.
    let addr = SocketAddr::new(net.host(1).addr().into(), free_port());
    let mut cmd = net.host(1).command(env!("CARGO_BIN_EXE_annexmesh"));
    cmd.args(["coordinator", "--insecure", "--listen", &addr.to_string()])
        .arg("--data")
        .arg(dir.path().join("data"));
    let server = Proc::spawn("coordinator", &mut cmd, dir.path());
    wait_until("the listener on host 1", Duration::from_secs(20), || reachable(addr));
    // `ip netns exec` execs: the PID is the server's, in host 1's namespace.
    let pids = std::process::Command::new("ip")
        .args(["netns", "pids", net.host(1).netns()])
        .output()
        .unwrap();
    let pids = String::from_utf8_lossy(&pids.stdout).into_owned();
    assert!(pids.split_whitespace().any(|p| p == server.pid().to_string()), "{pids}");
    assert!(host_reaches(net.host(0), addr), "host 0 cannot reach host 1");

    net.host(1).link_down();
    assert!(!reachable(addr), "the root namespace still reaches a cut-off host");
    assert!(!host_reaches(net.host(0), addr), "host 0 still reaches a cut-off host");

    net.host(1).link_up();
    wait_until("host 1 back", Duration::from_secs(20), || reachable(addr));
    assert!(host_reaches(net.host(0), addr));

    // A rate limit leaves the host reachable.
    net.host(1).limit_rate("100mbit");
    assert!(reachable(addr));
    drop(server);
}

#[test]
fn a_panicking_test_leaves_no_namespace_bridge_or_process() {
    if net_or_skip(0).is_none() {
        return;
    }
    let made = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let net = net_or_skip(2).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let sleeper = Proc::spawn("sleep", net.host(1).command("sleep").arg("600"), dir.path());
        let names: Vec<String> = net.hosts.iter().map(|h| h.netns().to_string()).collect();
        *made.lock().unwrap() = Some((net.bridge().to_string(), names, sleeper.pid()));
        panic!("the test fails with a process running on a host");
    });
    assert!(result.is_err());
    let (bridge, namespaces, pid) = made.into_inner().unwrap().expect("the network was made");
    let list = std::process::Command::new("ip").args(["netns", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    for ns in &namespaces {
        assert!(!list.split_whitespace().any(|n| n == ns), "{ns} left behind:\n{list}");
    }
    let link = std::process::Command::new("ip").args(["link", "show", &bridge]).output().unwrap();
    assert!(!link.status.success(), "bridge {bridge} left behind");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "process {pid} still runs");
}

/// A clone of the mesh's cluster through the gateway's address.
fn clone_mesh(mesh: &HostMesh) -> Client {
    let client = Client::new_uninit();
    let url = format!("{}/mesh", mesh.url());
    let allow = "annex.security.allowed-ip-addresses=all";
    client.ok(&["git", "clone", "-q", "-c", allow, &url, "."]);
    client.ok(&["git", "config", "annex.security.allowed-ip-addresses", "all"]);
    client.ok(&["git", "annex", "init", "client"]);
    client
}

const NODES: [&str; 3] = ["node1", "node2", "node3"];

fn log_of(mesh: &common::Mesh, proc_name: &str) -> String {
    std::fs::read_to_string(mesh.dir.path().join(format!("{proc_name}.log"))).unwrap_or_default()
}

fn sha256(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

#[test]
fn a_mesh_across_five_hosts_stores_and_serves_and_fails_over_a_cut_off_node() {
    let Some(mesh) = HostMesh::start(3) else { return };
    // Every role listens on its own host's address.
    let list = mesh.admin_ok(&["node", "list"]);
    for i in 1..=3 {
        let addr = mesh.agent_host(&format!("node{i}")).addr();
        assert!(list.contains(&format!("https://{addr}:")), "node{i} at {addr}:\n{list}");
    }
    assert_eq!(mesh.http.ip(), std::net::IpAddr::from(mesh.net.host(1).addr()));

    let client = clone_mesh(&mesh);
    let (data, key) = client.annex_file("big.bin", 5 * 1024 * 1024, 7);
    client.ok(&["git", "annex", "copy", "--to", "origin", "big.bin"]);
    mesh.assert_held_everywhere(&key, &data);
    let whereis = client.ok(&["git", "annex", "whereis", "big.bin"]);
    for n in ["node1", "node2", "node3"] {
        assert!(whereis.contains(&format!("[origin-{n}]")), "{n} in:\n{whereis}");
    }
    client.ok(&["git", "annex", "drop", "big.bin"]);
    client.ok(&["git", "annex", "get", "--from", "origin", "big.bin"]);
    assert_eq!(sha256(&std::fs::read(client.path().join("big.bin")).unwrap()), sha256(&data));

    // The host of the node that served that GET is cut off: the next GET is
    // served by another node.
    let served = |n: &str| log_of(&mesh, n).matches("serving get").count();
    let before: Vec<usize> = NODES.iter().map(|n| served(n)).collect();
    let first = NODES[before.iter().position(|&c| c > 0).expect("a node served the GET")];
    let cut = mesh.agent_host(first);
    cut.link_down();
    client.ok(&["git", "annex", "drop", "big.bin"]);
    // A hang guard only: git-annex retries and timeouts decide the outcome.
    client.ok(&["timeout", "300", "git", "annex", "get", "--from", "origin", "big.bin"]);
    assert_eq!(sha256(&std::fs::read(client.path().join("big.bin")).unwrap()), sha256(&data));
    let others_served =
        NODES.iter().zip(&before).filter(|(n, _)| **n != first).any(|(n, &b)| served(n) > b);
    assert!(others_served, "no other node served the GET:\n{}", log_of(&mesh, "gateway"));
    wait_until("the cut-off node reported down", Duration::from_secs(60), || {
        health_of(&mesh, first) == "down"
    });
    for n in NODES.iter().filter(|n| **n != first) {
        assert_eq!(health_of(&mesh, n), "up", "{n}");
    }

    cut.link_up();
    wait_until("the node back up", Duration::from_secs(60), || health_of(&mesh, first) == "up");
    assert_eq!(mesh.healthy_nodes(), 3);
}
