//! Bad input gets a clear error and loses nothing.

mod common;

use std::time::Duration;

use common::{Mesh, http_get, http_post, objects_named};
use sha2::{Digest, Sha256};

const CLIENT: &str = "0b1c3a3e-2b1f-4c53-9d1e-6f7a2f2f0a11";

fn sha256e_key(data: &[u8], ext: &str) -> String {
    format!("SHA256E-s{}--{}{ext}", data.len(), hex::encode(Sha256::digest(data)))
}

fn put(mesh: &Mesh, repo: &str, key: &str, body: &[u8], length: &str) -> (u16, String) {
    let url = format!("{}/git-annex/{repo}/v4/put?key={key}&clientuuid={CLIENT}", mesh.url());
    http_post(
        &url,
        &[("Content-Type", "application/octet-stream"), ("X-git-annex-data-length", length)],
        body,
    )
}

fn checkpresent(mesh: &Mesh, repo: &str, key: &str) -> (u16, String) {
    let url =
        format!("{}/git-annex/{repo}/v4/checkpresent?key={key}&clientuuid={CLIENT}", mesh.url());
    http_post(&url, &[], b"")
}

#[test]
fn content_that_does_not_match_its_checksum_is_refused_and_nothing_is_stored() {
    let mesh = Mesh::separate(3);
    let cluster = mesh.uuid_of("mesh");
    let key = sha256e_key(b"hello\n", ".txt");

    let (status, body) = put(&mesh, &cluster, &key, b"HELLO\n", "6");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["stored"],
        false,
        "{body}"
    );
    for store in mesh.node_stores() {
        assert!(objects_named(&store, &key).is_empty(), "{} kept bad content", store.display());
        let tmp = store.join("annex/tmp").join(&key);
        assert!(!tmp.exists(), "{} kept a partial of bad content", store.display());
    }
    let (_, body) = checkpresent(&mesh, &cluster, &key);
    assert_eq!(body.trim(), r#"{"present":false}"#);

    // The right content is then accepted.
    let (status, body) = put(&mesh, &cluster, &key, b"hello\n", "6");
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["stored"], true, "{body}");
    for store in mesh.node_stores() {
        let objs = objects_named(&store, &key);
        assert_eq!(objs.len(), 1);
        assert_eq!(std::fs::read(&objs[0]).unwrap(), b"hello\n");
    }
}

#[test]
fn keys_that_would_escape_the_store_are_refused_with_a_clear_error() {
    let mesh = Mesh::separate(1);
    let cluster = mesh.uuid_of("mesh");
    for key in [
        "..",
        "SHA256E-s1--..%2F..%2Fescaped",
        "SHA256E-s1--a%2Fb",
        "WORM--%00x",
        "",
        "SHA256E-s1--x%0Ay",
    ] {
        let (status, body) = checkpresent(&mesh, &cluster, key);
        assert_eq!(status, 400, "checkpresent {key:?} answered {status}: {body}");
        assert!(body.contains("key"), "unclear error for {key:?}: {body}");
        let (status, body) = put(&mesh, &cluster, key, b"x", "1");
        assert_eq!(status, 400, "put {key:?} answered {status}: {body}");
    }
    // Through the path of a download as well.
    let url = format!("{}/git-annex/{cluster}/v4/key/..%2F..%2Fuuid", mesh.url());
    let (status, body) = http_get(&url).unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(!mesh.dir.path().join("escaped").exists());
}

#[test]
fn oversized_lengths_unknown_uuids_and_missing_parameters_are_refused() {
    let mesh = Mesh::separate(1);
    let cluster = mesh.uuid_of("mesh");
    let key = sha256e_key(b"abc", "");

    let (status, body) = put(&mesh, &cluster, &key, b"abc", "99999999999999999");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("does not match the size"), "{body}");
    let (status, body) = put(&mesh, &cluster, &key, b"abc", "not-a-number");
    assert_eq!(status, 400, "{body}");

    let unknown = "5b0d3ea6-8a4f-4d0e-9c8b-0000deadbeef";
    let (status, body) = checkpresent(&mesh, unknown, &key);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains(unknown), "{body}");

    let url = format!("{}/git-annex/{cluster}/v4/checkpresent?key={key}", mesh.url());
    let (status, body) = http_post(&url, &[], b"");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("clientuuid"), "{body}");

    // Versions and operations that do not exist answer 404, so that clients
    // fall back to an older version.
    let url =
        format!("{}/git-annex/{cluster}/v9/checkpresent?key={key}&clientuuid={CLIENT}", mesh.url());
    assert_eq!(http_post(&url, &[], b"").0, 404);
    let url = format!("{}/git-annex/{cluster}/v2/gettimestamp?clientuuid={CLIENT}", mesh.url());
    assert_eq!(http_post(&url, &[], b"").0, 404);
}

#[test]
fn location_log_survives_a_coordinator_crash() {
    let mut mesh = Mesh::separate(3);
    let cluster = mesh.uuid_of("mesh");
    let data = b"survives a crash\n";
    let key = sha256e_key(data, ".txt");
    let (_, body) = put(&mesh, &cluster, &key, data, &data.len().to_string());
    assert!(body.contains(r#""stored":true"#), "{body}");

    mesh.proc("coordinator").kill();
    mesh.procs.retain(|p| p.name != "coordinator");
    mesh.start_coordinator();
    common::wait_until("the restarted coordinator", Duration::from_secs(30), || {
        mesh.healthy_nodes() == 3
    });

    let out = mesh.admin(&["whereis", &key]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("3 copies"), "location log lost entries:\n{text}");
    for name in ["node1", "node2", "node3"] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    // The gateway sees the restarted coordinator's node health on its next
    // topology refresh (every second); until then it may not vouch for it.
    let mut body = String::new();
    common::wait_until("the gateway to see the nodes again", Duration::from_secs(10), || {
        body = checkpresent(&mesh, &cluster, &key).1;
        body.trim() == r#"{"present":true}"#
    });
    assert_eq!(body.trim(), r#"{"present":true}"#);
}
