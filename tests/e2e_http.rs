//! The real git-annex against a real mesh over P2P over HTTP.

mod common;

use common::{Client, Mesh, objects_named};
use sha2::{Digest, Sha256};

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[test]
fn copy_drop_get_and_drop_from_mesh_with_annexmesh_up() {
    let mesh = Mesh::up();
    let client = Client::new();
    client.add_remote("mesh", &format!("{}/mesh", mesh.url()));
    let data = client.write_file("big.bin", 30 * 1024 * 1024, 1);
    client.ok(&["git", "annex", "add", "big.bin"]);
    client.ok(&["git", "commit", "-q", "-m", "add big.bin"]);
    let key = client.key_of("big.bin");

    client.ok(&["git", "annex", "copy", "--to", "mesh", "big.bin"]);
    let stores = mesh.node_stores();
    assert_eq!(stores.len(), 3);
    for s in &stores {
        let objs = objects_named(s, &key);
        assert_eq!(objs.len(), 1, "{} should hold {key}", s.display());
        assert_eq!(sha256(&std::fs::read(&objs[0]).unwrap()), sha256(&data));
    }

    // Dropping the only local copy needs the mesh to lock its copy.
    client.ok(&["git", "annex", "drop", "big.bin"]);
    assert!(std::fs::read(client.path().join("big.bin")).is_err(), "content should be gone locally");

    client.ok(&["git", "annex", "get", "--from", "mesh", "big.bin"]);
    let back = std::fs::read(client.path().join("big.bin")).unwrap();
    assert_eq!(back.len(), data.len());
    assert_eq!(sha256(&back), sha256(&data));

    client.ok(&["git", "annex", "drop", "--from", "mesh", "big.bin"]);
    for s in &stores {
        assert!(objects_named(s, &key).is_empty(), "{} still holds {key}", s.display());
    }
    let whereis = client.ok(&["git", "annex", "whereis", "big.bin"]);
    assert!(!whereis.contains("[mesh]"), "whereis still lists the mesh:\n{whereis}");
}

fn testremote(client: &Client, remote: &str) -> String {
    client.write_file("seed.txt", 10, 9);
    client.ok(&["git", "annex", "add", "seed.txt"]);
    client.ok(&["git", "commit", "-q", "-m", "seed"]);
    let out = client.run(&["git", "annex", "testremote", remote]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "testremote {remote} failed:\n{text}");
    let summary = text.lines().rev().find(|l| l.contains("tests passed") || l.starts_with("All ")).unwrap_or("");
    eprintln!("testremote {remote}: {summary}");
    assert!(text.contains("All ") && text.contains("tests passed"), "no pass summary:\n{text}");
    text
}

#[test]
fn testremote_passes_against_a_three_agent_cluster() {
    let mesh = Mesh::separate(3);
    let client = Client::new();
    client.add_remote("mesh", &format!("{}/mesh", mesh.url()));
    testremote(&client, "mesh");
}

#[test]
fn testremote_passes_against_one_node_through_the_gateway() {
    let mesh = Mesh::separate(3);
    let client = Client::new();
    client.add_remote("node2", &format!("{}/node2", mesh.url()));
    let text = testremote(&client, "node2");
    assert!(!text.is_empty());
    // The node was addressed by its own UUID, not the cluster's.
    let uuid = client.ok(&["git", "config", "remote.node2.annex-uuid"]);
    assert_eq!(uuid.trim(), mesh.uuid_of("node2"));
    assert_ne!(uuid.trim(), mesh.uuid_of("mesh"));
}
