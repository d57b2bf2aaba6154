//! The gateway never loses the last good copy and never over-claims, with
//! real processes and the real git-annex client: a drop while the location
//! log cannot be written deletes nothing, and an upload whose location
//! cannot be recorded is not reported done.

mod common;

use common::{Client, Mesh, objects_named};

/// `admin whereis KEY`, as text.
fn whereis(mesh: &Mesh, key: &str) -> String {
    let out = mesh.admin(&["whereis", key]);
    assert!(out.status.success(), "whereis: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn output(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn a_drop_without_the_coordinator_deletes_nothing_and_works_once_it_is_back() {
    let mut mesh = Mesh::separate(3);
    let client = Client::new();
    client.add_remote("mesh", &format!("{}/mesh", mesh.url()));
    let (data, key) = client.annex_file("f.bin", 64 * 1024, 11);
    client.ok(&["git", "annex", "copy", "--to", "mesh", "f.bin"]);
    mesh.assert_held_everywhere(&key, &data);
    assert!(whereis(&mesh, &key).contains("3 copies"), "{}", whereis(&mesh, &key));

    let url = mesh.url();
    let removes_before = Mesh::metric(&url, "annexmesh_removes_total");
    mesh.proc("coordinator").stop();
    let out = client.run(&["git", "annex", "drop", "--from", "mesh", "f.bin"]);
    assert!(!out.status.success(), "drop should fail without the coordinator:\n{}", output(&out));
    // The REMOVE reached the gateway, which refused it before any node
    // was asked: every node still holds the exact bytes.
    assert_eq!(Mesh::metric(&url, "annexmesh_removes_total"), removes_before + 1);
    mesh.assert_held_everywhere(&key, &data);

    mesh.start_coordinator();
    mesh.wait_ready(3);
    let listed = whereis(&mesh, &key);
    assert!(listed.contains("3 copies"), "the log lost copies:\n{listed}");
    for node in ["node1", "node2", "node3"] {
        assert!(listed.contains(&format!("-- {node}")), "{node} missing:\n{listed}");
    }
    // The log and what the nodes hold agree: no difference, exit status 0.
    assert_eq!(mesh.admin_ok(&["fsck"]).lines().count(), 0, "admin fsck found differences");

    client.ok(&["git", "annex", "drop", "--from", "mesh", "f.bin"]);
    for s in mesh.node_stores() {
        assert!(objects_named(&s, &key).is_empty(), "{} still holds {key}", s.display());
    }
    assert!(whereis(&mesh, &key).contains("0 copies"), "{}", whereis(&mesh, &key));
}

#[test]
fn a_copy_without_the_coordinator_is_not_reported_done() {
    let mut mesh = Mesh::separate(3);
    let client = Client::new();
    client.add_remote("mesh", &format!("{}/mesh", mesh.url()));
    let (data, key) = client.annex_file("f.bin", 64 * 1024, 12);

    mesh.proc("coordinator").stop();
    let out = client.run(&["git", "annex", "copy", "--to", "mesh", "f.bin"]);
    let text = output(&out);
    assert!(!out.status.success(), "copy should fail without the coordinator:\n{text}");
    assert!(!text.contains("ok\n"), "the copy reported ok:\n{text}");
    let local = client.ok(&["git", "annex", "whereis", "f.bin"]);
    assert!(!local.contains("[mesh]"), "the client believes the mesh holds it:\n{local}");

    // Once the coordinator is back, the same copy goes through and is
    // recorded.
    mesh.start_coordinator();
    mesh.wait_ready(3);
    client.ok(&["git", "annex", "copy", "--to", "mesh", "f.bin"]);
    mesh.assert_held_everywhere(&key, &data);
    assert!(whereis(&mesh, &key).contains("3 copies"), "{}", whereis(&mesh, &key));
}
