//! Who may do what over P2P over HTTP: users with readwrite, readonly and
//! appendonly access, anonymous access as the operator chose it, and the
//! answers git-annex's own server gives (401 with its realm, 403).

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Mesh, annexmesh, basic_auth, free_port, objects_named};

const CLIENT: &str = "0a1b2c3d-0000-4000-8000-000000000002";

/// An answer: status, `WWW-Authenticate` and `Retry-After`, body.
#[derive(Debug)]
struct Answer {
    status: u16,
    realm: Option<String>,
    retry_after: Option<String>,
    body: Vec<u8>,
}

/// A request with optional basic-auth credentials.
fn request(method: &str, url: &str, auth: Option<(&str, &str)>, body: Option<&[u8]>) -> Answer {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let auth = auth.map(|(u, p)| basic_auth(&format!("{u}:{p}")));
    let r = match method {
        "GET" => {
            let mut req = agent.get(url);
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            req.call()
        }
        _ => {
            let body = body.unwrap_or_default();
            let mut req = agent.post(url).header("X-git-annex-data-length", body.len().to_string());
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            req.send(body)
        }
    };
    let mut r = r.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let header = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_string());
    let (realm, retry_after) = (header("www-authenticate"), header("retry-after"));
    Answer {
        status: r.status().as_u16(),
        realm,
        retry_after,
        body: r.body_mut().read_to_vec().unwrap_or_default(),
    }
}

fn json(a: &Answer) -> serde_json::Value {
    serde_json::from_slice(&a.body)
        .unwrap_or_else(|e| panic!("{e}: {} {}", a.status, String::from_utf8_lossy(&a.body)))
}

struct Api {
    base: String,
}

impl Api {
    fn new(mesh: &Mesh) -> Api {
        Api { base: format!("{}/git-annex/{}/v4", mesh.url(), mesh.uuid_of("mesh")) }
    }
    fn put(&self, key: &str, data: &[u8], auth: Option<(&str, &str)>) -> Answer {
        let url = format!("{}/put?key={key}&clientuuid={CLIENT}", self.base);
        request("POST", &url, auth, Some(data))
    }
    fn remove(&self, key: &str, auth: Option<(&str, &str)>) -> Answer {
        let url = format!("{}/remove?key={key}&clientuuid={CLIENT}", self.base);
        request("POST", &url, auth, None)
    }
    fn get(&self, key: &str, auth: Option<(&str, &str)>) -> Answer {
        request("GET", &format!("{}/key/{key}?clientuuid={CLIENT}", self.base), auth, None)
    }
    fn checkpresent(&self, key: &str, auth: Option<(&str, &str)>) -> Answer {
        let url = format!("{}/checkpresent?key={key}&clientuuid={CLIENT}", self.base);
        request("POST", &url, auth, None)
    }
}

fn assert_needs_auth(a: &Answer, what: &str) {
    assert_eq!(a.status, 401, "{what}: {a:?}");
    assert_eq!(
        a.realm.as_deref(),
        Some("Basic realm=\"git-annex\", charset=\"UTF-8\""),
        "{what}: {a:?}"
    );
}

fn assert_stored_nowhere(mesh: &Mesh, key: &str) {
    for s in mesh.node_stores() {
        assert!(objects_named(&s, key).is_empty(), "{} holds {key}", s.display());
    }
}

/// Every file under `dir`.
fn files_under(dir: &Path) -> usize {
    let mut n = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(e.path());
            } else {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn users_may_do_what_their_mode_allows_and_anonymous_clients_nothing() {
    let mut mesh = Mesh::separate(3);
    // `uuid_of` reads /mesh/config, which will need credentials.
    let api = Api::new(&mesh);
    mesh.restart_gateway_with(&["--auth-users"]);
    let rw = mesh.user("writer", &[]);
    let ro = mesh.user("reader", &["--readonly"]);
    let ao = mesh.user("adder", &["--appendonly"]);
    let writer = Some(("writer", rw.as_str()));
    let reader = Some(("reader", ro.as_str()));
    let adder = Some(("adder", ao.as_str()));

    let kept = "WORM-s6-m1--kept";
    let a = api.put(kept, b"kept!!", writer);
    assert_eq!(json(&a)["stored"], true, "{a:?}");
    mesh.assert_held_everywhere(kept, b"kept!!");

    // Anonymous: 401 with git-annex's realm for everything; nothing changes.
    assert_needs_auth(&api.remove(kept, None), "anonymous remove");
    assert_needs_auth(&api.put("WORM-s4-m1--anon", b"anon", None), "anonymous put");
    assert_needs_auth(&api.get(kept, None), "anonymous get");
    assert_needs_auth(&api.checkpresent(kept, None), "anonymous checkpresent");
    let config = common::http_get(&format!("{}/mesh/config", mesh.url())).unwrap();
    assert_eq!(config.0, 401, "{config:?}");
    // Wrong passwords, and a user's password under another name, are no better.
    assert_needs_auth(&api.remove(kept, Some(("writer", "wrong"))), "a wrong password");
    assert_needs_auth(&api.remove(kept, Some(("reader", rw.as_str()))), "another's password");
    assert_stored_nowhere(&mesh, "WORM-s4-m1--anon");
    mesh.assert_held_everywhere(kept, b"kept!!");

    // Readonly: reads, but 403 for PUT and REMOVE.
    let a = api.get(kept, reader);
    assert_eq!((a.status, a.body.as_slice()), (200, &b"kept!!"[..]), "{a:?}");
    assert_eq!(json(&api.checkpresent(kept, reader))["present"], true);
    assert_eq!(api.put("WORM-s4-m1--ro", b"ro!!", reader).status, 403);
    assert_eq!(api.remove(kept, reader).status, 403);
    assert_stored_nowhere(&mesh, "WORM-s4-m1--ro");

    // Appendonly: stores, but 403 for REMOVE.
    let added = "WORM-s5-m1--added";
    assert_eq!(json(&api.put(added, b"added", adder))["stored"], true);
    mesh.assert_held_everywhere(added, b"added");
    assert_eq!(api.remove(kept, adder).status, 403);
    assert_eq!(api.remove(added, adder).status, 403);
    mesh.assert_held_everywhere(kept, b"kept!!");
    mesh.assert_held_everywhere(added, b"added");

    // A token without a user name works under any name.
    let token = mesh.token(&["--readonly"]);
    assert_eq!(api.get(kept, Some(("anyone", token.as_str()))).status, 200);

    // Readwrite removes; a removed user is refused once the cache expires.
    assert_eq!(json(&api.remove(added, writer))["removed"], true);
    assert_stored_nowhere(&mesh, added);
    mesh.admin_ok(&["user", "remove", "reader"]);
    let listed = mesh.admin_json(&["user", "list"]);
    let users: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["user"].as_str().unwrap(), u["mode"].as_str().unwrap()))
        .collect();
    assert!(users.contains(&("writer", "readwrite")), "{listed}");
    assert!(!users.iter().any(|(u, _)| *u == "reader"), "{listed}");
    common::wait_until("the removed user to be refused", Duration::from_secs(60), || {
        api.get(kept, reader).status == 401
    });
}

#[test]
fn anonymous_readonly_gets_and_nothing_else() {
    let mut mesh = Mesh::separate(3);
    let api = Api::new(&mesh);
    let key = "WORM-s6-m1--shared";
    assert_eq!(json(&api.put(key, b"shared", None))["stored"], true);

    mesh.restart_gateway_with(&["--unauth", "readonly"]);
    let a = api.get(key, None);
    assert_eq!((a.status, a.body.as_slice()), (200, &b"shared"[..]), "{a:?}");
    assert_eq!(common::http_get(&format!("{}/mesh/config", mesh.url())).unwrap().0, 200);
    // No users are checked here, so credentials could not help: 403.
    assert_eq!(api.put("WORM-s4-m1--anon", b"anon", None).status, 403);
    assert_eq!(api.remove(key, None).status, 403);
    assert_stored_nowhere(&mesh, "WORM-s4-m1--anon");
    mesh.assert_held_everywhere(key, b"shared");

    // With users too, the same refusal asks for credentials.
    mesh.restart_gateway_with(&["--unauth", "readonly", "--auth-users"]);
    assert_eq!(api.get(key, None).status, 200);
    assert_needs_auth(&api.remove(key, None), "anonymous remove");
    let pw = mesh.user("owner", &[]);
    assert_eq!(json(&api.remove(key, Some(("owner", pw.as_str()))))["removed"], true);
}

#[test]
fn wrong_passwords_are_throttled_per_address() {
    let mut mesh = Mesh::separate(1);
    let api = Api::new(&mesh);
    mesh.restart_gateway_with(&["--auth-users"]);
    let started = Instant::now();
    let mut throttled = None;
    for _ in 0..40 {
        let a = api.checkpresent("WORM-s1-m1--x", Some(("eve", "guess")));
        if a.status == 429 {
            throttled = Some(a);
            break;
        }
        assert_eq!(a.status, 401, "{a:?}");
    }
    let a = throttled.expect("40 wrong passwords in a row were never throttled");
    assert!(a.retry_after.as_deref().is_some_and(|s| s.parse::<u64>().is_ok()), "{a:?}");
    eprintln!("throttled after {:?}", started.elapsed());
}

#[test]
fn non_utf8_keys_are_refused_and_nothing_is_stored() {
    let mesh = Mesh::separate(2);
    let api = Api::new(&mesh);
    let before: usize = mesh.node_stores().iter().map(|s| files_under(s)).sum();
    for key in ["SHA256E-s4--%FF%FE%C3%28", "WORM-s4-m1--a%C3"] {
        let a = api.put(key, b"data", None);
        assert_eq!(a.status, 400, "{a:?}");
        let msg = String::from_utf8_lossy(&a.body);
        assert!(msg.contains("not UTF-8"), "{msg}");
        assert_eq!(api.checkpresent(key, None).status, 400);
    }
    // In the path too.
    assert_eq!(api.get("WORM-s4-m1--%FF%FE", None).status, 400);
    let after: usize = mesh.node_stores().iter().map(|s| files_under(s)).sum();
    assert_eq!(before, after, "a refused PUT left files in the stores");
    // A valid UTF-8 name that is not ASCII is still fine.
    let a = api.put("WORM-s4-m1--caf%C3%A9", b"data", None);
    assert_eq!(json(&a)["stored"], true, "{a:?}");
}

#[test]
fn a_gateway_without_an_access_choice_refuses_to_start() {
    let http = format!("127.0.0.1:{}", free_port());
    let mut child = annexmesh()
        .args(["gateway", "--coordinator", "http://127.0.0.1:9", "--http", &http])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the gateway started without an access choice");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "{err}");
    for flag in ["--auth-users", "--unauth readonly|appendonly", "--wideopen"] {
        assert!(err.contains(flag), "the error does not name {flag}: {err}");
    }
    assert!(std::net::TcpStream::connect(&http).is_err(), "it listened anyway");
}

#[test]
fn up_writes_its_users_credentials_once_and_the_recipe_line() {
    use std::os::unix::fs::PermissionsExt;
    let mut mesh = Mesh::up();
    let file = mesh.up_credentials();
    let line = std::fs::read_to_string(&file).unwrap();
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let prefix = "http://annexmesh:";
    let suffix = format!("@{}\n", mesh.http);
    assert!(line.starts_with(prefix) && line.ends_with(&suffix), "{line:?}");
    let log = std::fs::read_to_string(mesh.dir.path().join("up.log")).unwrap();
    let recipe = format!("git config credential.helper 'store --file={}'", file.display());
    assert!(log.contains(&recipe), "up did not print {recipe:?}:\n{log}");

    // A restart on the same data keeps the same user and password.
    mesh.proc("up").stop();
    let cport = mesh.coordinator.rsplit(':').next().unwrap().to_string();
    let p = common::Proc::spawn(
        "up-again",
        annexmesh()
            .arg("up")
            .args(common::store_args(&mesh.store))
            .arg("--data")
            .arg(mesh.dir.path().join("data"))
            .args(["--http", &mesh.http.to_string()])
            .args(["--coordinator-listen", &format!("127.0.0.1:{cport}")])
            .args(["--p2p", &mesh.p2p.to_string()]),
        mesh.dir.path(),
    );
    mesh.procs.push(p);
    mesh.wait_ready(3);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), line);
    let users = mesh.admin_json(&["user", "list"]);
    let named = users.as_array().unwrap().iter().filter(|u| u["user"] == "annexmesh").count();
    assert_eq!(named, 1, "{users}");
}
