//! The command line as operators meet it: every flag has an environment
//! variable, config files with their precedence, the generated reference
//! page, shell completions, man pages, and refusals at start-up.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{annexmesh, free_port, wait_until};

/// Env names shared by flags of different names that mean the same thing.
const SYNONYMS: &[(&str, &[&str])] = &[
    // `up --coordinator-listen` is its coordinator's `--listen`.
    ("ANNEXMESH_COORDINATOR_LISTEN", &["listen", "coordinator-listen"]),
];

fn upper(long: &str) -> String {
    long.to_uppercase().replace('-', "_")
}

/// Every flag of every subcommand, with its path (`annexmesh admin node list`).
fn walk<'a>(cmd: &'a clap::Command, path: String, out: &mut Vec<(String, &'a clap::Arg)>) {
    for a in cmd.get_arguments().filter(|a| !a.is_positional()) {
        out.push((path.clone(), a));
    }
    for sub in cmd.get_subcommands() {
        walk(sub, format!("{path} {}", sub.get_name()), out);
    }
}

#[test]
fn every_flag_has_an_environment_variable() {
    let cmd = annexmesh::cli::command();
    let mut flags = Vec::new();
    walk(&cmd, "annexmesh".into(), &mut flags);
    assert!(flags.len() > 100, "the walk found only {} flags", flags.len());
    let mut problems = Vec::new();
    let mut by_env: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (path, a) in &flags {
        let long =
            a.get_long().unwrap_or_else(|| panic!("{path}: flag {} has no long name", a.get_id()));
        let Some(env) = a.get_env().and_then(|e| e.to_str()) else {
            problems.push(format!(
                "{path} --{long} has no environment variable (add env = \"ANNEXMESH_{}\")",
                upper(long)
            ));
            continue;
        };
        let name_ok = env.strip_prefix("ANNEXMESH_").is_some_and(|rest| {
            !rest.is_empty()
                && rest.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        });
        let ends_ok = env == format!("ANNEXMESH_{}", upper(long))
            || env.ends_with(&format!("_{}", upper(long)));
        if !name_ok || !ends_ok {
            problems.push(format!(
                "{path} --{long}: environment variable {env} is not ANNEXMESH_[PREFIX_]{}",
                upper(long)
            ));
        }
        by_env.entry(env.to_string()).or_default().push((path.clone(), long.to_string()));
    }
    for (env, users) in &by_env {
        let mut longs: Vec<&str> = users.iter().map(|(_, l)| l.as_str()).collect();
        longs.sort();
        longs.dedup();
        let allowed =
            SYNONYMS.iter().any(|(e, names)| e == env && longs.iter().all(|l| names.contains(l)));
        if longs.len() > 1 && !allowed {
            let who: Vec<String> = users.iter().map(|(p, l)| format!("{p} --{l}")).collect();
            problems.push(format!("{env} is shared by different flags: {}", who.join(", ")));
        }
    }
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

/// Runs annexmesh with `args` and no ANNEXMESH_* variables but `env`:
/// (success, stdout, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = annexmesh();
    for (k, _) in std::env::vars() {
        if k.starts_with("ANNEXMESH_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.args(args).envs(env.iter().copied()).stdin(Stdio::null()).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn reference_page_is_current() {
    let generated = annexmesh::config::reference();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/configuration.md differs from what the code generates; regenerate it with \
         `UPDATE_DOCS=1 cargo test --locked --test cli reference_page` (or `annexmesh reference > docs/configuration.md`)"
    );
    // The binary prints the same page.
    let (ok, out, err) = run(&["reference"], &[]);
    assert!(ok, "{err}");
    assert_eq!(out, generated);
    for role in ["coordinator", "agent", "gateway", "up", "admin"] {
        assert!(generated.contains(&format!("## `annexmesh {role}`")), "{role}");
    }
    assert!(
        generated.contains(
            "| `--p2p-tls-cert P2P_TLS_CERT` | `ANNEXMESH_P2P_TLS_CERT` | `p2p-tls-cert` |"
        )
    );
}

#[test]
fn example_config_files_pass_the_real_parser() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let role = path.file_stem().unwrap().to_str().unwrap().to_string();
        let (ok, out, err) =
            run(&["config", "print", &role, "--config", path.to_str().unwrap()], &[]);
        assert!(ok, "{}: {err}", path.display());
        let text = std::fs::read_to_string(&path).unwrap();
        let table: toml::Table = text.parse().unwrap();
        for key in table.keys() {
            assert!(
                out.contains(&format!("\n{key} = ")),
                "{}: {key} not taken from the file:\n{out}",
                path.display()
            );
            assert!(
                out.lines().any(|l| l.starts_with(&format!("{key} = ")) && l.ends_with("# file")),
                "{key}:\n{out}"
            );
        }
        seen += 1;
    }
    assert!(seen >= 3, "deploy/config has {seen} files");
}

#[test]
fn precedence_is_flag_then_env_then_file_then_default() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(
        tmp.path(),
        "gateway.toml",
        "coordinator = [\"https://a:7400\", \"https://b:7400\"]\n\
         http = \"127.0.0.1:1111\"\n\
         http-max-connections = 7\n\
         http-max-requests = 8\n\
         wideopen = true\n",
    );
    let (ok, out, err) = run(
        &["config", "print", "gateway", "--http-max-requests", "3"],
        &[("ANNEXMESH_CONFIG", &file), ("ANNEXMESH_HTTP_MAX_CONNECTIONS", "5")],
    );
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    for want in [
        "coordinator = \"https://a:7400,https://b:7400\"  # file",
        "http = \"127.0.0.1:1111\"  # file",
        "wideopen = true  # file",
        "http-max-connections = 5  # env",
        "http-max-requests = 3  # flag",
        "max-locks = 1024  # default",
    ] {
        assert!(lines.contains(&want), "missing {want:?} in:\n{out}");
    }
}

#[test]
fn bad_config_files_are_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let typo = write(tmp.path(), "typo.toml", "data = \"/tmp/x\"\nreserv = \"1GB\"\n");
    let (ok, _, err) = run(&["coordinator", "--config", &typo], &[]);
    assert!(!ok);
    assert!(
        err.contains(&typo) && err.contains("unknown key `reserv`") && err.contains("`reserve`"),
        "{err}"
    );
    let broken = write(tmp.path(), "broken.toml", "data = \"/tmp/x\"\n\nlisten = [1,\n");
    let (ok, _, err) = run(&["coordinator"], &[("ANNEXMESH_CONFIG", &broken)]);
    assert!(!ok);
    assert!(err.contains(&format!("{broken}:3:")) && err.contains("not valid TOML"), "{err}");
    let (ok, _, err) = run(&["coordinator", "--config", "/nonexistent/annexmesh.toml"], &[]);
    assert!(!ok);
    assert!(err.contains("cannot read config file /nonexistent/annexmesh.toml"), "{err}");
}

/// Starts a coordinator with `args`, `env` and `file` as its config file
/// and waits until it serves on `port`.
fn coordinator_serves_on(dir: &Path, args: &[&str], env: &[(&str, &str)], port: u16) {
    let mut cmd = annexmesh();
    for (k, _) in std::env::vars() {
        if k.starts_with("ANNEXMESH_") {
            cmd.env_remove(k);
        }
    }
    cmd.arg("coordinator").args(args).envs(env.iter().copied());
    let mut proc = common::Proc::spawn(&format!("coordinator-{port}"), &mut cmd, dir);
    wait_until(&format!("the coordinator to listen on {port}"), Duration::from_secs(60), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    proc.stop();
}

#[test]
fn a_coordinator_listens_where_file_env_and_flag_say() {
    let tmp = tempfile::tempdir().unwrap();
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let data = tmp.path().join("data");
    let file = write(
        tmp.path(),
        "coordinator.toml",
        &format!("listen = \"127.0.0.1:{p1}\"\ndata = \"{}\"\ninsecure = true\n", data.display()),
    );
    let env_listen = format!("127.0.0.1:{p2}");
    let flag_listen = format!("127.0.0.1:{p3}");
    coordinator_serves_on(tmp.path(), &["--config", &file], &[], p1);
    coordinator_serves_on(
        tmp.path(),
        &[],
        &[("ANNEXMESH_CONFIG", &file), ("ANNEXMESH_COORDINATOR_LISTEN", &env_listen)],
        p2,
    );
    coordinator_serves_on(
        tmp.path(),
        &["--config", &file, "--listen", &flag_listen],
        &[("ANNEXMESH_COORDINATOR_LISTEN", &env_listen)],
        p3,
    );
}

#[test]
fn completions_for_every_shell() {
    let (ok, bash, err) = run(&["completions", "bash"], &[]);
    assert!(ok, "{err}");
    for word in ["coordinator", "agent", "gateway", "admin", "up", "completions", "--p2p-tls-cert"]
    {
        assert!(bash.contains(word), "bash completions lack {word}");
    }
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let (ok, out, err) = run(&["completions", shell], &[]);
        assert!(ok && out.contains("gateway"), "{shell}: {err}");
    }
    let (ok, _, err) = run(&["completions", "tcsh"], &[]);
    assert!(!ok && err.contains("tcsh"), "{err}");
}

#[test]
fn man_pages_are_roff_and_name_every_role() {
    let (ok, page, err) = run(&["man"], &[]);
    assert!(ok, "{err}");
    assert!(page.lines().any(|l| l.starts_with(".TH annexmesh 1")), "not a man page:\n{page}");
    for role in ["coordinator", "agent", "gateway", "admin", "up", "completions", "man"] {
        assert!(page.contains(role), "the man page does not name {role}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("man1");
    let (ok, listed, err) = run(&["man", dir.to_str().unwrap()], &[]);
    assert!(ok, "{err}");
    for name in
        ["annexmesh.1", "annexmesh-gateway.1", "annexmesh-admin.1", "annexmesh-admin-node-drain.1"]
    {
        let path = dir.join(name);
        assert!(listed.contains(path.to_str().unwrap()), "{name} not listed:\n{listed}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(".TH "), "{name}");
    }
    let gateway = std::fs::read_to_string(dir.join("annexmesh-gateway.1")).unwrap();
    assert!(
        gateway.contains("ANNEXMESH_P2P_TLS_CERT"),
        "the gateway page lacks its environment variables"
    );
}

#[test]
fn an_agent_on_every_address_needs_advertise() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let port = free_port().to_string();
    for listen in [format!("0.0.0.0:{port}"), format!("[::]:{port}")] {
        let (ok, _, err) = run(
            &[
                "agent",
                "--coordinator",
                "http://127.0.0.1:1",
                "--insecure",
                "--listen",
                &listen,
                "--store",
                store.to_str().unwrap(),
                "--name",
                "n1",
                "--cluster",
                "c",
            ],
            &[],
        );
        assert!(!ok, "an agent on {listen} started without --advertise");
        assert!(err.contains("--advertise URL") && err.contains("every address"), "{err}");
    }
}

#[test]
fn version_names_the_commit_built() {
    let out = annexmesh().arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{version}");
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    assert!(!head.is_empty(), "not built from a git checkout");
    assert_eq!(version.trim(), format!("annexmesh {} ({head})", env!("CARGO_PKG_VERSION")));
}
