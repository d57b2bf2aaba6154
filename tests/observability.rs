//! Health, reflection, readiness and metrics of every role, through real
//! clients: tonic-health's and tonic-reflection's gRPC clients, the gateway's
//! HTTP endpoints, and a Prometheus text parser over each role's /metrics
//! after a real copy by git-annex.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use annexmesh::rpc;
use common::{Client, MemberFiles, Mesh, free_port, http_get, tls_channel, wait_until};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

/// What `service` reports over Health.Check.
async fn check(channel: Channel, service: &str) -> Result<ServingStatus, tonic::Status> {
    let req = HealthCheckRequest { service: service.into() };
    let reply = HealthClient::new(channel).check(req).await?.into_inner();
    Ok(reply.status())
}

/// Waits (bounded) until `service` reports SERVING.
async fn wait_serving(channel: &Channel, service: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = check(channel.clone(), service).await;
        if matches!(status, Ok(ServingStatus::Serving)) {
            return;
        }
        assert!(Instant::now() < deadline, "{service:?} never SERVING: {status:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The nodes of cluster `mesh`, from the admin API.
async fn nodes_of(mesh: &Mesh) -> Vec<rpc::NodeInfo> {
    let req = rpc::ListNodesRequest { cluster: "mesh".into() };
    mesh.admin_client().await.list_nodes(req).await.unwrap().into_inner().nodes
}

/// The services a server lists over reflection (v1).
async fn reflected(channel: Channel) -> Result<Vec<String>, tonic::Status> {
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([req]))
        .await?
        .into_inner();
    let reply = stream.message().await?.expect("one reflection answer");
    match reply.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            Ok(l.service.into_iter().map(|s| s.name).collect())
        }
        other => panic!("not a service list: {other:?}"),
    }
}

/// The commit this build says it is of (`0.1.0 (COMMIT)`).
fn commit() -> &'static str {
    annexmesh::VERSION.split_once('(').unwrap().1.trim_end_matches(')')
}

/// Parses a /metrics text with a Prometheus parser and checks the names
/// against the conventions; the samples by name and labels.
fn parse_metrics(role: &str, text: &str) -> Vec<prometheus_parse::Sample> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines)
        .unwrap_or_else(|e| panic!("{role}: /metrics does not parse: {e}\n{text}"));
    let types: HashMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    assert!(!types.is_empty(), "{role}: no metric families:\n{text}");
    for (name, kind) in &types {
        assert!(
            name.starts_with("annexmesh_") || name.starts_with("process_"),
            "{role}: {name} lacks the annexmesh_ prefix"
        );
        if *kind == "histogram" {
            assert!(
                name.ends_with("_seconds") || name.ends_with("_bytes"),
                "{role}: histogram {name} has no unit"
            );
        }
    }
    for s in &scrape.samples {
        let family = ["_total", "_bucket", "_count", "_sum", "_created"]
            .iter()
            .find_map(|suffix| {
                let base = s.metric.strip_suffix(suffix)?;
                types.contains_key(base).then_some(base)
            })
            .unwrap_or(&s.metric);
        let kind = types.get(family).unwrap_or_else(|| panic!("{role}: {} has no TYPE", s.metric));
        if *kind == "counter" {
            assert!(s.metric.ends_with("_total"), "{role}: counter sample {}", s.metric);
        }
    }
    assert!(text.ends_with("# EOF\n"), "{role}: not OpenMetrics text");
    let info = format!(
        "annexmesh_build_info{{version=\"{}\",commit=\"{}\",",
        env!("CARGO_PKG_VERSION"),
        commit()
    );
    assert!(text.contains(&info), "{role}: no {info} in:\n{text}");
    for p in ["process_cpu_seconds_total ", "process_resident_memory_bytes ", "process_open_fds "] {
        assert!(text.contains(&format!("\n{p}")), "{role}: no {p}in:\n{text}");
    }
    scrape.samples
}

/// A sample's value by name and labels it must carry.
fn value(samples: &[prometheus_parse::Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let s = samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .unwrap_or_else(|| panic!("no {name} {labels:?} in {samples:#?}"));
    match s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{name}: {other:?}"),
    }
}

fn get_metrics(url: &str) -> String {
    let (status, body) = http_get(url).unwrap_or_else(|| panic!("{url} answers"));
    assert_eq!(status, 200, "{url}: {body}");
    body
}

/// A file copied to the mesh by git-annex over P2P over HTTP.
fn copy_a_file(client: &Client, mesh: &Mesh) {
    client.add_remote("mesh", &format!("{}/mesh", mesh.url()));
    client.write_file("f.bin", 200_000, 7);
    client.ok(&["git", "annex", "add", "f.bin"]);
    client.ok(&["git", "commit", "-q", "-m", "add"]);
    client.ok(&["git", "annex", "copy", "--to", "mesh", "f.bin"]);
}

/// The gateway's metrics after a copy: a put timed and bytes counted.
fn assert_gateway_counted_the_put(text: &str) {
    let samples = parse_metrics("gateway", text);
    let put = [("frontend", "http"), ("operation", "put"), ("outcome", "ok")];
    assert!(value(&samples, "annexmesh_request_duration_seconds_count", &put) >= 1.0, "{text}");
    assert!(value(&samples, "annexmesh_put_client_bytes_total", &[]) >= 200_000.0, "{text}");
}

/// An agent's metrics after a copy: its Put timed, its store measured.
fn assert_agent_counted(role: &str, text: &str) {
    let samples = parse_metrics(role, text);
    let put = [("service", "annexmesh.v1.Agent"), ("method", "Put")];
    assert!(value(&samples, "annexmesh_grpc_request_duration_seconds_count", &put) >= 1.0);
    assert!(value(&samples, "annexmesh_store_free_bytes", &[]) > 0.0, "{text}");
    assert_eq!(value(&samples, "annexmesh_registered", &[]), 1.0, "{text}");
}

#[test]
fn every_role_of_a_separate_mesh_answers_health_reflection_and_metrics() {
    let cmetrics = format!("127.0.0.1:{}", free_port());
    let mut mesh = Mesh::separate_with_coordinator_args(0, &["--metrics", &cmetrics]);
    let agent_metrics: Vec<String> = (0..2).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    for (i, m) in agent_metrics.iter().enumerate() {
        mesh.start_agent_with(&format!("node{}", i + 1), &["--metrics", m]);
    }
    mesh.wait_ready(2);
    let gateway = MemberFiles::read(&mesh.gateway_state("gateway"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // A probe without a client certificate reaches the coordinator's
        // health, but not its reflection.
        let probe = tls_channel(&mesh.coordinator, &gateway.ca, None, "coordinator.annexmesh")
            .await
            .unwrap();
        for service in ["", "annexmesh.v1.Coordinator", "annexmesh.v1.Admin"] {
            wait_serving(&probe, service).await;
        }
        let e = reflected(probe.clone()).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        let e = check(probe, "no.such.Service").await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
        let services = reflected(mesh.gateway_channel().await).await.unwrap();
        for s in ["annexmesh.v1.Coordinator", "annexmesh.v1.Admin", "grpc.health.v1.Health"] {
            assert!(services.iter().any(|x| x == s), "{s} not in {services:?}");
        }
        let nodes = nodes_of(&mesh).await;
        assert_eq!(nodes.len(), 2);
        for n in &nodes {
            let domain = format!("{}.agent.annexmesh", n.uuid);
            let ch =
                tls_channel(&n.address, &gateway.ca, Some((&gateway.cert, &gateway.key)), &domain)
                    .await
                    .unwrap();
            wait_serving(&ch, "").await;
            wait_serving(&ch, "annexmesh.v1.Agent").await;
            let services = reflected(ch).await.unwrap();
            assert!(services.iter().any(|s| s == "annexmesh.v1.Agent"), "{services:?}");
        }
    });
    assert_eq!(http_get(&format!("{}/health", mesh.url())).unwrap().0, 200);
    wait_until("the gateway ready", Duration::from_secs(20), || {
        http_get(&format!("{}/ready", mesh.url())).is_some_and(|(s, _)| s == 200)
    });

    let client = Client::new();
    copy_a_file(&client, &mesh);
    assert_gateway_counted_the_put(&get_metrics(&format!("{}/metrics", mesh.url())));
    let text = get_metrics(&format!("http://{cmetrics}/metrics"));
    let samples = parse_metrics("coordinator", &text);
    assert_eq!(value(&samples, "annexmesh_node_up", &[("node", "node1")]), 1.0, "{text}");
    let put = [("service", "annexmesh.v1.Coordinator"), ("method", "PlanPut")];
    assert!(value(&samples, "annexmesh_grpc_request_duration_seconds_count", &put) >= 1.0);
    // Every node got a copy (min copies on two nodes is both), and a
    // requested scrub pass verified it.
    mesh.admin_ok(&["scrub"]);
    for (i, m) in agent_metrics.iter().enumerate() {
        let text = get_metrics(&format!("http://{m}/metrics"));
        assert_agent_counted(&format!("node{}", i + 1), &text);
        let samples = parse_metrics("agent", &text);
        assert!(value(&samples, "annexmesh_scrub_objects_total", &[]) >= 1.0, "{text}");
        assert!(value(&samples, "annexmesh_scrub_read_bytes_total", &[]) >= 200_000.0, "{text}");
    }
}

#[test]
fn the_gateway_is_ready_only_while_it_reaches_a_coordinator() {
    let mut mesh = Mesh::separate_insecure(1);
    let ready = |mesh: &Mesh| http_get(&format!("{}/ready", mesh.url())).unwrap();
    wait_until("the gateway ready", Duration::from_secs(20), || ready(&mesh).0 == 200);
    mesh.proc("coordinator").stop();
    wait_until("the gateway not ready", Duration::from_secs(20), || ready(&mesh).0 == 503);
    let (_, why) = ready(&mesh);
    assert!(why.contains("coordinator"), "{why}");
    // Liveness does not depend on the coordinator.
    assert_eq!(http_get(&format!("{}/health", mesh.url())).unwrap(), (200, "ok\n".into()));
    mesh.start_coordinator();
    wait_until("the gateway ready again", Duration::from_secs(30), || ready(&mesh).0 == 200);
    // On a plaintext mesh, anyone may ask the coordinator.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ch = tonic::transport::Endpoint::from_shared(mesh.coordinator.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        wait_serving(&ch, "annexmesh.v1.Coordinator").await;
        assert!(reflected(ch).await.unwrap().iter().any(|s| s == "annexmesh.v1.Admin"));
    });
}

#[test]
fn annexmesh_up_serves_every_role_s_health_and_metrics() {
    let mesh = Mesh::up();
    let ca = std::fs::read_to_string(mesh.credentials.join("ca.pem")).unwrap();
    let node1 = MemberFiles::read(&mesh.store_of("node1").join(".annexmesh/tls"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let probe =
            tls_channel(&mesh.coordinator, &ca, None, "coordinator.annexmesh").await.unwrap();
        wait_serving(&probe, "").await;
        let member = tls_channel(
            &mesh.coordinator,
            &ca,
            Some((&node1.cert, &node1.key)),
            "coordinator.annexmesh",
        )
        .await
        .unwrap();
        let services = reflected(member).await.unwrap();
        assert!(services.iter().any(|s| s == "annexmesh.v1.Coordinator"), "{services:?}");
        let nodes = nodes_of(&mesh).await;
        assert_eq!(nodes.len(), 3);
        for n in &nodes {
            let domain = format!("{}.agent.annexmesh", n.uuid);
            let ch = tls_channel(&n.address, &ca, Some((&node1.cert, &node1.key)), &domain)
                .await
                .unwrap();
            wait_serving(&ch, "annexmesh.v1.Agent").await;
        }
    });
    assert_eq!(http_get(&format!("{}/ready", mesh.url())).unwrap().0, 200);

    let client = Client::new();
    let helper = format!("store --file={}", mesh.up_credentials().display());
    client.ok(&["git", "config", "credential.helper", &helper]);
    copy_a_file(&client, &mesh);
    assert_gateway_counted_the_put(&get_metrics(&format!("{}/metrics", mesh.url())));
    let text = get_metrics(&format!("{}/metrics/coordinator", mesh.url()));
    let samples = parse_metrics("coordinator", &text);
    assert_eq!(value(&samples, "annexmesh_node_up", &[("node", "node2")]), 1.0, "{text}");
    for n in ["node1", "node2", "node3"] {
        assert_agent_counted(n, &get_metrics(&format!("{}/metrics/{n}", mesh.url())));
    }
    assert_eq!(http_get(&format!("{}/metrics/nobody", mesh.url())).unwrap().0, 404);
}

/// Every series name a PromQL expression refers to that the mesh would
/// export (Prometheus' own, such as `up`, aside).
fn referenced(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("annexmesh_") || t.starts_with("process_"))
        .map(str::to_string)
        .collect()
}

/// The series names a /metrics text declares, with the suffixes its
/// families' samples take (`_total`, `_bucket`, ...), whether or not a
/// sample is there yet.
fn exported(text: &str, into: &mut std::collections::BTreeSet<String>) {
    for l in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let (name, kind) = l.split_once(' ').unwrap();
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_count", "_sum"],
            _ => &[""],
        };
        into.extend(suffixes.iter().map(|s| format!("{name}{s}")));
    }
}

#[test]
fn the_dashboard_and_alert_rules_use_only_metrics_the_mesh_exports() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let alerts = std::fs::read_to_string(root.join("prometheus/alerts.yml")).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&alerts).expect("alerts.yml parses");
    let mut exprs = Vec::new();
    let mut names = Vec::new();
    for group in docs[0]["groups"].as_vec().expect("groups") {
        for rule in group["rules"].as_vec().expect("rules") {
            let name = rule["alert"].as_str().expect("every rule is an alert").to_string();
            assert!(rule["labels"]["severity"].as_str().is_some(), "{name}: no severity");
            assert!(rule["annotations"]["summary"].as_str().is_some(), "{name}: no summary");
            exprs.push((name.clone(), rule["expr"].as_str().expect("expr").to_string()));
            names.push(name);
        }
    }
    for want in ["RoleDown", "NodeDown", "NodeDegraded", "StoreAlmostFull", "RepairBacklog"] {
        assert!(names.iter().any(|n| n.contains(want)), "no {want} rule in {names:?}");
    }
    assert!(names.iter().any(|n| n.contains("ErrorRate")), "{names:?}");
    assert!(exprs.iter().any(|(_, e)| e.contains("histogram_quantile(0.99")), "no p99 rule");

    let dashboard = std::fs::read_to_string(root.join("grafana/annexmesh.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard parses");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());
    for p in panels {
        let title = p["title"].as_str().expect("panel title");
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{title}: no targets"));
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_else(|| panic!("{title}: no expr"));
            exprs.push((title.to_string(), expr.to_string()));
        }
    }

    // Every role's metrics, from one `annexmesh up`.
    let mesh = Mesh::up();
    let mut have = std::collections::BTreeSet::new();
    for path in ["metrics", "metrics/coordinator", "metrics/node1"] {
        exported(&get_metrics(&format!("{}/{path}", mesh.url())), &mut have);
    }
    for (what, expr) in &exprs {
        let refs = referenced(expr);
        assert!(!refs.is_empty() || expr.contains("up{"), "{what}: no mesh metric in {expr}");
        for r in refs {
            assert!(have.contains(&r), "{what}: {r} is not exported; the mesh has {have:#?}");
        }
    }
}

#[test]
fn a_coordinator_whose_store_stops_answering_reports_not_serving() {
    let pg = common::pg::PgServer::start();
    let url = pg.create_database();
    let mesh = Mesh::separate_on_store(0, &[], false, HashMap::new(), Some(url));
    let gateway = MemberFiles::read(&mesh.gateway_state("gateway"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let probe = rt.block_on(async {
        let probe = tls_channel(&mesh.coordinator, &gateway.ca, None, "coordinator.annexmesh")
            .await
            .unwrap();
        wait_serving(&probe, "").await;
        probe
    });
    // The database goes away: store reads fail, the coordinator says so.
    drop(pg);
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = check(probe.clone(), "annexmesh.v1.Coordinator").await;
            if matches!(status, Ok(ServingStatus::NotServing)) {
                break;
            }
            assert!(Instant::now() < deadline, "still {status:?} with its store stopped");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let log = std::fs::read_to_string(mesh.dir.path().join("coordinator.log")).unwrap();
    assert!(log.contains("not serving"), "{log}");
}
