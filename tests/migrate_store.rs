//! `annexmesh admin migrate-store`: a mesh on the embedded store, with
//! content stored by the real git-annex and 10,000 keys in its location log,
//! moves to PostgreSQL with nothing lost, and back; and the two refusals (a
//! source a coordinator still holds, a target that already holds a mesh).

mod common;

use std::collections::BTreeMap;
use std::process::Output;
use std::time::Duration;

use annexmesh::rpc;
use common::pg::PgServer;
use common::{Client, Mesh, annexmesh, wait_until};
use futures::StreamExt;
use sha2::{Digest, Sha256};

/// Keys in the location log in all: the real client's and synthetic ones.
const KEYS: usize = 10_000;
/// Keys per RecordLocations request.
const BATCH: usize = 500;
/// The coordinator runs no repair pass: the synthetic keys are on no node,
/// and repair must not change the log between the readings.
const COORDINATOR_ARGS: [&str; 2] = ["--repair-interval", "0"];

/// (node UUID, node name, present, stamp) of every entry, by node UUID.
type Whereis = Vec<(String, String, bool, u64)>;

/// The n-th synthetic key: a valid SHA256E key.
fn synthetic_key(n: usize) -> String {
    let digest = Sha256::digest((n as u64).to_le_bytes());
    format!("SHA256E-s{}--{}.bin", 1000 + n, hex::encode(digest))
}

/// The nodes (bit i: node i) a synthetic key is recorded on: every
/// non-empty subset of the three, in turn.
fn subset(n: usize) -> Vec<usize> {
    let mask = n % 7 + 1;
    (0..3).filter(|i| mask & (1 << i) != 0).collect()
}

/// The admin's `whereis` of every key, many asked at once.
async fn whereis_all(mesh: &Mesh, keys: &[String]) -> BTreeMap<String, Whereis> {
    let admin = mesh.admin_client().await;
    futures::stream::iter(keys.iter().cloned())
        .map(|key| {
            let mut admin = admin.clone();
            async move {
                let reply = admin
                    .whereis(rpc::WhereisRequest { key: key.clone() })
                    .await
                    .unwrap_or_else(|e| panic!("whereis {key}: {e}"))
                    .into_inner();
                let mut entries: Whereis = reply
                    .entries
                    .into_iter()
                    .map(|e| (e.node_uuid, e.node_name, e.present, e.changed_unix_ms))
                    .collect();
                entries.sort();
                (key, entries)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await
}

/// The operator state as the admin CLI shows it. Of `node list`, the
/// columns that do not change from one heartbeat to the next.
fn operator_state(mesh: &Mesh) -> Vec<String> {
    let nodes: Vec<String> = mesh
        .node_list()
        .iter()
        .map(|n| {
            ["name", "uuid", "address", "state", "wanted", "cost"]
                .map(|f| n[f].to_string())
                .join("\t")
        })
        .collect();
    vec![
        nodes.join("\n"),
        mesh.admin_ok(&["token", "list"]),
        mesh.admin_ok(&["user", "list"]),
        mesh.admin_json(&["cluster", "list"]).to_string(),
        mesh.admin_ok(&["wanted", "node2"]),
        mesh.admin_ok(&["wanted", "node1"]),
    ]
}

/// `annexmesh admin migrate-store --from FROM --to TO`.
fn migrate(from: &str, to: &str) -> Output {
    annexmesh().args(["admin", "migrate-store", "--from", from, "--to", to]).output().unwrap()
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// The database name at the end of a postgres:// URL.
fn db_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

#[test]
fn migrate_store_moves_a_mesh_with_10000_keys_from_redb_to_postgres() {
    let pg = PgServer::shared();
    let mut mesh = Mesh::separate_on_store(3, &COORDINATOR_ARGS, false, Default::default(), None);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let data = mesh.dir.path().join("coordinator");
    assert!(data.join(annexmesh::coordinator::store::REDB_FILE).is_file(), "a redb mesh");

    // Real content, stored by git-annex through the gateway; the client
    // then keeps no copy of its own.
    let client = Client::new();
    client.add_remote("mesh", &format!("{}/mesh", mesh.url()));
    let files: Vec<(String, Vec<u8>, String)> = (0..4)
        .map(|i| {
            let name = format!("file{i}.bin");
            let (bytes, key) = client.annex_file(&name, 50_000 + i * 70_000, 100 + i as u64);
            (name, bytes, key)
        })
        .collect();
    let names: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
    client.ok(&[&["git", "annex", "copy", "--to", "mesh"][..], &names].concat());
    client.ok(&[&["git", "annex", "drop"][..], &names].concat());
    let client_whereis = client.ok(&[&["git", "annex", "whereis"][..], &names].concat());

    // Synthetic keys on every subset of the nodes, recorded as a gateway
    // records them; every fourth then struck from its first node.
    let node_uuids: Vec<String> = ["node1", "node2", "node3"].map(|n| mesh.uuid_of(n)).into();
    let synthetic: Vec<String> = (0..KEYS - files.len()).map(synthetic_key).collect();
    rt.block_on(async {
        let mut c = rpc::coordinator_client::CoordinatorClient::new(mesh.gateway_channel().await);
        let change = |n: usize, node: usize, present: bool| rpc::LocationChange {
            key: synthetic[n].clone(),
            node_uuid: node_uuids[node].clone(),
            present,
        };
        for batch in (0..synthetic.len()).collect::<Vec<_>>().chunks(BATCH) {
            let changes = batch
                .iter()
                .flat_map(|&n| subset(n).into_iter().map(move |i| change(n, i, true)))
                .collect();
            c.record_locations(rpc::RecordLocationsRequest { changes }).await.unwrap();
        }
        for batch in (0..synthetic.len()).step_by(4).collect::<Vec<_>>().chunks(BATCH) {
            let changes = batch.iter().map(|&n| change(n, subset(n)[0], false)).collect();
            c.record_locations(rpc::RecordLocationsRequest { changes }).await.unwrap();
        }
    });

    // Operator state: a user, a token, wanted expressions, a cost, the
    // cluster's minimum copies and reserve, a drained node.
    let password = mesh.user("alice", &[]);
    mesh.token(&["--appendonly", "--label", "backup job"]);
    mesh.admin_ok(&["wanted", "node2", "largerthan=1MB"]);
    mesh.admin_ok(&["wanted", "node1", "include=*.bin"]);
    mesh.admin_ok(&["node", "cost", "node1", "50"]);
    mesh.admin_ok(&["cluster", "mincopies", "mesh", "2"]);
    mesh.admin_ok(&["cluster", "reserve", "mesh", "100MB"]);
    mesh.admin_ok(&["node", "drain", "node3"]);

    let mut keys: Vec<String> = files.iter().map(|f| f.2.clone()).collect();
    keys.extend(synthetic.iter().cloned());
    assert_eq!(keys.len(), KEYS);
    let before = rt.block_on(whereis_all(&mesh, &keys));
    let entries: usize = before.values().map(Vec::len).sum();
    for (name, _, key) in &files {
        assert_eq!(before[key].iter().filter(|e| e.2).count(), 3, "{name} on the three nodes");
    }
    for (n, key) in synthetic.iter().enumerate() {
        let mut present: Vec<usize> = before[key]
            .iter()
            .filter(|e| e.2)
            .map(|e| node_uuids.iter().position(|u| *u == e.0).unwrap())
            .collect();
        present.sort();
        let mut want = subset(n);
        if n % 4 == 0 {
            want.remove(0);
        }
        assert_eq!(present, want, "whereis {key} before the move");
    }
    let state = operator_state(&mesh);
    assert!(state[0].contains("draining"), "{}", state[0]);
    assert!(state[3].contains("\"min_copies\":2"), "{}", state[3]);

    let target = pg.create_database();
    let db = db_name(&target);
    let from = format!("redb:{}", data.display());
    let tables = "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'";

    // A running coordinator holds its embedded database: refused, and the
    // target is left as it was.
    let out = migrate(&from, &target);
    assert!(!out.status.success(), "migrating a running coordinator's store should fail");
    let err = text(&out.stderr);
    assert!(err.contains("is a coordinator still running on it?"), "{err}");
    assert_eq!(pg.query(db, tables), "0", "a refused move creates nothing");

    mesh.proc("coordinator").stop();
    mesh.procs.retain(|p| p.name != "coordinator");
    let out = migrate(&from, &target);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "migrate-store failed:\n{stdout}\n{stderr}");
    assert!(stderr.contains("moving 1 cluster(s), 3 node(s)"), "{stderr}");
    assert!(
        stdout.contains(&format!(
            "moved and verified 1 cluster(s), 3 node(s), {entries} location entries"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("start the coordinators with --store postgres://"), "{stdout}");
    assert!(entries >= KEYS, "{entries} entries");

    // A target that already holds a mesh: refused, and nothing changes.
    let count = "SELECT (SELECT count(*) FROM locations) || ' ' || \
                 (SELECT coalesce(max(stamp), 0) FROM locations) || ' ' || \
                 (SELECT count(*) FROM tokens) || ' ' || (SELECT count(*) FROM nodes)";
    let held = pg.query(db, count);
    assert_eq!(held.split(' ').next(), Some(entries.to_string().as_str()), "{held}");
    let out = migrate(&from, &target);
    assert!(!out.status.success(), "migrating into a used database should fail");
    let err = text(&out.stderr);
    assert!(err.contains("already holds a mesh"), "{err}");
    assert_eq!(pg.query(db, count), held, "a refused move changes nothing");

    // The coordinator again, on the same --data, now on PostgreSQL.
    mesh.store = Some(target.clone());
    mesh.start_coordinator_with(&COORDINATOR_ARGS);
    wait_until("the coordinator on PostgreSQL", Duration::from_secs(30), || {
        mesh.admin(&["cluster", "list"]).status.success()
    });
    let status = mesh.admin_ok(&["status"]);
    assert!(status.contains("postgres"), "{status}");
    wait_until("the nodes to report again", Duration::from_secs(60), || mesh.healthy_nodes() == 3);

    let after = rt.block_on(whereis_all(&mesh, &keys));
    assert_eq!(after.len(), KEYS);
    for key in &keys {
        assert_eq!(before[key], after[key], "whereis {key} after the move");
    }
    assert_eq!(operator_state(&mesh), state, "the operator state after the move");

    // The real client: the same whereis, and every file back through the
    // gateway.
    let names_whereis = client.ok(&[&["git", "annex", "whereis"][..], &names].concat());
    assert_eq!(names_whereis, client_whereis);
    client.ok(&[&["git", "annex", "get", "--from", "mesh"][..], &names].concat());
    for (name, bytes, _) in &files {
        assert!(std::fs::read(client.path().join(name)).unwrap() == *bytes, "{name} came back");
    }
    client.ok(&[&["git", "annex", "fsck", "--fast", "--from", "mesh"][..], &names].concat());

    // The user's password still opens the gateway; a wrong one does not.
    mesh.restart_gateway_with(&["--auth-users"]);
    let config = format!("{}/mesh/config", mesh.url());
    let auth = |p: &str| common::basic_auth(&format!("alice:{p}"));
    wait_until("the gateway to take alice's password", Duration::from_secs(30), || {
        matches!(
            common::http_get_with(&config, &[("Authorization", &auth(&password))]),
            Some((200, _))
        )
    });
    let wrong = common::http_get_with(&config, &[("Authorization", &auth("wrong"))]);
    assert_eq!(wrong.map(|r| r.0), Some(401));

    // And back: PostgreSQL into a new embedded store, verified the same way.
    let back = tempfile::tempdir().unwrap();
    let out = migrate(&target, &format!("redb:{}", back.path().display()));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "migrate-store back failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("moved and verified 1 cluster(s), 3 node(s), "), "{stdout}");
    assert!(stdout.contains("--store redb:"), "{stdout}");
}
