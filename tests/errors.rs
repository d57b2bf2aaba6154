//! Refusals the mesh makes reach the person who can act on them: the real
//! git-annex client shows why (P2P over HTTP reason phrases, line-protocol
//! ERROR), the admin CLI warns about settings that cannot be met, and the
//! gateway's log names the request that failed and why.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::{Client, Mesh};

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn log_of(mesh: &Mesh, proc: &str) -> String {
    std::fs::read_to_string(mesh.dir.path().join(format!("{proc}.log"))).unwrap_or_default()
}

/// `git annex p2p --link` of `address`, which must fail; all it printed.
fn link_fails(client: &Client, address: &str) -> String {
    let out = client.p2p_link_output("bad", address);
    assert!(!out.status.success(), "linking {address} should fail:\n{}", text(&out));
    text(&out)
}

/// A client with the mesh as remote `mesh` copies a new file there, which
/// must fail; the client and all it printed.
fn copy_fails(mesh: &Mesh) -> (Client, String) {
    let client = Client::new();
    client.add_remote("mesh", &format!("{}/mesh", mesh.url()));
    client.annex_file("a.bin", 1000, 1);
    let out = client.run(&["git", "annex", "copy", "--to", "mesh", "a.bin"]);
    assert!(!out.status.success(), "copy should fail:\n{}", text(&out));
    (client, text(&out))
}

#[test]
fn a_reserve_no_node_can_keep_is_warned_about_and_shown_to_the_client() {
    let mesh = Mesh::separate(3);
    // The warning needs the nodes' free space, which their first heartbeat
    // reports: ask again until it is known.
    let deadline = Instant::now() + Duration::from_secs(30);
    let warning = loop {
        let out = mesh.admin(&["cluster", "reserve", "mesh", "100TB"]);
        assert!(out.status.success(), "a reserve is set even when warned about: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if err.contains("warning:") || Instant::now() > deadline {
            break err;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(warning.contains("reserve of 100.0 TB is more than any node has free"), "{warning}");

    let (_client, shown) = copy_fails(&mesh);
    assert!(shown.contains("reserve of 100.0 TB"), "the client is not told why:\n{shown}");
    assert!(shown.contains("admin cluster reserve"), "nor what to do:\n{shown}");

    // The gateway's log names the request and the reason.
    let log = log_of(&mesh, "gateway");
    let line = log
        .lines()
        .find(|l| l.contains("request failed") && l.contains("reserve of 100.0 TB"))
        .unwrap_or_else(|| panic!("no failed request logged:\n{log}"));
    assert!(line.contains("method=POST") && line.contains("status=503"), "{line}");
    assert!(line.contains("path=/git-annex/"), "{line}");
}

#[test]
fn min_copies_beyond_the_nodes_is_warned_about_and_shown_to_the_client() {
    let mesh = Mesh::separate(3);
    let out = mesh.admin(&["cluster", "mincopies", "mesh", "4"]);
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warning: cluster mesh needs 4 copies but has 3 nodes"), "{err}");

    let (client, shown) = copy_fails(&mesh);
    assert!(shown.contains("cluster mesh needs 4 copies but has 3 nodes"), "{shown}");
    // Nothing was stored for a PUT that could not succeed.
    assert!(
        mesh.node_stores()
            .iter()
            .all(|s| common::objects_named(s, &client.key_of("a.bin")).is_empty())
    );
}

#[test]
fn a_wrong_name_in_a_p2p_address_is_not_taken_for_a_bad_token() {
    let mesh = Mesh::separate(1);
    let token = mesh.token(&[]);
    let client = Client::new();
    let shown = link_fails(&client, &format!("p2p-annex::annexmesh:{}/nosuch:{token}", mesh.p2p));
    assert!(shown.contains("no cluster or node named \"nosuch\""), "{shown}");
    assert!(!shown.contains("token"), "a wrong name looks like a bad token:\n{shown}");
    let shown = link_fails(&client, &format!("p2p-annex::annexmesh:{}/mesh:wrongtoken", mesh.p2p));
    assert!(shown.contains("did not accept the token"), "{shown}");
    assert!(!shown.contains("no cluster or node named"), "{shown}");
}

#[test]
fn a_wrong_name_in_a_url_says_so() {
    let mesh = Mesh::separate(1);
    let client = Client::new();
    client.add_remote("nosuch", &format!("{}/nosuch", mesh.url()));
    client.annex_file("a.bin", 1000, 1);
    let out = client.run(&["git", "annex", "copy", "--to", "nosuch", "a.bin"]);
    assert!(!out.status.success());
    let shown = text(&out);
    assert!(shown.contains("no cluster or node named \"nosuch\""), "{shown}");
}

#[test]
fn a_refused_write_names_the_user_and_its_mode() {
    let mut mesh = Mesh::separate(1);
    mesh.restart_gateway_with(&["--auth-users"]);
    let password = mesh.user("reader", &["--readonly"]);
    let client = Client::new();
    // git's credential store hands git-annex the user's password.
    let store = client.path().join(".git").join("credentials");
    std::fs::write(&store, format!("http://reader:{password}@{}\n", mesh.http)).unwrap();
    let helper = format!("store --file={}", store.display());
    client.ok(&["git", "config", "credential.helper", &helper]);
    client.add_remote("mesh", &format!("{}/mesh", mesh.url()));
    client.annex_file("a.bin", 1000, 1);
    let out = client.run(&["git", "annex", "copy", "--to", "mesh", "a.bin"]);
    assert!(!out.status.success(), "a readonly user must not store:\n{}", text(&out));
    let shown = text(&out);
    assert!(shown.contains("user \"reader\" is readonly and may not store content"), "{shown}");
}

#[test]
fn a_node_that_cannot_be_reached_is_named_with_its_address() {
    let mut mesh = Mesh::separate(2);
    mesh.admin_ok(&["cluster", "mincopies", "mesh", "1"]);
    let client = Client::new();
    client.add_remote("mesh", &format!("{}/mesh", mesh.url()));
    // Killed, the node still counts as up until its heartbeats are missed:
    // the gateway tries it and must say whom it could not reach.
    mesh.proc("node1").kill();
    for i in 0..3 {
        client.annex_file(&format!("f{i}.bin"), 1000, i);
    }
    let out = client.run(&["git", "annex", "copy", "--to", "mesh", "."]);
    assert!(out.status.success(), "the other node stores:\n{}", text(&out));
    let log = log_of(&mesh, "gateway");
    assert!(log.contains("cannot reach node node1 at https://127.0.0.1:"), "{log}");
}
