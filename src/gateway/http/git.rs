//! Git's smart HTTP protocol for the cluster's repository, as `git
//! http-backend` serves it: `GET /NAME/info/refs?service=git-SERVICE`,
//! `POST /NAME/git-upload-pack` and `POST /NAME/git-receive-pack`. The git
//! process runs on the coordinator (`gateway::git`); bodies stream both
//! ways. Access is that of the content: fetching reads, pushing writes,
//! and append-only callers may neither delete nor rewrite refs.

use std::io::Write;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tonic::Status;

use super::auth::{Action, Caller};
use super::{Failure, HttpResult, HttpState, Who, not_found};
use crate::auth::Mode;
use crate::gateway::git::{self, GitCall, GitService, GitStart, Output};
use crate::rpc::GitRequest;

/// Compressed input is inflated in pieces this small, so that a small
/// gzip bomb cannot make a large buffer at once (deflate expands at most
/// ~1000-fold: a piece gives at most ~1 MiB).
const INFLATE_PIECE: usize = 1024;

#[derive(serde::Deserialize)]
pub struct InfoRefsQuery {
    service: Option<String>,
}

fn service_named(name: &str) -> Option<GitService> {
    match name {
        "git-upload-pack" => Some(GitService::UploadPack),
        "git-receive-pack" => Some(GitService::ReceivePack),
        _ => None,
    }
}

fn service_name(s: GitService) -> &'static str {
    match s {
        GitService::ReceivePack => "git-receive-pack",
        _ => "git-upload-pack",
    }
}

fn forbidden(msg: impl Into<String>) -> Failure {
    Failure::Status(StatusCode::FORBIDDEN, msg.into())
}

/// What the caller may do to the repository with `service`, after the
/// access check: Some(true) when pushes are append-only.
fn check(state: &HttpState, who: &Who, service: GitService) -> Result<bool, Failure> {
    let action = match service {
        GitService::ReceivePack => Action::Write,
        _ => Action::Read,
    };
    who.may(state, action)?;
    let mode = match who.caller {
        Caller::User(m) => m,
        Caller::Anonymous => state.auth.policy.anonymous.unwrap_or(Mode::ReadOnly),
    };
    Ok(mode != Mode::ReadWrite)
}

/// `GET /NAME/info/refs?service=...`: the refs advertisement.
pub async fn info_refs(
    State(state): State<HttpState>,
    Path(name): Path<String>,
    Query(q): Query<InfoRefsQuery>,
    who: Who,
    headers: HeaderMap,
) -> HttpResult {
    let Some(svc) = q.service.as_deref() else {
        return Err(forbidden(
            "dumb HTTP is not served: use git's smart HTTP protocol (git 1.6.6 or later)",
        ));
    };
    let service =
        service_named(svc).ok_or_else(|| forbidden(format!("unsupported service {svc:?}")))?;
    let append_only = check(&state, &who, service)?;
    let cluster = cluster(&state, &name).await?;
    let proto = git_protocol(&headers)?;
    let v2 = git::wants_v2(&proto);
    let start = GitStart {
        cluster_uuid: cluster,
        service: service as i32,
        stateless: true,
        advertise_refs: true,
        git_protocol: proto,
        append_only,
    };
    let call = GitCall::open(&state.core.mesh, start).await.map_err(from_status)?;
    let _ = call.input.send(git::eof()).await;
    // As http-backend: a v2 client is not sent the service line.
    let prefix = if v2 { Bytes::new() } else { service_line(svc) };
    respond(call, prefix, &format!("application/x-{svc}-advertisement")).await
}

/// `POST /NAME/git-upload-pack` and `POST /NAME/git-receive-pack`.
pub async fn rpc(
    State(state): State<HttpState>,
    Path((name, svc)): Path<(String, String)>,
    who: Who,
    headers: HeaderMap,
    body: Body,
) -> HttpResult {
    let service = service_named(&svc).ok_or_else(|| not_found(format!("no {svc} here")))?;
    let append_only = check(&state, &who, service)?;
    let cluster = cluster(&state, &name).await?;
    let gzip = match headers.get(header::CONTENT_ENCODING).map(|v| v.as_bytes()) {
        None => false,
        Some(b"gzip" | b"x-gzip") => true,
        Some(other) => {
            return Err(Failure::Status(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported Content-Encoding {}", String::from_utf8_lossy(other)),
            ));
        }
    };
    let start = GitStart {
        cluster_uuid: cluster,
        service: service as i32,
        stateless: true,
        advertise_refs: false,
        git_protocol: git_protocol(&headers)?,
        append_only,
    };
    let call = GitCall::open(&state.core.mesh, start).await.map_err(from_status)?;
    tokio::spawn(feed(body, gzip, call.input.clone()));
    respond(call, Bytes::new(), &format!("application/x-{}-result", service_name(service))).await
}

/// The repository `name` reaches, or 404.
async fn cluster(state: &HttpState, name: &str) -> Result<String, Failure> {
    git::cluster_of(&state.core.mesh, name)
        .await
        .ok_or_else(|| not_found(format!("no repository {name:?} is served here")))
}

/// The client's `Git-Protocol` header, checked.
fn git_protocol(headers: &HeaderMap) -> Result<String, Failure> {
    let Some(v) = headers.get("git-protocol") else { return Ok(String::new()) };
    let v = v.to_str().unwrap_or("\u{1}");
    if !crate::coordinator::git::serve::valid_git_protocol(v) {
        return Err(super::bad(format!("bad Git-Protocol header {v:?}")));
    }
    Ok(v.to_string())
}

/// `# service=NAME` as a pkt-line, then a flush.
fn service_line(svc: &str) -> Bytes {
    let line = format!("# service={svc}\n");
    Bytes::from(format!("{:04x}{line}0000", line.len() + 4))
}

fn from_status(s: Status) -> Failure {
    use tonic::Code;
    let code = match s.code() {
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::ResourceExhausted => StatusCode::PAYLOAD_TOO_LARGE,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::PermissionDenied | Code::Unauthenticated => StatusCode::BAD_GATEWAY,
        _ => StatusCode::BAD_GATEWAY,
    };
    Failure::Status(code, format!("the cluster's repository: {}", s.message()))
}

/// The answer: an error status when git fails before it says anything;
/// otherwise 200 and its output as it comes. A failure after that cuts the
/// body short, so the client sees an error rather than a clean end.
async fn respond(call: GitCall, prefix: Bytes, content_type: &str) -> HttpResult {
    let GitCall { input: _, mut output } = call;
    let first = match output.next().await.map_err(from_status)? {
        Output::Exit(e) if e.code != 0 => {
            return Err(Failure::Status(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("git failed on the cluster's repository: {}", e.error),
            ));
        }
        Output::Exit(_) => None,
        Output::Stdout(b) => Some(b),
    };
    let head = futures::stream::iter(
        [(!prefix.is_empty()).then_some(prefix), first].into_iter().flatten().map(Ok),
    );
    let rest = futures::stream::unfold(Some(output), |out| async move {
        let mut out = out?;
        match out.next().await {
            Ok(Output::Stdout(b)) => Some((Ok(b), Some(out))),
            Ok(Output::Exit(e)) if e.code == 0 => None,
            Ok(Output::Exit(e)) => {
                tracing::info!("git failed mid-response: {}", e.error);
                Some((Err(std::io::Error::other(e.error)), None))
            }
            Err(s) => {
                tracing::info!("git call failed mid-response: {}", s.message());
                Some((Err(std::io::Error::other(s.message().to_string())), None))
            }
        }
    });
    let mut r = Response::new(Body::from_stream(head.chain(rest)));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_str(content_type).expect("a valid type"));
    no_cache(h);
    Ok(r.into_response())
}

/// The headers http-backend sends so that nothing caches the answer.
fn no_cache(h: &mut HeaderMap) {
    h.insert(header::EXPIRES, HeaderValue::from_static("Fri, 01 Jan 1980 00:00:00 GMT"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, max-age=0, must-revalidate"),
    );
}

/// Sends the request body to git, inflated when gzip-encoded, then `eof`.
/// A body that breaks off (or does not inflate) is abandoned without
/// `eof`, so git never acts on part of a request.
async fn feed(body: Body, gzip: bool, input: mpsc::Sender<GitRequest>) {
    let mut stream = body.into_data_stream();
    let mut inflate = gzip.then(|| flate2::write::GzDecoder::new(Vec::new()));
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { return };
        match &mut inflate {
            None => {
                for piece in chunk.chunks(git::MAX_PIECE) {
                    if input.send(git::stdin(chunk.slice_ref(piece))).await.is_err() {
                        return;
                    }
                }
            }
            Some(d) => {
                for piece in chunk.chunks(INFLATE_PIECE) {
                    if d.write_all(piece).is_err() {
                        return;
                    }
                    let out = std::mem::take(d.get_mut());
                    if !out.is_empty() && input.send(git::stdin(out.into())).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
    if let Some(d) = inflate {
        match d.finish() {
            Ok(rest) if !rest.is_empty() => {
                if input.send(git::stdin(rest.into())).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
    let _ = input.send(git::eof()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_line_is_a_pkt_line_and_a_flush() {
        assert_eq!(&service_line("git-upload-pack")[..], b"001e# service=git-upload-pack\n0000");
    }

    #[tokio::test]
    async fn gzip_bodies_are_inflated_and_end_with_eof() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let data = vec![b'a'; 3 << 20];
        enc.write_all(&data).unwrap();
        let gz = enc.finish().unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let task = tokio::spawn(feed(Body::from(gz), true, tx));
        let mut got = Vec::new();
        let mut ended = false;
        while let Some(m) = rx.recv().await {
            match m.msg {
                Some(crate::rpc::git_request::Msg::Stdin(b)) => {
                    assert!(b.len() <= 2 << 20, "an inflated piece of {} bytes", b.len());
                    got.extend_from_slice(&b);
                }
                Some(crate::rpc::git_request::Msg::Eof(_)) => ended = true,
                _ => panic!("unexpected request"),
            }
        }
        task.await.unwrap();
        assert!(ended);
        assert_eq!(got, data);
    }

    #[tokio::test]
    async fn a_body_that_does_not_inflate_is_abandoned() {
        let (tx, mut rx) = mpsc::channel(4);
        feed(Body::from("not gzip at all"), true, tx).await;
        while let Some(m) = rx.recv().await {
            assert!(!matches!(m.msg, Some(crate::rpc::git_request::Msg::Eof(_))));
        }
    }
}
