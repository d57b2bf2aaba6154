//! Every role stops promptly on SIGTERM, even while clients hold it busy:
//! an upload stopped half-way, a content lock and a `keeplocked` long poll
//! (which git-annex keeps open for as long as it needs the lock).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Mesh, http_post, wait_until};

const CLIENT: &str = "0a1b2c3d-0000-4000-8000-000000000001";

/// How long a role may take to stop.
const LIMIT: Duration = Duration::from_secs(5);

/// Connections a test keeps open while the mesh is stopped.
struct Busy {
    _put: TcpStream,
    _keeplocked: TcpStream,
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Sends an HTTP request head (and `body`), leaving the request open.
fn open_request(mesh: &Mesh, path: &str, headers: &[&str], body: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(mesh.http).unwrap();
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: {}\r\n", mesh.http);
    // `up` needs its user's credentials.
    if mesh.up_credentials().exists() {
        head.push_str(&format!("Authorization: {}\r\n", mesh.up_auth_header()));
    }
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    s
}

/// Stores a small object, locks it with `lockcontent`, opens a `keeplocked`
/// poll on the lock and starts an upload of another object that stops
/// half-way through, with the first half already streamed to the agents.
fn keep_busy(mesh: &Mesh) -> Busy {
    let cluster = mesh.uuid_of("mesh");
    let base = format!("{}/git-annex/{cluster}/v3", mesh.url());
    let key = "WORM-s6-m1--locked";
    let auth = if mesh.up_credentials().exists() { mesh.up_auth_header() } else { String::new() };
    let auth: &[(&str, &str)] =
        if auth.is_empty() { &[] } else { &[("Authorization", auth.as_str())] };
    let (status, body) = http_post(
        &format!("{base}/put?key={key}&clientuuid={CLIENT}"),
        &[auth, &[("X-git-annex-data-length", "6")]].concat(),
        b"locked",
    );
    assert_eq!(json(&body)["stored"], true, "{status} {body}");

    let (status, body) =
        http_post(&format!("{base}/lockcontent?key={key}&clientuuid={CLIENT}"), auth, b"");
    let lock = json(&body);
    assert_eq!(lock["locked"], true, "{status} {body}");
    let lockid = lock["lockid"].as_str().unwrap().to_string();

    // git-annex streams `{"unlock": ...}` messages in a chunked body; none
    // is sent, so the poll stays open.
    let path = format!("/git-annex/{cluster}/v3/keeplocked?lockid={lockid}&clientuuid={CLIENT}");
    let keeplocked = open_request(mesh, &path, &["Transfer-Encoding: chunked"], b"");

    let total = 8 * 1024 * 1024;
    let half = vec![7u8; total / 2];
    let path =
        format!("/git-annex/{cluster}/v3/put?key=WORM-s{total}-m1--half&clientuuid={CLIENT}");
    let put = open_request(
        mesh,
        &path,
        &[&format!("Content-Length: {total}"), &format!("X-git-annex-data-length: {total}")],
        &half,
    );
    wait_until("the half upload to reach the gateway", Duration::from_secs(20), || {
        Mesh::metric(&mesh.url(), "annexmesh_put_client_bytes_total") >= half.len() as u64
    });
    Busy { _put: put, _keeplocked: keeplocked }
}

fn assert_stops(mesh: &mut Mesh, role: &str) {
    let took = mesh.proc(role).stop_within(Duration::from_secs(30));
    let took = took.unwrap_or_else(|| panic!("{role} was still running 30 s after SIGTERM"));
    eprintln!("{role} stopped {took:?} after SIGTERM");
    assert!(took <= LIMIT, "{role} took {took:?} to stop, more than {LIMIT:?}");
}

#[test]
fn gateway_stops_with_an_upload_a_lock_and_a_keeplocked_poll_open() {
    let mut mesh = Mesh::separate(2);
    let busy = keep_busy(&mesh);
    assert_stops(&mut mesh, "gateway");
    drop(busy);
}

#[test]
fn agent_stops_while_a_gateway_streams_an_upload_and_holds_a_lock_on_it() {
    // One agent, so the lock and the upload are surely on it.
    let mut mesh = Mesh::separate(1);
    let busy = keep_busy(&mesh);
    assert_stops(&mut mesh, "node1");
    drop(busy);
}

#[test]
fn coordinator_stops_while_the_mesh_is_busy() {
    let mut mesh = Mesh::separate(1);
    let busy = keep_busy(&mesh);
    assert_stops(&mut mesh, "coordinator");
    drop(busy);
}

#[test]
fn whole_mesh_in_one_process_stops_while_busy() {
    let mut mesh = Mesh::up();
    let busy = keep_busy(&mesh);
    assert_stops(&mut mesh, "up");
    drop(busy);
}

/// The half-sent upload is a real upload in progress: the gateway answers
/// nothing until the rest arrives.
#[test]
fn the_half_upload_is_still_in_progress() {
    let mesh = Mesh::separate(1);
    let mut busy = keep_busy(&mesh);
    busy._put.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut buf = [0u8; 1];
    let r = busy._put.read(&mut buf);
    assert!(r.is_err(), "the gateway answered a half upload: {r:?}");
}
