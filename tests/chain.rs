//! Chain replication with the real git-annex client: the gateway sends the
//! content once, to the first node, which stores it while forwarding it to
//! the next. Each node resumes from its own partial and verifies the
//! content itself; a node that dies mid-chain is cut out and the others
//! complete.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::hosts::HostMesh;
use common::{Client, Mesh, objects_named, wait_until};
use sha2::{Digest, Sha256};

const NODES: [&str; 3] = ["node1", "node2", "node3"];

/// Sets the cluster to chain mode, with the chain in the order node1 >
/// node2 > node3 (cheapest first).
fn chain_mode(mesh: &Mesh) {
    let out = mesh.admin_ok(&["cluster", "replication", "mesh", "chain"]);
    assert!(out.contains("chain"), "{out}");
    assert_eq!(mesh.admin_ok(&["cluster", "replication", "mesh"]).trim(), "chain");
    for (i, n) in NODES.iter().enumerate() {
        mesh.admin_ok(&["node", "cost", n, &format!("{}", 10 * (i + 1))]);
    }
}

fn client_of(mesh: &Mesh) -> Client {
    let client = Client::new();
    client.ok(&["git", "config", "annex.security.allowed-ip-addresses", "all"]);
    client.add_remote("mesh", &format!("{}/mesh", mesh.url()));
    client
}

/// The nodes the location log lists for `key`, by name.
fn listed(mesh: &Mesh, key: &str) -> Vec<String> {
    let out = mesh.admin_ok(&["whereis", key]);
    let mut names: Vec<String> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split(" -- ").nth(1))
        .map(|s| s.trim().to_string())
        .collect();
    names.sort();
    names
}

fn store(mesh: &Mesh, node: &str) -> std::path::PathBuf {
    mesh.dir.path().join("nodes").join(node)
}

/// Whether `node` holds exactly `data` as `key`.
fn holds(mesh: &Mesh, node: &str, key: &str, data: &[u8]) -> bool {
    let objs = objects_named(&store(mesh, node), key);
    objs.len() == 1 && Sha256::digest(std::fs::read(&objs[0]).unwrap()) == Sha256::digest(data)
}

fn partial(mesh: &Mesh, node: &str, key: &str) -> std::path::PathBuf {
    store(mesh, node).join("annex/tmp").join(key)
}

fn log_of(mesh: &Mesh, proc_name: &str) -> String {
    std::fs::read_to_string(mesh.dir.path().join(format!("{proc_name}.log"))).unwrap_or_default()
}

/// Every offset `node`'s log says an upload of `key` resumed at.
fn resumed_at(mesh: &Mesh, proc_name: &str, key: &str) -> Vec<u64> {
    log_of(mesh, proc_name)
        .lines()
        .filter(|l| l.contains("upload resumes") && l.contains(key))
        .filter_map(|l| {
            let at = l.split("offset=").nth(1)?;
            at.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        })
        .collect()
}

fn output_text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn a_chain_put_crosses_the_gateway_link_once_and_every_node_stores_verified() {
    let mesh = Mesh::separate(3);
    chain_mode(&mesh);
    let json = mesh.admin_json(&["cluster", "replication", "mesh"]);
    assert_eq!(json["replication"], "chain", "{json}");
    let client = client_of(&mesh);
    let before = Mesh::metric(&mesh.url(), "annexmesh_put_agent_bytes_total");
    let (big, big_key) = client.annex_file("big.bin", 9 * 1024 * 1024 + 17, 1);
    let mut small = Vec::new();
    for i in 0..5 {
        small.push(client.annex_file(&format!("small{i}"), 1000 + i * 333, 10 + i as u64));
    }
    client.ok(&["git", "annex", "copy", "-J2", "--to", "mesh", "."]);
    let sent = Mesh::metric(&mesh.url(), "annexmesh_put_agent_bytes_total") - before;
    let total: u64 = big.len() as u64 + small.iter().map(|(d, _)| d.len() as u64).sum::<u64>();
    // A fan-out would send every byte three times.
    assert_eq!(sent, total, "the gateway sent each byte once, to the chain's head");
    mesh.assert_held_everywhere(&big_key, &big);
    for (data, key) in &small {
        mesh.assert_held_everywhere(key, data);
        assert_eq!(listed(&mesh, key), NODES, "{key}");
    }
    assert_eq!(listed(&mesh, &big_key), NODES);
    let gw = log_of(&mesh, "gateway");
    assert!(gw.contains("node1 > node2 > node3"), "chain order in the gateway log:\n{gw}");
    // The client counts the copies the gateway reported (SUCCESS-PLUS).
    let whereis = client.ok(&["git", "annex", "whereis", "big.bin"]);
    for n in NODES {
        assert!(whereis.contains(n), "the client counts {n}:\n{whereis}");
    }

    // Back to fan-out: each byte three times again.
    mesh.admin_ok(&["cluster", "replication", "mesh", "fanout"]);
    let before = Mesh::metric(&mesh.url(), "annexmesh_put_agent_bytes_total");
    let (data, key) = client.annex_file("fan.bin", 100_000, 99);
    client.ok(&["git", "annex", "copy", "--to", "mesh", "fan.bin"]);
    let sent = Mesh::metric(&mesh.url(), "annexmesh_put_agent_bytes_total") - before;
    assert_eq!(sent, 3 * data.len() as u64);
    mesh.assert_held_everywhere(&key, &data);

    // A GET back, from content stored through the chain.
    client.ok(&["git", "annex", "drop", "--force", "big.bin"]);
    client.ok(&["git", "annex", "get", "--from", "mesh", "big.bin"]);
    assert!(
        Sha256::digest(std::fs::read(client.path().join("big.bin")).unwrap())
            == Sha256::digest(&big)
    );
}

#[test]
fn nodes_holding_different_partials_each_resume_from_their_own() {
    let mesh = Mesh::separate(3);
    chain_mode(&mesh);
    let client = client_of(&mesh);
    let (data, key) = client.annex_file("part.bin", 3 * 1024 * 1024 + 5, 3);
    // Earlier interrupted uploads left each node a different prefix.
    let lens = [data.len() / 4, data.len() / 2, 3 * data.len() / 4];
    for (n, len) in NODES.iter().zip(lens) {
        let p = partial(&mesh, n, &key);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &data[..len]).unwrap();
    }
    client.ok(&["git", "annex", "copy", "--to", "mesh", "part.bin"]);
    for (n, len) in NODES.iter().zip(lens) {
        assert!(holds(&mesh, n, &key, &data), "{n} holds the content");
        assert!(!partial(&mesh, n, &key).exists(), "{n}'s partial was committed");
        assert_eq!(
            resumed_at(&mesh, n, &key),
            vec![len as u64],
            "{n} resumed from its own partial"
        );
    }
    assert_eq!(listed(&mesh, &key), NODES);

    // A partial that is longer than what the client sends from, but wrong:
    // that node refuses the result, the others store it.
    let (data2, key2) = client.annex_file("bad-partial.bin", 2 * 1024 * 1024, 4);
    let mut bad = data2[..data2.len() / 2].to_vec();
    bad[100] ^= 1;
    let p = partial(&mesh, "node2", &key2);
    std::fs::write(&p, &bad).unwrap();
    client.ok(&["git", "annex", "copy", "--to", "mesh", "bad-partial.bin"]);
    assert!(holds(&mesh, "node1", &key2, &data2) && holds(&mesh, "node3", &key2, &data2));
    assert!(objects_named(&store(&mesh, "node2"), &key2).is_empty(), "node2 kept bad content");
    assert_eq!(listed(&mesh, &key2), ["node1", "node3"], "only the nodes that stored are listed");
    let log = log_of(&mesh, "node2");
    assert!(log.contains("does not match its checksum"), "node2 verified:\n{log}");
}

#[test]
fn a_corrupt_forward_is_refused_by_the_next_node() {
    let mut mesh = Mesh::separate(0);
    for n in NODES {
        let s = store(&mesh, n);
        let mut cmd = mesh.agent_command(n, &s);
        cmd.args(mesh.agent_tls_args(&s));
        if n == "node2" {
            // A debug-build fault: node2 flips a byte of what it forwards.
            cmd.env("ANNEXMESH_TEST_CORRUPT_FORWARD", "1");
        }
        mesh.spawn(n, cmd);
    }
    mesh.wait_ready(3);
    chain_mode(&mesh);
    let client = client_of(&mesh);
    let (data, key) = client.annex_file("c.bin", 1024 * 1024 + 3, 5);
    client.ok(&["git", "annex", "copy", "--to", "mesh", "c.bin"]);
    assert!(holds(&mesh, "node1", &key, &data) && holds(&mesh, "node2", &key, &data));
    assert!(objects_named(&store(&mesh, "node3"), &key).is_empty(), "node3 stored corrupt bytes");
    assert!(!partial(&mesh, "node3", &key).exists(), "node3 kept the corrupt partial");
    let log = log_of(&mesh, "node3");
    assert!(log.contains("does not match its checksum"), "node3 checked:\n{log}");
    assert_eq!(listed(&mesh, &key), ["node1", "node2"], "SUCCESS-PLUS named only the stored");
    let whereis = client.ok(&["git", "annex", "whereis", "c.bin"]);
    assert!(!whereis.contains("node3"), "the client counts no copy on node3:\n{whereis}");
    let gw = log_of(&mesh, "gateway");
    assert!(gw.contains("node3") && gw.contains("checksum"), "the gateway says why:\n{gw}");

    // With a minimum of 3 the chain's PUT falls short; the client's retry
    // then finds node1 and node2 holding it and node3 alone wanting it, and
    // the gateway feeds node3 directly: the right bytes end up everywhere.
    mesh.admin_ok(&["cluster", "mincopies", "mesh", "3"]);
    client.ok(&["git", "config", "annex.retry", "2"]);
    let (data2, key2) = client.annex_file("c2.bin", 500_000, 6);
    client.ok(&["git", "annex", "copy", "--to", "mesh", "c2.bin"]);
    let refused = log_of(&mesh, "node3")
        .lines()
        .filter(|l| l.contains("does not match its checksum") && l.contains(&key2))
        .count();
    assert_eq!(refused, 1, "node3 refused the corrupt forward once");
    for n in NODES {
        assert!(holds(&mesh, n, &key2, &data2), "{n} holds the right bytes");
    }
    assert_eq!(listed(&mesh, &key2), NODES);
}

/// The largest partial or object size of `key` on `node`.
fn bytes_on(mesh: &Mesh, node: &str, key: &str) -> u64 {
    let p = partial(mesh, node, key);
    std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0)
}

/// Starts `git annex copy --to mesh FILE` and returns once node2 holds
/// more than 2 MiB of `key`'s upload: the moment to fail node2.
fn copy_until_node2_is_midway(
    mesh: &Mesh,
    client: &Client,
    file: &str,
    key: &str,
) -> std::process::Child {
    let args = ["timeout", "600", "git", "annex", "copy", "--to", "mesh", file];
    let put = client.command(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_until(
        &format!("node2 has part of the upload of {file}"),
        Duration::from_secs(120),
        || bytes_on(mesh, "node2", key) > 2 * 1024 * 1024,
    );
    put
}

#[test]
fn a_middle_node_killed_mid_put_is_cut_out_and_a_retry_completes_it_from_its_partial() {
    let Some(mut mesh) = HostMesh::start(3) else { return };
    chain_mode(&mesh);
    // Slow links, so that the upload is under way long enough to kill a
    // node in the middle of it.
    for n in NODES {
        mesh.agent_host(n).limit_rate("40mbit");
    }
    let client = client_of(&mesh);
    client.ok(&["git", "config", "annex.retry", "0"]);

    // Minimum 2: node2 dies mid-PUT; node1 and node3 complete it.
    mesh.admin_ok(&["cluster", "mincopies", "mesh", "2"]);
    let (data, key) = client.annex_file("a.bin", 16 * 1024 * 1024, 7);
    let put = copy_until_node2_is_midway(&mesh, &client, "a.bin", &key);
    kill_latest(&mut mesh, "node2");
    let out = put.wait_with_output().unwrap();
    assert!(out.status.success(), "the PUT did not complete on the others:\n{}", output_text(&out));
    assert!(holds(&mesh, "node1", &key, &data), "node1 holds it");
    assert!(holds(&mesh, "node3", &key, &data), "node3 holds it, fed by node1 after the cut");
    assert_eq!(listed(&mesh, &key), ["node1", "node3"]);
    let kept = bytes_on(&mesh, "node2", &key);
    assert!(kept > 0 && kept < data.len() as u64, "node2 keeps its partial ({kept} bytes)");
    let head = log_of(&mesh, "node1");
    assert!(head.contains("cut out of the chain"), "node1 cut node2 out:\n{head}");

    // Minimum 3: node2 dies mid-PUT of another file; the PUT fails clearly,
    // and once node2 is back a retry completes it from its partial.
    restart(&mut mesh, "node2");
    mesh.admin_ok(&["cluster", "mincopies", "mesh", "3"]);
    let (data2, key2) = client.annex_file("b.bin", 16 * 1024 * 1024, 8);
    let put = copy_until_node2_is_midway(&mesh, &client, "b.bin", &key2);
    kill_latest(&mut mesh, "node2");
    let out = put.wait_with_output().unwrap();
    let text = output_text(&out);
    assert!(!out.status.success(), "a PUT on 2 of the 3 required nodes succeeded:\n{text}");
    let gw = log_of(&mesh, "gateway");
    assert!(gw.contains("minimum copies: stored on 2 of 3"), "the gateway says why:\n{gw}");
    let kept = bytes_on(&mesh, "node2", &key2);
    assert!(kept > 0, "node2 keeps its partial");
    assert_eq!(listed(&mesh, &key2), ["node1", "node3"], "the stored copies are recorded");

    restart(&mut mesh, "node2");
    // The client counts the cluster as holding it (node1 and node3 do);
    // the retry goes to the node that lacks it, through the same gateway.
    client.ok(&["git", "annex", "copy", "--to", "mesh-node2", "b.bin"]);
    for n in NODES {
        assert!(holds(&mesh, n, &key2, &data2), "{n} holds the second file");
    }
    assert_eq!(listed(&mesh, &key2), NODES);
    let resumed: Vec<u64> = resumed_at(&mesh, "node2", &key2);
    assert!(
        resumed.iter().any(|&at| at > 0 && at <= kept),
        "node2 resumed from its partial of {kept} bytes: {resumed:?}"
    );
}

/// SIGKILLs the newest process named `name`.
fn kill_latest(mesh: &mut HostMesh, name: &str) {
    let last = mesh.mesh.procs.iter().rposition(|p| p.name == name).unwrap();
    mesh.mesh.procs[last].kill();
}

/// Starts `node` again on its store, in its namespace, and waits for it.
fn restart(mesh: &mut HostMesh, node: &str) {
    let s = store(mesh, node);
    mesh.mesh.start_agent_at(node, node, &s);
    wait_until(&format!("{node} up again"), Duration::from_secs(90), || mesh.healthy_nodes() == 3);
}

#[test]
fn a_middle_node_that_stalls_is_cut_out_and_the_others_complete() {
    let Some(mut mesh) = HostMesh::start(3) else { return };
    // The head cuts a silent next node out after half the gateway's limit.
    mesh.mesh.restart_gateway_with(&["--wideopen", "--stall-timeout", "4s"]);
    chain_mode(&mesh);
    for n in NODES {
        mesh.agent_host(n).limit_rate("40mbit");
    }
    let client = client_of(&mesh);
    client.ok(&["git", "config", "annex.retry", "0"]);
    let (data, key) = client.annex_file("s.bin", 16 * 1024 * 1024, 10);
    let put = copy_until_node2_is_midway(&mesh, &client, "s.bin", &key);
    let pid = mesh.mesh.procs.iter().rev().find(|p| p.name == "node2").unwrap().pid();
    // SAFETY: signals a child process this test started.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    let out = put.wait_with_output().unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    assert!(out.status.success(), "the PUT did not complete on the others:\n{}", output_text(&out));
    if !(holds(&mesh, "node1", &key, &data) && holds(&mesh, "node3", &key, &data)) {
        mesh.print_logs();
        panic!("node1 and node3 should hold it:\n{}", output_text(&out));
    }
    assert!(objects_named(&store(&mesh, "node2"), &key).is_empty(), "node2 was stopped");
    assert_eq!(listed(&mesh, &key), ["node1", "node3"]);
    let head = log_of(&mesh, "node1");
    assert!(head.contains("cut out of the chain: took no data"), "node1 cut node2 out:\n{head}");
    let tail = log_of(&mesh, "node3");
    assert!(tail.contains("sent nothing for"), "node3 gave up on the silent node2:\n{tail}");
}
