//! Data safety on the coordinator's side, with real processes and the real
//! git-annex: location stamps that survive a clock set back, one identity
//! per node, node removal and `admin fsck`.

mod common;

use std::time::Duration;

use common::{Client, Mesh, Proc, annexmesh, wait_until};

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
