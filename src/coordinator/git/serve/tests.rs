use super::*;
use crate::rpc::GitStart;

const U: &str = "ac2f1a3b-4c5d-8e6f-9a0b-1c2d3e4f5a6b";

fn start(service: GitService, stateless: bool, advertise: bool) -> GitStart {
    GitStart {
        cluster_uuid: U.into(),
        service: service as i32,
        stateless,
        advertise_refs: advertise,
        git_protocol: String::new(),
        append_only: false,
    }
}

fn stdin(b: &[u8]) -> GitRequest {
    GitRequest { msg: Some(git_request::Msg::Stdin(bytes::Bytes::copy_from_slice(b))) }
}

fn eof() -> GitRequest {
    GitRequest { msg: Some(git_request::Msg::Eof(true)) }
}

async fn call(
    server: &GitServer,
    reqs: Vec<GitRequest>,
) -> Result<(Vec<u8>, Result<GitExit, Status>), Status> {
    let reqs = futures::stream::iter(reqs.into_iter().map(Ok));
    let mut replies = server.serve(reqs, |u| Ok(u == U)).await?;
    let mut out = Vec::new();
    while let Some(r) = replies.next().await {
        match r {
            Ok(GitReply { msg: Some(git_reply::Msg::Stdout(b)) }) => out.extend_from_slice(&b),
            Ok(GitReply { msg: Some(git_reply::Msg::Exit(e)) }) => return Ok((out, Ok(e))),
            Ok(_) => panic!("empty reply"),
            Err(e) => return Ok((out, Err(e))),
        }
    }
    panic!("no exit reply")
}

#[test]
fn git_protocol_values() {
    for ok in ["", "version=2", "version=1:object-format=sha1", "a.b_c-d"] {
        assert!(valid_git_protocol(ok), "{ok}");
    }
    for bad in ["version=2 x", "a::b", ":", "v=$(x)", "a\nb", &"x".repeat(300)] {
        assert!(!valid_git_protocol(bad), "{bad}");
    }
}

#[test]
fn arguments_per_service_and_access() {
    let dir = std::path::Path::new("/d/x.git");
    let a = git_args(&start(GitService::UploadPack, true, true), dir, 10);
    assert_eq!(a, ["upload-pack", "--strict", "--stateless-rpc", "--advertise-refs", "/d/x.git"]);
    let mut s = start(GitService::ReceivePack, false, false);
    s.append_only = true;
    let a = git_args(&s, dir, 10).join(" ");
    assert_eq!(
        a,
        "-c receive.maxInputSize=10 -c receive.denyDeletes=true -c \
         receive.denyNonFastForwards=true receive-pack /d/x.git"
    );
}

#[tokio::test]
async fn advertises_an_empty_repository_and_refuses_unknown_clusters() {
    let dir = tempfile::tempdir().unwrap();
    let server = GitServer::new(Arc::new(Repos::new(dir.path())), GitLimits::default());
    let (out, exit) =
        call(&server, vec![start_request(start(GitService::UploadPack, true, true)), eof()])
            .await
            .unwrap();
    assert_eq!(exit.unwrap().code, 0);
    // An empty repository advertises a capabilities line, then a flush.
    assert!(out.ends_with(b"0000"), "{}", String::from_utf8_lossy(&out));
    assert!(dir.path().join("git").join(format!("{U}.git")).join("HEAD").exists());

    let mut other = start(GitService::UploadPack, true, true);
    other.cluster_uuid = "ac000000-0000-8000-8000-000000000000".into();
    let e = call(&server, vec![start_request(other)]).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = call(&server, vec![stdin(b"x")]).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let mut bad = start(GitService::UploadPack, true, true);
    bad.git_protocol = "version=2;rm".into();
    let e = call(&server, vec![start_request(bad)]).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn malformed_input_ends_the_process_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = GitServer::new(Arc::new(Repos::new(dir.path())), GitLimits::default());
    let (_, exit) = call(
        &server,
        vec![
            start_request(start(GitService::ReceivePack, true, false)),
            stdin(b"zzzzgarbage\n"),
            eof(),
        ],
    )
    .await
    .unwrap();
    let exit = exit.unwrap();
    assert_ne!(exit.code, 0);
    assert!(!exit.error.is_empty());
}

#[tokio::test]
async fn input_beyond_the_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let limits = GitLimits { git_max_push: 1000, ..GitLimits::default() };
    let server = GitServer::new(Arc::new(Repos::new(dir.path())), limits);
    // Whichever comes first: the limit, or git refusing the garbage.
    let mut reqs = vec![start_request(start(GitService::ReceivePack, false, false))];
    for _ in 0..10 {
        reqs.push(stdin(&[b'z'; 400]));
    }
    reqs.push(eof());
    let (_, exit) = call(&server, reqs).await.unwrap();
    match exit {
        Err(e) => assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}"),
        // git may have given up on the garbage first.
        Ok(e) => assert_ne!(e.code, 0),
    }
}

#[tokio::test]
async fn processes_beyond_the_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let limits = GitLimits { git_max_processes: 1, ..GitLimits::default() };
    let server = GitServer::new(Arc::new(Repos::new(dir.path())), limits);
    // A full-duplex upload-pack waits for its client: it holds the slot.
    let (held_tx, held_rx) = mpsc::channel(1);
    held_tx.send(Ok(start_request(start(GitService::UploadPack, false, false)))).await.unwrap();
    let _held = server.serve(ReceiverStream::new(held_rx), |_| Ok(true)).await.unwrap();
    let e = call(&server, vec![start_request(start(GitService::UploadPack, true, true))])
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    drop(held_tx);
}
