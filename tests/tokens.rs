//! Access tokens for the line-protocol front-end: created, listed and revoked
//! with `annexmesh admin token`, checked by gateways over CheckToken.

mod common;

use std::process::Output;

use annexmesh::auth::{hash_token, token_id};
use annexmesh::rpc::{self, coordinator_client::CoordinatorClient};
use common::Mesh;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn admin_ok(mesh: &Mesh, args: &[&str]) -> Output {
    let out = mesh.admin(args);
    assert!(
        out.status.success(),
        "admin {args:?} failed:\nstdout: {}\nstderr: {}",
        stdout(&out),
        stderr(&out)
    );
    out
}

/// Runs `admin token create` and returns the token it printed.
fn create(mesh: &Mesh, args: &[&str]) -> String {
    let out = admin_ok(mesh, &[&["token", "create"], args].concat());
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "stdout holds only the token: {text:?}");
    let token = lines[0].to_string();
    assert!(
        token.len() >= 32 && token.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        "not a token: {token:?}"
    );
    let note = stderr(&out);
    assert!(note.contains(token_id(&hash_token(&token))), "stderr names the id: {note}");
    assert!(note.contains("cannot be shown again"), "{note}");
    assert!(!note.contains(&token), "the note repeats no token: {note}");
    token
}

/// What CheckToken says of a token: (valid, mode, id).
fn check(rt: &tokio::runtime::Runtime, mesh: &Mesh, token: &str) -> (bool, String, String) {
    rt.block_on(async {
        let mut c = CoordinatorClient::new(mesh.gateway_channel().await);
        let r = c
            .check_token(rpc::CheckTokenRequest { token_sha256: hash_token(token) })
            .await
            .unwrap()
            .into_inner();
        (r.valid, r.mode, r.id)
    })
}

#[test]
fn tokens_are_created_listed_checked_and_revoked() {
    let mesh = Mesh::separate(0);
    let rt = tokio::runtime::Runtime::new().unwrap();

    let rw = create(&mesh, &[]);
    let ro = create(&mesh, &["--readonly", "--label", "backup reader"]);
    let ao = create(&mesh, &["--appendonly", "--label", "ci"]);
    let tokens = [(&rw, "readwrite"), (&ro, "readonly"), (&ao, "appendonly")];

    let list = mesh.admin_json(&["token", "list"]);
    let entries = list.as_array().unwrap();
    assert_eq!(entries.len(), 3, "three tokens:\n{list}");
    for (token, mode) in tokens {
        assert!(!list.to_string().contains(token.as_str()), "list shows a token:\n{list}");
        let id = token_id(&hash_token(token)).to_string();
        let t = entries
            .iter()
            .find(|t| t["id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} not in:\n{list}"));
        assert_eq!(t["mode"], mode, "{t}");
        let created = t["created"].as_str().unwrap();
        assert!(created.ends_with('Z') && created.len() == 20, "creation time: {t}");
        assert!(t["created_unix_ms"].as_u64().unwrap() > 0, "{t}");
        assert_eq!(check(&rt, &mesh, token), (true, mode.to_string(), id));
    }
    let labels: Vec<&str> = entries.iter().filter_map(|t| t["label"].as_str()).collect();
    assert!(labels.contains(&"backup reader") && labels.contains(&"ci"), "{list}");
    // git-annex lower-cases tokens before sending them.
    assert!(check(&rt, &mesh, &rw.to_ascii_uppercase()).0);

    let wrong = annexmesh::auth::generate_token();
    assert_eq!(check(&rt, &mesh, &wrong), (false, String::new(), String::new()));

    let ro_id = token_id(&hash_token(&ro)).to_string();
    let out = admin_ok(&mesh, &["token", "revoke", &ro_id]);
    assert!(stdout(&out).contains(&ro_id), "{}", stdout(&out));
    assert_eq!(check(&rt, &mesh, &ro), (false, String::new(), String::new()));
    let list = stdout(&admin_ok(&mesh, &["token", "list"]));
    assert!(!list.contains(&ro_id), "revoked token still listed:\n{list}");
    assert_eq!(list.lines().count(), 3, "{list}");

    // A unique prefix of 6 digits is enough to revoke.
    let ao_id = token_id(&hash_token(&ao)).to_string();
    admin_ok(&mesh, &["token", "revoke", &ao_id[..6]]);
    assert!(!check(&rt, &mesh, &ao).0);
    assert!(check(&rt, &mesh, &rw).0, "revoking one token leaves the others");
}

#[test]
fn tokens_survive_a_coordinator_restart() {
    let mut mesh = Mesh::separate(0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let token = create(&mesh, &["--appendonly"]);
    mesh.proc("coordinator").stop();
    mesh.procs.retain(|p| p.name != "coordinator");
    mesh.start_coordinator();
    common::wait_until("the coordinator to restart", std::time::Duration::from_secs(20), || {
        mesh.admin(&["token", "list"]).status.success()
    });
    let id = token_id(&hash_token(&token)).to_string();
    assert_eq!(check(&rt, &mesh, &token), (true, "appendonly".to_string(), id));
}

#[test]
fn bad_token_requests_get_clear_errors() {
    let mesh = Mesh::separate(0);
    let rt = tokio::runtime::Runtime::new().unwrap();

    // Conflicting modes are refused before anything is sent.
    let out = mesh.admin(&["token", "create", "--readonly", "--appendonly"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cannot be used with"), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());

    // Labels end up in tab-separated listings.
    let out = mesh.admin(&["token", "create", "--label", "a\tb"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("control characters"), "{}", stderr(&out));
    assert!(stdout(&out).is_empty(), "no token is printed when creation fails");
    let out = mesh.admin(&["token", "create", "--label", &"x".repeat(201)]);
    assert!(stderr(&out).contains("too long"), "{}", stderr(&out));

    let out = mesh.admin(&["token", "revoke", "0123456789ab"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no token with id 0123456789ab"), "{}", stderr(&out));
    for bad in ["abc", "not-hex-at-all"] {
        let out = mesh.admin(&["token", "revoke", bad]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("bad token id"), "{bad}: {}", stderr(&out));
    }

    let good = hash_token("some token");
    let cases: Vec<(String, &str, &str, &str)> = vec![
        ("some token".into(), "readwrite", "", "bad token hash"),
        (good.to_ascii_uppercase(), "readwrite", "", "bad token hash"),
        (good[..63].into(), "readwrite", "", "bad token hash"),
        (good.clone(), "admin", "", "unknown access mode"),
        (good.clone(), "", "", "unknown access mode"),
        (good.clone(), "readonly", "line\nbreak", "control characters"),
    ];
    rt.block_on(async {
        let mut admin = mesh.admin_client().await;
        for (token_sha256, mode, label, want) in cases {
            let req = rpc::CreateTokenRequest {
                token_sha256,
                mode: mode.into(),
                label: label.into(),
                ..Default::default()
            };
            let e = admin.create_token(req.clone()).await.expect_err(&format!("{req:?} accepted"));
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{req:?}: {e:?}");
            assert!(e.message().contains(want), "{req:?}: {}", e.message());
        }
        let req = rpc::CreateTokenRequest {
            token_sha256: good.clone(),
            mode: "readonly".into(),
            label: String::new(),
            ..Default::default()
        };
        let info = admin.create_token(req.clone()).await.unwrap().into_inner();
        assert_eq!(info.id, token_id(&good));
        let e = admin.create_token(req).await.expect_err("the same hash twice");
        assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
        assert!(e.message().contains(&info.id), "{}", e.message());

        let unknown = if good.starts_with('f') { "000000" } else { "ffffff" };
        let e = admin
            .revoke_token(rpc::RevokeTokenRequest { id: unknown.into() })
            .await
            .expect_err("unknown id");
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");

        let mut coord = CoordinatorClient::new(mesh.gateway_channel().await);
        let e = coord
            .check_token(rpc::CheckTokenRequest { token_sha256: "some token".into() })
            .await
            .expect_err("a token sent instead of its hash");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    });
    // Nothing bad was stored.
    let list = stdout(&admin_ok(&mesh, &["token", "list"]));
    assert_eq!(list.lines().count(), 2, "{list}");
}
