//! The admin CLI for scripts and people: `--json` of every command parses,
//! every command and flag has help, `cluster delete`, exit codes and error
//! texts, and what a terminal shows (through a pseudo-terminal) against
//! what a pipe gets.

mod common;

use std::io::Read;
use std::os::fd::OwnedFd;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{Client, Mesh, annexmesh, free_port};
use serde_json::Value;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A mesh of two nodes holding one file; the file's key.
fn mesh_with_a_file() -> (Mesh, Client, String) {
    let mesh = Mesh::separate(2);
    let client = Client::new();
    client.add_remote("mesh", &format!("{}/mesh", mesh.url()));
    let (_, key) = client.annex_file("f.bin", 200_000, 7);
    client.ok(&["git", "annex", "copy", "--to", "mesh", "f.bin"]);
    (mesh, client, key)
}

/// Asserts that `v` is an object with all of `fields`.
fn has(v: &Value, fields: &[&str]) {
    for f in fields {
        assert!(v.get(f).is_some(), "no {f:?} in {v}");
    }
}

#[test]
fn json_output_of_every_admin_command_parses() {
    let (mut mesh, _client, key) = mesh_with_a_file();
    let j = |args: &[&str]| mesh.admin_json(args);

    let c = j(&["cluster", "create", "spare"]);
    has(&c, &["name", "uuid", "min_copies", "reserve_bytes", "reserve_default"]);
    let list = j(&["cluster", "list"]);
    let mesh_entry = list.as_array().unwrap().iter().find(|c| c["name"] == "mesh").unwrap();
    assert_eq!(mesh_entry["nodes"], 2, "{list}");
    assert!(j(&["cluster", "mincopies", "mesh"])["min_copies"].is_u64());
    assert!(j(&["cluster", "mincopies", "mesh", "1"])["min_copies"] == 1);
    assert!(j(&["cluster", "reserve", "mesh"])["reserve_bytes"].is_u64());
    assert!(j(&["cluster", "reserve", "mesh", "1MB"])["reserve_bytes"] == 1_000_000);

    let nodes = j(&["node", "list"]);
    let nodes = nodes.as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    for n in nodes {
        has(n, &["name", "uuid", "cluster", "health", "state", "address", "cost", "wanted"]);
        has(n, &["free_bytes", "last_heard_seconds", "active_transfers", "keys_left"]);
        assert!(n["free_bytes"].is_u64() || n["free_bytes"].is_null(), "{n}");
    }
    assert_eq!(j(&["node", "cost", "node1"])["cost"], 100);
    assert_eq!(j(&["node", "cost", "node1", "90"])["cost"], 90);
    has(&j(&["wanted", "node1"]), &["name", "uuid", "expression"]);
    assert_eq!(j(&["wanted", "node1", "anything"])["expression"], "anything");
    assert_eq!(j(&["node", "drain", "node2"])["state"], "draining");
    assert_eq!(j(&["node", "undrain", "node2"])["state"], "active");

    let t = j(&["token", "create", "--label", "ci"]);
    has(&t, &["token", "id", "mode", "label", "created_unix_ms"]);
    let tokens = j(&["token", "list"]);
    assert!(tokens.as_array().unwrap().iter().any(|x| x["id"] == t["id"]), "{tokens}");
    assert_eq!(j(&["token", "revoke", t["id"].as_str().unwrap()])["id"], t["id"]);
    let u = j(&["user", "add", "alice", "--readonly"]);
    has(&u, &["password", "user", "mode", "id"]);
    assert_eq!(j(&["user", "list"])[0]["user"], "alice");
    assert_eq!(j(&["user", "remove", "alice"])["user"], "alice");
    has(&j(&["join-token", "create", "--role", "agent"]), &["token", "expires_unix_ms"]);

    let w = j(&["whereis", &key]);
    assert!(w["copies"].as_u64().unwrap() >= 1, "{w}");
    assert_eq!(w["copies"].as_u64().unwrap() as usize, w["nodes"].as_array().unwrap().len());
    has(&w["nodes"][0], &["name", "uuid"]);
    let f = j(&["fsck"]);
    has(&f, &["differences", "nodes_checked", "unreachable", "fixed"]);
    let r = j(&["repair"]);
    has(&r, &["keys_checked", "copies_made", "bytes_copied", "failures", "short", "events"]);
    has(&j(&["repair", "--status"]), &["passes", "running", "last", "draining"]);
    let s = j(&["scrub"]);
    assert_eq!(s["nodes"].as_array().unwrap().len(), 2, "{s}");
    has(&s["nodes"][0], &["name", "objects", "bytes", "bad_keys"]);

    let s = j(&["status"]);
    has(&s, &["coordinators", "store_coordinators", "clusters", "nodes", "repair"]);
    assert_eq!(s["coordinators"][0]["up"], true, "{s}");
    assert_eq!(s["nodes"].as_array().unwrap().len(), 2, "{s}");
    has(&s["repair"], &["passes", "last"]);

    let d = j(&["cluster", "delete", "spare"]);
    assert_eq!(d["name"], "spare", "{d}");

    // migrate-store needs the coordinator stopped.
    mesh.proc("coordinator").stop();
    let from = mesh
        .store
        .clone()
        .unwrap_or_else(|| format!("redb:{}", mesh.dir.path().join("coordinator").display()));
    let to = format!("redb:{}", mesh.dir.path().join("copy").display());
    let out = annexmesh()
        .args(["admin", "--json", "migrate-store", "--from", &from, "--to", &to])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    has(&m, &["from", "to", "clusters", "nodes", "location_entries"]);
}

#[test]
fn every_admin_command_and_flag_has_help() {
    use clap::Args;
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for a in cmd.get_arguments() {
            let id = a.get_id().as_str();
            if a.is_hide_set() || id == "help" || id == "version" {
                continue;
            }
            if a.get_help().is_none() && a.get_long_help().is_none() {
                missing.push(format!("{path} <{id}>"));
            }
        }
        for sub in cmd.get_subcommands() {
            let p = format!("{path} {}", sub.get_name());
            if sub.get_name() != "help" && sub.get_about().is_none() {
                missing.push(p.clone());
            }
            walk(sub, &p, missing);
        }
    }
    let cmd = annexmesh::admin::AdminArgs::augment_args(clap::Command::new("admin"));
    let mut missing = Vec::new();
    walk(&cmd, "admin", &mut missing);
    assert!(missing.is_empty(), "without help text: {missing:#?}");
}

#[test]
fn cluster_delete_refuses_a_cluster_with_nodes_unless_forced() {
    let (mesh, _client, _key) = mesh_with_a_file();
    mesh.admin_ok(&["cluster", "create", "empty"]);
    let out = mesh.admin_ok(&["cluster", "delete", "empty"]);
    assert!(out.contains("deleted cluster empty"), "{out}");
    let list = mesh.admin_json(&["cluster", "list"]);
    assert!(!list.to_string().contains("\"empty\""), "{list}");

    let err = mesh.admin_err(&["cluster", "delete", "mesh"]);
    assert!(err.contains("node1") && err.contains("node2"), "{err}");
    assert!(err.contains("drain") && err.contains("--force"), "{err}");
    assert_eq!(mesh.healthy_nodes(), 2, "a refused delete changed nothing");

    let err = mesh.admin_err(&["cluster", "delete", "nosuch"]);
    assert!(err.contains("\"nosuch\"") && err.contains("known clusters: mesh"), "{err}");

    let d = mesh.admin_json(&["cluster", "delete", "mesh", "--force"]);
    assert_eq!((&d["name"], &d["nodes_removed"]), (&"mesh".into(), &2.into()), "{d}");
    assert_eq!(mesh.admin_json(&["cluster", "list"]), serde_json::json!([]));
}

#[test]
fn unknown_keys_and_names_exit_non_zero_naming_them() {
    let mesh = Mesh::separate(1);
    let key = "SHA256E-s3--2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824.txt";
    let err = mesh.admin_err(&["whereis", key]);
    assert!(err.contains("key not in the location log") && err.contains(key), "{err}");
    let err = mesh.admin_err(&["node", "cost", "nosuch"]);
    assert!(err.contains("\"nosuch\"") && err.contains("known nodes: node1"), "{err}");
    let err = mesh.admin_err(&["node", "drain", "nosuch"]);
    assert!(err.contains("\"nosuch\"") && err.contains("known nodes: node1"), "{err}");
    let err = mesh.admin_err(&["cluster", "mincopies", "nosuch"]);
    assert!(err.contains("\"nosuch\"") && err.contains("known clusters: mesh"), "{err}");
    let err = mesh.admin_err(&["node", "list", "--cluster", "nosuch"]);
    assert!(err.contains("known clusters: mesh"), "{err}");
}

/// `annexmesh admin` at `url` with `mesh`'s credentials, `extra` first.
fn admin_at(mesh: &Mesh, url: &str, extra: &[&str], args: &[&str]) -> Output {
    let mut cmd = annexmesh();
    cmd.args(["admin", "--coordinator", url, "--coordinator-failover", "2s"]);
    cmd.args(extra).args(args);
    for (k, v) in mesh.admin_env() {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn unreachable_or_wrong_coordinators_are_named_with_the_cause() {
    let mesh = Mesh::separate(0);
    // Nothing listens there.
    let url = format!("https://127.0.0.1:{}", free_port());
    let out = admin_at(&mesh, &url, &[], &["node", "list"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot reach the coordinator at {url}: connection refused")),
        "{err}"
    );
    assert!(
        err.lines().any(|l| l.starts_with("error: ")) && !err.contains("Stack backtrace"),
        "{err}"
    );

    // The gateway's port speaks HTTP, not gRPC.
    let gw = mesh.url().replacen("http://", "https://", 1);
    let gw = gw.trim_end_matches('/').to_string();
    let out = admin_at(&mesh, &gw, &[], &["node", "list"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&gw), "the URL is not named: {err}");
    assert!(!err.contains("grpc-status header missing"), "{err}");
    let plain = mesh.url().trim_end_matches('/').to_string();
    let out = admin_at(&mesh, &plain, &["--insecure"], &["node", "list"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("gRPC server") && err.contains(&plain), "{err}");

    // Another mesh's CA.
    let other = Mesh::separate(0);
    let ca = other.credentials.join("ca.pem");
    let out = admin_at(&mesh, &mesh.coordinator, &["--ca", ca.to_str().unwrap()], &["status"]);
    assert!(!out.status.success());
    let (err, out_text) = (stderr(&out), stdout(&out));
    let all = format!("{out_text}{err}");
    assert!(all.contains(ca.to_str().unwrap()), "the CA file is not named: {all}");

    // A CA file that is not there, or not a certificate.
    let out =
        admin_at(&mesh, &mesh.coordinator, &["--ca", "/nonexistent/ca.pem"], &["node", "list"]);
    assert!(stderr(&out).contains("/nonexistent/ca.pem"), "{}", stderr(&out));
    let junk = mesh.dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let out =
        admin_at(&mesh, &mesh.coordinator, &["--ca", junk.to_str().unwrap()], &["node", "list"]);
    assert!(stderr(&out).contains(junk.to_str().unwrap()), "{}", stderr(&out));
}

/// Runs `annexmesh admin ARGS` with stdout and stderr on a pseudo-terminal;
/// what the terminal received, and whether the command succeeded.
fn on_terminal(mesh: &Mesh, args: &[&str]) -> (String, bool) {
    let size = nix::pty::Winsize { ws_row: 40, ws_col: 160, ws_xpixel: 0, ws_ypixel: 0 };
    let pty = nix::pty::openpty(Some(&size), None).unwrap();
    let slave = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
    // The command (and its copies of the slave) goes once the child runs,
    // so that the master reads EOF when the child exits.
    let mut child = {
        let mut cmd = annexmesh();
        cmd.args(["admin", "--coordinator", &mesh.coordinator]).args(args);
        for (k, v) in mesh.admin_env() {
            cmd.env(k, v);
        }
        cmd.env("TERM", "xterm")
            .stdin(Stdio::null())
            .stdout(slave(&pty.slave))
            .stderr(slave(&pty.slave))
            .spawn()
            .unwrap()
    };
    drop(pty.slave);
    // Read until the child is gone (EIO once no one holds the slave).
    let (tx, rx) = std::sync::mpsc::channel();
    let mut master = std::fs::File::from(pty.master);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match master.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while let Ok(chunk) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        seen.extend(chunk);
    }
    let status = child.wait().unwrap();
    (String::from_utf8_lossy(&seen).into_owned(), status.success())
}

#[test]
fn a_terminal_gets_tables_and_progress_bars_and_a_pipe_plain_lines() {
    let (mesh, _client, key) = mesh_with_a_file();

    let (status, ok) = on_terminal(&mesh, &["status"]);
    assert!(ok, "{status}");
    for text in ["node1", "node2", "up", "NAME", "FREE", "LAST HEARD", "repair:"] {
        assert!(status.contains(text), "no {text:?} on the terminal:\n{status}");
    }
    assert!(status.contains("iB") && status.contains("s ago"), "human sizes and ages:\n{status}");

    let node =
        mesh.admin_json(&["whereis", &key])["nodes"][0]["name"].as_str().unwrap().to_string();
    let (drain, ok) = on_terminal(&mesh, &["node", "drain", &node, "--wait"]);
    assert!(ok, "{drain}");
    assert!(drain.contains(&format!("{node} is drained")), "{drain}");
    assert!(drain.contains('\r') && drain.contains("\x1b["), "no progress bar drawn:\n{drain:?}");
    assert!(drain.contains("drain:") || drain.contains("repair:"), "{drain:?}");

    // The same through pipes: plain lines, no escape codes.
    let piped = mesh.admin(&["status"]);
    assert!(piped.status.success());
    let text = format!("{}{}", stdout(&piped), stderr(&piped));
    assert!(text.contains("node1") && text.contains("up"), "{text}");
    assert!(!text.contains('\x1b') && !text.contains('\r'), "escape codes in a pipe: {text:?}");
    mesh.admin_ok(&["node", "undrain", &node]);
    let piped = mesh.admin(&["repair"]);
    assert!(piped.status.success(), "{}", stderr(&piped));
    let text = format!("{}{}", stdout(&piped), stderr(&piped));
    assert!(text.contains("checked 1 keys"), "{text}");
    assert!(!text.contains('\x1b') && !text.contains('\r'), "escape codes in a pipe: {text:?}");
}
