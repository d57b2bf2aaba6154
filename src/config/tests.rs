use std::ffi::OsString;

use super::*;

fn argv(words: &[&str]) -> Vec<OsString> {
    words.iter().map(OsString::from).collect()
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
    f
}

/// Parses `words` with `text` as the gateway's config file.
fn gateway(text: &str, words: &[&str]) -> Result<crate::gateway::GatewayConfig, String> {
    let f = file(text);
    let path = f.path().to_str().unwrap().to_string();
    let mut all = vec!["annexmesh", "gateway", "--config", &path];
    all.extend_from_slice(words);
    let args = argv(&all);
    let parsed = parse(&args, None).map_err(|e| e.to_string())?;
    match Cli::from_arg_matches(&parsed.matches).map_err(|e| e.to_string())?.role {
        cli::Role::Gateway(g) => Ok(g.role),
        other => panic!("{other:?}"),
    }
}

#[test]
fn file_values_fill_in_and_flags_win() {
    let text = "coordinator = [\"https://a:7400\", \"https://b:7400\"]\nhttp = \"0.0.0.0:8080\"\nwideopen = true\nhttp-max-connections = 7\ntrusted-proxy = [\"10.0.0.0/8\", \"192.168.1.1\"]\n";
    let g = gateway(text, &[]).unwrap();
    assert_eq!(g.coordinator, "https://a:7400,https://b:7400");
    assert_eq!(g.http.to_string(), "0.0.0.0:8080");
    assert!(g.http_args.wideopen);
    assert_eq!(g.http_args.http_max_connections, 7);
    assert_eq!(g.http_args.trusted_proxy.len(), 2);
    let g = gateway(text, &["--http", "127.0.0.1:1"]).unwrap();
    assert_eq!(g.http.to_string(), "127.0.0.1:1");
    // A default the file does not touch stays.
    assert_eq!(g.http_args.max_locks, crate::gateway::http::DEFAULT_MAX_LOCKS);
}

#[test]
fn unknown_keys_are_refused_with_the_nearest() {
    let e = gateway("coordinator = \"https://a:1\"\nhtp = \"0.0.0.0:1\"\n", &[]).unwrap_err();
    assert!(e.contains("unknown key `htp`"), "{e}");
    assert!(e.contains("`http`"), "{e}");
    assert!(e.contains("annexmesh gateway --help"), "{e}");
    // --config itself and positionals are not keys.
    let e = gateway("config = \"x\"\n", &[]).unwrap_err();
    assert!(e.contains("unknown key `config`"), "{e}");
}

#[test]
fn malformed_toml_names_line_and_column() {
    let e = gateway("coordinator = \"https://a:1\"\nhttp = 0.0.0.0:1\n", &[]).unwrap_err();
    assert!(e.contains(":2:"), "{e}");
    assert!(e.contains("not valid TOML"), "{e}");
}

#[test]
fn bad_values_name_the_key() {
    let e = gateway("coordinator = \"https://a:1\"\nhttp = { a = 1 }\n", &[]).unwrap_err();
    assert!(e.contains("key `http`"), "{e}");
    let e = gateway("coordinator = \"https://a:1\"\nhttp = \"nonsense\"\n", &[]).unwrap_err();
    assert!(e.contains("nonsense"), "{e}");
    let e = gateway("coordinator = \"https://a:1\"\nwideopen = \"yes\"\n", &[]).unwrap_err();
    assert!(e.contains("key `wideopen`: a switch takes true or false"), "{e}");
}

#[test]
fn the_role_and_its_file_are_found_past_global_flags() {
    let cmd = cli::command();
    let words = ["annexmesh", "--log-format", "json", "agent", "--name", "x", "--config=/f"];
    let (role, at, file) = find_role(&cmd, &argv(&words)).unwrap();
    assert_eq!((role.as_str(), at, file.unwrap().to_str().unwrap()), ("agent", 3, "/f"));
    let (_, _, file) = find_role(&cmd, &argv(&["annexmesh", "up", "--config", "/g"])).unwrap();
    assert_eq!(file.unwrap().to_str(), Some("/g"));
    assert!(find_role(&cmd, &argv(&["annexmesh", "shell", "--config", "x"])).is_none());
}

#[test]
fn nearest_keys() {
    let keys = ["http", "p2p", "http-tls-cert", "coordinator"];
    assert_eq!(nearest("htp", keys.into_iter()), ["http"]);
    assert_eq!(nearest("coordinatr", keys.into_iter()), ["coordinator"]);
    assert!(nearest("zzzzzzzz", keys.into_iter()).is_empty());
}

#[test]
fn file_values_are_checked_as_flags_are() {
    // --p2p-tls-cert requires --p2p-tls-key, from a file as on the command line.
    let e = gateway("coordinator = \"https://a:1\"\np2p-tls-cert = \"/c\"\n", &[]).unwrap_err();
    assert!(e.contains("--p2p-tls-key"), "{e}");
    let g =
        gateway("coordinator = \"https://a:1\"\np2p-tls-cert = \"/c\"\n", &["--p2p-tls-key", "/k"])
            .unwrap();
    assert_eq!(g.p2p_tls_cert.unwrap().to_str(), Some("/c"));
    // A switch set to false in the file stays off; the file cannot
    // conflict with a flag silently.
    let g =
        gateway("coordinator = \"https://a:1\"\nwideopen = false\n", &["--auth-users"]).unwrap();
    assert!(!g.http_args.wideopen && g.http_args.auth_users);
    let e =
        gateway("coordinator = \"https://a:1\"\nwideopen = true\n", &["--auth-users"]).unwrap_err();
    assert!(e.contains("cannot be used with"), "{e}");
}

#[test]
fn admin_takes_its_connection_from_the_file() {
    let f = file("coordinator = [\"https://a:1\", \"https://b:1\"]\ninsecure = true\n");
    let path = f.path().to_str().unwrap().to_string();
    let args = argv(&["annexmesh", "admin", "--config", &path, "node", "list", "--cluster", "c"]);
    let parsed = parse(&args, None).unwrap();
    match Cli::from_arg_matches(&parsed.matches).unwrap().role {
        cli::Role::Admin(a) => {
            assert_eq!(a.role.connect.coordinator, "https://a:1,https://b:1");
            assert!(a.role.connect.insecure);
        }
        other => panic!("{other:?}"),
    }
}
