//! Placement of PUTs with the real git-annex client: preferred content,
//! draining, space reserve and the cluster's minimum number of copies.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use common::{Client, Mesh, objects_named, wait_until};

const NODES: [&str; 3] = ["node1", "node2", "node3"];

fn store(mesh: &Mesh, node: &str) -> PathBuf {
    mesh.dir.path().join("nodes").join(node)
}

/// The nodes whose stores hold `key`.
fn holders(mesh: &Mesh, key: &str) -> BTreeSet<&'static str> {
    NODES.into_iter().filter(|n| !objects_named(&store(mesh, n), key).is_empty()).collect()
}

/// The nodes whose UUIDs `git annex whereis FILE` lists.
fn whereis(
    client: &Client,
    uuids: &[(&'static str, String)],
    file: &str,
) -> BTreeSet<&'static str> {
    let out = client.ok(&["git", "annex", "whereis", file]);
    uuids.iter().filter(|(_, u)| out.contains(u.as_str())).map(|(n, _)| *n).collect()
}

fn node_uuids(mesh: &Mesh) -> Vec<(&'static str, String)> {
    NODES.into_iter().map(|n| (n, mesh.uuid_of(n))).collect()
}

/// The `annexmesh admin node list` entry of `node`, by column (see
/// `node_columns`).
fn node_row(mesh: &Mesh, node: &str) -> Vec<String> {
    mesh.node_columns(node).unwrap_or_else(|| panic!("{node} missing from node list"))
}

/// A client with the mesh as remote `mesh` and `files` (name, size) added
/// and committed; returns the files' keys.
fn client_with(mesh: &Mesh, files: &[(&str, usize)]) -> (Client, Vec<String>) {
    let client = Client::new();
    client.add_remote("mesh", &format!("{}/mesh", mesh.url()));
    let mut keys = Vec::new();
    for (i, (name, size)) in files.iter().enumerate() {
        if let Some(dir) = std::path::Path::new(name).parent() {
            std::fs::create_dir_all(client.path().join(dir)).unwrap();
        }
        client.write_file(name, *size, 100 + i as u64);
        client.ok(&["git", "annex", "add", name]);
        keys.push(client.key_of(name));
    }
    client.ok(&["git", "commit", "-q", "-m", "add files"]);
    (client, keys)
}

fn set(names: &[&'static str]) -> BTreeSet<&'static str> {
    names.iter().copied().collect()
}

#[test]
fn preferred_content_steers_placement() {
    let mesh = Mesh::separate(3);
    mesh.admin_ok(&["wanted", "node1", "largerthan=1MB"]);
    mesh.admin_ok(&["wanted", "node2", "nothing"]);
    // Several words make one expression.
    let set3 = mesh.admin_ok(&["wanted", "node3", "smallerthan=1MB", "or", "include=docs/*"]);
    assert_eq!(set3.trim(), "smallerthan=1MB or include=docs/*");
    assert_eq!(mesh.admin_ok(&["wanted", "node1"]).trim(), "largerthan=1MB");
    assert_eq!(mesh.admin_ok(&["wanted", "node3"]).trim(), "smallerthan=1MB or include=docs/*");

    // A bad expression is refused and the old one kept.
    let err = mesh.admin_err(&["wanted", "node1", "largerthan=1MB and"]);
    assert!(
        err.contains("bad preferred content expression") && err.contains("after \"and\""),
        "{err}"
    );
    let err = mesh.admin_err(&["wanted", "node1", "largerthan=lots"]);
    assert!(err.contains("bad size"), "{err}");
    let err = mesh.admin_err(&["wanted", "nosuchnode", "anything"]);
    assert!(err.contains("unknown node"), "{err}");
    assert_eq!(mesh.admin_ok(&["wanted", "node1"]).trim(), "largerthan=1MB");
    assert_eq!(node_row(&mesh, "node1")[7], "largerthan=1MB");
    assert_eq!(node_row(&mesh, "node2")[7], "nothing");

    let uuids = node_uuids(&mesh);
    let (client, keys) = client_with(
        &mesh,
        &[("big.bin", 2 * 1024 * 1024), ("small.txt", 1000), ("docs/manual.bin", 1_500_000)],
    );
    client.ok(&["git", "annex", "copy", "--to", "mesh", "big.bin", "small.txt", "docs/manual.bin"]);

    assert_eq!(holders(&mesh, &keys[0]), set(&["node1"]));
    assert_eq!(holders(&mesh, &keys[1]), set(&["node3"]));
    // Large, so node1 wants it; under docs/, so node3 wants it too: the
    // associated file reaches the expressions.
    assert_eq!(holders(&mesh, &keys[2]), set(&["node1", "node3"]));
    assert_eq!(whereis(&client, &uuids, "big.bin"), set(&["node1"]));
    assert_eq!(whereis(&client, &uuids, "small.txt"), set(&["node3"]));
    assert_eq!(whereis(&client, &uuids, "docs/manual.bin"), set(&["node1", "node3"]));

    // Unsetting makes node2 want everything again.
    let out = mesh.admin(&["wanted", "node2", ""]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wants everything"));
    assert_eq!(node_row(&mesh, "node2")[7], "-");
    let (client, keys) = client_with(&mesh, &[("later.txt", 10)]);
    client.ok(&["git", "annex", "copy", "--to", "mesh", "later.txt"]);
    assert_eq!(holders(&mesh, &keys[0]), set(&["node2", "node3"]));
}

#[test]
fn content_no_node_wants_goes_to_every_node() {
    let mesh = Mesh::separate(3);
    for n in NODES {
        mesh.admin_ok(&["wanted", n, "nothing"]);
    }
    let uuids = node_uuids(&mesh);
    let (client, keys) = client_with(&mesh, &[("a.bin", 300_000)]);
    client.ok(&["git", "annex", "copy", "--to", "mesh", "a.bin"]);
    assert_eq!(holders(&mesh, &keys[0]), set(&NODES));
    assert_eq!(whereis(&client, &uuids, "a.bin"), set(&NODES));
}

#[test]
fn a_drained_node_gets_nothing_new_but_still_serves_get() {
    let mut mesh = Mesh::separate(3);
    mesh.admin_ok(&["wanted", "node2", "nothing"]);
    mesh.admin_ok(&["wanted", "node3", "nothing"]);
    let uuids = node_uuids(&mesh);
    let (client, keys) =
        client_with(&mesh, &[("old.bin", 400_000), ("new.bin", 400_000), ("after.bin", 1000)]);
    client.ok(&["git", "annex", "copy", "--to", "mesh", "old.bin"]);
    assert_eq!(holders(&mesh, &keys[0]), set(&["node1"]));

    let out = mesh.admin_ok(&["node", "drain", "node1"]);
    assert!(out.contains("draining"), "{out}");
    assert_eq!(node_row(&mesh, "node1")[6], "draining");
    assert_eq!(node_row(&mesh, "node2")[6], "active");

    // node1 would want it but is draining; nobody else wants it, so it goes
    // to every node that is not draining.
    client.ok(&["git", "annex", "copy", "--to", "mesh", "new.bin"]);
    assert_eq!(holders(&mesh, &keys[1]), set(&["node2", "node3"]));
    assert_eq!(whereis(&client, &uuids, "new.bin"), set(&["node2", "node3"]));

    // old.bin is only on the drained node, which still serves it.
    let data = std::fs::read(client.path().join("old.bin")).unwrap();
    client.ok(&["git", "annex", "drop", "old.bin"]);
    assert!(std::fs::read(client.path().join("old.bin")).is_err());
    client.ok(&["git", "annex", "get", "--from", "mesh", "old.bin"]);
    assert_eq!(std::fs::read(client.path().join("old.bin")).unwrap(), data);

    // Drain flags and preferred content survive a coordinator restart.
    mesh.proc("coordinator").stop();
    mesh.start_coordinator();
    mesh.wait_ready(3);
    assert_eq!(node_row(&mesh, "node1")[6], "draining");
    assert_eq!(mesh.admin_ok(&["wanted", "node2"]).trim(), "nothing");

    mesh.admin_ok(&["node", "undrain", "node1"]);
    assert_eq!(node_row(&mesh, "node1")[6], "active");
    client.ok(&["git", "annex", "copy", "--to", "mesh", "after.bin"]);
    assert_eq!(holders(&mesh, &keys[2]), set(&["node1"]));

    let err = mesh.admin_err(&["node", "drain", "nosuchnode"]);
    assert!(err.contains("unknown node"), "{err}");
}

#[test]
fn a_put_short_of_the_minimum_copies_fails_and_reports_what_stored() {
    let mut mesh = Mesh::separate(3);
    assert_eq!(mesh.admin_ok(&["cluster", "mincopies", "mesh"]).trim(), "1");
    assert_eq!(mesh.admin_ok(&["cluster", "mincopies", "mesh", "3"]).trim(), "3");
    let err = mesh.admin_err(&["cluster", "mincopies", "mesh", "0"]);
    assert!(err.contains("at least 1"), "{err}");
    let list = mesh.admin_json(&["cluster", "list"]);
    let row = list.as_array().unwrap().iter().find(|c| c["name"] == "mesh").unwrap();
    assert_eq!(row["min_copies"], 3, "{list}");

    let uuids = node_uuids(&mesh);
    let (client, keys) = client_with(&mesh, &[("f.bin", 500_000), ("g.bin", 1000)]);
    // With all three nodes up, three copies are made.
    client.ok(&["git", "annex", "copy", "--to", "mesh", "g.bin"]);
    assert_eq!(holders(&mesh, &keys[1]), set(&NODES));

    mesh.proc("node3").stop();
    wait_until("node3 to be seen down", Duration::from_secs(30), || mesh.healthy_nodes() == 2);
    let out = client.run(&["git", "annex", "copy", "--to", "mesh", "f.bin"]);
    assert!(
        !out.status.success(),
        "copy should fail with only two nodes up:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The two copies made are stored and reported to the client.
    assert_eq!(holders(&mesh, &keys[0]), set(&["node1", "node2"]));
    assert_eq!(whereis(&client, &uuids, "f.bin"), set(&["node1", "node2"]));
    // The mesh's own log agrees.
    let w = mesh.admin_ok(&["whereis", &keys[0]]);
    assert!(w.contains(&uuids[0].1) && w.contains(&uuids[1].1) && !w.contains(&uuids[2].1), "{w}");
}

#[test]
fn nodes_short_of_space_are_skipped() {
    let mesh = Mesh::separate(3);
    let list = mesh.admin_json(&["cluster", "list"]);
    assert_eq!(
        (&list[0]["reserve_bytes"], &list[0]["reserve_default"]),
        (&100000000.into(), &true.into()),
        "{list}"
    );
    // Wait until every node has reported its free space.
    wait_until("free space reports", Duration::from_secs(30), || {
        NODES.iter().all(|n| node_row(&mesh, n)[4] != "0")
    });
    // No disk here has an exabyte free.
    let r = mesh.admin_json(&["cluster", "reserve", "mesh", "1EB"]);
    assert_eq!(r["reserve_bytes"], 1000000000000000000u64, "{r}");
    let err = mesh.admin_err(&["cluster", "reserve", "mesh", "plenty"]);
    assert!(err.contains("bad reserve"), "{err}");

    let (client, keys) = client_with(&mesh, &[("a.bin", 1000)]);
    let out = client.run(&["git", "annex", "copy", "--to", "mesh", "a.bin"]);
    assert!(!out.status.success(), "copy should fail when no node has room");
    assert!(holders(&mesh, &keys[0]).is_empty());

    let r = mesh.admin_json(&["cluster", "reserve", "mesh", "default"]);
    assert_eq!(
        (&r["reserve_bytes"], &r["reserve_default"]),
        (&100000000.into(), &true.into()),
        "{r}"
    );
    client.ok(&["git", "annex", "copy", "--to", "mesh", "a.bin"]);
    assert_eq!(holders(&mesh, &keys[0]), set(&NODES));
}
