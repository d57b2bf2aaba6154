//! The admin API needs the admin credential: the token the coordinator
//! writes on first start (and `annexmesh up` into its data directory).

mod common;

use std::process::Output;

use annexmesh::rpc::{self, admin_client::AdminClient};
use common::{Mesh, tls_channel};

/// `annexmesh admin ARGS` with only the CA (and `env`), run where no local
/// mesh's credentials are to be found.
fn admin_with(mesh: &Mesh, args: &[&str], env: &[(&str, String)]) -> Output {
    let elsewhere = tempfile::tempdir().unwrap();
    common::annexmesh()
        .args(["admin", "--coordinator", &mesh.coordinator])
        .args(args)
        .current_dir(elsewhere.path())
        .env_remove("ANNEXMESH_DATA")
        .env_remove("ANNEXMESH_ADMIN_TOKEN")
        .env_remove("ANNEXMESH_ADMIN_TOKEN_FILE")
        .env("ANNEXMESH_CA", mesh.credentials.join("ca.pem"))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn admin_calls_need_the_admin_token() {
    let mesh = Mesh::separate(1);
    for args in [&["node", "list"][..], &["join-token", "create", "--role", "agent"]] {
        let out = admin_with(&mesh, args, &[]);
        assert!(!out.status.success(), "{args:?} without a token worked");
        let e = stderr(&out);
        assert!(e.contains("the admin credential is missing"), "{e}");
        assert!(e.contains("admin-token") && e.contains("--admin-token-file"), "{e}");

        let wrong = [("ANNEXMESH_ADMIN_TOKEN", "amadmin1.0000".to_string())];
        let out = admin_with(&mesh, args, &wrong);
        assert!(!out.status.success(), "{args:?} with a wrong token worked");
        assert!(stderr(&out).contains("the admin credential was refused"), "{}", stderr(&out));

        let right = [("ANNEXMESH_ADMIN_TOKEN", mesh.admin_token())];
        let out = admin_with(&mesh, args, &right);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let file = [(
        "ANNEXMESH_ADMIN_TOKEN_FILE",
        mesh.credentials.join("admin-token").to_string_lossy().into_owned(),
    )];
    let out = admin_with(&mesh, &["node", "list"], &file);
    assert!(String::from_utf8_lossy(&out.stdout).contains("node1"), "{}", stderr(&out));

    // Raw gRPC: no token, or only a gateway's certificate, is Unauthenticated.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ca = std::fs::read_to_string(mesh.credentials.join("ca.pem")).unwrap();
        let ch = tls_channel(&mesh.coordinator, &ca, None, "coordinator.annexmesh").await.unwrap();
        let e =
            AdminClient::new(ch).list_nodes(rpc::ListNodesRequest::default()).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
        let e = AdminClient::new(mesh.gateway_channel().await)
            .create_token(rpc::CreateTokenRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
        let nodes = mesh.admin_client().await.list_nodes(rpc::ListNodesRequest::default()).await;
        assert_eq!(nodes.unwrap().into_inner().nodes.len(), 1);
    });
}

#[test]
fn the_admin_cli_finds_a_local_up_by_itself() {
    let mesh = Mesh::up();
    let data = mesh.dir.path().join("data");
    for f in ["admin-token", "ca.pem"] {
        assert!(data.join(f).is_file(), "up wrote no {f}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("admin-token")).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the admin token is readable by others: {mode:o}");
    // Run in the directory holding `annexmesh-data`, as after `annexmesh up`.
    let cwd = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&data, cwd.path().join("annexmesh-data")).unwrap();
    let out = common::annexmesh()
        .args(["admin", "--coordinator", &mesh.coordinator, "node", "list"])
        .current_dir(cwd.path())
        .env_remove("ANNEXMESH_DATA")
        .env_remove("ANNEXMESH_CA")
        .env_remove("ANNEXMESH_ADMIN_TOKEN_FILE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 4, "header and 3 nodes");
}
