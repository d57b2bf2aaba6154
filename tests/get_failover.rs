//! GET and CHECKPRESENT against a cluster whose nodes fail, are busy, or hold
//! content the location log does not know of.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use annexmesh::p2p::key::Key;
use annexmesh::p2p::layout::object_path_bare;
use common::{Client, Mesh, http_post, objects_named, wait_until};
use sha2::{Digest, Sha256};

const CLIENT: &str = "6d4e3c1a-8f0b-4a52-9c3e-2b7d9e1f0a44";

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn sha256e_key(data: &[u8], ext: &str) -> String {
    format!("SHA256E-s{}--{}{ext}", data.len(), sha256(data))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into()
}

/// Starts a key download through the gateway; returns the serving node's
/// UUID (X-annexmesh-node), the announced length and the unread body.
fn start_get(mesh: &Mesh, repo: &str, key: &str) -> (String, u64, ureq::BodyReader<'static>) {
    start_get_with(mesh, repo, key, "")
}

/// `start_get` with more query parameters (`&name=value...`).
fn start_get_with(
    mesh: &Mesh,
    repo: &str,
    key: &str,
    query: &str,
) -> (String, u64, ureq::BodyReader<'static>) {
    let url = format!(
        "{}/git-annex/{repo}/v4/key/{key}?clientuuid={CLIENT}&associatedfile=f{query}",
        mesh.url()
    );
    let r = agent().get(&url).call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(r.status().as_u16(), 200, "GET {url}");
    let header = |name: &str| {
        r.headers()
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
            .to_string()
    };
    let node = header("x-annexmesh-node");
    let length = header("x-git-annex-data-length").parse().unwrap();
    (node, length, r.into_body().into_reader())
}

fn read_all(mut body: impl Read) -> Vec<u8> {
    let mut data = Vec::new();
    body.read_to_end(&mut data).expect("the whole body");
    data
}

fn checkpresent(mesh: &Mesh, repo: &str, key: &str) -> bool {
    let url =
        format!("{}/git-annex/{repo}/v4/checkpresent?key={key}&clientuuid={CLIENT}", mesh.url());
    let (status, body) = http_post(&url, &[], b"");
    assert_eq!(status, 200, "checkpresent: {body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["present"].as_bool().expect(&body)
}

/// Stores `data` in the cluster over P2P over HTTP.
fn put(mesh: &Mesh, cluster: &str, key: &str, data: &[u8]) {
    let url = format!("{}/git-annex/{cluster}/v4/put?key={key}&clientuuid={CLIENT}", mesh.url());
    let len = data.len().to_string();
    let (status, body) = http_post(&url, &[("X-git-annex-data-length", &len)], data);
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["stored"], true, "{body}");
}

/// Puts an object into a node's store behind the mesh's back, as restoring
/// a backup or copying a bare repository's objects would.
fn place_object(store: &Path, key: &str, data: &[u8]) {
    let path = store.join(object_path_bare(&key.parse::<Key>().unwrap()));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, data).unwrap();
}

fn whereis(mesh: &Mesh, key: &str) -> String {
    let out = mesh.admin(&["whereis", key]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sets a node's cost and waits until the gateway goes by it.
fn set_cost(mesh: &Mesh, node: &str, cost: u32) {
    let out = mesh.admin(&["node", "cost", node, &cost.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = mesh.admin(&["node", "cost", node]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), cost.to_string());
    let gauge = format!("annexmesh_node_cost{{node=\"{node}\",uuid=\"{}\"}}", mesh.uuid_of(node));
    wait_until("the gateway to see the new cost", Duration::from_secs(30), || {
        Mesh::metric(&mesh.url(), &gauge) == u64::from(cost)
    });
}

fn log_of(mesh: &Mesh, proc_name: &str) -> String {
    std::fs::read_to_string(mesh.dir.path().join(format!("{proc_name}.log"))).unwrap_or_default()
}

/// A client repository with `name` of `len` bytes copied to the mesh (all
/// three nodes) and dropped locally.
fn client_with_file_in_mesh(mesh: &Mesh, name: &str, len: usize) -> (Client, String, Vec<u8>) {
    let client = Client::new();
    client.add_remote("mesh", &format!("{}/mesh", mesh.url()));
    let data = client.write_file(name, len, 7);
    client.ok(&["git", "annex", "add", name]);
    client.ok(&["git", "commit", "-q", "-m", "add"]);
    let key = client.key_of(name);
    client.ok(&["git", "annex", "copy", "--to", "mesh", name]);
    for store in mesh.node_stores() {
        assert_eq!(objects_named(&store, &key).len(), 1, "{} should hold {key}", store.display());
    }
    client.ok(&["git", "annex", "drop", name]);
    (client, key, data)
}

#[test]
fn get_works_with_the_first_choice_node_stopped() {
    let mut mesh = Mesh::separate(3);
    let cluster = mesh.uuid_of("mesh");
    let node1 = mesh.uuid_of("node1");
    let (client, key, data) = client_with_file_in_mesh(&mesh, "f.bin", 3 * 1024 * 1024);

    // The cheapest holder is the first choice, however busy the others.
    set_cost(&mesh, "node1", 10);
    let (node, _, body) = start_get(&mesh, &cluster, &key);
    assert_eq!(node, node1);
    assert_eq!(sha256(&read_all(body)), sha256(&data));
    // Unless the client asks to bypass it.
    let (node, _, body) = start_get_with(&mesh, &cluster, &key, &format!("&bypass={node1}"));
    assert_ne!(node, node1);
    assert_eq!(sha256(&read_all(body)), sha256(&data));

    // Stopped, and the coordinator has not noticed yet: the gateway finds
    // out on its own and serves from another holder.
    mesh.proc("node1").stop();
    client.ok(&["git", "annex", "get", "--from", "mesh", "f.bin"]);
    let back = std::fs::read(client.path().join("f.bin")).unwrap();
    assert_eq!(sha256(&back), sha256(&data));

    let (node, length, body) = start_get(&mesh, &cluster, &key);
    assert_ne!(node, node1);
    assert_eq!(length, data.len() as u64);
    assert_eq!(sha256(&read_all(body)), sha256(&data));
}

/// The largest file under `dir`.
fn largest_file(dir: &Path) -> u64 {
    let mut largest = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(m) = p.metadata() {
                largest = largest.max(m.len());
            }
        }
    }
    largest
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
}

#[test]
fn get_returns_the_whole_file_when_the_serving_node_is_killed_mid_stream() {
    const SIZE: usize = 200 * 1024 * 1024;
    let mut mesh = Mesh::separate(3);
    let (client, _, data) = client_with_file_in_mesh(&mesh, "big.bin", SIZE);

    // node1 serves first.
    set_cost(&mesh, "node1", 10);

    // git-annex itself (not the `git annex` wrapper), so that this test can
    // pause the very process that downloads.
    let log = std::fs::File::create(mesh.dir.path().join("client-get.log")).unwrap();
    let mut get = client
        .command(&["git-annex", "get", "--from", "mesh", "big.bin"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let tmp = client.path().join(".git/annex/tmp");
    wait_until("the download to get under way", Duration::from_secs(120), || {
        assert!(get.try_wait().unwrap().is_none(), "git-annex get ended before it was interrupted");
        largest_file(&tmp) >= 16 * 1024 * 1024
    });
    // With the client paused, flow control holds node1 back: it has sent at
    // most the client's bytes plus what the buffers on the way hold, far
    // less than the whole file, when it is killed.
    signal(get.id(), nix::sys::signal::Signal::SIGSTOP);
    let got = largest_file(&tmp);
    mesh.proc("node1").kill();
    signal(get.id(), nix::sys::signal::Signal::SIGCONT);

    wait_until("git-annex get to finish", Duration::from_secs(300), || {
        get.try_wait().unwrap().is_some()
    });
    let status = get.wait().unwrap();
    assert!(
        status.success(),
        "git-annex get failed after node1 was killed with {got} bytes at the client:\n{}\ngateway log:\n{}",
        log_of(&mesh, "client-get"),
        log_of(&mesh, "gateway")
    );
    let back = std::fs::read(client.path().join("big.bin")).unwrap();
    assert_eq!(back.len(), data.len());
    assert_eq!(sha256(&back), sha256(&data));

    // node1 was serving, and another node took over from where it stopped.
    assert!(log_of(&mesh, "node1").contains("serving get"), "node1 never served the GET");
    let continued =
        ["node2", "node3"].iter().filter(|n| log_of(&mesh, n).contains("serving get")).count();
    assert_eq!(continued, 1, "one other node should have continued the GET");
    let gateway = log_of(&mesh, "gateway");
    assert!(
        gateway.contains("continuing the GET on another node"),
        "no failover in the gateway log:\n{gateway}"
    );
    assert!(Mesh::metric(&mesh.url(), "annexmesh_get_failovers_total") >= 1);
}

#[test]
fn a_get_goes_to_an_idle_holder_while_another_is_busy() {
    let mesh = Mesh::separate(3);
    let cluster = mesh.uuid_of("mesh");
    // Larger than every buffer between an agent and a stalled reader, so
    // that a GET nobody reads stays in flight on its node.
    let data: Vec<u8> =
        (0..64 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let key = sha256e_key(&data, ".bin");
    put(&mesh, &cluster, &key, &data);
    let stores = mesh.node_stores();
    assert_eq!(stores.len(), 3);
    for store in &stores {
        assert_eq!(objects_named(store, &key).len(), 1, "{} should hold {key}", store.display());
    }
    // The gateway no longer counts the upload as a transfer in progress on
    // any node (it learns that from heartbeats, through the coordinator).
    let names = ["node1", "node2", "node3"].map(|n| (n, mesh.uuid_of(n)));
    wait_until("the gateway to see the nodes idle", Duration::from_secs(30), || {
        names.iter().all(|(name, uuid)| {
            let gauge =
                format!("annexmesh_node_active_transfers{{node=\"{name}\",uuid=\"{uuid}\"}}");
            Mesh::metric(&mesh.url(), &gauge) == 0
        })
    });

    // Three GETs in quick succession, the first two left unread: each goes
    // to a node that is not busy with the earlier ones.
    let (first, _, mut slow1) = start_get(&mesh, &cluster, &key);
    let mut head = [0u8; 4096];
    slow1.read_exact(&mut head).unwrap();
    let (second, _, slow2) = start_get(&mesh, &cluster, &key);
    let (third, length, body3) = start_get(&mesh, &cluster, &key);
    let view = || {
        let (_, metrics) = common::http_get(&format!("{}/metrics", mesh.url())).unwrap();
        let nodes = String::from_utf8_lossy(&mesh.admin(&["node", "list"]).stdout).into_owned();
        let whereis = whereis(&mesh, &key);
        format!(
            "first {first}, second {second}, third {third}\n{whereis}\n{nodes}\n{metrics}\n{}",
            log_of(&mesh, "gateway")
        )
    };
    assert_ne!(second, first, "the second GET went to the busy node: {}", view());
    assert_ne!(third, first, "the third GET went to a busy node: {}", view());
    assert_ne!(third, second, "the third GET went to a busy node: {}", view());
    assert_eq!(length, data.len() as u64);

    // Every reader, slow or not, gets the whole content.
    assert_eq!(sha256(&read_all(body3)), sha256(&data));
    assert_eq!(sha256(&read_all(slow2)), sha256(&data));
    let mut rest = read_all(slow1);
    rest.splice(0..0, head);
    assert_eq!(sha256(&rest), sha256(&data));
}

#[test]
fn checkpresent_finds_content_the_location_log_misses_and_repairs_the_log() {
    let mesh = Mesh::separate(3);
    let cluster = mesh.uuid_of("mesh");
    let node2 = mesh.uuid_of("node2");
    let data = b"restored from a backup\n";
    let key = sha256e_key(data, ".txt");
    assert!(!checkpresent(&mesh, &cluster, &key));
    let err = mesh.admin_err(&["whereis", &key]);
    assert!(err.contains("key not in the location log"), "{err}");

    place_object(&mesh.store_of("node2"), &key, data);
    assert!(checkpresent(&mesh, &cluster, &key), "the object on node2 was not found");
    let listed = whereis(&mesh, &key);
    assert!(listed.contains("1 copy"), "{listed}");
    assert!(listed.contains(&format!("{node2} -- node2")), "{listed}");
    let (node, _, body) = start_get(&mesh, &cluster, &key);
    assert_eq!(node, node2);
    assert_eq!(read_all(body), data);

    // Gone behind the mesh's back again: CHECKPRESENT asks node2, which the
    // log lists, and strikes it from the log.
    std::fs::remove_file(
        mesh.store_of("node2").join(object_path_bare(&key.parse::<Key>().unwrap())),
    )
    .unwrap();
    assert!(!checkpresent(&mesh, &cluster, &key));
    assert!(whereis(&mesh, &key).contains("0 copies"));
}
