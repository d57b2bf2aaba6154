//! Repair with real processes and the real git-annex: copies lost with a
//! node come back from the survivors, draining moves content off a node,
//! and `admin repair` plans (dry run) and makes copies on request.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use common::{Client, Mesh, objects_named, wait_until};

const NODES: [&str; 3] = ["node1", "node2", "node3"];

fn store(mesh: &Mesh, node: &str) -> PathBuf {
    mesh.dir.path().join("nodes").join(node)
}

/// The nodes whose stores hold `key` with exactly `data`.
fn holders(mesh: &Mesh, key: &str, data: &[u8]) -> BTreeSet<&'static str> {
    NODES
        .into_iter()
        .filter(|n| {
            objects_named(&store(mesh, n), key).iter().any(|p| std::fs::read(p).unwrap() == data)
        })
        .collect()
}

/// The nodes the coordinator's location log lists for `key`.
fn listed(mesh: &Mesh, key: &str, uuids: &[(&'static str, String)]) -> BTreeSet<&'static str> {
    let out = mesh.admin_ok(&["whereis", key]);
    uuids.iter().filter(|(_, u)| out.contains(u.as_str())).map(|(n, _)| *n).collect()
}

fn node_uuids(mesh: &Mesh) -> Vec<(&'static str, String)> {
    NODES.into_iter().map(|n| (n, mesh.uuid_of(n))).collect()
}

/// As `node_uuids`, without `gone` (a removed node the gateway no longer
/// serves).
fn node_uuids_but(mesh: &Mesh, gone: &str) -> Vec<(&'static str, String)> {
    NODES.into_iter().filter(|n| *n != gone).map(|n| (n, mesh.uuid_of(n))).collect()
}

fn set(names: &[&'static str]) -> BTreeSet<&'static str> {
    names.iter().copied().collect()
}

/// A client with the mesh as remote `mesh` and `n` annexed files of a few
/// KiB to a few hundred KiB; returns (file, content, key) for each.
fn client_with(mesh: &Mesh, n: usize) -> (Client, Vec<(String, Vec<u8>, String)>) {
    let client = Client::new();
    client.add_remote("mesh", &format!("{}/mesh", mesh.url()));
    let files: Vec<_> = (0..n)
        .map(|i| {
            let name = format!("f{i:02}.bin");
            let data = client.write_file(&name, 3000 + i * 7919, 500 + i as u64);
            (name, data)
        })
        .collect();
    client.ok(&["git", "annex", "add", "."]);
    client.ok(&["git", "commit", "-q", "-m", "files"]);
    let files = files
        .into_iter()
        .map(|(name, data)| {
            let key = client.key_of(&name);
            (name, data, key)
        })
        .collect();
    (client, files)
}

/// Drops the client's own copies, then gets and fscks every file from the
/// mesh.
fn get_and_fsck(client: &Client) {
    // Where the mesh moved copies to reaches clients with its git-annex
    // branch, as `git annex pull` would fetch it; the branch follows the
    // location log within about a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        assert!(client.fetch("mesh"));
        if client.run(&["git", "annex", "drop", "."]).status.success() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the drop never became safe");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    client.ok(&["git", "annex", "get", "--from", "mesh", "."]);
    client.ok(&["git", "annex", "fsck", "--from", "mesh", "."]);
}

#[test]
fn copies_lost_with_a_node_are_made_again_from_the_survivors() {
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let mut mesh = Mesh::separate_with_coordinator_args(
        3,
        &["--repair-grace", "2s", "--repair-interval", "1s", "--metrics", &metrics],
    );
    mesh.admin_ok(&["cluster", "mincopies", "mesh", "2"]);
    let uuids = node_uuids(&mesh);
    // node3 wants nothing, so the files go to node1 and node2 only, and
    // repair, which keeps what placement asks for, leaves them there.
    mesh.admin_ok(&["wanted", "node3", "nothing"]);
    let (client, files) = client_with(&mesh, 10);
    client.ok(&["git", "annex", "copy", "--to", "mesh", "."]);
    for (name, data, key) in &files {
        assert_eq!(holders(&mesh, key, data), set(&["node1", "node2"]), "{name}");
    }

    // node1 crashes for good; once it is down past the grace, its copies
    // are made again from node2 on node3, which takes them for the
    // cluster's minimum of 2 though it wants nothing.
    mesh.proc("node1").kill();
    wait_until("every key back on two up nodes", Duration::from_secs(90), || {
        files.iter().all(|(_, data, key)| holders(&mesh, key, data).contains("node3"))
    });
    for (name, data, key) in &files {
        assert_eq!(holders(&mesh, key, data), set(&["node1", "node2", "node3"]), "{name}");
        let up: BTreeSet<_> =
            listed(&mesh, key, &uuids).into_iter().filter(|n| *n != "node1").collect();
        assert_eq!(up, set(&["node2", "node3"]), "{name}");
    }
    get_and_fsck(&client);
    let status = mesh.admin_ok(&["repair", "--status"]);
    assert!(status.contains("last pass:"), "{status}");
    // The coordinator's metrics count the copies and show node1 down.
    let (code, text) = common::http_get(&format!("http://{metrics}/metrics")).unwrap();
    assert_eq!(code, 200, "{text}");
    let value = |line: &str| -> u64 {
        let l = text.lines().find(|l| l.starts_with(line)).unwrap_or_else(|| panic!("{text}"));
        l.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(value("annexmesh_repair_copies_total ") >= files.len() as u64, "{text}");
    assert_eq!(value(&format!("annexmesh_node_up{{node=\"node1\",uuid=\"{}\"}}", uuids[0].1)), 0);
}

#[test]
fn a_drained_node_gives_up_all_its_content_and_every_file_still_gets() {
    let mut mesh = Mesh::separate_with_coordinator_args(3, &["--repair-interval", "0"]);
    let uuids = node_uuids(&mesh);
    // Only node1 wants content, so it alone receives the files.
    mesh.admin_ok(&["wanted", "node2", "nothing"]);
    mesh.admin_ok(&["wanted", "node3", "nothing"]);
    let (client, files) = client_with(&mesh, 50);
    client.ok(&["git", "annex", "copy", "--to", "mesh", "."]);
    for (name, data, key) in &files {
        assert_eq!(holders(&mesh, key, data), set(&["node1"]), "{name}");
    }
    // Two copies required elsewhere before node1 may let go.
    mesh.admin_ok(&["cluster", "mincopies", "mesh", "2"]);
    let out = mesh.admin_ok(&["node", "drain", "node1", "--wait"]);
    assert!(out.contains("node1 is drained"), "{out}");

    for (name, data, key) in &files {
        assert!(objects_named(&store(&mesh, "node1"), key).is_empty(), "{name} left on node1");
        assert_eq!(holders(&mesh, key, data), set(&["node2", "node3"]), "{name}");
        assert_eq!(listed(&mesh, key, &uuids), set(&["node2", "node3"]), "{name}");
    }
    let cols = mesh.node_columns("node1").unwrap();
    assert_eq!((cols[6].as_str(), cols[9].as_str()), ("draining", "0"), "{cols:?}");
    get_and_fsck(&client);

    // Drained, node1 holds no only copy: removing it needs no --lost, and a
    // new agent (a new store) takes its name.
    let old_uuid = mesh.uuid_of("node1");
    let out = mesh.admin_ok(&["node", "remove", "node1"]);
    assert!(out.contains("removed node1"), "{out}");
    mesh.proc("node1").stop();
    let new_store = mesh.dir.path().join("nodes-new/node1");
    mesh.start_agent_at("node1-new", "node1", &new_store);
    wait_until("the new node1", Duration::from_secs(30), || {
        mesh.node_list().iter().any(|n| {
            n["name"] == "node1"
                && n["uuid"] != old_uuid.as_str()
                && n["health"] == "up"
                && n["state"] == "active"
        })
    });
    for (name, data, key) in &files {
        assert_eq!(holders(&mesh, key, data), set(&["node2", "node3"]), "{name}");
    }
    get_and_fsck(&client);
}

#[test]
fn after_a_lost_node_is_removed_drops_work_and_its_copies_are_made_again() {
    // A long grace: the copies are written off when the node is removed,
    // not because it went quiet.
    let mut mesh = Mesh::separate_with_coordinator_args(
        3,
        &["--repair-grace", "10m", "--repair-interval", "1s"],
    );
    mesh.admin_ok(&["cluster", "mincopies", "mesh", "2"]);
    mesh.admin_ok(&["node", "drain", "node3"]);
    let node1 = mesh.uuid_of("node1");
    let (client, files) = client_with(&mesh, 8);
    client.ok(&["git", "annex", "copy", "--to", "mesh", "."]);
    for (name, data, key) in &files {
        assert_eq!(holders(&mesh, key, data), set(&["node1", "node2"]), "{name}");
    }
    mesh.admin_ok(&["node", "undrain", "node3"]);

    // node1 is gone for good: a drop cannot reach it until it is removed.
    mesh.proc("node1").kill();
    let (dropped, _, _) = &files[0];
    let out = client.run(&["git", "annex", "drop", "--from", "mesh", dropped]);
    assert!(!out.status.success(), "the drop should fail while node1 is unreachable");
    let done = mesh.admin_ok(&["node", "remove", "--lost", "node1"]);
    assert!(done.contains("removed node1"), "{done}");
    let config = format!("{}/node1/config", mesh.url());
    wait_until("the gateway to drop node1", Duration::from_secs(30), || {
        common::http_get(&config).is_some_and(|(status, _)| status != 200)
    });
    client.ok(&["git", "annex", "drop", "--from", "mesh", dropped]);

    // Repair makes node1's copies again on node3, from node2.
    let uuids = node_uuids_but(&mesh, "node1");
    let kept = &files[1..];
    wait_until("every key back on two healthy nodes", Duration::from_secs(90), || {
        kept.iter().all(|(_, data, key)| holders(&mesh, key, data).contains("node3"))
    });
    for (name, _, key) in kept {
        assert_eq!(listed(&mesh, key, &uuids), set(&["node2", "node3"]), "{name}");
    }
    // The dropped file goes back (to the two live nodes), then everything
    // gets and fscks.
    client.ok(&["git", "annex", "copy", "--to", "mesh", dropped]);
    get_and_fsck(&client);

    // The removal reached the git-annex branch: clients that fetch it no
    // longer have node1 as a remote of the cluster, and know it is dead.
    assert!(client.fetch("mesh"));
    let info = client.ok(&["git", "annex", "info", "mesh"]);
    assert!(info.contains("mesh-node2") && info.contains("mesh-node3"), "{info}");
    assert!(!info.contains("mesh-node1"), "{info}");
    let dead = client.ok(&["git", "annex", "info", &node1]);
    assert!(dead.contains("trust: dead"), "{dead}");
}

#[test]
fn admin_repair_plans_on_a_dry_run_and_copies_on_request() {
    let mesh = Mesh::separate_with_coordinator_args(3, &["--repair-interval", "0"]);
    let uuids = node_uuids(&mesh);
    mesh.admin_ok(&["wanted", "node2", "nothing"]);
    mesh.admin_ok(&["wanted", "node3", "nothing"]);
    let (client, files) = client_with(&mesh, 3);
    client.ok(&["git", "annex", "copy", "--to", "mesh", "."]);
    mesh.admin_ok(&["cluster", "mincopies", "mesh", "2"]);

    let plan = mesh.admin_ok(&["repair", "--dry-run"]);
    for (name, data, key) in &files {
        assert!(plan.contains(&format!("would copy {key} to node")), "{name}: {plan}");
        assert_eq!(holders(&mesh, key, data), set(&["node1"]), "{name}: the dry run copied");
    }
    assert!(plan.contains("dry run: checked 3 keys, 3 needing repair"), "{plan}");

    let done = mesh.admin_ok(&["repair"]);
    assert!(done.contains("3 copies made"), "{done}");
    for (name, data, key) in &files {
        let held = holders(&mesh, key, data);
        assert_eq!(held.len(), 2, "{name}: {held:?}");
        assert!(held.contains("node1"), "{name}: {held:?}");
        assert_eq!(listed(&mesh, key, &uuids), held, "{name}");
    }
    let again = mesh.admin_ok(&["repair"]);
    assert!(again.contains("0 needing repair"), "{again}");

    // Four copies cannot be had on three nodes: the pass says so and fails.
    mesh.admin_ok(&["cluster", "mincopies", "mesh", "4"]);
    let out = mesh.admin(&["repair"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("3 keys could not be brought to their target copies"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("no node can take another"));
    let out = mesh.admin(&["repair", "--cluster", "nosuch"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown cluster"));
    get_and_fsck(&client);
}
