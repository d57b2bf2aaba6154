//! The packaging in deploy/ and the Dockerfile, checked without a container
//! runtime or a cluster: the Kubernetes manifests and the Compose file parse
//! and hang together (probes, ports, selectors, volumes, dependencies), the
//! flags and environment variables they use are ones the binary accepts, the
//! image runs as a non-root user from a multi-stage build, and the systemd
//! units pass `systemd-analyze verify` and rate at most 3.0 in
//! `systemd-analyze security`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use yaml_rust2::{Yaml, YamlLoader};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn load(path: &Path) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

fn files(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
        .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no *.{ext} in {dir}");
    out
}

fn s(y: &Yaml) -> Option<&str> {
    y.as_str()
}

fn vec(y: &Yaml) -> &[Yaml] {
    y.as_vec().map(|v| v.as_slice()).unwrap_or(&[])
}

fn hash_pairs(y: &Yaml) -> Vec<(String, &Yaml)> {
    y.as_hash()
        .map(|h| h.iter().filter_map(|(k, v)| Some((s(k)?.to_string(), v))).collect())
        .unwrap_or_default()
}

fn labels(y: &Yaml) -> BTreeMap<String, String> {
    hash_pairs(y).into_iter().filter_map(|(k, v)| Some((k, s(v)?.to_string()))).collect()
}

/// The `--flags` and `ANNEXMESH_*` variables that `annexmesh WORDS --help`
/// lists, per command; cached.
#[derive(Default)]
struct Help(BTreeMap<Vec<String>, String>);

impl Help {
    fn text(&mut self, words: &[String]) -> &str {
        self.0.entry(words.to_vec()).or_insert_with(|| {
            let out = common::annexmesh().args(words).arg("--help").output().unwrap();
            assert!(
                out.status.success(),
                "`annexmesh {} --help` failed: {}",
                words.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    }

    /// Checks an `annexmesh ...` command line: its subcommands exist and
    /// every `--flag` in it is one of theirs.
    fn check_command(&mut self, argv: &[String], whence: &str) {
        let words: Vec<String> = argv.iter().take_while(|a| !a.starts_with('-')).cloned().collect();
        // Positional values (a cluster name) are harmless before --help.
        let help = self.text(&words).to_string();
        for flag in argv.iter().filter(|a| a.starts_with("--")) {
            let flag = flag.split('=').next().unwrap();
            assert!(
                mentions(&help, flag),
                "{whence}: `annexmesh {}` does not accept {flag}",
                words.join(" ")
            );
        }
    }

    /// Whether some role reads environment variable `var`.
    fn env_known(&mut self, var: &str) -> bool {
        // Read by the log setup rather than by a flag, and by build.rs.
        if var == "ANNEXMESH_LOG" || var == "ANNEXMESH_COMMIT" {
            return true;
        }
        ["coordinator", "agent", "gateway", "admin", "up"]
            .iter()
            .any(|role| reads_env(self.text(&[role.to_string()]), var))
    }

    fn check_env(&mut self, role: &str, var: &str, whence: &str) {
        if var == "ANNEXMESH_LOG" {
            return;
        }
        let help = self.text(&[role.to_string()]).to_string();
        assert!(
            reads_env(&help, var),
            "{whence}: `annexmesh {role}` reads no environment variable {var}"
        );
    }
}

/// Whether `help` names environment variable `var` (clap writes
/// `[env: VAR=VALUE]`, or `[env: VAR]` for hidden values).
fn reads_env(help: &str, var: &str) -> bool {
    help.contains(&format!("[env: {var}=")) || help.contains(&format!("[env: {var}]"))
}

/// Whether `help` lists `flag` (not just a longer flag it begins).
fn mentions(help: &str, flag: &str) -> bool {
    help.match_indices(flag).any(|(i, _)| {
        let next = help[i + flag.len()..].chars().next();
        !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

/// The `annexmesh ...` invocations in a shell script: each as its words,
/// up to the end of the command (a pipe, `||`, `&&`, a redirection).
fn shell_invocations(script: &str) -> Vec<Vec<String>> {
    let joined = script.replace("\\\n", " ");
    let mut out = Vec::new();
    for line in joined.lines() {
        let mut rest = line;
        while let Some(i) = rest.find("annexmesh ") {
            // Only the program itself, not a path or a name containing it.
            let before = rest[..i].chars().last();
            let tail = &rest[i + "annexmesh ".len()..];
            rest = tail;
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || "/-_.".contains(c)) {
                continue;
            }
            let words: Vec<String> = tail
                .split_whitespace()
                .take_while(|w| !["|", "||", "&&", ">", ";", "2>/dev/null"].contains(w))
                .map(|w| w.trim_matches('"').to_string())
                .collect();
            out.push(words);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Kubernetes

struct Workload {
    file: String,
    kind: String,
    name: String,
    template_labels: BTreeMap<String, String>,
    /// Named container ports.
    ports: BTreeSet<String>,
    numbers: BTreeSet<i64>,
}

fn check_probe(probe: &Yaml, what: &str, ports: &BTreeSet<String>, numbers: &BTreeSet<i64>) {
    let handlers: Vec<_> = ["httpGet", "tcpSocket", "exec", "grpc"]
        .into_iter()
        .filter(|h| !probe[*h].is_badvalue())
        .collect();
    assert_eq!(handlers.len(), 1, "{what}: a probe needs exactly one handler, has {handlers:?}");
    let port_ok = |p: &Yaml| match p {
        Yaml::String(name) => ports.contains(name),
        Yaml::Integer(n) => numbers.contains(n),
        _ => false,
    };
    match handlers[0] {
        "httpGet" => {
            let path = s(&probe["httpGet"]["path"]).unwrap_or_default();
            assert!(path.starts_with('/'), "{what}: httpGet needs a path, has {path:?}");
            assert!(
                port_ok(&probe["httpGet"]["port"]),
                "{what}: httpGet port is no container port"
            );
            if let Some(scheme) = s(&probe["httpGet"]["scheme"]) {
                assert!(["HTTP", "HTTPS"].contains(&scheme), "{what}: scheme {scheme}");
            }
        }
        "tcpSocket" => {
            assert!(
                port_ok(&probe["tcpSocket"]["port"]),
                "{what}: tcpSocket port is no container port"
            )
        }
        "grpc" => {
            assert!(probe["grpc"]["port"].as_i64().is_some(), "{what}: grpc needs a port number")
        }
        _ => assert!(!vec(&probe["exec"]["command"]).is_empty(), "{what}: exec needs a command"),
    }
    for field in ["periodSeconds", "timeoutSeconds", "failureThreshold", "initialDelaySeconds"] {
        if !probe[field].is_badvalue() {
            assert!(
                probe[field].as_i64().is_some_and(|n| n >= 0),
                "{what}: {field} is not a number"
            );
        }
    }
}

fn check_security_context(pod: &Yaml, c: &Yaml, what: &str) {
    let sc = &c["securityContext"];
    let either = |k: &str| if sc[k].is_badvalue() { &pod["securityContext"][k] } else { &sc[k] };
    assert_eq!(either("runAsNonRoot").as_bool(), Some(true), "{what}: runAsNonRoot");
    if let Some(uid) = either("runAsUser").as_i64() {
        assert_ne!(uid, 0, "{what}: runs as root");
    }
    assert_eq!(
        sc["allowPrivilegeEscalation"].as_bool(),
        Some(false),
        "{what}: allowPrivilegeEscalation"
    );
    assert_eq!(
        sc["readOnlyRootFilesystem"].as_bool(),
        Some(true),
        "{what}: readOnlyRootFilesystem"
    );
    assert!(
        vec(&sc["capabilities"]["drop"]).iter().any(|c| s(c) == Some("ALL")),
        "{what}: capabilities are not all dropped"
    );
    assert_eq!(
        s(&either("seccompProfile")["type"]),
        Some("RuntimeDefault"),
        "{what}: seccompProfile"
    );
}

/// A workload's pod template: containers, probes, security, volumes,
/// flags and the names it refers to.
#[allow(clippy::too_many_arguments)]
fn check_workload(
    doc: &Yaml,
    what: &str,
    help: &mut Help,
    configmaps: &BTreeMap<String, BTreeSet<String>>,
    secrets: &BTreeMap<String, BTreeSet<String>>,
) -> Workload {
    let spec = &doc["spec"];
    let template = &spec["template"];
    let pod = &template["spec"];
    let template_labels = labels(&template["metadata"]["labels"]);
    let selector = labels(&spec["selector"]["matchLabels"]);
    assert!(!selector.is_empty(), "{what}: no selector");
    for (k, v) in &selector {
        assert_eq!(
            template_labels.get(k),
            Some(v),
            "{what}: the selector does not match the pod labels"
        );
    }
    let mut volumes: BTreeSet<String> =
        vec(&pod["volumes"]).iter().filter_map(|v| s(&v["name"]).map(String::from)).collect();
    volumes.extend(
        vec(&spec["volumeClaimTemplates"])
            .iter()
            .filter_map(|v| s(&v["metadata"]["name"]).map(String::from)),
    );
    for v in vec(&pod["volumes"]) {
        if let Some(cm) = s(&v["configMap"]["name"]) {
            assert!(configmaps.contains_key(cm), "{what}: volume of unknown ConfigMap {cm}");
        }
        if let Some(sec) = s(&v["secret"]["secretName"]) {
            assert!(
                secrets.contains_key(sec) || v["secret"]["optional"].as_bool() == Some(true),
                "{what}: volume of unknown Secret {sec}"
            );
        }
    }
    let containers = vec(&pod["containers"]);
    assert!(!containers.is_empty(), "{what}: no containers");
    let mut ports = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    for c in containers {
        let cname = s(&c["name"]).unwrap_or_else(|| panic!("{what}: a container has no name"));
        let what = format!("{what}, container {cname}");
        assert!(s(&c["image"]).is_some_and(|i| !i.is_empty()), "{what}: no image");
        let mut own_ports = BTreeSet::new();
        let mut own_numbers = BTreeSet::new();
        for p in vec(&c["ports"]) {
            let n = p["containerPort"].as_i64().unwrap_or(0);
            assert!((1..=65535).contains(&n), "{what}: bad containerPort");
            own_numbers.insert(n);
            if let Some(name) = s(&p["name"]) {
                assert!(name.len() <= 15, "{what}: port name {name} is longer than 15");
                own_ports.insert(name.to_string());
            }
        }
        assert!(!own_numbers.is_empty(), "{what}: no ports");
        for probe in ["livenessProbe", "readinessProbe"] {
            assert!(!c[probe].is_badvalue(), "{what}: no {probe}");
        }
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            if !c[probe].is_badvalue() {
                check_probe(&c[probe], &format!("{what}: {probe}"), &own_ports, &own_numbers);
                let cmd: Vec<String> = vec(&c[probe]["exec"]["command"])
                    .iter()
                    .filter_map(|w| s(w).map(String::from))
                    .collect();
                if cmd.first().map(String::as_str) == Some("annexmesh") {
                    help.check_command(&cmd[1..], &format!("{what}: {probe}"));
                }
            }
        }
        check_security_context(pod, c, &what);
        for r in ["requests", "limits"] {
            for k in ["cpu", "memory"] {
                assert!(!c["resources"][r][k].is_badvalue(), "{what}: no resources.{r}.{k}");
            }
        }
        for m in vec(&c["volumeMounts"]) {
            let name = s(&m["name"]).unwrap_or_default();
            assert!(volumes.contains(name), "{what}: mounts unknown volume {name:?}");
            assert!(s(&m["mountPath"]).is_some_and(|p| p.starts_with('/')), "{what}: mountPath");
        }
        let args: Vec<String> =
            vec(&c["args"]).iter().filter_map(|w| s(w).map(String::from)).collect();
        let role = args.first().cloned().unwrap_or_default();
        help.check_command(&args, &what);
        for e in vec(&c["env"]) {
            let var = s(&e["name"]).unwrap_or_default();
            if var.starts_with("ANNEXMESH_") {
                help.check_env(&role, var, &what);
            }
            let key_ref = |kind: &str, known: &BTreeMap<String, BTreeSet<String>>| {
                let r = &e["valueFrom"][kind];
                if r.is_badvalue() {
                    return;
                }
                let (name, key) =
                    (s(&r["name"]).unwrap_or_default(), s(&r["key"]).unwrap_or_default());
                let has = known.get(name).is_some_and(|keys| keys.contains(key));
                assert!(
                    has || r["optional"].as_bool() == Some(true),
                    "{what}: env {var} refers to {kind} {name}/{key}, which is not defined"
                );
                assert!(known.contains_key(name), "{what}: env {var}: no {kind} named {name}");
            };
            key_ref("secretKeyRef", secrets);
            key_ref("configMapKeyRef", configmaps);
        }
        for e in vec(&c["envFrom"]) {
            if let Some(cm) = s(&e["configMapRef"]["name"]) {
                assert!(configmaps.contains_key(cm), "{what}: envFrom unknown ConfigMap {cm}");
            }
            if let Some(sec) = s(&e["secretRef"]["name"]) {
                assert!(secrets.contains_key(sec), "{what}: envFrom unknown Secret {sec}");
            }
        }
        ports.extend(own_ports);
        numbers.extend(own_numbers);
    }
    Workload {
        file: what.to_string(),
        kind: s(&doc["kind"]).unwrap().to_string(),
        name: s(&doc["metadata"]["name"]).unwrap().to_string(),
        template_labels,
        ports,
        numbers,
    }
}

#[test]
fn kubernetes_manifests_are_complete_and_consistent() {
    let mut help = Help::default();
    let mut docs = Vec::new();
    let mut kustomize = None;
    for file in files("deploy/k8s", "yaml") {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for doc in load(&file).into_iter().filter(|d| !d.is_null()) {
            let kind = s(&doc["kind"]).unwrap_or_else(|| panic!("{name}: a document has no kind"));
            assert!(s(&doc["apiVersion"]).is_some(), "{name}: {kind} has no apiVersion");
            if kind == "Kustomization" {
                kustomize = Some(doc.clone());
                continue;
            }
            let what = format!("{name}: {kind} {}", s(&doc["metadata"]["name"]).unwrap_or("?"));
            assert!(
                s(&doc["metadata"]["name"]).is_some_and(|n| !n.is_empty()),
                "{what}: no metadata.name"
            );
            if kind != "Namespace" {
                assert_eq!(
                    s(&doc["metadata"]["namespace"]),
                    Some("annexmesh"),
                    "{what}: namespace"
                );
            }
            docs.push((what, doc));
        }
    }
    // kubectl apply -k applies exactly the files there are.
    let kustomize = kustomize.expect("deploy/k8s has a kustomization.yaml");
    let listed: BTreeSet<String> =
        vec(&kustomize["resources"]).iter().filter_map(|r| s(r).map(String::from)).collect();
    let present: BTreeSet<String> = files("deploy/k8s", "yaml")
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|n| n != "kustomization.yaml")
        .collect();
    assert_eq!(listed, present, "kustomization.yaml lists other files than deploy/k8s has");

    let keys = |kind: &str| -> BTreeMap<String, BTreeSet<String>> {
        docs.iter()
            .filter(|(_, d)| s(&d["kind"]) == Some(kind))
            .map(|(_, d)| {
                let mut k: BTreeSet<String> =
                    hash_pairs(&d["data"]).into_iter().map(|(k, _)| k).collect();
                k.extend(hash_pairs(&d["stringData"]).into_iter().map(|(k, _)| k));
                (s(&d["metadata"]["name"]).unwrap().to_string(), k)
            })
            .collect()
    };
    let (configmaps, secrets) = (keys("ConfigMap"), keys("Secret"));
    for keys in configmaps.values() {
        for var in keys.iter().filter(|k| k.starts_with("ANNEXMESH_")) {
            assert!(help.env_known(var), "ConfigMap key {var} is read by no role");
        }
    }

    let mut workloads = Vec::new();
    for (what, doc) in &docs {
        let kind = s(&doc["kind"]).unwrap();
        if ["Deployment", "StatefulSet", "DaemonSet", "Job"].contains(&kind) {
            workloads.push(check_workload(doc, what, &mut help, &configmaps, &secrets));
        }
    }
    let kinds: BTreeSet<&str> = workloads.iter().map(|w| w.kind.as_str()).collect();
    assert!(kinds.contains("StatefulSet") && kinds.contains("Deployment"), "{kinds:?}");

    let services: Vec<_> = docs.iter().filter(|(_, d)| s(&d["kind"]) == Some("Service")).collect();
    for (what, svc) in &services {
        let selector = labels(&svc["spec"]["selector"]);
        assert!(!selector.is_empty(), "{what}: no selector");
        let targets: Vec<&Workload> = workloads
            .iter()
            .filter(|w| selector.iter().all(|(k, v)| w.template_labels.get(k) == Some(v)))
            .collect();
        assert!(!targets.is_empty(), "{what}: selects no workload's pods");
        for p in vec(&svc["spec"]["ports"]) {
            let target = if p["targetPort"].is_badvalue() { &p["port"] } else { &p["targetPort"] };
            for w in &targets {
                let ok = match target {
                    Yaml::String(n) => w.ports.contains(n),
                    Yaml::Integer(n) => w.numbers.contains(n),
                    _ => false,
                };
                assert!(ok, "{what}: targetPort {target:?} is not a port of {}", w.file);
            }
        }
    }
    for (what, doc) in &docs {
        if s(&doc["kind"]) == Some("StatefulSet") {
            let svc = s(&doc["spec"]["serviceName"]).unwrap_or_default();
            assert!(
                services.iter().any(|(_, d)| s(&d["metadata"]["name"]) == Some(svc)),
                "{what}: serviceName {svc:?} is no Service"
            );
            assert!(!vec(&doc["spec"]["volumeClaimTemplates"]).is_empty(), "{what}: no volumes");
        }
    }
    // The gateway's probes are its HTTP health endpoints.
    let gateway = docs
        .iter()
        .find(|(_, d)| {
            s(&d["kind"]) == Some("Deployment") && s(&d["metadata"]["name"]) == Some("gateway")
        })
        .expect("a gateway Deployment");
    let c = &gateway.1["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(s(&c["livenessProbe"]["httpGet"]["path"]), Some("/health"));
    assert_eq!(s(&c["readinessProbe"]["httpGet"]["path"]), Some("/ready"));
    assert!(workloads.iter().any(|w| w.name == "agent" && w.kind == "StatefulSet"));
    assert!(workloads.iter().any(|w| w.name == "coordinator" && w.kind == "StatefulSet"));
}

// ---------------------------------------------------------------------------
// Compose

/// Resolves YAML merge keys (`<<: *anchor`), which the loader leaves as
/// ordinary keys: the merged mapping's entries, unless the mapping has its own.
fn merge_keys(y: &Yaml) -> Yaml {
    match y {
        Yaml::Hash(h) => {
            let mut out = yaml_rust2::yaml::Hash::new();
            let merge = Yaml::String("<<".into());
            for (k, v) in h {
                if *k != merge {
                    out.insert(k.clone(), merge_keys(v));
                }
            }
            if let Some(m) = h.get(&merge) {
                let sources: Vec<Yaml> = match m {
                    Yaml::Array(a) => a.clone(),
                    other => vec![other.clone()],
                };
                for src in sources {
                    if let Yaml::Hash(src) = merge_keys(&src) {
                        for (k, v) in src {
                            out.entry(k).or_insert(v);
                        }
                    }
                }
            }
            Yaml::Hash(out)
        }
        Yaml::Array(a) => Yaml::Array(a.iter().map(merge_keys).collect()),
        other => other.clone(),
    }
}

#[test]
fn compose_file_parses_and_hangs_together() {
    let path = repo().join("deploy/compose/compose.yaml");
    let docs = load(&path);
    assert_eq!(docs.len(), 1, "compose.yaml is one document");
    let compose = merge_keys(&docs[0]);
    let services = hash_pairs(&compose["services"]);
    let names: BTreeSet<&str> = services.iter().map(|(n, _)| n.as_str()).collect();
    let volumes: BTreeSet<String> =
        hash_pairs(&compose["volumes"]).into_iter().map(|(k, _)| k).collect();
    let mut help = Help::default();
    // A three-host mesh: one coordinator, three agents, a gateway.
    let roles = |role: &str| {
        services
            .iter()
            .filter(|(_, svc)| {
                let cmd: Vec<&str> = vec(&svc["command"]).iter().filter_map(s).collect();
                cmd.first() == Some(&role)
                    || cmd.iter().any(|c| c.contains(&format!("exec annexmesh {role} ")))
            })
            .count()
    };
    assert_eq!((roles("coordinator"), roles("agent"), roles("gateway")), (1, 3, 1));

    for (name, svc) in &services {
        let what = format!("compose service {name}");
        assert!(
            s(&svc["image"]).is_some() || !svc["build"].is_badvalue(),
            "{what}: no image or build"
        );
        // depends_on: a list of names or a map of name to condition.
        let deps: Vec<(String, Option<String>)> = match &svc["depends_on"] {
            Yaml::Array(a) => a.iter().filter_map(|d| Some((s(d)?.to_string(), None))).collect(),
            Yaml::Hash(_) => hash_pairs(&svc["depends_on"])
                .into_iter()
                .map(|(k, v)| (k, s(&v["condition"]).map(String::from)))
                .collect(),
            Yaml::BadValue => vec![],
            other => panic!("{what}: depends_on is {other:?}"),
        };
        for (dep, condition) in deps {
            assert!(names.contains(dep.as_str()), "{what}: depends on unknown service {dep}");
            let dep_svc = &services.iter().find(|(n, _)| *n == dep).unwrap().1;
            match condition.as_deref() {
                None | Some("service_started") | Some("service_completed_successfully") => {}
                Some("service_healthy") => assert!(
                    !dep_svc["healthcheck"].is_badvalue()
                        && dep_svc["healthcheck"]["disable"].as_bool() != Some(true),
                    "{what}: waits for {dep} to be healthy, which has no health check"
                ),
                Some(other) => panic!("{what}: unknown condition {other}"),
            }
        }
        for v in vec(&svc["volumes"]) {
            let spec = s(v).unwrap_or_else(|| panic!("{what}: long volume syntax not checked"));
            let source = spec.split(':').next().unwrap();
            if !source.starts_with(['.', '/', '~']) {
                assert!(volumes.contains(source), "{what}: volume {source} is not declared");
            }
        }
        let hc: Vec<String> = vec(&svc["healthcheck"]["test"])
            .iter()
            .filter_map(|w| s(w).map(String::from))
            .collect();
        if hc.first().map(String::as_str) == Some("CMD")
            && hc.get(1).map(String::as_str) == Some("annexmesh")
        {
            help.check_command(&hc[2..], &format!("{what}: healthcheck"));
        }
        // The roles' flags, given directly or through a shell script.
        let command: Vec<String> =
            vec(&svc["command"]).iter().filter_map(|w| s(w).map(String::from)).collect();
        let entrypoint: Vec<&str> = vec(&svc["entrypoint"]).iter().filter_map(s).collect();
        if entrypoint.first().is_some_and(|e| e.ends_with("sh")) {
            let invocations: Vec<Vec<String>> =
                command.iter().flat_map(|script| shell_invocations(script)).collect();
            assert!(!invocations.is_empty(), "{what}: the script runs no annexmesh");
            for argv in invocations {
                help.check_command(&argv, &what);
            }
        } else if !command.is_empty() {
            help.check_command(&command, &what);
        }
        let role = command.first().cloned().unwrap_or_default();
        for (var, _) in hash_pairs(&svc["environment"]) {
            if var.starts_with("ANNEXMESH_")
                && ["coordinator", "agent", "gateway"].contains(&role.as_str())
            {
                help.check_env(&role, &var, &what);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Dockerfile

#[test]
fn dockerfile_is_multi_stage_and_runs_as_non_root() {
    let text = read(&repo().join("Dockerfile"));
    let lines: Vec<&str> =
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    let stages: Vec<usize> =
        (0..lines.len()).filter(|&i| lines[i].to_ascii_uppercase().starts_with("FROM ")).collect();
    assert!(
        stages.len() >= 2,
        "the Dockerfile has {} stage(s), wants a builder and a runtime",
        stages.len()
    );
    let builder = lines[stages[0]..stages[1]].join("\n");
    assert!(builder.contains("cargo build --release --locked"), "the builder builds with --locked");
    assert!(
        builder.contains("ARG ANNEXMESH_COMMIT"),
        "the builder takes the commit as a build arg"
    );
    let runtime = &lines[*stages.last().unwrap()..];
    let user = runtime
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    let user = user.split(':').next().unwrap().trim();
    assert!(!["root", "0", ""].contains(&user), "the image runs as {user}");
    for directive in ["HEALTHCHECK ", "EXPOSE ", "VOLUME "] {
        assert!(
            runtime.iter().any(|l| l.starts_with(directive)),
            "the runtime stage has no {directive}"
        );
    }
    assert!(runtime.contains(&r#"ENTRYPOINT ["annexmesh"]"#), "ENTRYPOINT [\"annexmesh\"]");
    for port in ["7400", "7500", "9417", "9418"] {
        let expose = runtime.iter().find(|l| l.starts_with("EXPOSE ")).unwrap();
        assert!(expose.split_whitespace().any(|p| p == port), "EXPOSE lacks {port}");
    }
    // Files copied from the context exist and are not ignored.
    let ignore = read(&repo().join(".dockerignore"));
    assert!(
        ignore.lines().any(|l| l.trim().trim_end_matches('/') == "target"),
        ".dockerignore target/"
    );
    for l in runtime.iter().filter(|l| l.starts_with("COPY ") && !l.contains("--from=")) {
        let src = l.split_whitespace().nth(1).unwrap();
        assert!(repo().join(src).exists(), "COPY {src}: no such file");
    }
}

/// The image's health check script, run against real processes: a
/// coordinator that listens passes, a role whose port is closed fails.
#[test]
fn image_healthcheck_checks_the_role_of_the_process() {
    let script = repo().join("deploy/docker/healthcheck.sh");
    let syntax = Command::new("bash").arg("-n").arg(&script).status().unwrap();
    assert!(syntax.success(), "healthcheck.sh has a syntax error");
    let check = |pid: u32| {
        Command::new("bash")
            .arg(&script)
            .env("HEALTHCHECK_PID", pid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };

    let tmp = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut coordinator = common::annexmesh()
        .args(["coordinator", "--insecure", &format!("--listen=127.0.0.1:{port}")])
        .arg("--data")
        .arg(tmp.path().join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut healthy = false;
    for _ in 0..300 {
        if check(coordinator.id()) {
            healthy = true;
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    coordinator.kill().unwrap();
    coordinator.wait().unwrap();
    assert!(healthy, "the health check never passed for a listening coordinator");

    // A process whose argv says "agent --listen PORT" with nothing there.
    let closed = common::free_port();
    // `read` is a builtin: no child outlives the kill.
    std::fs::write(tmp.path().join("agent"), "read -t 30\n").unwrap();
    let mut fake = Command::new("bash")
        .current_dir(tmp.path())
        .args(["agent", "--listen", &format!("0.0.0.0:{closed}")])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    // Until bash has exec'd, the child's command line is still ours.
    let cmdline = format!("/proc/{}/cmdline", fake.id());
    for _ in 0..100 {
        if std::fs::read(&cmdline).is_ok_and(|c| c.starts_with(b"bash\0agent\0")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let failed = !check(fake.id());
    fake.kill().unwrap();
    fake.wait().unwrap();
    assert!(failed, "the health check passed for an agent port nobody listens on");
}

// ---------------------------------------------------------------------------
// systemd

fn systemd_analyze() -> &'static str {
    let found = Command::new("systemd-analyze").arg("--version").output();
    if !found.is_ok_and(|o| o.status.success()) {
        panic!(
            "systemd-analyze was not found: it checks the units in deploy/systemd. \
             Install it with `apt-get install systemd` (Debian/Ubuntu) or `dnf install systemd`."
        );
    }
    "systemd-analyze"
}

/// The units as installed, with ExecStart pointing at the built binary
/// (verify needs the program to exist), in a fresh directory; templates
/// as an instance.
fn installed_units(dir: &Path) -> Vec<PathBuf> {
    let bin = env!("CARGO_BIN_EXE_annexmesh");
    files("deploy/systemd", "service")
        .into_iter()
        .map(|unit| {
            let name = unit.file_name().unwrap().to_string_lossy().replace("@.", "@node1.");
            let text = read(&unit).replace("/usr/local/bin/annexmesh", bin);
            let out = dir.join(name);
            std::fs::write(&out, text).unwrap();
            out
        })
        .collect()
}

/// `KEY=VALUE` settings of a unit file, in order.
fn unit_settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn systemd_units_verify() {
    let analyze = systemd_analyze();
    let tmp = tempfile::tempdir().unwrap();
    for unit in installed_units(tmp.path()) {
        let out = Command::new(analyze)
            .args(["verify", "--man=no"])
            .arg(&unit)
            .current_dir(tmp.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("annexmesh")).collect();
        assert!(
            out.status.success() && ours.is_empty(),
            "systemd-analyze verify {}:\n{stderr}",
            unit.display()
        );
    }
}

#[test]
fn systemd_units_are_hardened() {
    let analyze = systemd_analyze();
    let tmp = tempfile::tempdir().unwrap();
    for unit in installed_units(tmp.path()) {
        let out = Command::new(analyze)
            .args(["security", "--offline=yes"])
            .arg(&unit)
            .current_dir(tmp.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let line =
            text.lines().find(|l| l.contains("Overall exposure level")).unwrap_or_else(|| {
                panic!(
                    "systemd-analyze security --offline=yes {} gave no exposure level \
                     (systemd 250 or newer is needed for --offline):\n{text}",
                    unit.display()
                )
            });
        let level: f64 = line
            .split(": ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("cannot read the level in {line:?}"));
        assert!(level <= 3.0, "{}: exposure {level} > 3.0:\n{text}", unit.display());
    }
}

#[test]
fn systemd_units_run_as_the_sysusers_user_with_known_flags() {
    let sysusers = read(&repo().join("deploy/systemd/annexmesh.sysusers"));
    let users: BTreeSet<&str> = sysusers
        .lines()
        .filter(|l| l.starts_with("u "))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    let tmpfiles = read(&repo().join("deploy/systemd/annexmesh.tmpfiles"));
    for l in tmpfiles.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert!(f.len() >= 5 && f[1].starts_with('/'), "tmpfiles line {l:?}");
        for owner in &f[3..5] {
            assert!(*owner == "root" || users.contains(owner), "tmpfiles: unknown user {owner}");
        }
    }
    let mut help = Help::default();
    for unit in files("deploy/systemd", "service") {
        let what = unit.file_name().unwrap().to_string_lossy().into_owned();
        let settings = unit_settings(&read(&unit));
        let get = |k: &'static str| {
            settings.iter().filter(move |(key, _)| key == k).map(|(_, v)| v.as_str())
        };
        let user = get("User").next_back().unwrap_or_else(|| panic!("{what}: no User="));
        assert!(users.contains(user), "{what}: User={user} is not made by annexmesh.sysusers");
        assert_eq!(
            get("DynamicUser").next_back(),
            None,
            "{what}: DynamicUser with a sysusers user"
        );
        assert!(
            get("StateDirectory").any(|d| d.starts_with("annexmesh/")),
            "{what}: StateDirectory"
        );
        assert_eq!(get("LimitNOFILE").next_back(), Some("65536"), "{what}: LimitNOFILE");
        let exec = get("ExecStart").next_back().unwrap_or_else(|| panic!("{what}: no ExecStart"));
        let argv: Vec<String> = exec.split_whitespace().skip(1).map(String::from).collect();
        help.check_command(&argv, &what);
        let role = argv[0].clone();
        for env in get("Environment") {
            let var = env.split('=').next().unwrap().trim_matches('"');
            if var.starts_with("ANNEXMESH_") {
                help.check_env(&role, var, &what);
            }
        }
        // Whatever the unit keeps, it keeps under its state directory.
        for (_, v) in settings.iter().filter(|(k, _)| k == "Environment") {
            if let Some(path) = v.split_once('=').map(|(_, p)| p)
                && path.starts_with("/var/lib/")
            {
                assert!(
                    path.starts_with("/var/lib/annexmesh/"),
                    "{what}: {v} outside the state directory"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Docs

/// The deployment guide names flags the roles accept and files that exist.
#[test]
fn deployment_docs_name_real_flags_and_files() {
    let mut help = Help::default();
    for doc in ["docs/deployment.md", "deploy/compose/README.md"] {
        let text = read(&repo().join(doc));
        // `ROLE --flag` in code spans, as the ports table writes them.
        for span in text.split('`').skip(1).step_by(2) {
            let words: Vec<String> = span.split_whitespace().map(String::from).collect();
            let Some(role) = words.first() else { continue };
            if ["coordinator", "agent", "gateway"].contains(&role.as_str())
                && words.get(1).is_some_and(|w| w.starts_with("--"))
            {
                help.check_command(&words, doc);
            }
            for var in words.iter().filter(|w| w.starts_with("ANNEXMESH_")) {
                let var = var.split('=').next().unwrap().trim_end_matches([',', ')']);
                assert!(help.env_known(var), "{doc}: no role reads {var}");
            }
        }
        for (i, _) in text.match_indices("deploy/") {
            let path: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "/._@-".contains(*c))
                .collect();
            let path = path.trim_end_matches(['.', ')']);
            assert!(repo().join(path).exists(), "{doc} names {path}, which does not exist");
        }
    }
}
