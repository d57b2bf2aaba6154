//! The binary as git-annex runs it: git-annex-p2p-annexmesh and
//! git-annex-shell (annexmesh p2p-relay / shell), against a fake gateway
//! that accepts one connection on 127.0.0.1.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_annexmesh");
const REPO_UUID: &str = "5c2f9a34-1111-4222-8333-944445555666";
const CLIENT: &str = "0b1c3a3e-2b1f-4c53-9d1e-6f7a2f2f0a11";
const NIL: &str = "00000000-0000-0000-0000-000000000000";

/// A command with none of the variables these programs read inherited from
/// the test's own environment.
fn command(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    for v in [
        "ANNEXMESH_P2P",
        "ANNEXMESH_TOKEN",
        "ANNEXMESH_TOKEN_FILE",
        "SSH_ORIGINAL_COMMAND",
        "GIT_ANNEX_SHELL_READONLY",
        "GIT_ANNEX_SHELL_APPENDONLY",
        "GIT_ANNEX_SHELL_DIRECTORY",
    ] {
        c.env_remove(v);
    }
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

fn shell(port: u16, args: &[&str]) -> Command {
    let mut c = command(BIN, &[&["shell"], args].concat());
    c.env("ANNEXMESH_P2P", format!("127.0.0.1:{port}")).env("ANNEXMESH_TOKEN", "tok");
    c
}

/// Run with all of `input` on stdin, then EOF; give up after a minute.
fn run(mut c: Command, input: &[u8]) -> Output {
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = thread::spawn(move || {
        // The program may exit without reading it all; that is not our test.
        let _ = stdin.write_all(&input);
    });
    let out = wait_output(child, Duration::from_secs(60));
    feeder.join().unwrap();
    out
}

fn wait_output(mut child: Child, limit: Duration) -> Output {
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut v = Vec::new();
        stdout.read_to_end(&mut v).unwrap();
        v
    });
    let err = thread::spawn(move || {
        let mut v = Vec::new();
        stderr.read_to_end(&mut v).unwrap();
        v
    });
    let status = wait(&mut child, limit);
    Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

fn wait(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("program still running after {limit:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A gateway serving one connection with `serve`; its port.
fn gateway<T: Send + 'static>(
    serve: impl FnOnce(BufReader<TcpStream>, TcpStream) -> T + Send + 'static,
) -> (u16, JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let reader = BufReader::new(sock.try_clone().unwrap());
        serve(reader, sock)
    });
    (port, handle)
}

fn line(r: &mut BufReader<TcpStream>) -> String {
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    l
}

fn rest(r: &mut BufReader<TcpStream>) -> Vec<u8> {
    let mut v = Vec::new();
    r.read_to_end(&mut v).unwrap();
    v
}

/// Expect the preamble and AUTH, answer, then take whatever the client
/// sends until it is done.
fn authenticating_gateway(
    preamble: &str,
    auth: &str,
    answer: &'static str,
) -> (u16, JoinHandle<Vec<u8>>) {
    let (preamble, auth) = (preamble.to_owned(), auth.to_owned());
    gateway(move |mut r, mut w| {
        assert_eq!(line(&mut r), preamble);
        assert_eq!(line(&mut r), auth);
        w.write_all(answer.as_bytes()).unwrap();
        if answer.starts_with("AUTH-SUCCESS") { rest(&mut r) } else { Vec::new() }
    })
}

fn unused_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn links() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN).arg("install-links").arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let p2p = dir.path().join("git-annex-p2p-annexmesh");
    let sh = dir.path().join("git-annex-shell");
    (dir, p2p, sh)
}

#[test]
fn relay_carries_8_mib_each_way_after_the_preamble() {
    const LEN: usize = 8 << 20;
    let up = pattern(LEN, 1);
    let down = pattern(LEN, 2);
    let down_sent = down.clone();
    let (port, gw) = gateway(move |mut r, mut w| {
        assert_eq!(line(&mut r), "ANNEXMESH repo=mesh\n");
        // Send while receiving: neither direction may wait for the other.
        let sender = thread::spawn(move || {
            w.write_all(&down_sent).unwrap();
            w
        });
        let got = rest(&mut r);
        // Close only once the client is done, so nothing of its is cut off.
        sender.join().unwrap().shutdown(Shutdown::Both).unwrap();
        got
    });
    let (_dir, p2p, _) = links();
    let out = run(command(&p2p, &[&format!("127.0.0.1:{port}/mesh")]), &up);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout == down, "gateway-to-client bytes differ ({} bytes)", out.stdout.len());
    assert!(gw.join().unwrap() == up, "client-to-gateway bytes differ");
}

#[test]
fn relay_without_a_name_sends_no_preamble() {
    let (port, gw) = gateway(|mut r, mut w| {
        let first = line(&mut r);
        w.write_all(format!("AUTH-SUCCESS {REPO_UUID}\n").as_bytes()).unwrap();
        rest(&mut r);
        first
    });
    let auth = format!("AUTH {CLIENT} tok\n");
    let out = run(command(BIN, &["p2p-relay", &format!("127.0.0.1:{port}")]), auth.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("AUTH-SUCCESS {REPO_UUID}\n"));
    assert_eq!(gw.join().unwrap(), auth);
}

#[test]
fn relay_exits_0_when_the_gateway_closes_while_stdin_is_open() {
    let (port, gw) = gateway(|mut r, mut w| {
        line(&mut r);
        w.write_all(b"AUTH-FAILURE\n").unwrap();
    });
    let mut child =
        command(BIN, &["p2p-relay", &format!("127.0.0.1:{port}/mesh")]).spawn().unwrap();
    // Keep stdin open throughout.
    let _stdin = child.stdin.take().unwrap();
    let out = wait_output(child, Duration::from_secs(30));
    gw.join().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"AUTH-FAILURE\n");
}

#[test]
fn relay_fails_when_the_gateway_is_unreachable() {
    let port = unused_port();
    let out = run(command(BIN, &["p2p-relay", &format!("127.0.0.1:{port}/mesh")]), b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot connect to the annexmesh gateway"), "{}", stderr(&out));
    let out = run(command(BIN, &["p2p-relay", "no-port/mesh"]), b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("bad gateway address"), "{}", stderr(&out));
}

#[test]
fn relay_does_not_listen() {
    let (_dir, p2p, _) = links();
    for args in [&["address"][..], &["127.0.0.1:9418/mesh", "/tmp/socket"]] {
        let out = run(command(&p2p, args), b"");
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains("reached as clients only"), "{}", stderr(&out));
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn install_links_replaces_links_but_not_files() {
    let (dir, p2p, sh) = links();
    let exe = std::fs::canonicalize(BIN).unwrap();
    for l in [&p2p, &sh] {
        assert_eq!(std::fs::canonicalize(l).unwrap(), exe);
    }
    // Again: the links are replaced.
    let out = Command::new(BIN).arg("install-links").arg(dir.path()).output().unwrap();
    assert!(out.status.success());
    std::fs::remove_file(&sh).unwrap();
    std::fs::write(&sh, "keep me").unwrap();
    let out = Command::new(BIN).arg("install-links").arg(dir.path()).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a symlink"));
    assert_eq!(std::fs::read(&sh).unwrap(), b"keep me");
}

#[test]
fn configlist_reports_the_repository_uuid() {
    let (port, gw) = authenticating_gateway(
        "ANNEXMESH repo=mesh\n",
        &format!("AUTH {NIL} tok\n"),
        "AUTH-SUCCESS 5c2f9a34-1111-4222-8333-944445555666\n",
    );
    let out = run(
        shell(port, &["-c", "git-annex-shell 'configlist' '/~/mesh.git' -- 'autoinit=1' --"]),
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("annex.uuid={REPO_UUID}\ncore.gcrypt-id=\n")
    );
    assert!(gw.join().unwrap().is_empty());
}

#[test]
fn configlist_refusals_exit_1() {
    for (answer, says) in [
        ("AUTH-FAILURE\n", "AUTH-FAILURE"),
        ("ERROR no such repository\n", "no such repository"),
        ("", "closed the connection"),
    ] {
        let (port, gw) =
            authenticating_gateway("ANNEXMESH repo=mesh\n", &format!("AUTH {NIL} tok\n"), answer);
        let out = run(shell(port, &["configlist", "/mesh"]), b"");
        gw.join().unwrap();
        assert_eq!(out.status.code(), Some(1), "{answer:?}");
        assert!(stderr(&out).contains(says), "{answer:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn p2pstdio_under_forcecommand_relays_after_auth_success() {
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("shell-token");
    std::fs::write(&token_file, "Tok\n").unwrap();
    let (port, gw) = gateway(|mut r, mut w| {
        assert_eq!(line(&mut r), "ANNEXMESH repo=mesh mode=readonly\n");
        assert_eq!(line(&mut r), format!("AUTH {CLIENT} tok\n"));
        w.write_all(format!("AUTH-SUCCESS {REPO_UUID}\n").as_bytes()).unwrap();
        assert_eq!(line(&mut r), "VERSION 1\n");
        w.write_all(b"VERSION 1\n").unwrap();
        rest(&mut r)
    });
    let (_dir, _, sh) = links();
    let mut c = command(&sh, &[]);
    c.env("ANNEXMESH_P2P", format!("127.0.0.1:{port}"))
        .env("ANNEXMESH_TOKEN_FILE", &token_file)
        .env("GIT_ANNEX_SHELL_READONLY", "1")
        .env("GIT_ANNEX_SHELL_DIRECTORY", "/srv/annex/mesh")
        .env(
            "SSH_ORIGINAL_COMMAND",
            format!("git-annex-shell 'p2pstdio' '/~/mesh' '{CLIENT}' --uuid {REPO_UUID}"),
        );
    let out = run(c, b"VERSION 1\nBYE");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("AUTH-SUCCESS {REPO_UUID}\nVERSION 1\n")
    );
    assert_eq!(gw.join().unwrap(), b"BYE");
}

#[test]
fn p2pstdio_refuses_an_unexpected_repository() {
    let other = "11111111-2222-3333-4444-555555555555";
    // The shell asks for the repository by the UUID git-annex expects (a
    // cluster's node is reached through the cluster's path that way), and
    // refuses a gateway that answers for another.
    let (port, gw) = authenticating_gateway(
        &format!("ANNEXMESH repo={other} mode=appendonly\n"),
        &format!("AUTH {CLIENT} tok\n"),
        "AUTH-SUCCESS 5c2f9a34-1111-4222-8333-944445555666\n",
    );
    let line = format!("git-annex-shell 'p2pstdio' '/mesh' '--uuid' '{other}' '{CLIENT}'");
    let mut c = shell(port, &["-c", &line]);
    c.env("GIT_ANNEX_SHELL_APPENDONLY", "1");
    let out = run(c, b"VERSION 1\n");
    gw.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("expected repository UUID {other} but found {REPO_UUID}")),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn p2pstdio_auth_failure_exits_1() {
    let (port, gw) = authenticating_gateway(
        "ANNEXMESH repo=node1\n",
        &format!("AUTH {CLIENT} tok\n"),
        "AUTH-FAILURE\n",
    );
    let out = run(shell(port, &["p2pstdio", "/node1/", CLIENT]), b"");
    gw.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("AUTH-FAILURE"), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
}

#[test]
fn shell_errors_without_a_gateway() {
    let port = unused_port();
    let out = run(shell(port, &["p2pstdio", "/mesh", CLIENT]), b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));
}

#[test]
fn shell_refuses_what_it_does_not_serve() {
    let port = unused_port();
    for args in [&["sendkey", "/mesh", "SHA256E-s1--00"][..], &["-c", "git-upload-archive '/mesh'"]]
    {
        let out = run(shell(port, args), b"");
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out)
                .contains("only configlist, p2pstdio, git-upload-pack and git-receive-pack"),
            "{}",
            stderr(&out)
        );
    }
    let out = run(shell(port, &["configlist", "/srv/mesh"]), b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not name an annexmesh repository"), "{}", stderr(&out));

    let mut c = shell(port, &["configlist", "/other"]);
    c.env("GIT_ANNEX_SHELL_DIRECTORY", "/srv/mesh.git");
    let out = run(c, b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("Only allowed to access"), "{}", stderr(&out));

    let mut c = command(BIN, &["shell", "configlist", "/mesh"]);
    c.env("ANNEXMESH_P2P", format!("127.0.0.1:{port}"))
        .env("ANNEXMESH_TOKEN_FILE", Path::new("/nonexistent/token"));
    let out = run(c, b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot read token file"), "{}", stderr(&out));
}

/// A gateway that serves any number of connections, one at a time: it
/// records each preamble and AUTH, accepts them, agrees to protocol version
/// 1 and says every key is present.
fn protocol_gateway() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    thread::spawn(move || {
        for sock in listener.incoming() {
            let mut w = sock.unwrap();
            let mut r = BufReader::new(w.try_clone().unwrap());
            let hello = line(&mut r) + &line(&mut r);
            record.lock().unwrap().push(hello);
            let _ = w.write_all(format!("AUTH-SUCCESS {REPO_UUID}\n").as_bytes());
            loop {
                let l = line(&mut r);
                let answer = match l.split(' ').next().unwrap_or_default().trim_end() {
                    "" => break,
                    "VERSION" => "VERSION 1\n",
                    "CHECKPRESENT" => "SUCCESS\n",
                    _ => "ERROR not in this fake gateway\n",
                };
                if w.write_all(answer.as_bytes()).is_err() {
                    break;
                }
            }
        }
    });
    (port, seen)
}

/// The real git-annex links to a gateway with `git annex p2p --link`, and
/// reaches one through an ssh remote whose server runs `annexmesh shell`
/// (ssh itself is faked by a script that runs the remote command locally,
/// as sshd's ForceCommand would).
#[test]
fn git_annex_reaches_the_gateway_by_p2p_link_and_by_ssh() {
    let (port, seen) = protocol_gateway();
    let client = common::Client::new();
    let bin = client.path().join("bin");
    let out = Command::new(BIN).arg("install-links").arg(&bin).output().unwrap();
    assert!(out.status.success());
    std::fs::write(
        bin.join("ssh"),
        "#!/bin/sh\nfor a; do last=$a; done\nSSH_ORIGINAL_COMMAND=$last exec \"$(dirname \"$0\")/git-annex-shell\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("ssh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = std::env::join_paths(
        [bin, common::git_annex_bin_dir()]
            .into_iter()
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .unwrap();
    let run = |args: &[&str], input: &str| {
        let mut c = client.command(args);
        c.env("PATH", &path)
            .env("ANNEXMESH_P2P", format!("127.0.0.1:{port}"))
            .env("ANNEXMESH_TOKEN", "tok")
            .env_remove("ANNEXMESH_TOKEN_FILE")
            .env_remove("SSH_ORIGINAL_COMMAND")
            .env_remove("GIT_ANNEX_SHELL_READONLY")
            .env_remove("GIT_ANNEX_SHELL_APPENDONLY")
            .env_remove("GIT_ANNEX_SHELL_DIRECTORY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = run(c, input.as_bytes());
        assert!(
            out.status.success(),
            "{args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
        String::from_utf8(out.stdout).unwrap()
    };

    let address = format!("p2p-annex::annexmesh:127.0.0.1:{port}/mesh:Tok\n");
    run(&["git", "annex", "p2p", "--link", "--name", "mesh"], &address);
    assert_eq!(run(&["git", "config", "remote.mesh.annex-uuid"], "").trim(), REPO_UUID);
    std::fs::write(client.path().join("f"), "hello\n").unwrap();
    run(&["git", "annex", "add", "f"], "");
    let key = run(&["git", "annex", "lookupkey", "f"], "");
    run(&["git", "annex", "checkpresentkey", key.trim(), "mesh"], "");

    run(&["git", "remote", "add", "sshmesh", "ssh://annex@gateway.invalid/~/mesh"], "");
    run(&["git", "config", "annex.sshcaching", "false"], "");
    run(&["git", "annex", "checkpresentkey", key.trim(), "sshmesh"], "");
    assert_eq!(run(&["git", "config", "remote.sshmesh.annex-uuid"], "").trim(), REPO_UUID);

    let seen = seen.lock().unwrap().clone();
    let preamble = "ANNEXMESH repo=mesh\n";
    // Over ssh, p2pstdio asks for the repository git-annex expects by its
    // UUID (`--uuid`), as it reaches a cluster's nodes.
    let by_uuid = format!("ANNEXMESH repo={REPO_UUID}\n");
    assert!(seen.iter().all(|h| h.starts_with(preamble) || h.starts_with(&by_uuid)), "{seen:?}");
    assert!(seen.iter().any(|h| h.starts_with(&by_uuid)), "{seen:?}");
    // configlist asks on behalf of no repository; the others are the client.
    assert!(seen.contains(&format!("{preamble}AUTH {NIL} tok\n")), "{seen:?}");
    assert!(seen.iter().filter(|h| !h.contains(NIL)).count() >= 3, "{seen:?}");
}
