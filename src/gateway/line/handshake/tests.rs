//! The handshake over an in-memory stream, with fake tokens and
//! repositories.

use std::sync::Mutex;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;

const CLIENT: &str = "11111111-2222-3333-4444-555555555555";
const SERVER: &str = "5c2f9a34-1111-4222-8333-944445555666";

/// Tokens `rw`, `ro` and `ao`; `down` cannot be checked.
struct Tokens;

impl TokenCheck for Tokens {
    fn check<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<Mode>, String>> {
        Box::pin(async move {
            match token {
                "rw" => Ok(Some(Mode::ReadWrite)),
                "ro" => Ok(Some(Mode::ReadOnly)),
                "ao" => Ok(Some(Mode::AppendOnly)),
                "down" => Err("coordinator unreachable".into()),
                _ => Ok(None),
            }
        })
    }
}

#[derive(Debug, PartialEq)]
struct Fake(String);

impl Served for Fake {
    fn uuid(&self) -> &str {
        SERVER
    }
}

/// Runs the handshake on `input` (then end of input). Returns its result,
/// what the server sent, and the names `resolve` was asked for.
async fn run(input: &[u8]) -> (Res<Option<Authed<Fake>>>, String, Vec<Option<String>>) {
    let (ours, mut peer) = tokio::io::duplex(1 << 20);
    peer.write_all(input).await.unwrap();
    peer.shutdown().await.unwrap();
    run_on(ours, peer).await
}

async fn run_on(
    ours: DuplexStream,
    mut peer: DuplexStream,
) -> (Res<Option<Authed<Fake>>>, String, Vec<Option<String>>) {
    let asked = Mutex::new(Vec::new());
    let mut conn = Conn::new(ours);
    let result = handshake(&mut conn, &Tokens, |name: Option<String>| {
        asked.lock().unwrap().push(name.clone());
        async move {
            match name.as_deref() {
                Some("nosuch") => Err("no cluster or node named \"nosuch\" is served here".into()),
                other => Ok(Fake(other.unwrap_or("default").to_string())),
            }
        }
    })
    .await;
    conn.close().await;
    let mut sent = String::new();
    peer.read_to_string(&mut sent).await.unwrap();
    (result, sent, asked.into_inner().unwrap())
}

#[tokio::test]
async fn auth_without_a_preamble_serves_the_default() {
    let (r, sent, asked) = run(format!("AUTH {CLIENT} rw\nVERSION 1\n").as_bytes()).await;
    let a = r.ok().flatten().expect("authenticated");
    assert_eq!(
        (a.repo, a.mode, a.client.as_str()),
        (Fake("default".into()), Mode::ReadWrite, CLIENT)
    );
    assert_eq!(sent, format!("AUTH-SUCCESS {SERVER}\n"));
    assert_eq!(asked, [None]);
}

#[tokio::test]
async fn the_preamble_names_the_repository_and_can_only_narrow_access() {
    for (mode, token, want) in [
        ("readonly", "rw", Mode::ReadOnly),
        ("appendonly", "rw", Mode::AppendOnly),
        ("readwrite", "ro", Mode::ReadOnly),
        ("readwrite", "ao", Mode::AppendOnly),
    ] {
        let input = format!("ANNEXMESH repo=node1 mode={mode}\r\nAUTH {CLIENT} {token}\n");
        let (r, sent, asked) = run(input.as_bytes()).await;
        let a = r.ok().flatten().expect("authenticated");
        assert_eq!((a.repo, a.mode), (Fake("node1".into()), want), "{mode} {token}");
        assert_eq!(sent, format!("AUTH-SUCCESS {SERVER}\n"));
        assert_eq!(asked, [Some("node1".to_string())]);
    }
}

#[tokio::test]
async fn a_bad_token_gets_auth_failure_and_no_repository_lookup() {
    let (r, sent, asked) =
        run(format!("ANNEXMESH repo=mesh\nAUTH {CLIENT} wrong\n").as_bytes()).await;
    assert!(matches!(r, Err(Close::Auth)), "{r:?}");
    assert_eq!(sent, "AUTH-FAILURE\n");
    assert!(asked.is_empty());
}

#[tokio::test]
async fn a_token_that_cannot_be_checked_is_not_called_bad() {
    let (r, sent, _) = run(format!("AUTH {CLIENT} down\n").as_bytes()).await;
    assert!(matches!(r, Err(Close::Protocol(_))), "{r:?}");
    assert_eq!(sent, "ERROR cannot check the token now: coordinator unreachable\n");
}

#[tokio::test]
async fn an_unknown_repository_is_an_error_that_names_it() {
    let (r, sent, _) = run(format!("ANNEXMESH repo=nosuch\nAUTH {CLIENT} rw\n").as_bytes()).await;
    assert!(matches!(r, Err(Close::Protocol(w)) if w.contains("nosuch")));
    assert!(sent.starts_with("ERROR no cluster or node named \"nosuch\""), "{sent}");
}

#[tokio::test]
async fn bad_preambles_are_refused_before_auth() {
    for (input, says) in [
        ("ANNEXMESH repo=mesh admin=yes\n", "ERROR unknown ANNEXMESH setting \"admin=yes\"\n"),
        ("ANNEXMESH repo=mesh mode=all\n", "ERROR unknown access mode \"all\""),
        ("ANNEXMESH repo=a/b\n", "ERROR bad name \"a/b\""),
    ] {
        let (r, sent, asked) = run(format!("{input}AUTH {CLIENT} rw\n").as_bytes()).await;
        assert!(matches!(r, Err(Close::Protocol(_))), "{input:?}: {r:?}");
        assert!(sent.starts_with(says), "{input:?}: {sent}");
        assert_eq!(sent.lines().count(), 1, "{sent}");
        assert!(asked.is_empty());
    }
    // Cut short by the end of input, or too long to be one.
    let long = format!("ANNEXMESH repo={}", "x".repeat(2000));
    for input in ["ANNEXMESH repo=mesh", &long] {
        let (r, sent, _) = run(input.as_bytes()).await;
        assert!(matches!(r, Err(Close::Protocol(_))), "{r:?}");
        assert_eq!(sent, "ERROR bad ANNEXMESH line\n");
    }
}

#[tokio::test]
async fn requests_before_auth_are_refused_up_to_a_limit() {
    let input = "VERSION 1\nFROB\n".repeat(MAX_PRE_AUTH);
    let (r, sent, _) = run(input.as_bytes()).await;
    assert!(matches!(r, Err(Close::Protocol(w)) if w.contains("too many")));
    let lines: Vec<&str> = sent.lines().collect();
    assert_eq!(lines.len(), MAX_PRE_AUTH + 1, "{sent}");
    assert_eq!(lines[0], "ERROR VERSION before AUTH: authenticate first");
    assert!(lines[1].starts_with("ERROR unknown command: "), "{sent}");
    assert_eq!(lines[MAX_PRE_AUTH], "ERROR too many messages before AUTH");

    // Fewer, then AUTH: served.
    let input = format!("{}AUTH {CLIENT} rw\n", "GETTIMESTAMP\n".repeat(MAX_PRE_AUTH - 1));
    let (r, sent, _) = run(input.as_bytes()).await;
    assert!(r.ok().flatten().is_some());
    assert!(sent.ends_with(&format!("AUTH-SUCCESS {SERVER}\n")), "{sent}");
}

#[tokio::test]
async fn data_or_an_error_before_auth_closes() {
    let (r, sent, _) = run(b"DATA 3\nabc").await;
    assert!(matches!(r, Err(Close::Protocol(w)) if w.contains("DATA")));
    assert_eq!(sent, "ERROR unexpected DATA\n");
    let (r, sent, _) = run(b"ERROR bye\n").await;
    assert!(matches!(r, Err(Close::Protocol(w)) if w.contains("bye")));
    assert_eq!(sent, "");
}

#[tokio::test]
async fn leaving_before_auth_is_a_clean_end() {
    let (r, sent, _) = run(b"").await;
    assert!(matches!(r, Ok(None)), "{r:?}");
    assert_eq!(sent, "");
    let (r, _, _) = run(b"ANNEXMESH repo=mesh\n").await;
    assert!(matches!(r, Ok(None)), "{r:?}");
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_dropped_after_the_handshake_time() {
    // The peer stays open and sends nothing; `run_on` reads what we sent
    // once the handshake gave up and closed our side.
    let (ours, peer) = tokio::io::duplex(1024);
    let (r, sent, _) = run_on(ours, peer).await;
    assert!(matches!(&r, Err(Close::Protocol(w)) if w.contains("handshake time")), "{r:?}");
    assert_eq!(sent, "");
}

/// A coordinator that knows the token `rw` (read-write) and `ro`
/// (read-only), and cannot be reached when asked about `down`.
struct TokenCoordinator;

impl crate::gateway::mesh::api::Control for TokenCoordinator {
    fn topology(&self) -> BoxFuture<'_, Result<rpc::TopologyReply, tonic::Status>> {
        unreachable!("not called by these tests")
    }
    fn locate(&self, _: String) -> BoxFuture<'_, Result<Vec<String>, tonic::Status>> {
        unreachable!("not called by these tests")
    }
    fn record_locations(
        &self,
        _: Vec<rpc::LocationChange>,
    ) -> BoxFuture<'_, Result<(), tonic::Status>> {
        unreachable!("not called by these tests")
    }
    fn plan_put(
        &self,
        _: rpc::PlanPutRequest,
    ) -> BoxFuture<'_, Result<rpc::PlanPutReply, tonic::Status>> {
        unreachable!("not called by these tests")
    }
    fn cluster_timestamp(
        &self,
        _: String,
    ) -> BoxFuture<'_, Result<rpc::TimestampReply, tonic::Status>> {
        unreachable!("not called by these tests")
    }
    fn check_token(
        &self,
        req: rpc::CheckTokenRequest,
    ) -> BoxFuture<'_, Result<rpc::CheckTokenReply, tonic::Status>> {
        use crate::auth::hash_token;
        let known = |mode: &str| {
            Ok(rpc::CheckTokenReply { valid: true, mode: mode.into(), ..Default::default() })
        };
        let reply = match req.token_sha256 {
            h if h == hash_token("rw") => known("readwrite"),
            h if h == hash_token("ro") => known("readonly"),
            h if h == hash_token("down") => Err(tonic::Status::unavailable("connection refused")),
            _ => Ok(rpc::CheckTokenReply::default()),
        };
        Box::pin(async move { reply })
    }
}

/// Agents are never reached by the token check.
struct NoNodes;

impl crate::gateway::mesh::api::Nodes for NoNodes {
    fn connect(
        &self,
        _: &rpc::NodeInfo,
    ) -> Result<Arc<dyn crate::gateway::mesh::api::NodeClient>, tonic::Status> {
        unreachable!("not called by these tests")
    }
}

#[tokio::test]
async fn coordinator_tokens_tell_an_unknown_token_from_an_unreachable_coordinator() {
    let tokens = CoordinatorTokens(Mesh::with(Arc::new(TokenCoordinator), Arc::new(NoNodes)));
    assert_eq!(tokens.check("rw").await, Ok(Some(Mode::ReadWrite)));
    // Tokens are case-insensitive: the hash is of the lower-case form.
    assert_eq!(tokens.check("RO").await, Ok(Some(Mode::ReadOnly)));
    assert_eq!(tokens.check("nosuch").await, Ok(None));
    let err = tokens.check("down").await.expect_err("an unreachable coordinator is an error");
    assert!(err.contains("connection refused"), "{err}");
}
