//! Log output of the roles: JSON lines with span fields and one trace id
//! per request across roles, plain text without escape codes in a file.

mod common;

use common::{Client, Mesh};
use serde_json::Value;

const JSON: [&str; 2] = ["--log-format", "json"];

fn log_of(mesh: &Mesh, proc: &str) -> String {
    std::fs::read_to_string(mesh.dir.path().join(format!("{proc}.log"))).unwrap_or_default()
}

/// Every line of `proc`'s log, parsed; panics on a line that is not JSON.
fn json_lines(mesh: &Mesh, proc: &str) -> Vec<Value> {
    log_of(mesh, proc)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{proc}: not JSON ({e}): {l}")))
        .collect()
}

/// The trace ids of the spans a log line was written in.
fn trace_ids(line: &Value) -> Vec<String> {
    let spans = line["spans"].as_array().cloned().unwrap_or_default();
    spans.iter().filter_map(|s| s["trace_id"].as_str().map(str::to_string)).collect()
}

#[test]
fn json_logs_parse_and_one_put_shares_its_trace_id_across_roles() {
    let mut mesh = Mesh::separate_with_args(2, &JSON, &JSON);
    mesh.restart_gateway_with(&["--wideopen", "--log-format", "json"]);
    mesh.wait_ready(2);
    let client = Client::new();
    client.add_remote("mesh", &format!("{}/mesh", mesh.url()));
    client.annex_file("a.bin", 10_000, 1);
    client.ok(&["git", "annex", "copy", "--to", "mesh", "a.bin"]);

    let gateway = json_lines(&mesh, "gateway");
    for l in &gateway {
        assert!(l["level"].is_string() && l["target"].is_string(), "{l}");
        assert!(l["fields"]["message"].is_string(), "{l}");
    }
    // The PUT's request span: method, path and trace id.
    let put = gateway
        .iter()
        .find(|l| {
            l["span"]["name"] == "http"
                && l["span"]["path"].as_str().is_some_and(|p| p.ends_with("/put"))
        })
        .unwrap_or_else(|| panic!("no line of the PUT's span in:\n{}", log_of(&mesh, "gateway")));
    assert_eq!(put["span"]["method"], "POST", "{put}");
    let trace = put["span"]["trace_id"].as_str().expect("a trace id").to_string();
    assert_eq!(trace.len(), 32, "{trace}");

    // An agent that stored it logged its side of the call under that id.
    let mut agent_lines = json_lines(&mesh, "node1");
    agent_lines.extend(json_lines(&mesh, "node2"));
    let same: Vec<&Value> = agent_lines.iter().filter(|l| trace_ids(l).contains(&trace)).collect();
    assert!(
        same.iter().any(|l| l["span"]["rpc"].as_str().is_some_and(|r| r.ends_with("/Put"))),
        "no agent line of the PUT with trace id {trace}:\n{}\n{}",
        log_of(&mesh, "node1"),
        log_of(&mesh, "node2")
    );
    // The gateway's call to each node runs in a span naming the node, inside
    // the request's; the agent's handler names the key.
    let node_call = gateway.iter().find(|l| {
        l["span"]["name"] == "node" && l["span"]["op"] == "put" && trace_ids(l).contains(&trace)
    });
    let node_call = node_call
        .unwrap_or_else(|| panic!("no node call of the PUT in:\n{}", log_of(&mesh, "gateway")));
    assert!(
        ["node1", "node2"].contains(&node_call["span"]["node"].as_str().unwrap_or_default()),
        "{node_call}"
    );
    assert!(
        same.iter().any(|l| l["span"]["name"] == "put"
            && l["span"]["key"].as_str().is_some_and(|k| k.ends_with(".bin"))),
        "no agent line in the put span with the key:\n{}",
        log_of(&mesh, "node1")
    );
    // The coordinator's placement call belongs to the same trace.
    let coordinator = json_lines(&mesh, "coordinator");
    assert!(
        coordinator.iter().any(|l| trace_ids(l).contains(&trace)),
        "no coordinator line with trace id {trace}"
    );
}

#[test]
fn text_logs_in_a_file_have_no_escape_codes() {
    let mesh = Mesh::separate(1);
    for proc in ["coordinator", "node1", "gateway"] {
        let log = log_of(&mesh, proc);
        assert!(log.contains("INFO"), "{proc} logged nothing:\n{log}");
        assert!(!log.contains("\x1b["), "{proc} wrote escape codes:\n{log}");
    }
}

#[cfg(not(feature = "otel"))]
#[test]
fn otlp_export_without_the_feature_is_refused_with_why() {
    let out = common::annexmesh()
        .args(["--otlp-endpoint", "http://127.0.0.1:4317", "admin", "cluster", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("built without the `otel` feature"), "{err}");
}
