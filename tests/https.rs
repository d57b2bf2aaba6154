//! The real git-annex over `https://` with basic auth from git's credential
//! store, and `/NAME/config` behind a TLS-terminating proxy.

mod common;

use std::path::{Path, PathBuf};

use common::{Client, Mesh, objects_named};

/// A test CA and a certificate for 127.0.0.1 it signed: (ca.pem, cert, key).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "annexmesh test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let paths = (dir.join("ca.pem"), dir.join("gateway.pem"), dir.join("gateway.key"));
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    (paths.0, paths.1, paths.2)
}

/// A client that trusts `ca` and finds `user`'s password for `url`'s host in
/// a git credential store file.
fn client_with_credentials(ca: &Path, url: &str, user: &str, password: &str) -> Client {
    with_credentials(Client::new(), ca, url, user, password)
}

fn with_credentials(mut client: Client, ca: &Path, url: &str, user: &str, pw: &str) -> Client {
    let password = pw;
    // git-annex takes extra roots from git's http.sslCAInfo / GIT_SSL_CAINFO.
    client.env.push(("GIT_SSL_CAINFO".into(), ca.display().to_string()));
    let store = client.path().join(".git").join("test-credentials");
    let (scheme, host) = url.split_once("://").unwrap();
    std::fs::write(&store, format!("{scheme}://{user}:{password}@{host}\n")).unwrap();
    client.ok(&[
        "git",
        "config",
        "credential.helper",
        &format!("store --file={}", store.display()),
    ]);
    client
}

/// A mesh whose gateway checks users and serves HTTPS; the directory with
/// its certificates (kept while in use) and the CA clients must trust.
fn https_mesh() -> (Mesh, tempfile::TempDir, PathBuf) {
    let mut mesh = Mesh::separate(3);
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(certs.path());
    mesh.restart_gateway_with(&[
        "--auth-users",
        "--http-tls-cert",
        cert.to_str().unwrap(),
        "--http-tls-key",
        key.to_str().unwrap(),
    ]);
    (mesh, certs, ca)
}

#[test]
fn git_annex_over_https_with_credentials_from_the_store() {
    let (mesh, _certs, ca) = https_mesh();
    let password = mesh.user("alice", &[]);
    let url = format!("https://{}", mesh.http);
    let client = client_with_credentials(&ca, &url, "alice", &password);
    client.add_remote("mesh", &format!("{url}/mesh"));

    let (data, key) = client.annex_file("big.bin", 5 * 1024 * 1024, 3);
    client.ok(&["git", "annex", "copy", "--to", "mesh", "big.bin"]);
    let annexurl = client.ok(&["git", "config", "remote.mesh.annexurl"]);
    assert_eq!(annexurl.trim(), format!("annex+https://{}/git-annex/", mesh.http));
    let stores = mesh.assert_held_everywhere(&key, &data);
    client.ok(&["git", "annex", "drop", "big.bin"]);
    client.ok(&["git", "annex", "get", "--from", "mesh", "big.bin"]);
    assert_eq!(std::fs::read(client.path().join("big.bin")).unwrap(), data);
    client.ok(&["git", "annex", "drop", "--from", "mesh", "big.bin"]);
    for s in &stores {
        assert!(objects_named(s, &key).is_empty(), "{} still holds {key}", s.display());
    }

    let report = common::testremote(&client, "mesh");
    // git-annex fails these three against any P2P over HTTP server, its
    // own included (see tests/e2e_http.rs).
    assert!(report.failed.len() <= 3, "{}", report.output);
    for f in &report.failed {
        assert!(f.starts_with("unavailable remote / "), "{f} failed:\n{}", report.output);
    }
}

#[test]
fn a_readonly_user_over_https_gets_but_cannot_copy() {
    let (mesh, _certs, ca) = https_mesh();
    let url = format!("https://{}", mesh.http);
    let rw = mesh.user("writer", &[]);
    let writer = client_with_credentials(&ca, &url, "writer", &rw);
    writer.add_remote("mesh", &format!("{url}/mesh"));
    let (data, _) = writer.annex_file("a.bin", 100_000, 4);
    writer.ok(&["git", "annex", "copy", "--to", "mesh", "a.bin"]);

    let ro = mesh.user("reader", &["--readonly"]);
    let reader = with_credentials(Client::clone_of(&writer), &ca, &url, "reader", &ro);
    reader.add_remote("mesh", &format!("{url}/mesh"));
    reader.ok(&["git", "annex", "get", "--from", "mesh", "a.bin"]);
    assert_eq!(std::fs::read(reader.path().join("a.bin")).unwrap(), data);
    let (_, b_key) = reader.annex_file("b.bin", 1000, 5);
    let out = reader.run(&["git", "annex", "copy", "--to", "mesh", "b.bin"]);
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("readonly copy: {err}");
    assert!(!out.status.success(), "a readonly user stored content");
    for s in mesh.node_stores() {
        assert!(objects_named(&s, &b_key).is_empty(), "{} holds {b_key}", s.display());
    }
}

#[test]
fn config_names_https_only_for_trusted_proxies() {
    let mut mesh = Mesh::separate(1);
    mesh.restart_gateway_with(&["--wideopen", "--trusted-proxy", "10.9.9.9,127.0.0.0/8"]);
    let url = format!("{}/mesh/config", mesh.url());
    let config = |headers: &[(&str, &str)]| common::http_get_with(&url, headers).unwrap().1;
    assert!(config(&[]).contains(&format!("url = annex+http://{}/git-annex/", mesh.http)));
    let behind = config(&[("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "annex.example")]);
    assert!(behind.contains("url = annex+https://annex.example:443/git-annex/"), "{behind}");
    let behind = config(&[("Forwarded", "proto=https;host=annex.example:8443")]);
    assert!(behind.contains("url = annex+https://annex.example:8443/git-annex/"), "{behind}");

    // From an address that is not a trusted proxy, the headers count for nothing.
    mesh.restart_gateway_with(&["--wideopen", "--trusted-proxy", "10.9.9.9"]);
    let direct = config(&[("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "evil.example")]);
    assert!(direct.contains(&format!("url = annex+http://{}/git-annex/", mesh.http)), "{direct}");
}

#[test]
fn up_serves_https_and_its_printed_recipe_works() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let http = format!("127.0.0.1:{}", common::free_port());
    let data = dir.path().join("data");
    let _up = common::Proc::spawn(
        "up",
        common::annexmesh()
            .arg("up")
            .args(common::store_args(&common::test_store()))
            .arg("--data")
            .arg(&data)
            .args(["--http", &http])
            .args(["--coordinator-listen", &format!("127.0.0.1:{}", common::free_port())])
            .args(["--p2p", &format!("127.0.0.1:{}", common::free_port())])
            .arg("--http-tls-cert")
            .arg(&cert)
            .arg("--http-tls-key")
            .arg(&key),
        dir.path(),
    );
    let log = dir.path().join("up.log");
    common::wait_until("up to print its recipe", std::time::Duration::from_secs(60), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("Stop with Ctrl-C"))
    });
    let printed = std::fs::read_to_string(&log).unwrap();
    let recipe: Vec<&str> = printed
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.starts_with("git remote add")
                || l.starts_with("git config")
                || l.starts_with("git annex pull")
        })
        .collect();
    assert_eq!(recipe.len(), 4, "{printed}");
    assert_eq!(recipe[0], format!("git remote add mesh https://{http}/mesh"));
    let credentials = std::fs::read_to_string(data.join("git-credentials")).unwrap();
    assert!(credentials.starts_with("https://annexmesh:"), "{credentials}");

    // The printed lines for a repository one has, as a user runs them.
    let mut client = Client::new();
    client.env.push(("GIT_SSL_CAINFO".into(), ca.display().to_string()));
    for line in &recipe {
        let args = shlex::split(line).unwrap();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        client.ok(&args);
    }
    let (content, _) = client.annex_file("f.bin", 200_000, 6);
    client.ok(&["git", "annex", "copy", "--to", "mesh", "f.bin"]);
    client.ok(&["git", "annex", "drop", "f.bin"]);
    client.ok(&["git", "annex", "get", "--from", "mesh", "f.bin"]);
    assert_eq!(std::fs::read(client.path().join("f.bin")).unwrap(), content);
    client.ok(&["git", "annex", "sync", "mesh"]);

    // The printed clone, run by a shell as a user pastes it, then a get of
    // what the other repository stored.
    let clone: String = {
        let mut lines = printed.lines().map(str::trim).skip_while(|l| !l.starts_with("git clone"));
        let first = lines.next().unwrap_or_else(|| panic!("no clone in {printed}"));
        let second = lines.next().unwrap();
        format!("{} {second}", first.trim_end_matches('\\'))
    };
    assert!(clone.contains(&format!("https://{http}/mesh")), "{clone}");
    let mut cloner = Client::new_uninit();
    cloner.env.push(("GIT_SSL_CAINFO".into(), ca.display().to_string()));
    cloner.ok(&["sh", "-c", &clone]);
    cloner.ok(&["git", "-C", "mesh", "annex", "get", "f.bin"]);
    assert_eq!(std::fs::read(cloner.path().join("mesh/f.bin")).unwrap(), content);
}
