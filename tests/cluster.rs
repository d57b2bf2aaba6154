//! Cluster semantics with real processes and the real git-annex client:
//! fan-out PUT with resume, REMOVE fan-out and deadlines, locks and several
//! gateways sharing one coordinator.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Client, Mesh, http_post, objects_named, wait_until};
use sha2::{Digest, Sha256};

const CLIENT: &str = "0b1c3a3e-2b1f-4c53-9d1e-6f7a2f2f0a11";
const MB: usize = 1024 * 1024;

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn post(gateway: &str, repo: &str, op: &str, query: &str, body: &[u8]) -> serde_json::Value {
    let url = format!("{gateway}/git-annex/{repo}/v4/{op}?clientuuid={CLIENT}{query}");
    let (status, body) = http_post(&url, &[], body);
    assert_eq!(status, 200, "{op}{query}: {body}");
    json(&body)
}

fn partial(store: &Path, key: &str) -> std::path::PathBuf {
    store.join("annex/tmp").join(key)
}

/// Asserts every store holds exactly `data` under `key` and no partial.
fn assert_stored_everywhere(mesh: &Mesh, key: &str, data: &[u8]) {
    for s in mesh.node_stores() {
        let objs = objects_named(&s, key);
        assert_eq!(objs.len(), 1, "{} should hold {key}", s.display());
        assert_eq!(sha256(&std::fs::read(&objs[0]).unwrap()), sha256(data), "{}", s.display());
        assert!(!partial(&s, key).exists(), "{} kept a partial", s.display());
    }
}

fn sorted_plus(v: &serde_json::Value) -> Vec<String> {
    let mut u: Vec<String> = v["plusuuids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    u.sort();
    u
}

fn uuids(mesh: &Mesh, names: &[&str]) -> Vec<String> {
    let mut u: Vec<String> = names.iter().map(|n| mesh.uuid_of(n)).collect();
    u.sort();
    u
}

#[test]
fn one_put_completes_different_partials_on_every_node_sending_the_data_once() {
    let mesh = Mesh::separate(3);
    let client = Client::new();
    client.add_remote("mesh", &format!("{}/mesh", mesh.url()));
    let (data, key) = client.annex_file("f.bin", 8 * MB, 3);

    // Each node already holds a different prefix of the content.
    for (name, held) in [("node1", MB), ("node2", 3 * MB), ("node3", 5 * MB)] {
        let p = partial(&mesh.store_of(name), &key);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &data[..held]).unwrap();
    }
    let url = mesh.url();
    let client_before = Mesh::metric(&url, "annexmesh_put_client_bytes_total");
    let agents_before = Mesh::metric(&url, "annexmesh_put_agent_bytes_total");

    client.ok(&["git", "annex", "copy", "--to", "mesh", "f.bin"]);

    assert_stored_everywhere(&mesh, &key, &data);
    // The client sent from the smallest offset, once; each node got only
    // what it lacked.
    let from_client = Mesh::metric(&url, "annexmesh_put_client_bytes_total") - client_before;
    let to_agents = Mesh::metric(&url, "annexmesh_put_agent_bytes_total") - agents_before;
    assert_eq!(from_client as usize, data.len() - MB);
    assert_eq!(
        to_agents as usize,
        (data.len() - MB) + (data.len() - 3 * MB) + (data.len() - 5 * MB)
    );

    // SUCCESS-PLUS told the client which nodes hold it.
    let whereis = client.ok(&["git", "annex", "whereis", "f.bin"]);
    for name in ["node1", "node2", "node3"] {
        assert!(whereis.contains(&mesh.uuid_of(name)), "{name} missing from whereis:\n{whereis}");
    }
}

#[test]
fn an_interrupted_copy_resumes_without_sending_everything_again() {
    let mesh = Mesh::separate(3);
    let client = Client::new();
    client.add_remote("mesh", &format!("{}/mesh", mesh.url()));
    let (data, key) = client.annex_file("big.bin", 256 * MB, 5);
    let url = mesh.url();

    // Start the copy, and interrupt it like a user pressing ^C once data is
    // flowing and a second has passed.
    let mut copy =
        client.command(&["git-annex", "copy", "--to", "mesh", "big.bin"]).spawn().unwrap();
    let started = Instant::now();
    wait_until("the upload to start", Duration::from_secs(60), || {
        mesh.node_stores()
            .iter()
            .any(|s| std::fs::metadata(partial(s, &key)).map(|m| m.len() > 0).unwrap_or(false))
    });
    std::thread::sleep(Duration::from_secs(1).saturating_sub(started.elapsed()));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(copy.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = copy.wait().unwrap();
    assert!(!status.success(), "the copy finished before it could be interrupted");
    wait_until("the gateway to notice", Duration::from_secs(30), || {
        Mesh::metric(&url, "annexmesh_puts_interrupted_total") == 1
    });
    for s in mesh.node_stores() {
        assert!(
            objects_named(&s, &key).is_empty(),
            "{} has an object from an interrupted upload",
            s.display()
        );
    }
    let kept: Vec<u64> = mesh
        .node_stores()
        .iter()
        .map(|s| std::fs::metadata(partial(s, &key)).map(|m| m.len()).unwrap_or(0))
        .collect();
    assert!(kept.iter().all(|&k| k < data.len() as u64), "{kept:?}");
    assert!(kept.iter().any(|&k| k > 0), "no partial kept: {kept:?}");

    // The retry succeeds at once (no "transfer already in progress") and
    // only sends what is missing.
    let before = Mesh::metric(&url, "annexmesh_put_client_bytes_total");
    client.ok(&["git", "annex", "copy", "--to", "mesh", "big.bin"]);
    let sent = Mesh::metric(&url, "annexmesh_put_client_bytes_total") - before;
    eprintln!(
        "interrupted after {:?}; partials kept {kept:?}; resumed with {sent} of {} bytes",
        started.elapsed(),
        data.len()
    );
    assert!(sent < data.len() as u64, "the retry sent all {sent} bytes again");
    assert_eq!(sent, data.len() as u64 - kept.iter().min().unwrap());
    assert_stored_everywhere(&mesh, &key, &data);
}

/// A key stored on node1 only, plus a copy on node2 that the location log
/// does not know of (as after a restore from backup).
fn key_on_node1_and_unlisted_on_node2(mesh: &Mesh) -> (String, Vec<u8>) {
    let data = b"remove me everywhere\n".to_vec();
    let key = format!("SHA256E-s{}--{}.txt", data.len(), sha256(&data));
    let node1 = mesh.uuid_of("node1");
    let url = format!("{}/git-annex/{node1}/v4/put?key={key}&clientuuid={CLIENT}", mesh.url());
    let (status, body) =
        http_post(&url, &[("X-git-annex-data-length", &data.len().to_string())], &data);
    assert_eq!(json(&body)["stored"], true, "{status} {body}");
    let obj = &objects_named(&mesh.store_of("node1"), &key)[0];
    let rel = obj.strip_prefix(mesh.store_of("node1")).unwrap();
    let copy = mesh.store_of("node2").join(rel);
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(obj, &copy).unwrap();
    (key, data)
}

#[test]
fn remove_reaches_nodes_the_location_log_does_not_list() {
    let mesh = Mesh::separate(3);
    let (key, _) = key_on_node1_and_unlisted_on_node2(&mesh);
    let whereis = String::from_utf8_lossy(&mesh.admin(&["whereis", &key]).stdout).into_owned();
    assert!(whereis.contains("1 copy") && !whereis.contains("node2"), "{whereis}");

    let r = post(&mesh.url(), &mesh.uuid_of("mesh"), "remove", &format!("&key={key}"), b"");
    assert_eq!(r["removed"], true, "{r}");
    assert_eq!(sorted_plus(&r), uuids(&mesh, &["node1", "node2", "node3"]));
    for s in mesh.node_stores() {
        assert!(objects_named(&s, &key).is_empty(), "{} still holds {key}", s.display());
    }
}

#[test]
fn a_drop_with_one_node_down_fails_naming_the_nodes_it_removed_from() {
    let mut mesh = Mesh::separate(3);
    let client = Client::new();
    client.add_remote("mesh", &format!("{}/mesh", mesh.url()));
    let (_, key) = client.annex_file("f.txt", 4096, 8);
    client.ok(&["git", "annex", "copy", "--to", "mesh", "f.txt"]);

    mesh.proc("node3").stop();
    let out = client.run(&["git", "annex", "drop", "--from", "mesh", "f.txt"]);
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "drop should fail with node3 down:\n{text}");
    assert!(text.contains("failed"), "the client does not report the failure:\n{text}");

    // FAILURE-PLUS named node1 and node2: the client knows they no longer
    // hold it, and still counts node3 (and so the cluster).
    let whereis = client.ok(&["git", "annex", "whereis", "f.txt"]);
    assert!(!whereis.contains(&mesh.uuid_of("node1")), "{whereis}");
    assert!(!whereis.contains(&mesh.uuid_of("node2")), "{whereis}");
    assert!(whereis.contains(&mesh.uuid_of("node3")), "{whereis}");
    assert!(objects_named(&mesh.store_of("node1"), &key).is_empty());
    assert!(objects_named(&mesh.store_of("node2"), &key).is_empty());
    assert_eq!(objects_named(&mesh.store_of("node3"), &key).len(), 1);

    // The same answer over the API, for the record.
    let r = post(&mesh.url(), &mesh.uuid_of("mesh"), "remove", &format!("&key={key}"), b"");
    assert_eq!(r["removed"], false, "{r}");
    assert_eq!(sorted_plus(&r), uuids(&mesh, &["node1", "node2"]));
}

#[test]
fn remove_before_a_past_deadline_removes_nothing() {
    let mut mesh = Mesh::separate(3);
    let (key, _) = key_on_node1_and_unlisted_on_node2(&mesh);
    let cluster = mesh.uuid_of("mesh");
    let url = mesh.url();
    let now = post(&url, &cluster, "gettimestamp", "", b"")["timestamp"].as_u64().unwrap();

    for deadline in [now.saturating_sub(5), now] {
        let r =
            post(&url, &cluster, "remove-before", &format!("&key={key}&timestamp={deadline}"), b"");
        assert_eq!(r["removed"], false, "deadline {deadline} (now {now}): {r}");
        assert_eq!(objects_named(&mesh.store_of("node1"), &key).len(), 1);
        assert_eq!(objects_named(&mesh.store_of("node2"), &key).len(), 1);
    }

    // A node whose clock restarted since the gateway last measured it is
    // measured again, not trusted blindly; a future deadline then works.
    let r = post(
        &url,
        &cluster,
        "remove-before",
        &format!("&key=WORM--warm-up&timestamp={}", now + 60),
        b"",
    );
    assert_eq!(r["removed"], true, "{r}");
    let address = |mesh: &Mesh| mesh.node_field("node2", "address");
    let old_address = address(&mesh);
    mesh.proc("node2").stop();
    mesh.procs.retain(|p| p.name != "node2");
    mesh.start_agent("node2");
    // The new run listens on another port: wait for it to register.
    wait_until("node2 back", Duration::from_secs(30), || {
        address(&mesh) != old_address && mesh.healthy_nodes() == 3
    });
    let now = post(&url, &cluster, "gettimestamp", "", b"")["timestamp"].as_u64().unwrap();
    let r =
        post(&url, &cluster, "remove-before", &format!("&key={key}&timestamp={}", now + 60), b"");
    assert_eq!(r["removed"], true, "{r}");
    for s in mesh.node_stores() {
        assert!(objects_named(&s, &key).is_empty(), "{} still holds {key}", s.display());
    }
}

#[test]
fn a_lock_taken_through_one_gateway_blocks_a_drop_through_another() {
    let mut mesh = Mesh::separate(3);
    let a = mesh.url();
    let b = mesh.add_gateway("gateway-b");
    let client = Client::new();
    client.add_remote("mesh", &format!("{a}/mesh"));
    let (_, key) = client.annex_file("f.txt", 4096, 11);
    client.ok(&["git", "annex", "copy", "--to", "mesh", "f.txt"]);
    let cluster = mesh.uuid_of("mesh");

    let lock = post(&a, &cluster, "lockcontent", &format!("&key={key}"), b"");
    assert_eq!(lock["locked"], true, "{lock}");
    let lockid = lock["lockid"].as_str().unwrap().to_string();

    // Through gateway B: the locked node keeps its copy, so the removal
    // fails; the other nodes are named as removed.
    let r = post(&b, &cluster, "remove", &format!("&key={key}"), b"");
    assert_eq!(r["removed"], false, "{r}");
    assert_eq!(r["plusuuids"].as_array().unwrap().len(), 2, "{r}");
    let left: usize = mesh.node_stores().iter().map(|s| objects_named(s, &key).len()).sum();
    assert_eq!(left, 1, "the locked copy must stay");

    // keeplocked ends with an unlock; then B can remove it.
    let url = format!("{a}/git-annex/{cluster}/v4/keeplocked?lockid={lockid}&clientuuid={CLIENT}");
    let (status, body) = http_post(
        &url,
        &[("Content-Type", "application/json")],
        br#"{"unlock": false}{"unlock": true}"#,
    );
    assert_eq!(
        (status, json(&body)["locked"].clone()),
        (200, serde_json::Value::Bool(false)),
        "{body}"
    );
    let r = post(&b, &cluster, "remove", &format!("&key={key}"), b"");
    assert_eq!(r["removed"], true, "{r}");
    let left: usize = mesh.node_stores().iter().map(|s| objects_named(s, &key).len()).sum();
    assert_eq!(left, 0);
}

#[test]
fn what_is_copied_through_one_gateway_is_found_through_another_at_once() {
    let mut mesh = Mesh::separate(3);
    let a = mesh.url();
    let b = mesh.add_gateway("gateway-b");
    let writer = Client::new();
    writer.add_remote("mesh", &format!("{a}/mesh"));
    let data = writer.write_file("f.bin", 3 * MB, 13);
    writer.ok(&["git", "annex", "add", "f.bin"]);
    writer.ok(&["git", "commit", "-q", "-m", "f"]);
    writer.ok(&["git", "annex", "copy", "--to", "mesh", "f.bin"]);

    // A clone that knows only gateway B.
    let reader = Client::clone_of(&writer);
    reader.add_remote("meshb", &format!("{b}/mesh"));
    reader.ok(&["git", "annex", "fsck", "--fast", "--from", "meshb", "f.bin"]);
    let whereis = reader.ok(&["git", "annex", "whereis", "f.bin"]);
    assert!(whereis.contains(&mesh.uuid_of("mesh")), "{whereis}");
    reader.ok(&["git", "annex", "get", "--from", "meshb", "f.bin"]);
    assert_eq!(sha256(&std::fs::read(reader.path().join("f.bin")).unwrap()), sha256(&data));
}

#[test]
fn bypassed_nodes_are_left_alone() {
    let mesh = Mesh::separate(3);
    let (key, _) = key_on_node1_and_unlisted_on_node2(&mesh);
    let node2 = mesh.uuid_of("node2");
    let r = post(
        &mesh.url(),
        &mesh.uuid_of("mesh"),
        "remove",
        &format!("&key={key}&bypass={node2}"),
        b"",
    );
    assert_eq!(r["removed"], true, "{r}");
    assert_eq!(sorted_plus(&r), uuids(&mesh, &["node1", "node3"]));
    assert!(objects_named(&mesh.store_of("node1"), &key).is_empty());
    assert_eq!(objects_named(&mesh.store_of("node2"), &key).len(), 1, "a bypassed node was used");
    // A malformed bypass UUID is refused, not ignored.
    let url = format!(
        "{}/git-annex/{}/v4/remove?clientuuid={CLIENT}&key={key}&bypass=",
        mesh.url(),
        mesh.uuid_of("mesh")
    );
    assert_eq!(http_post(&url, &[], b"").0, 400);
}
