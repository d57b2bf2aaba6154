//! Data safety on the coordinator's side, with real processes and the real
//! git-annex: location stamps that survive a clock set back, one identity
//! per node, node removal and `admin fsck`.

mod common;

use std::time::Duration;

use common::{Client, Mesh, Proc, annexmesh, free_port, http_get, wait_until};

/// How many copies `admin whereis` counts for `key`.
fn copies(mesh: &Mesh, key: &str) -> usize {
    let out = mesh.admin_ok(&["whereis", key]);
    let first = out.lines().next().unwrap_or_default();
    first
        .rsplit_once(": ")
        .and_then(|(_, n)| n.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in whereis output: {out}"))
}

/// The `admin node list` entry of `name`, by column (see `node_columns`).
fn node_row(mesh: &Mesh, name: &str) -> Vec<String> {
    mesh.node_columns(name).unwrap_or_else(|| panic!("no {name} in the node list"))
}

fn client_of(mesh: &Mesh) -> Client {
    let client = Client::new();
    client.add_remote("mesh", &format!("{}/mesh", mesh.url()));
    client
}

/// Restarts the coordinator with extra environment.
fn restart_coordinator(mesh: &mut Mesh, env: &[(&str, &str)], agents: usize) {
    mesh.proc("coordinator").stop();
    mesh.procs.retain(|p| p.name != "coordinator");
    let mut cmd = mesh.coordinator_command();
    for (k, v) in env {
        cmd.env(k, v);
    }
    let p = Proc::spawn("coordinator", &mut cmd, mesh.dir.path());
    mesh.procs.push(p);
    mesh.wait_ready(agents);
}

#[test]
fn changes_after_the_clock_was_set_back_across_a_restart_are_recorded() {
    let mut mesh = Mesh::separate(2);
    let client = client_of(&mesh);
    let (_, key) = client.annex_file("f.bin", 20_000, 1);
    client.ok(&["git", "annex", "copy", "--to", "mesh", "f.bin"]);
    assert_eq!(copies(&mesh, &key), 2);
    client.ok(&["git", "annex", "drop", "--from", "mesh", "f.bin"]);
    assert_eq!(copies(&mesh, &key), 0);

    // An hour back: every later change gets a smaller wall-clock time than
    // the entries stored, and must still win.
    restart_coordinator(&mut mesh, &[("ANNEXMESH_TEST_CLOCK_OFFSET_MS", "-3600000")], 2);
    client.ok(&["git", "annex", "copy", "--to", "mesh", "f.bin"]);
    assert_eq!(copies(&mesh, &key), 2);
    client.ok(&["git", "annex", "drop", "--from", "mesh", "f.bin"]);
    assert_eq!(copies(&mesh, &key), 0);
    client.ok(&["git", "annex", "copy", "--to", "mesh", "f.bin"]);
    assert_eq!(copies(&mesh, &key), 2);
}

/// Runs an agent with `store` under `name` until it exits (at most 60 s);
/// returns its exit status and log.
fn run_agent_to_exit(mesh: &Mesh, name: &str, store: &std::path::Path) -> (bool, String) {
    common::run_to_exit(mesh.agent_command(name, store).args(mesh.agent_tls_args(store)))
}

#[test]
fn a_second_agent_under_a_taken_name_or_identity_exits_and_changes_nothing() {
    let mesh = Mesh::separate(2);
    let before = node_row(&mesh, "node1");

    // Another store (another UUID) under node1's name.
    let other = mesh.dir.path().join("other");
    let (ok, log) = run_agent_to_exit(&mesh, "node1", &other);
    assert!(!ok, "the agent should exit non-zero:\n{log}");
    assert!(log.contains("node name \"node1\" is taken by node"), "{log}");

    // A copy of node1's store (the same UUID) elsewhere, under a new name.
    let copy = mesh.dir.path().join("copy");
    std::fs::create_dir_all(copy.join("annex/objects")).unwrap();
    std::fs::copy(mesh.store_of("node1").join("uuid"), copy.join("uuid")).unwrap();
    // With the certificate it obtained: a store copied whole.
    let tls = copy.join(".annexmesh/tls");
    std::fs::create_dir_all(&tls).unwrap();
    for f in ["cert.pem", "key.pem", "ca.pem"] {
        std::fs::copy(mesh.store_of("node1").join(".annexmesh/tls").join(f), tls.join(f)).unwrap();
    }
    let (ok, log) = run_agent_to_exit(&mesh, "node9", &copy);
    assert!(!ok, "the agent should exit non-zero:\n{log}");
    assert!(log.contains("claims the same identity"), "{log}");

    // node1's record is as it was, and it is still up.
    let after = node_row(&mesh, "node1");
    assert_eq!((&after[1], &after[2], &after[3]), (&before[1], &before[2], &before[3]));
    assert_eq!(after[2], "up");
    assert!(!mesh.admin_ok(&["node", "list"]).contains("node9"));
}

#[test]
fn a_node_gone_for_good_is_removed_and_its_name_taken_by_a_new_one() {
    let mut mesh = Mesh::separate(3);
    let client = client_of(&mesh);
    client.add_remote("n1", &format!("{}/node1", mesh.url()));
    let (_, key) = client.annex_file("f.bin", 20_000, 3);
    let (_, only) = client.annex_file("g.bin", 10_000, 4);
    client.ok(&["git", "annex", "copy", "--to", "mesh", "f.bin"]);
    client.ok(&["git", "annex", "copy", "--to", "n1", "g.bin"]);
    assert_eq!((copies(&mesh, &key), copies(&mesh, &only)), (3, 1));
    let old_uuid = node_row(&mesh, "node3")[1].clone();

    // node1 holds g.bin's only copy: removing it is refused, naming the key.
    let err = mesh.admin_err(&["node", "remove", "node1"]);
    assert!(err.contains("only copy of 1 key") && err.contains(&only), "{err}");
    assert_eq!(node_row(&mesh, "node1")[6], "active");

    // node3 dies for good: a drop cannot reach it, so it fails.
    mesh.proc("node3").kill();
    let out = client.run(&["git", "annex", "drop", "--from", "mesh", "f.bin"]);
    assert!(!out.status.success(), "the drop should fail while node3 is unreachable");
    let done = mesh.admin_ok(&["node", "remove", "--lost", "node3"]);
    assert!(done.contains("removed node3"), "{done}");
    let row = node_row(&mesh, "node3");
    assert_eq!((row[1].as_str(), row[6].as_str()), (old_uuid.as_str(), "lost"));
    // Once the gateway's topology follows, the drop no longer waits for
    // it, and the log no longer counts it.
    let config = format!("{}/node3/config", mesh.url());
    wait_until("the gateway to drop node3", Duration::from_secs(30), || {
        http_get(&config).is_some_and(|(status, _)| status != 200)
    });
    client.ok(&["git", "annex", "drop", "--from", "mesh", "f.bin"]);
    assert_eq!(copies(&mesh, &key), 0);

    // A new agent (a new store, a new identity) takes the freed name.
    let store = mesh.dir.path().join("nodes-new/node3");
    let mut cmd = annexmesh();
    cmd.args(["agent", "--coordinator", &mesh.coordinator, "--cluster", "mesh", "--name", "node3"])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--store")
        .arg(&store)
        .args(mesh.agent_tls_args(&store));
    let p = Proc::spawn("node3-new", &mut cmd, mesh.dir.path());
    mesh.procs.push(p);
    wait_until("the new node3", Duration::from_secs(30), || mesh.healthy_nodes() == 3);
    let row = node_row(&mesh, "node3");
    assert!(row[1] != old_uuid && row[2] == "up", "{row:?}");
    wait_until("the gateway to see the new node3", Duration::from_secs(30), || {
        http_get(&config).is_some_and(|(status, body)| status == 200 && body.contains(&row[1]))
    });
    client.ok(&["git", "annex", "copy", "--to", "mesh", "f.bin"]);
    assert_eq!(copies(&mesh, &key), 3);
}

#[test]
fn fsck_reports_what_the_log_and_the_nodes_disagree_on_and_fixes_it() {
    let mesh = Mesh::separate(2);
    let client = client_of(&mesh);
    let (_, listed) = client.annex_file("f.bin", 20_000, 5);
    let (data, unlisted) = client.annex_file("g.bin", 10_000, 6);
    client.ok(&["git", "annex", "copy", "--to", "mesh", "f.bin"]);
    assert_eq!(mesh.admin_ok(&["fsck"]).lines().count(), 0);

    // Behind the mesh's back: one object placed on node1, one deleted
    // from node2.
    let hashdir = client.ok(&["git", "annex", "examinekey", "--format=${hashdirlower}", &unlisted]);
    let dir = mesh.store_of("node1").join("annex/objects").join(hashdir.trim()).join(&unlisted);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(&unlisted), &data).unwrap();
    for p in common::objects_named(&mesh.store_of("node2"), &listed) {
        std::fs::remove_file(p).unwrap();
    }

    let out = mesh.admin(&["fsck", "--cluster", "mesh"]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "fsck should fail:\n{report}");
    let mut lines: Vec<&str> = report.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            format!("node1\t{unlisted}\theld by the node but not listed in the log"),
            format!("node2\t{listed}\tlisted in the log but absent from the node"),
        ]
    );

    mesh.admin_ok(&["fsck", "--fix"]);
    assert_eq!((copies(&mesh, &listed), copies(&mesh, &unlisted)), (1, 1));
    let out = mesh.admin(&["fsck"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 difference(s) on 2 node(s)"));
}
