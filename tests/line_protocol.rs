//! The line-based P2P protocol spoken directly to a gateway's TCP listener:
//! every message of every version, authentication, and bad input.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{Mesh, objects_named, wait_until};
use sha2::{Digest, Sha256};

/// A raw protocol connection.
struct Peer {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Peer {
    fn connect(addr: SocketAddr) -> Peer {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        Peer { r: BufReader::new(s.try_clone().unwrap()), w: s }
    }

    /// Connected, authenticated (to `repo` when given) and at `version`.
    fn open(mesh: &Mesh, token: &str, repo: Option<&str>, version: u64) -> (Peer, String) {
        let mut p = Peer::connect(mesh.p2p);
        if let Some(r) = repo {
            p.send(&format!("ANNEXMESH repo={r}"));
        }
        p.send(&format!("AUTH 11111111-2222-3333-4444-555555555555 {token}"));
        let line = p.line();
        let uuid = line
            .strip_prefix("AUTH-SUCCESS ")
            .unwrap_or_else(|| panic!("AUTH got {line:?}"))
            .to_string();
        p.send(&format!("VERSION {version}"));
        assert_eq!(p.line(), format!("VERSION {version}"));
        (p, uuid)
    }

    fn send(&mut self, line: &str) {
        self.w.write_all(line.as_bytes()).unwrap();
        self.w.write_all(b"\n").unwrap();
    }

    fn send_bytes(&mut self, b: &[u8]) {
        self.w.write_all(b).unwrap();
    }

    /// The next line without its newline; panics at end of input.
    fn line(&mut self) -> String {
        self.try_line().expect("a line from the gateway, not the end of the connection")
    }

    fn try_line(&mut self) -> Option<String> {
        let mut s = String::new();
        match self.r.read_line(&mut s) {
            Ok(0) => None,
            Ok(_) => Some(
                s.strip_suffix('\n')
                    .unwrap_or_else(|| panic!("unterminated line {s:?}"))
                    .to_string(),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("reading from the gateway: {e}"),
        }
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0; n];
        self.r.read_exact(&mut b).unwrap();
        b
    }

    /// Whether the gateway closed the connection (nothing more to read).
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.r.read(&mut b), Ok(0) | Err(_))
    }

    /// A whole PUT of `data` under `key` from the offset the gateway asks.
    fn put(&mut self, key: &str, data: &[u8], version: u64) -> String {
        self.put_ending(key, data, (version >= 1).then_some("VALID"))
    }

    /// A PUT whose payload is followed by `after` (VALID, INVALID or
    /// something else); returns the gateway's next line.
    fn put_ending(&mut self, key: &str, data: &[u8], after: Option<&str>) -> String {
        self.send(&format!("PUT file.bin {key}"));
        let reply = self.line();
        let Some(off) = reply.strip_prefix("PUT-FROM ") else { return reply };
        let off: usize = off.parse().unwrap();
        self.send(&format!("DATA {}", data.len() - off));
        self.send_bytes(&data[off..]);
        if let Some(line) = after {
            self.send(line);
        }
        self.line()
    }

    /// A whole GET; returns the data and the validity line (v1+).
    fn get(&mut self, key: &str, offset: u64, version: u64) -> (Vec<u8>, Option<String>) {
        self.send(&format!("GET {offset} file.bin {key}"));
        let reply = self.line();
        let n: usize = reply
            .strip_prefix("DATA ")
            .unwrap_or_else(|| panic!("GET got {reply:?}"))
            .parse()
            .unwrap();
        let data = self.bytes(n);
        let validity = (version >= 1).then(|| self.line());
        self.send("SUCCESS");
        (data, validity)
    }
}

fn key_for(data: &[u8]) -> String {
    format!("SHA256E-s{}--{}.bin", data.len(), hex::encode(Sha256::digest(data)))
}

fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn sorted_words(s: &str) -> Vec<String> {
    let mut w: Vec<String> = s.split(' ').skip(1).map(String::from).collect();
    w.sort();
    w
}

fn node_uuids(mesh: &Mesh) -> Vec<String> {
    let mut v: Vec<String> = (1..=3).map(|i| mesh.uuid_of(&format!("node{i}"))).collect();
    v.sort();
    v
}

fn stored_on(mesh: &Mesh, key: &str) -> usize {
    mesh.node_stores().iter().filter(|s| !objects_named(s, key).is_empty()).count()
}

#[test]
fn every_request_in_every_version() {
    let mesh = Mesh::separate(3);
    let token = mesh.token(&[]);
    let cluster = mesh.uuid_of("mesh");
    let nodes = node_uuids(&mesh);
    for v in 0..=4u64 {
        let (mut p, uuid) = Peer::open(&mesh, &token, Some("mesh"), v);
        assert_eq!(uuid, cluster, "AUTH-SUCCESS carries the cluster's UUID");
        let data = content(300_000 + v as usize, v as u8);
        let key = key_for(&data);

        p.send(&format!("CHECKPRESENT {key}"));
        assert_eq!(p.line(), "FAILURE", "v{v}: not there yet");

        // PUT: every node stores it; from v2 the reply names them.
        let reply = p.put(&key, &data, v);
        if v >= 2 {
            assert!(reply.starts_with("SUCCESS-PLUS "), "v{v}: {reply}");
            assert_eq!(sorted_words(&reply), nodes, "v{v}");
        } else {
            assert_eq!(reply, "SUCCESS", "v{v}");
        }
        assert_eq!(stored_on(&mesh, &key), 3, "v{v}");

        // PUT again: already there.
        p.send(&format!("PUT file.bin {key}"));
        let reply = p.line();
        if v >= 2 {
            assert_eq!(sorted_words(&reply), nodes, "v{v}: {reply}");
            assert!(reply.starts_with("ALREADY-HAVE-PLUS "), "v{v}: {reply}");
        } else {
            assert_eq!(reply, "ALREADY-HAVE", "v{v}");
        }

        p.send(&format!("CHECKPRESENT {key}"));
        assert_eq!(p.line(), "SUCCESS", "v{v}");

        // GET whole and from an offset; VALID from v1.
        let (got, validity) = p.get(&key, 0, v);
        assert!(got == data, "v{v}: GET returned other bytes");
        assert_eq!(validity.as_deref(), (v >= 1).then_some("VALID"), "v{v}");
        let (got, _) = p.get(&key, 1000, v);
        assert!(got == data[1000..], "v{v}: GET from an offset");

        // LOCKCONTENT then UNLOCKCONTENT (no reply to the latter).
        p.send(&format!("LOCKCONTENT {key}"));
        assert_eq!(p.line(), "SUCCESS", "v{v}");
        p.send("UNLOCKCONTENT");

        // The cluster clock.
        p.send("GETTIMESTAMP");
        let ts = p.line();
        let now: u64 =
            ts.strip_prefix("TIMESTAMP ").unwrap_or_else(|| panic!("v{v}: {ts}")).parse().unwrap();

        if v >= 3 {
            // A deadline already passed removes nothing.
            p.send(&format!("REMOVE-BEFORE {} {key}", now.saturating_sub(1)));
            assert_eq!(p.line(), "FAILURE", "v{v}");
            assert_eq!(stored_on(&mesh, &key), 3, "v{v}");
            p.send(&format!("REMOVE-BEFORE {} {key}", now + 600));
            let reply = p.line();
            assert_eq!(sorted_words(&reply), nodes, "v{v}: {reply}");
            assert!(reply.starts_with("SUCCESS-PLUS "), "v{v}: {reply}");
        } else {
            p.send(&format!("REMOVE {key}"));
            let reply = p.line();
            if v >= 2 {
                assert!(reply.starts_with("SUCCESS-PLUS "), "v{v}: {reply}");
            } else {
                assert_eq!(reply, "SUCCESS", "v{v}");
            }
        }
        assert_eq!(stored_on(&mesh, &key), 0, "v{v}: removed from every node");

        // REMOVE of what is absent succeeds too.
        p.send(&format!("REMOVE {key}"));
        assert!(p.line().starts_with("SUCCESS"), "v{v}");

        // GET of absent content: empty data, INVALID from v1.
        p.send(&format!("GET 0 file.bin {key}"));
        assert_eq!(p.line(), "DATA 0", "v{v}");
        if v >= 1 {
            assert_eq!(p.line(), "INVALID", "v{v}");
        }
        p.send("FAILURE");

        // LOCKCONTENT of absent content fails.
        p.send(&format!("LOCKCONTENT {key}"));
        assert_eq!(p.line(), "FAILURE", "v{v}");

        if v >= 4 {
            // DATA-PRESENT: the content "arrived another way"; the nodes check.
            p.send(&format!("PUT file.bin {key}"));
            assert!(p.line().starts_with("PUT-FROM "), "v{v}");
            p.send("DATA-PRESENT");
            assert_eq!(p.line(), "FAILURE", "v{v}: no node has it, so DATA-PRESENT cannot succeed");
        }
        if v >= 2 {
            // BYPASS: the PUT avoids the nodes named.
            p.send(&format!("BYPASS {} {}", nodes[0], nodes[1]));
            let reply = p.put(&key, &data, v);
            assert_eq!(reply, format!("SUCCESS-PLUS {}", nodes[2]), "v{v}");
            assert_eq!(stored_on(&mesh, &key), 1, "v{v}");
            p.send(&format!("REMOVE {key}"));
            assert!(p.line().starts_with("SUCCESS"), "v{v}");
        }

        // Refused cleanly, and the connection stays usable.
        p.send("NOTIFYCHANGE");
        assert!(p.line().starts_with("ERROR "), "v{v}");
        p.send("FROBNICATE 1 2 3");
        assert!(p.line().starts_with("ERROR "), "v{v}");
        p.send("SUCCESS");
        assert!(p.line().starts_with("ERROR "), "v{v}: a reply is no request");
        p.send(&format!("CHECKPRESENT {key}"));
        assert_eq!(p.line(), "FAILURE", "v{v}: still serving after errors");

        // An ERROR from the client ends the session.
        p.send("ERROR giving up");
        assert!(p.closed(), "v{v}: the gateway closes after the client's ERROR");
    }
}

#[test]
fn authentication_and_access_modes() {
    let mesh = Mesh::separate(3);
    let rw = mesh.token(&[]);
    let ro = mesh.token(&["--readonly"]);
    let ao = mesh.token(&["--appendonly"]);

    // A wrong token: AUTH-FAILURE, then the connection is closed.
    let mut p = Peer::connect(mesh.p2p);
    p.send("AUTH 11111111-2222-3333-4444-555555555555 notavalidtoken");
    assert_eq!(p.line(), "AUTH-FAILURE");
    assert!(p.closed());
    // The empty token (git-annex's default when it has none) too.
    let mut p = Peer::connect(mesh.p2p);
    p.send("AUTH 11111111-2222-3333-4444-555555555555 ");
    assert_eq!(p.line(), "AUTH-FAILURE");
    assert!(p.closed());
    // Requests before AUTH are refused and nothing is served.
    let mut p = Peer::connect(mesh.p2p);
    p.send("CHECKPRESENT SHA256E-s1--aa");
    assert!(p.line().starts_with("ERROR "));
    p.send("VERSION 4");
    assert!(p.line().starts_with("ERROR "));
    // ... and a peer that never authenticates is cut off.
    for _ in 0..8 {
        p.send("GETTIMESTAMP");
    }
    let mut lines = 0;
    while p.try_line().is_some() {
        lines += 1;
        assert!(lines < 20, "the gateway keeps answering an unauthenticated peer");
    }

    let data = content(5000, 7);
    let key = key_for(&data);

    // Read-only: CHECKPRESENT and GET yes, PUT and REMOVE no.
    let (mut p, _) = Peer::open(&mesh, &ro, Some("mesh"), 4);
    let reply = p.put(&key, &data, 4);
    assert!(reply.starts_with("ERROR ") && reply.contains("read-only"), "{reply}");
    assert_eq!(stored_on(&mesh, &key), 0);
    p.send(&format!("CHECKPRESENT {key}"));
    assert_eq!(p.line(), "FAILURE");

    // Append-only: PUT yes, REMOVE no.
    let (mut p, _) = Peer::open(&mesh, &ao, Some("mesh"), 4);
    assert!(p.put(&key, &data, 4).starts_with("SUCCESS"));
    p.send(&format!("REMOVE {key}"));
    let reply = p.line();
    assert!(reply.starts_with("ERROR ") && reply.contains("append-only"), "{reply}");
    assert_eq!(stored_on(&mesh, &key), 3);

    // The connection line can only restrict a token further.
    let mut p = Peer::connect(mesh.p2p);
    p.send("ANNEXMESH repo=mesh mode=readonly");
    p.send(&format!("AUTH 11111111-2222-3333-4444-555555555555 {rw}"));
    assert!(p.line().starts_with("AUTH-SUCCESS "));
    p.send(&format!("REMOVE {key}"));
    assert!(p.line().contains("read-only"));

    // Read-write, addressing one node by name: the node's own UUID, and
    // removal from it alone.
    let (mut p, uuid) = Peer::open(&mesh, &rw, Some("node2"), 4);
    assert_eq!(uuid, mesh.uuid_of("node2"));
    p.send(&format!("REMOVE {key}"));
    assert_eq!(p.line(), "SUCCESS", "a node addressed alone names no other nodes");
    assert_eq!(stored_on(&mesh, &key), 2);

    // An unknown repository name: an ERROR that says so, then closed.
    let mut p = Peer::connect(mesh.p2p);
    p.send("ANNEXMESH repo=nosuchcluster");
    p.send(&format!("AUTH 11111111-2222-3333-4444-555555555555 {rw}"));
    let reply = p.line();
    assert!(reply.starts_with("ERROR ") && reply.contains("nosuchcluster"), "{reply}");
    assert!(p.closed());
    // A bad connection line.
    let mut p = Peer::connect(mesh.p2p);
    p.send("ANNEXMESH repo=mesh admin=yes");
    assert!(p.line().starts_with("ERROR "));
    assert!(p.closed());

    // Without a connection line, the only cluster is served.
    let (_, uuid) = Peer::open(&mesh, &rw, None, 4);
    assert_eq!(uuid, mesh.uuid_of("mesh"));

    // A revoked token stops working.
    let list = String::from_utf8(mesh.admin(&["token", "list"]).stdout).unwrap();
    let ids: Vec<&str> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.len() == 12)
        .collect();
    assert!(ids.len() >= 3, "token list shows the tokens' ids:\n{list}");
    assert!(!list.contains(&rw), "token list never shows tokens");
    for id in ids {
        assert!(mesh.admin(&["token", "revoke", id]).status.success());
    }
    let mut p = Peer::connect(mesh.p2p);
    p.send(&format!("AUTH 11111111-2222-3333-4444-555555555555 {rw}"));
    assert_eq!(p.line(), "AUTH-FAILURE");
}

#[test]
fn version_negotiation_down_to_zero() {
    let mesh = Mesh::separate(1);
    let token = mesh.token(&[]);
    // A client newer than us gets our highest version.
    let mut p = Peer::connect(mesh.p2p);
    p.send(&format!("AUTH 11111111-2222-3333-4444-555555555555 {token}"));
    assert!(p.line().starts_with("AUTH-SUCCESS "));
    p.send("VERSION 99");
    assert_eq!(p.line(), "VERSION 4");
    // Asking for 0 gets 0, and v0 has no VALID after GET data.
    p.send("VERSION 0");
    assert_eq!(p.line(), "VERSION 0");
    let data = content(1234, 1);
    let key = key_for(&data);
    assert_eq!(p.put(&key, &data, 0), "SUCCESS");
    let (got, validity) = p.get(&key, 0, 0);
    assert_eq!(got, data);
    assert_eq!(validity, None);
    // A client that never sends VERSION speaks v0 too.
    let mut p = Peer::connect(mesh.p2p);
    p.send(&format!("AUTH 11111111-2222-3333-4444-555555555555 {token}"));
    assert!(p.line().starts_with("AUTH-SUCCESS "));
    p.send(&format!("GET 0 file.bin {key}"));
    assert_eq!(p.line(), format!("DATA {}", data.len()));
    assert_eq!(p.bytes(data.len()), data);
    p.send("SUCCESS");
    p.send(&format!("CHECKPRESENT {key}"));
    assert_eq!(p.line(), "SUCCESS", "no VALID line came between the data and this reply");
}

#[test]
fn a_client_gone_mid_data_leaves_partials_and_the_retry_resumes() {
    let mesh = Mesh::separate(3);
    let token = mesh.token(&[]);
    let data = content(24 << 20, 3);
    let key = key_for(&data);
    let gw = mesh.url();
    let interrupted = Mesh::metric(&gw, "annexmesh_puts_interrupted_total");

    let (mut p, _) = Peer::open(&mesh, &token, Some("mesh"), 4);
    p.send(&format!("PUT file.bin {key}"));
    assert_eq!(p.line(), "PUT-FROM 0");
    p.send(&format!("DATA {}", data.len()));
    p.send_bytes(&data[..10 << 20]);
    // Let the gateway pass what it got to the nodes, then vanish.
    let partial = || -> u64 {
        mesh.node_stores()
            .iter()
            .filter_map(|s| {
                walk(&s.join("annex/tmp"))
                    .into_iter()
                    .map(|f| f.metadata().map(|m| m.len()).unwrap_or(0))
                    .max()
            })
            .min()
            .unwrap_or(0)
    };
    wait_until("partials on every node", Duration::from_secs(30), || {
        mesh.node_stores().len() == 3 && partial() >= 8 << 20
    });
    drop(p);
    wait_until("the gateway to see the client gone", Duration::from_secs(30), || {
        Mesh::metric(&gw, "annexmesh_puts_interrupted_total") > interrupted
    });
    assert_eq!(stored_on(&mesh, &key), 0, "nothing is complete");
    let kept = partial();
    assert!(kept >= 8 << 20, "every node kept its partial ({kept} bytes)");

    // The retry resumes: the nodes' streams were closed, so no upload of the
    // key is still in progress to hold it up (one would make the agents
    // wait for it, past this connection's read timeout).
    let (mut p, _) = Peer::open(&mesh, &token, Some("mesh"), 4);
    p.send(&format!("PUT file.bin {key}"));
    let reply = p.line();
    let off: usize =
        reply.strip_prefix("PUT-FROM ").unwrap_or_else(|| panic!("{reply}")).parse().unwrap();
    assert!(off as u64 >= 8 << 20, "resumed from {off}, not from the partials");
    let before = Mesh::metric(&gw, "annexmesh_put_client_bytes_total");
    p.send(&format!("DATA {}", data.len() - off));
    p.send_bytes(&data[off..]);
    p.send("VALID");
    let reply = p.line();
    assert!(reply.starts_with("SUCCESS-PLUS "), "{reply}");
    let sent = Mesh::metric(&gw, "annexmesh_put_client_bytes_total") - before;
    assert_eq!(sent as usize, data.len() - off, "only the rest was sent");
    assert_eq!(stored_on(&mesh, &key), 3);
    let (got, validity) = p.get(&key, 0, 4);
    assert!(got == data, "the resumed content is whole");
    assert_eq!(validity.as_deref(), Some("VALID"));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn unlockcontent_releases_the_lock_on_the_node_that_took_it() {
    let mesh = Mesh::separate(3);
    let token = mesh.token(&[]);
    let data = content(4000, 9);
    let key = key_for(&data);
    let (mut a, _) = Peer::open(&mesh, &token, Some("mesh"), 4);
    assert!(a.put(&key, &data, 4).starts_with("SUCCESS"));

    a.send(&format!("LOCKCONTENT {key}"));
    assert_eq!(a.line(), "SUCCESS");
    // While locked, a remove through another connection fails on the node
    // holding the lock, and the others report what they removed.
    let (mut b, _) = Peer::open(&mesh, &token, Some("mesh"), 4);
    b.send(&format!("REMOVE {key}"));
    let reply = b.line();
    assert!(reply.starts_with("FAILURE-PLUS "), "{reply}");
    assert_eq!(stored_on(&mesh, &key), 1, "the locked copy stays");
    // UNLOCKCONTENT goes down the same node stream, so the lock is gone at
    // once (a lost stream would keep it for ten minutes).
    a.send("UNLOCKCONTENT");
    a.send(&format!("CHECKPRESENT {key}"));
    assert_eq!(a.line(), "SUCCESS");
    b.send(&format!("REMOVE {key}"));
    let reply = b.line();
    assert!(reply.starts_with("SUCCESS"), "{reply}");
    assert_eq!(stored_on(&mesh, &key), 0);

    // A client that vanishes while holding a lock leaves it held (safety).
    assert!(a.put(&key, &data, 4).starts_with("SUCCESS"));
    a.send(&format!("LOCKCONTENT {key}"));
    assert_eq!(a.line(), "SUCCESS");
    drop(a);
    std::thread::sleep(Duration::from_millis(500));
    b.send(&format!("REMOVE {key}"));
    assert!(b.line().starts_with("FAILURE"), "the lock outlives the connection");
    assert_eq!(stored_on(&mesh, &key), 1);
}

#[test]
fn malformed_and_oversized_input() {
    let mesh = Mesh::separate(3);
    let token = mesh.token(&[]);
    let (mut p, _) = Peer::open(&mesh, &token, Some("mesh"), 4);

    // Keys that would escape the store, bad numbers, missing arguments,
    // binary junk: each answered with ERROR, and the connection goes on.
    for bad in [
        "CHECKPRESENT ../../etc/passwd",
        "CHECKPRESENT SHA256E-s1--a/b",
        "CHECKPRESENT",
        "GET x file.bin SHA256E-s1--aa",
        "GET 0 /etc/passwd SHA256E-s1--aa",
        "REMOVE-BEFORE soon SHA256E-s1--aa",
        "LOCKCONTENT ..",
        "VERSION -1",
        "\u{1}\u{2}\u{3}",
    ] {
        p.send(bad);
        let reply = p.line();
        assert!(reply.starts_with("ERROR "), "{bad:?} got {reply:?}");
    }
    p.send_bytes(b"\xff\xfe\xfd\n");
    assert!(p.line().starts_with("ERROR "), "non-UTF-8 line");
    p.send("GETTIMESTAMP");
    assert!(p.line().starts_with("TIMESTAMP "), "still serving");

    // A DATA length that does not match the key's size: refused before any
    // byte is stored, and the connection closed (its payload cannot be
    // told from the next request).
    let data = content(1000, 5);
    let key = key_for(&data);
    p.send(&format!("PUT file.bin {key}"));
    assert_eq!(p.line(), "PUT-FROM 0");
    p.send("DATA 5000000000");
    let reply = p.line();
    assert!(reply.starts_with("ERROR ") && reply.contains("does not match"), "{reply}");
    assert!(p.closed());
    assert_eq!(stored_on(&mesh, &key), 0);

    // Content that does not match its checksum is not stored anywhere.
    let (mut p, _) = Peer::open(&mesh, &token, Some("mesh"), 4);
    let mut wrong = data.clone();
    wrong[10] ^= 1;
    let reply = p.put_ending(&key, &wrong, Some("VALID"));
    assert!(reply.starts_with("FAILURE"), "{reply}");
    assert_eq!(stored_on(&mesh, &key), 0);
    // INVALID from the client: not stored either.
    assert!(p.put_ending(&key, &data, Some("INVALID")).starts_with("FAILURE"));
    assert_eq!(stored_on(&mesh, &key), 0);
    // Something else where VALID belongs.
    assert!(p.put_ending(&key, &data, Some("SUCCESS")).starts_with("ERROR "));
    assert!(p.line().starts_with("FAILURE"));
    // Something else where DATA belongs.
    p.send(&format!("PUT file.bin {key}"));
    assert!(p.line().starts_with("PUT-FROM "));
    p.send("CHECKPRESENT x");
    assert!(p.line().starts_with("ERROR "));
    p.send(&format!("CHECKPRESENT {key}"));
    assert_eq!(p.line(), "FAILURE", "still in step after the refused PUT");

    // DATA where UNLOCKCONTENT or the client's answer to GET belongs: the
    // payload cannot be told from requests, so ERROR and closed.
    let (mut q, _) = Peer::open(&mesh, &token, Some("mesh"), 4);
    let other = content(3000, 6);
    let other_key = key_for(&other);
    assert!(q.put(&other_key, &other, 4).starts_with("SUCCESS"));
    q.send(&format!("LOCKCONTENT {other_key}"));
    assert_eq!(q.line(), "SUCCESS");
    q.send("DATA 3");
    q.send_bytes(b"abc");
    assert!(q.line().starts_with("ERROR "));
    assert!(q.closed());
    let (mut q, _) = Peer::open(&mesh, &token, Some("mesh"), 4);
    q.send(&format!("GET 0 file.bin {other_key}"));
    assert_eq!(q.line(), format!("DATA {}", other.len()));
    assert_eq!(q.bytes(other.len()), other);
    assert_eq!(q.line(), "VALID");
    q.send("DATA 3");
    q.send_bytes(b"abc");
    assert!(q.line().starts_with("ERROR "));
    assert!(q.closed());

    // A DATA outside a transfer, and an unreadable DATA line: ERROR, closed.
    p.send("DATA 10");
    assert!(p.line().starts_with("ERROR "));
    assert!(p.closed());
    let (mut p, _) = Peer::open(&mesh, &token, Some("mesh"), 4);
    p.send("DATA 99999999999999999999999");
    assert!(p.line().starts_with("ERROR "));
    assert!(p.closed());

    // A line longer than the limit: ERROR and closed, without the gateway
    // buffering an unbounded line.
    let (mut p, _) = Peer::open(&mesh, &token, Some("mesh"), 4);
    p.send_bytes(&vec![b'A'; 1 << 20]);
    let reply = p.line();
    assert!(reply.starts_with("ERROR ") && reply.contains("longer"), "{reply}");
    assert!(p.closed());

    // The gateway is still fine.
    let (mut p, _) = Peer::open(&mesh, &token, Some("mesh"), 4);
    assert!(p.put(&key, &data, 4).starts_with("SUCCESS"));
    let metrics = common::http_get(&format!("{}/metrics", mesh.url())).unwrap().1;
    assert!(metrics.contains("annexmesh_p2p_protocol_errors_total"), "{metrics}");
    assert!(Mesh::metric(&mesh.url(), "annexmesh_p2p_protocol_errors_total") >= 4);
}

/// The listener over TLS: a client that trusts the gateway's certificate
/// speaks the same protocol; a plain-text client gets nothing served.
#[test]
fn the_line_protocol_over_tls() {
    use std::sync::Arc;
    let mut mesh = Mesh::separate(1);
    let token = mesh.token(&[]);
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, key_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
    std::fs::write(&key_pem, cert.signing_key.serialize_pem()).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", common::free_port()).parse().unwrap();
    let p = common::Proc::spawn(
        "tls-gateway",
        common::annexmesh()
            .args(["gateway", "--coordinator", &mesh.coordinator, "--wideopen"])
            .args([
                "--http",
                &format!("127.0.0.1:{}", common::free_port()),
                "--p2p",
                &addr.to_string(),
            ])
            .arg("--p2p-tls-cert")
            .arg(&cert_pem)
            .arg("--p2p-tls-key")
            .arg(&key_pem)
            .args(mesh.gateway_tls_args("tls-gateway")),
        mesh.dir.path(),
    );
    mesh.procs.push(p);
    wait_until("the TLS gateway", Duration::from_secs(30), || TcpStream::connect(addr).is_ok());

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    write!(tls, "AUTH 11111111-2222-3333-4444-555555555555 {token}\nVERSION 4\nGETTIMESTAMP\n")
        .unwrap();
    tls.flush().unwrap();
    let mut r = BufReader::new(tls);
    let mut lines = Vec::new();
    for _ in 0..3 {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        lines.push(l.trim_end().to_string());
    }
    assert_eq!(lines[0], format!("AUTH-SUCCESS {}", mesh.uuid_of("mesh")));
    assert_eq!(lines[1], "VERSION 4");
    assert!(lines[2].starts_with("TIMESTAMP "), "{lines:?}");

    // The relay git-annex runs, given a `tls:` address, trusting the
    // gateway's CA through ANNEXMESH_TLS_CA.
    let relay = |ca: Option<&std::path::Path>| {
        let mut cmd = common::annexmesh();
        cmd.args(["p2p-relay", &format!("tls:localhost:{}/mesh", addr.port())]);
        match ca {
            Some(f) => cmd.env("ANNEXMESH_TLS_CA", f),
            None => cmd.env_remove("ANNEXMESH_TLS_CA"),
        };
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let _ = write!(stdin, "AUTH 11111111-2222-3333-4444-555555555555 {token}\nVERSION 2\n");
        drop(stdin);
        child.wait_with_output().unwrap()
    };
    let out = relay(Some(&cert_pem));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(text, format!("AUTH-SUCCESS {}\nVERSION 2\n", mesh.uuid_of("mesh")));
    // Without the CA the certificate is refused.
    let out = relay(None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("TLS"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());

    // Plain text to the TLS port: no AUTH-SUCCESS comes back.
    let mut p = Peer::connect(addr);
    p.w.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    p.send(&format!("AUTH 11111111-2222-3333-4444-555555555555 {token}"));
    let mut buf = Vec::new();
    let _ = p.r.read_to_end(&mut buf);
    assert!(!String::from_utf8_lossy(&buf).contains("AUTH-SUCCESS"));
}

/// git-annex keeps connections open for reuse: a node that joins while one
/// is open takes part in the next request on it.
#[test]
fn an_open_connection_sees_the_topology_change() {
    let mut mesh = Mesh::separate(2);
    let token = mesh.token(&[]);
    let (mut p, _) = Peer::open(&mesh, &token, Some("mesh"), 4);
    mesh.start_agent("node3");
    mesh.wait_ready(3);
    // The gateway learns of the new node within its refresh period.
    std::thread::sleep(Duration::from_secs(2));
    let data = content(7000, 11);
    let key = key_for(&data);
    // Stored on the new node alone, through a connection to it.
    let (mut n3, _) = Peer::open(&mesh, &token, Some("node3"), 4);
    assert_eq!(n3.put(&key, &data, 4), "SUCCESS");
    // The old connection to the cluster finds it there and serves it.
    p.send(&format!("CHECKPRESENT {key}"));
    assert_eq!(p.line(), "SUCCESS");
    let (got, validity) = p.get(&key, 0, 4);
    assert!(got == data && validity.as_deref() == Some("VALID"));
}

#[test]
fn a_chain_waits_out_a_client_that_pauses_mid_upload() {
    let mut mesh = Mesh::separate(3);
    // Short stall limits down the chain: 1 s at the head, 0.5 s after it.
    mesh.restart_gateway_with(&["--wideopen", "--stall-timeout", "2s"]);
    mesh.admin_ok(&["cluster", "replication", "mesh", "chain"]);
    let token = mesh.token(&[]);
    let data = content(3 << 20, 9);
    let key = key_for(&data);
    let (mut p, _) = Peer::open(&mesh, &token, Some("mesh"), 4);
    p.send(&format!("PUT file.bin {key}"));
    assert_eq!(p.line(), "PUT-FROM 0");
    p.send(&format!("DATA {}", data.len()));
    p.send_bytes(&data[..1 << 20]);
    // The client goes quiet for several times every node's limit: the nodes
    // keep each other alive and nobody is cut out.
    std::thread::sleep(Duration::from_secs(4));
    p.send_bytes(&data[1 << 20..]);
    p.send("VALID");
    let reply = p.line();
    let plus = reply.strip_prefix("SUCCESS-PLUS ").unwrap_or_else(|| panic!("{reply}"));
    assert_eq!(plus.split_whitespace().count(), 3, "{reply}");
    assert_eq!(stored_on(&mesh, &key), 3);
    for n in ["node1", "node2", "node3"] {
        let log = std::fs::read_to_string(mesh.dir.path().join(format!("{n}.log"))).unwrap();
        assert!(
            !log.contains("cut out of the chain") && !log.contains("sent nothing"),
            "{n}:\n{log}"
        );
    }
}
