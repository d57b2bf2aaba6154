//! mTLS between the roles: members join with tokens, certificates bind
//! agents to their node, and only mesh certificates reach the agents' and
//! the coordinator's gRPC services. An https:// URL always means TLS.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use annexmesh::pki::{Ca, Identity, JoinToken};
use annexmesh::rpc::{self, agent_client::AgentClient, coordinator_client::CoordinatorClient};
use common::{MemberFiles, Mesh, free_port, tls_channel, wait_until};

/// Runs `annexmesh ARGS` until it exits (at most 60 s): success and stderr.
fn run_to_exit(args: &[&str], extra: &[String], env: &[(&str, &str)]) -> (bool, String) {
    common::run_to_exit(
        Command::new(env!("CARGO_BIN_EXE_annexmesh"))
            .args(args)
            .args(extra)
            .envs(env.iter().copied())
            .env_remove("ANNEXMESH_INSECURE"),
    )
}

/// Runs an agent named `name` on `store` with `extra` arguments until it
/// exits; it must fail. Its stderr.
fn agent_fails(mesh: &Mesh, name: &str, store: &Path, extra: &[String]) -> String {
    let (ok, log) = common::run_to_exit(
        mesh.agent_command(name, store).args(extra).env_remove("ANNEXMESH_INSECURE"),
    );
    assert!(!ok, "agent {name} started:\n{log}");
    log
}

fn token_arg(t: &str) -> Vec<String> {
    vec!["--join-token".into(), t.into()]
}

#[test]
fn only_a_valid_agent_join_token_lets_an_agent_in() {
    let mesh = Mesh::separate(1);
    let store = mesh.dir.path().join("intruder");
    let log = agent_fails(&mesh, "intruder", &store, &[]);
    assert!(log.contains("--join-token") && log.contains("no TLS credentials"), "{log}");

    let log = agent_fails(&mesh, "intruder", &store, &token_arg("not-a-token"));
    assert!(log.contains("amjoin1.SECRET.CAHASH"), "{log}");

    // The right CA hash, a made-up secret.
    let real = JoinToken::parse(&mesh.join_token("agent")).unwrap();
    let forged = JoinToken::generate(&real.ca_sha256).to_string();
    let log = agent_fails(&mesh, "intruder", &store, &token_arg(&forged));
    assert!(log.contains("unknown join token"), "{log}");

    let gateway = mesh.join_token("gateway");
    let log = agent_fails(&mesh, "intruder", &store, &token_arg(&gateway));
    assert!(log.contains("the join token is for a gateway"), "{log}");

    let short = mesh.admin_ok(&["join-token", "create", "--role", "agent", "--ttl", "1s"]);
    std::thread::sleep(Duration::from_millis(1500));
    let log = agent_fails(&mesh, "intruder", &store, &token_arg(short.trim()));
    assert!(log.contains("expired"), "{log}");

    // A token for another mesh's CA: the agent does not even send it.
    let other = JoinToken::generate(&"ab".repeat(32)).to_string();
    let log = agent_fails(&mesh, "intruder", &store, &token_arg(&other));
    assert!(log.contains("not the mesh the token was made for"), "{log}");

    // A token is used up after its uses. This one is read from a file.
    let once = mesh.join_token("agent");
    let missing = mesh.dir.path().join("no-such-token");
    let log = agent_fails(
        &mesh,
        "intruder",
        &store,
        &["--join-token-file".into(), missing.to_string_lossy().into_owned()],
    );
    assert!(log.contains("cannot read the join token file"), "{log}");
    let token_file = mesh.dir.path().join("node2.token");
    std::fs::write(&token_file, format!("{once}\n")).unwrap();
    let mut p = common::Proc::spawn(
        "node2",
        common::annexmesh()
            .args(["agent", "--coordinator", &mesh.coordinator, "--cluster", "mesh"])
            .args(["--name", "node2", "--listen", &format!("127.0.0.1:{}", free_port())])
            .arg("--store")
            .arg(mesh.dir.path().join("nodes/node2"))
            .arg("--join-token-file")
            .arg(&token_file),
        mesh.dir.path(),
    );
    wait_until("node2", Duration::from_secs(30), || mesh.healthy_nodes() == 2);
    let log = agent_fails(&mesh, "intruder", &store, &token_arg(&once));
    assert!(log.contains("used up") || log.contains("unknown join token"), "{log}");
    p.stop();

    let list = mesh.admin_ok(&["node", "list"]);
    assert!(!list.contains("intruder"), "{list}");
}

#[test]
fn an_agent_certificate_speaks_only_for_its_own_node() {
    let mesh = Mesh::separate(2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let node1 = MemberFiles::read(&mesh.store_of("node1").join(".annexmesh/tls"));
    let uuid1 = std::fs::read_to_string(mesh.store_of("node1").join("uuid")).unwrap();
    let uuid2 = std::fs::read_to_string(mesh.store_of("node2").join("uuid")).unwrap();
    let (uuid1, uuid2) = (uuid1.trim().to_string(), uuid2.trim().to_string());
    rt.block_on(async {
        let topology = CoordinatorClient::new(mesh.gateway_channel().await)
            .topology(rpc::TopologyRequest {})
            .await
            .unwrap()
            .into_inner();
        let addr_of =
            |u: &str| topology.nodes.iter().find(|n| n.uuid == u).unwrap().address.clone();
        let channel = tls_channel(
            &mesh.coordinator,
            &node1.ca,
            Some((&node1.cert, &node1.key)),
            "coordinator.annexmesh",
        )
        .await
        .unwrap();
        let mut c = CoordinatorClient::new(channel);
        let register = |uuid: &str, address: String| rpc::RegisterRequest {
            uuid: uuid.into(),
            name: "node2".into(),
            cluster: "mesh".into(),
            address,
            boot_id: "intruder".into(),
        };
        // node1's certificate claiming node2, at an address of its choosing.
        let e = c.register(register(&uuid2, "https://127.0.0.1:1".into())).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("its certificate names another node"), "{e:?}");
        let hb = rpc::HeartbeatRequest { uuid: uuid2.clone(), ..Default::default() };
        let e = c.heartbeat(hb).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        // node1 taking node2's live address for itself.
        let mut r = register(&uuid1, addr_of(&uuid2));
        r.name = "node1".into();
        let e = c.register(r).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
        assert!(e.message().contains("belongs to live node node2"), "{e:?}");
        // node1 rewriting node2's entries in the location log.
        let strike = rpc::RecordLocationsRequest {
            changes: vec![rpc::LocationChange {
                key: format!("SHA256E-s1--{}", "0".repeat(64)),
                node_uuid: uuid2.clone(),
                present: false,
            }],
        };
        let e = c.record_locations(strike).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        // An agent certificate is no gateway's.
        let e = c.topology(rpc::TopologyRequest {}).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    });
    // node2's record is untouched.
    let row = mesh.node_columns("node2").unwrap();
    assert!(row[1] == uuid2 && row[3] != "127.0.0.1:1", "{row:?}");

    // Nobody joins as an existing node, even with a valid token.
    let store = mesh.dir.path().join("copy");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::write(store.join("uuid"), &uuid2).unwrap();
    let log = agent_fails(&mesh, "node9", &store, &token_arg(&mesh.join_token("agent")));
    assert!(log.contains("its identity is taken"), "{log}");
    assert_eq!(mesh.healthy_nodes(), 2);
}

#[test]
fn only_mesh_certificates_reach_agents_and_the_coordinator() {
    let mesh = Mesh::separate(1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let gateway = MemberFiles::read(&mesh.gateway_state("gateway"));
    // A gateway certificate from another CA.
    let other_ca = Ca::generate().unwrap();
    let stranger = other_ca.issue_new(&Identity::Gateway("stranger".into())).unwrap();
    rt.block_on(async {
        let node = CoordinatorClient::new(mesh.gateway_channel().await)
            .topology(rpc::TopologyRequest {})
            .await
            .unwrap()
            .into_inner()
            .nodes
            .remove(0);
        let agent_name = format!("{}.agent.annexmesh", node.uuid);
        let remove = || rpc::RemoveRequest { key: "SHA256E-s1--00".into(), ..Default::default() };
        let get = || rpc::GetRequest { key: "SHA256E-s1--00".into(), ..Default::default() };

        // No client certificate: the agent's handshake fails.
        let plain = tls_channel(&node.address, &gateway.ca, None, &agent_name).await;
        if let Ok(ch) = plain {
            let mut a = AgentClient::new(ch);
            assert!(a.remove(remove()).await.is_err(), "Remove without a certificate");
            assert!(a.get(get()).await.is_err(), "Get without a certificate");
        }
        // A certificate from another CA, trusting the mesh CA for the server.
        let other = tls_channel(
            &node.address,
            &gateway.ca,
            Some((&stranger.cert_pem, &stranger.key_pem)),
            &agent_name,
        )
        .await;
        if let Ok(ch) = other {
            assert!(AgentClient::new(ch).remove(remove()).await.is_err(), "a foreign certificate");
        }
        // The coordinator: no certificate gets PermissionDenied, another
        // CA's certificate no connection.
        let ch = tls_channel(&mesh.coordinator, &gateway.ca, None, "coordinator.annexmesh")
            .await
            .unwrap();
        let mut c = CoordinatorClient::new(ch);
        let e = c.record_locations(rpc::RecordLocationsRequest::default()).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        let reg = rpc::RegisterRequest { uuid: node.uuid.clone(), ..Default::default() };
        let e = c.register(reg).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        let foreign = tls_channel(
            &mesh.coordinator,
            &gateway.ca,
            Some((&stranger.cert_pem, &stranger.key_pem)),
            "coordinator.annexmesh",
        )
        .await;
        if let Ok(ch) = foreign {
            let r = CoordinatorClient::new(ch)
                .record_locations(rpc::RecordLocationsRequest::default())
                .await;
            assert!(r.is_err(), "another CA's certificate was let in");
        }
        // The mesh's gateway certificate gets through to both.
        let ch = tls_channel(
            &node.address,
            &gateway.ca,
            Some((&gateway.cert, &gateway.key)),
            &agent_name,
        )
        .await
        .unwrap();
        let r = AgentClient::new(ch).remove(remove()).await.unwrap().into_inner();
        assert!(r.error.is_empty() || !r.removed, "{r:?}");
        CoordinatorClient::new(mesh.gateway_channel().await)
            .record_locations(rpc::RecordLocationsRequest::default())
            .await
            .unwrap();
        // The agent's certificate is checked by name: the gateway's own
        // certificate, valid in the mesh, does not pass for the agent.
        let wrong_name = tls_channel(
            &node.address,
            &gateway.ca,
            Some((&gateway.cert, &gateway.key)),
            "00000000-0000-4000-8000-000000000000.agent.annexmesh",
        )
        .await;
        assert!(wrong_name.is_err(), "an agent answered for another node's name");
    });
}

#[test]
fn https_means_tls_and_http_needs_insecure() {
    let mesh = Mesh::separate_insecure(1);
    let https = mesh.coordinator.replacen("http://", "https://", 1);
    // The admin CLI against the plaintext coordinator, over https://.
    let ca = mesh.dir.path().join("some-ca.pem");
    std::fs::write(&ca, Ca::generate().unwrap().cert_pem()).unwrap();
    let token = mesh.dir.path().join("coordinator/admin-token");
    let (ok, log) = run_to_exit(
        &["admin", "--coordinator", &https, "node", "list"],
        &[],
        &[
            ("ANNEXMESH_CA", ca.to_str().unwrap()),
            ("ANNEXMESH_ADMIN_TOKEN_FILE", token.to_str().unwrap()),
        ],
    );
    assert!(!ok, "{log}");
    assert!(log.contains("TLS handshake with") && log.contains("--insecure"), "{log}");

    // An agent, likewise, with a join token.
    let fake = JoinToken::generate(&"ab".repeat(32)).to_string();
    let listen = format!("127.0.0.1:{}", free_port());
    let store = mesh.dir.path().join("https-agent");
    let (ok, log) = run_to_exit(
        &[
            "agent",
            "--coordinator",
            &https,
            "--cluster",
            "mesh",
            "--name",
            "x",
            "--listen",
            &listen,
        ],
        &["--store".into(), store.to_string_lossy().into_owned(), "--join-token".into(), fake],
        &[],
    );
    assert!(!ok, "{log}");
    assert!(log.contains("no TLS from the server") && log.contains("--insecure"), "{log}");

    // http:// without --insecure is refused with the hint.
    let (ok, log) = run_to_exit(
        &["admin", "--coordinator", &mesh.coordinator, "node", "list"],
        &[],
        &[("ANNEXMESH_ADMIN_TOKEN_FILE", token.to_str().unwrap())],
    );
    assert!(!ok, "{log}");
    assert!(log.contains("use https:// or pass --insecure"), "{log}");
    let (ok, log) = run_to_exit(
        &[
            "agent",
            "--coordinator",
            &mesh.coordinator,
            "--cluster",
            "mesh",
            "--name",
            "x",
            "--listen",
            &listen,
        ],
        &["--store".into(), store.to_string_lossy().into_owned()],
        &[],
    );
    assert!(!ok, "{log}");
    assert!(log.contains("--insecure"), "{log}");
    // With --insecure the plaintext mesh works.
    assert!(mesh.admin_ok(&["node", "list"]).contains("node1"));
}

#[test]
fn a_certificate_near_its_end_is_renewed_at_start() {
    let mut mesh = Mesh::separate(1);
    mesh.proc("gateway").stop();
    mesh.procs.retain(|p| p.name != "gateway");
    let data = mesh.dir.path().join("coordinator");
    let ca = Ca::load(&data.join("ca.pem"), &data.join("ca-key.pem")).unwrap();
    let state = mesh.gateway_state("gateway");
    let short = Duration::from_secs(120);
    let old = ca.issue_new_for(&Identity::Gateway("renew-me".into()), short).unwrap();
    assert!(old.needs_renewal());
    old.save_dir(&state).unwrap();
    mesh.start_gateway();
    mesh.wait_ready(1);
    let new = annexmesh::pki::Credentials::load_dir(&state).unwrap().unwrap();
    assert!(!new.needs_renewal(), "the certificate was not renewed");
    assert_ne!(new.key_pem, old.key_pem, "renewal makes a new key");
    assert_eq!(new.identity(), Some(Identity::Gateway("renew-me".into())));
    let (from, to) = new.validity().unwrap();
    assert!(to - from > 300 * 24 * 3600, "{from}..{to}");
}
