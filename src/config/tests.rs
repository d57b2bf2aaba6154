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
    let loaded = load(cli::command(), &args, None).map_err(|e| e.to_string())?;
    let m = loaded.command.try_get_matches_from(&args).map_err(|e| e.to_string())?;
    match Cli::from_arg_matches(&m).map_err(|e| e.to_string())?.role {
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
}

#[test]
fn the_role_is_found_past_global_flags() {
    let cmd = cli::command();
    let (role, file) =
        find_role(&cmd, &argv(&["annexmesh", "agent", "--name", "x", "--config=/f"])).unwrap();
    assert_eq!((role.as_str(), file.unwrap().to_str().unwrap()), ("agent", "/f"));
    assert!(find_role(&cmd, &argv(&["annexmesh", "shell", "--config", "x"])).is_none());
}

#[test]
fn nearest_keys() {
    let keys = ["http", "p2p", "http-tls-cert", "coordinator"];
    assert_eq!(nearest("htp", keys.into_iter()), ["http"]);
    assert_eq!(nearest("coordinatr", keys.into_iter()), ["coordinator"]);
    assert!(nearest("zzzzzzzz", keys.into_iter()).is_empty());
}
