//! Data safety on the coordinator's side, with real processes and the real
//! git-annex: location stamps that survive a clock set back, one identity
//! per node, node removal and `admin fsck`.

mod common;

use std::time::Duration;

use std::process::{Command, Stdio};

use common::{Client, Mesh, Proc, annexmesh, free_port, wait_until};

/// stdout of a successful admin command.
fn admin(mesh: &Mesh, args: &[&str]) -> String {
    let out = mesh.admin(args);
    assert!(
        out.status.success(),
        "admin {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr of an admin command that must fail.
fn admin_fails(mesh: &Mesh, args: &[&str]) -> String {
    let out = mesh.admin(args);
    assert!(
        !out.status.success(),
        "admin {args:?} should fail:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// How many copies `admin whereis` counts for `key`.
fn copies(mesh: &Mesh, key: &str) -> usize {
    let out = admin(mesh, &["whereis", key]);
    let first = out.lines().next().unwrap_or_default();
    first
        .rsplit_once(": ")
        .and_then(|(_, n)| n.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in whereis output: {out}"))
}

/// The `admin node list` row of `name`, split at tabs.
fn node_row(mesh: &Mesh, name: &str) -> Vec<String> {
    let out = admin(mesh, &["node", "list"]);
    out.lines()
        .find(|l| l.starts_with(&format!("{name}\t")))
        .unwrap_or_else(|| panic!("no {name} in:\n{out}"))
        .split('\t')
        .map(str::to_string)
        .collect()
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
    let listen = mesh.coordinator.trim_start_matches("http://").to_string();
    let data = mesh.dir.path().join("coordinator");
    let mut cmd = annexmesh();
    cmd.args(["coordinator", "--listen", &listen]).arg("--data").arg(data);
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_annexmesh"))
        .args(["agent", "--coordinator", &mesh.coordinator, "--cluster", "mesh", "--name", name])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--store")
        .arg(store)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut status = None;
    wait_until("the refused agent to exit", Duration::from_secs(60), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let out = child.wait_with_output().unwrap();
    (status.unwrap().success(), String::from_utf8_lossy(&out.stderr).into_owned())
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
    let (ok, log) = run_agent_to_exit(&mesh, "node9", &copy);
    assert!(!ok, "the agent should exit non-zero:\n{log}");
    assert!(log.contains("claims the same identity"), "{log}");

    // node1's record is as it was, and it is still up.
    let after = node_row(&mesh, "node1");
    assert_eq!((&after[1], &after[2], &after[3]), (&before[1], &before[2], &before[3]));
    assert_eq!(after[2], "up");
    assert!(!admin(&mesh, &["node", "list"]).contains("node9"));
}
