//! No single point of failure, across namespaced hosts: two coordinators
//! sharing PostgreSQL (on its own host), two gateways and three agents, each
//! in its own network namespace; the git-annex clients in the root
//! namespace. Coordinators are killed with SIGKILL and agents cut off while
//! real clients copy and get.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::hosts::HaMesh;
use common::{Client, objects_named, wait_until};
use sha2::{Digest, Sha256};

const NODES: [&str; 3] = ["node1", "node2", "node3"];

/// A clone of the cluster `mesh` through the gateway at `url`.
fn clone_through(url: &str) -> Client {
    let client = Client::new_uninit();
    let allow = "annex.security.allowed-ip-addresses=all";
    client.ok(&["git", "clone", "-q", "-c", allow, &format!("{url}/mesh"), "."]);
    client.ok(&["git", "config", "annex.security.allowed-ip-addresses", "all"]);
    client.ok(&["git", "annex", "init", "client"]);
    client
}

/// Annexed object files under `store`.
fn objects_in(store: &Path) -> usize {
    fn walk(p: &Path, n: &mut usize) {
        for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                walk(&e.path(), n);
            } else if e.file_name().to_string_lossy().starts_with("SHA256E-") {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(&store.join("annex").join("objects"), &mut n);
    n
}

/// The cluster clock as each coordinator reads it (`admin status`), in the
/// order given: one reading per coordinator that answered.
fn clocks(mesh: &HaMesh) -> Vec<(String, u64)> {
    let out = mesh.admin(&["--json", "status"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let coordinators = status["coordinators"].as_array().cloned().unwrap_or_default();
    coordinators
        .iter()
        .filter(|c| c["up"] == true)
        .map(|c| {
            let clock = c["clock_ms"].as_u64().unwrap_or_else(|| panic!("clock in {c}"));
            (c["url"].as_str().unwrap_or_default().to_string(), clock)
        })
        .collect()
}

/// Node names the location log lists for `key`, read through the
/// coordinators (`admin whereis`).
fn listed(mesh: &HaMesh, key: &str) -> Vec<String> {
    let out = mesh.admin_ok(&["whereis", key]);
    out.lines().skip(1).filter_map(|l| l.split(" -- ").nth(1)).map(|s| s.trim().into()).collect()
}

fn store_of(mesh: &HaMesh, node: &str) -> std::path::PathBuf {
    mesh.dir.path().join("nodes").join(node)
}

#[test]
fn two_coordinators_survive_a_kill_mid_copy_and_the_clock_never_runs_back() {
    let Some(mut mesh) = HaMesh::start(3) else { return };
    let status = mesh.admin_ok(&["status"]);
    assert!(status.matches("postgres://").count() >= 2, "both on PostgreSQL:\n{status}");
    // Agents heartbeat to the first coordinator; the second sees the same
    // health, through the store.
    wait_until("both coordinators seeing 3 nodes up", Duration::from_secs(30), || {
        let out = mesh.admin(&["--json", "status"]);
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let coordinators = s["coordinators"].as_array().cloned().unwrap_or_default();
        let up: Vec<u64> = coordinators.iter().filter_map(|c| c["nodes_up"].as_u64()).collect();
        up == [3, 3]
    });

    // The clock through both coordinators, in turn, across kills and
    // restarts of each: every reading at least the one before.
    let mut readings: Vec<(String, u64)> = Vec::new();
    let mut read_clocks = |mesh: &HaMesh, what: &str| {
        let now = clocks(mesh);
        assert!(!now.is_empty(), "no coordinator answered {what}");
        readings.extend(now.into_iter().map(|(c, ms)| (format!("{what}: {c}"), ms)));
    };
    read_clocks(&mesh, "at start");

    let a = clone_through(&mesh.url());
    a.ok(&["git", "config", "annex.retry", "3"]);
    for i in 0..300 {
        a.write_file(&format!("f{i:03}.bin"), 2048 + i * 37, i as u64);
    }
    a.ok(&["git", "annex", "add", "."]);
    a.ok(&["git", "commit", "-q", "-m", "300 files"]);

    // The copy runs while the coordinator the gateways use first is killed.
    let copy = a
        .command(&["timeout", "900", "git", "annex", "copy", "-J4", "--to", "origin", "."])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    wait_until("a third of the copy", Duration::from_secs(300), || {
        objects_in(&store_of(&mesh, "node1")) >= 100
    });
    mesh.proc("coordinator").kill();
    let killed_at = objects_in(&store_of(&mesh, "node1"));
    read_clocks(&mesh, "coordinator 1 killed");
    let out = copy.wait_with_output().unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the copy failed after a coordinator was killed:\n{text}");
    eprintln!(
        "copy of 300 files took {:.1}s; coordinator 1 killed after {killed_at} files",
        started.elapsed().as_secs_f64()
    );
    assert!(killed_at < 300, "the kill came after the copy ended");
    let gateway_log =
        std::fs::read_to_string(mesh.dir.path().join("gateway.log")).unwrap_or_default();
    assert!(
        gateway_log.contains(&format!("now using {}", mesh.coordinators[1])),
        "gateway A never moved to the second coordinator:\n{gateway_log}"
    );

    // Every file the client believes stored is on the nodes and in the log.
    let stored = a.ok(&["git", "annex", "find", "--in", "origin"]);
    let files: Vec<&str> = stored.lines().collect();
    assert_eq!(files.len(), 300, "the client believes only these stored:\n{stored}");
    for f in &files {
        let key = a.key_of(f);
        let holders = listed(&mesh, &key);
        assert!(!holders.is_empty(), "{f} ({key}) is in no node's log entry");
        for n in &holders {
            assert_eq!(
                objects_named(&store_of(&mesh, n), &key).len(),
                1,
                "the log lists {n} for {f}, but it does not hold it"
            );
        }
    }

    // A second client, through gateway B, gets every file.
    let b = Client::clone_of(&a);
    b.add_remote("meshb", &format!("{}/mesh", mesh.gateway_b));
    b.ok(&["timeout", "900", "git", "annex", "get", "-J4", "--from", "meshb", "."]);
    for (i, f) in files.iter().enumerate() {
        let got = std::fs::read(b.path().join(f)).unwrap();
        let want = std::fs::read(a.path().join(f)).unwrap();
        assert!(Sha256::digest(&got) == Sha256::digest(&want), "{f} differs (#{i})");
    }

    // Restart the killed coordinator, then kill and restart the other.
    mesh.restart_coordinator("coordinator");
    read_clocks(&mesh, "coordinator 1 restarted");
    mesh.proc("coordinator2").kill();
    read_clocks(&mesh, "coordinator 2 killed");
    mesh.restart_coordinator("coordinator2");
    read_clocks(&mesh, "coordinator 2 restarted");
    for _ in 0..5 {
        read_clocks(&mesh, "both up");
    }
    let both = clocks(&mesh);
    assert_eq!(both.len(), 2, "both coordinators answer again: {both:?}");
    for w in readings.windows(2) {
        assert!(w[1].1 >= w[0].1, "the cluster clock ran backwards: {:?} then {:?}", w[0], w[1]);
    }
    eprintln!("{} clock readings, never backwards: {readings:?}", readings.len());
}

#[test]
fn a_cut_off_agent_is_failed_over_on_get_cut_out_of_a_put_and_repaired_after() {
    let Some(mesh) = HaMesh::start(3) else { return };
    mesh.admin_ok(&["cluster", "mincopies", "mesh", "2"]);
    // node1 is preferred for GETs, so the GET below starts there.
    mesh.admin_ok(&["node", "cost", "node1", "10"]);
    // Slow links on the agents, so that a transfer is under way long
    // enough to be cut.
    for n in NODES {
        mesh.agent_host(n).limit_rate("40mbit");
    }
    let a = clone_through(&mesh.url());
    let (data, key) = a.annex_file("big.bin", 24 * 1024 * 1024, 11);
    a.ok(&["git", "annex", "copy", "--to", "origin", "big.bin"]);
    let mut holders = listed(&mesh, &key);
    holders.sort();
    assert_eq!(holders, NODES, "all three hold it before the cuts");

    // GET through gateway B; node1 is cut off once bytes flow.
    let b = Client::clone_of(&a);
    b.ok(&["git", "config", "annex.retry", "3"]);
    b.add_remote("meshb", &format!("{}/mesh", mesh.gateway_b));
    let get = b
        .command(&["timeout", "600", "git", "annex", "get", "--from", "meshb", "big.bin"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let tmp = b.path().join(".git/annex/tmp");
    wait_until("the GET under way", Duration::from_secs(120), || {
        std::fs::read_dir(&tmp)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.metadata().is_ok_and(|m| m.len() > 1024 * 1024))
    });
    mesh.agent_host("node1").link_down();
    let out = get.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the GET did not fail over:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let got = std::fs::read(b.path().join("big.bin")).unwrap();
    assert!(Sha256::digest(&got) == Sha256::digest(&data), "the GET delivered other bytes");
    mesh.agent_host("node1").link_up();
    wait_until("node1 up again", Duration::from_secs(90), || mesh.healthy_nodes() == 3);

    // PUT of a new file; node2 is cut off once the upload is under way.
    let (data2, key2) = a.annex_file("big2.bin", 24 * 1024 * 1024, 12);
    let put = a
        .command(&["timeout", "600", "git", "annex", "copy", "--to", "origin", "big2.bin"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the PUT under way", Duration::from_secs(120), || {
        NODES.iter().any(|n| {
            let tmp = store_of(&mesh, n).join("annex/tmp");
            dir_bytes(&tmp) > 1024 * 1024
        })
    });
    mesh.agent_host("node2").link_down();
    let out = put.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the PUT did not complete on the others:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut holders = listed(&mesh, &key2);
    holders.sort();
    assert_eq!(holders, ["node1", "node3"], "the PUT completed on the nodes still reachable");
    for n in ["node1", "node3"] {
        let objs = objects_named(&store_of(&mesh, n), &key2);
        assert_eq!(objs.len(), 1, "{n} holds big2.bin");
        assert!(Sha256::digest(std::fs::read(&objs[0]).unwrap()) == Sha256::digest(&data2));
    }

    // Back on the network, repair gives node2 its copy again.
    mesh.agent_host("node2").link_up();
    wait_until("node2 up again", Duration::from_secs(90), || mesh.healthy_nodes() == 3);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let _ = mesh.admin(&["repair"]);
        let mut holders = listed(&mesh, &key2);
        holders.sort();
        if holders == NODES {
            break;
        }
        assert!(Instant::now() < deadline, "repair did not bring node2's copy back: {holders:?}");
        std::thread::sleep(Duration::from_secs(2));
    }
    let objs = objects_named(&store_of(&mesh, "node2"), &key2);
    assert_eq!(objs.len(), 1, "node2 holds big2.bin again");
    assert!(Sha256::digest(std::fs::read(&objs[0]).unwrap()) == Sha256::digest(&data2));
}

/// Bytes of all files under `p`.
fn dir_bytes(p: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        let m = match e.metadata() {
            Ok(m) => m,
            Err(_) => continue,
        };
        total += if m.is_dir() { dir_bytes(&e.path()) } else { m.len() };
    }
    total
}
