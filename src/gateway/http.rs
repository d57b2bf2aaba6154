//! The P2P over HTTP front-end (`annex+http`), versions 0 to 4, plus client
//! discovery (`/<name>/config`) and the plain `GET /git-annex/$uuid/key/$key`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use futures::StreamExt;
use serde_json::{Value, json};
use tracing::{debug, info};

use super::core::{Core, CoreError, HeldLock, PutOffset, PutRequest};
use super::mesh::Repo;
use crate::p2p::key::Key;

/// How long a lock taken with `lockcontent` lasts without `keeplocked`, and
/// after a `keeplocked` connection breaks.
pub const LOCK_WINDOW: Duration = crate::p2p::LOCK_SAFETY_WINDOW;

pub const DATA_LENGTH: &str = "x-git-annex-data-length";

/// The UUID of the node a key download comes from (the first one, should
/// another node have to continue it).
pub const SERVING_NODE: &str = "x-annexmesh-node";

#[derive(Clone)]
pub struct HttpState {
    core: Core,
    locks: Arc<Mutex<HashMap<String, LockEntry>>>,
}

struct LockEntry {
    lock: HeldLock,
    expiry: tokio::task::AbortHandle,
}

pub fn router(core: Core) -> Router {
    let state = HttpState { core, locks: Arc::new(Mutex::new(HashMap::new())) };
    Router::new()
        .route("/metrics", get(metrics))
        .route("/{name}/config", get(config))
        .route("/git-annex/{uuid}/key/{key}", get(plain_get))
        .route("/git-annex/{uuid}/{version}/key/{key}", get(versioned_get))
        .route("/git-annex/{uuid}/{version}/{op}", post(operation))
        .with_state(state)
}

/// An error answer: a status and a message for the client.
#[derive(Debug)]
pub struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        debug!(status = %self.0, "{}", self.1);
        (self.0, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{}\n", self.1))
            .into_response()
    }
}

impl From<CoreError> for Failure {
    fn from(e: CoreError) -> Failure {
        match e {
            CoreError::BadRequest(m) => Failure(StatusCode::BAD_REQUEST, m),
            CoreError::Unavailable(m) => Failure(StatusCode::SERVICE_UNAVAILABLE, m),
        }
    }
}

fn bad(msg: impl Into<String>) -> Failure {
    Failure(StatusCode::BAD_REQUEST, msg.into())
}

fn not_found(msg: impl Into<String>) -> Failure {
    Failure(StatusCode::NOT_FOUND, msg.into())
}

type HttpResult = std::result::Result<Response, Failure>;

/// Longest reason phrase sent: enough for a node's full-disk message.
const MAX_REASON: usize = 300;

/// HTTP 507 for a PUT no node could store for lack of space. git-annex
/// shows a failed request's status code and reason phrase, not its body,
/// so the reason phrase carries the node's message.
fn insufficient_storage(msg: &str) -> Response {
    let mut r = Failure(StatusCode::INSUFFICIENT_STORAGE, msg.to_string()).into_response();
    if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(reason_phrase(msg)) {
        r.extensions_mut().insert(reason);
    }
    r
}

/// `msg` as a reason phrase: visible ASCII and spaces only (anything else
/// becomes `?`, line breaks spaces), at most `MAX_REASON` bytes.
fn reason_phrase(msg: &str) -> String {
    let mut s: String = msg
        .trim()
        .chars()
        .map(|c| match c {
            ' '..='~' => c,
            '\t' | '\r' | '\n' => ' ',
            _ => '?',
        })
        .collect();
    s.truncate(MAX_REASON);
    s
}

/// Values may be wrapped as `[base64url]` (for keys, UUIDs and file names
/// that are not UTF-8 or would be ambiguous).
fn unwrap_b64(v: &str) -> std::result::Result<String, Failure> {
    match v.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        None => Ok(v.to_string()),
        Some(inner) => {
            let bytes = base64::engine::general_purpose::URL_SAFE
                .decode(inner)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(inner))
                .map_err(|e| bad(format!("bad base64url value {v:?}: {e}")))?;
            String::from_utf8(bytes).map_err(|_| bad(format!("value {v:?} is not UTF-8")))
        }
    }
}

fn parse_key(v: &str) -> std::result::Result<Key, Failure> {
    let s = unwrap_b64(v)?;
    s.parse::<Key>().map_err(|e| bad(format!("bad key {s:?}: {e}")))
}

/// The query parameters of one request.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(q: Option<String>) -> Params {
        Params(form_urlencoded::parse(q.unwrap_or_default().as_bytes()).into_owned().collect())
    }

    fn one(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn required(&self, name: &str) -> std::result::Result<&str, Failure> {
        self.one(name).ok_or_else(|| bad(format!("missing parameter {name}")))
    }

    fn key(&self) -> std::result::Result<Key, Failure> {
        parse_key(self.required("key")?)
    }

    fn number(&self, name: &str) -> std::result::Result<Option<u64>, Failure> {
        self.one(name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| bad(format!("parameter {name} is not a number: {v:?}")))
            })
            .transpose()
    }

    fn file(&self) -> std::result::Result<Option<String>, Failure> {
        self.one("associatedfile").map(unwrap_b64).transpose()
    }

    /// BYPASS (v2+): UUIDs the request must not go through.
    fn bypass(&self) -> std::result::Result<std::collections::BTreeSet<String>, Failure> {
        let mut set = std::collections::BTreeSet::new();
        for (_, v) in self.0.iter().filter(|(k, _)| k == "bypass") {
            let u = unwrap_b64(v)?;
            if u.is_empty() || u.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(bad(format!("bad bypass UUID {u:?}")));
            }
            set.insert(u);
        }
        Ok(set)
    }

    /// clientuuid is required on every versioned request but the key download.
    fn client_uuid(&self) -> std::result::Result<String, Failure> {
        let u = unwrap_b64(self.required("clientuuid")?)?;
        if u.is_empty() || u.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(bad(format!("bad clientuuid {u:?}")));
        }
        Ok(u)
    }
}

fn parse_version(v: &str) -> Option<u32> {
    match v {
        "v0" => Some(0),
        "v1" => Some(1),
        "v2" => Some(2),
        "v3" => Some(3),
        "v4" => Some(4),
        _ => None,
    }
}

async fn repo(state: &HttpState, uuid: &str) -> std::result::Result<Repo, Failure> {
    let uuid = unwrap_b64(uuid)?;
    state
        .core
        .mesh
        .repo_by_uuid(&uuid)
        .await
        .ok_or_else(|| not_found(format!("no repository with UUID {uuid} is served here")))
}

fn json(v: Value) -> Response {
    axum::Json(v).into_response()
}

/// `{..., "plusuuids": [...]}` from v2 on.
fn with_plus(mut v: Value, version: u32, plus: &[String]) -> Value {
    if version >= 2 {
        v["plusuuids"] = json!(plus);
    }
    v
}

/// Git config that makes git-annex use this API for the named repository.
async fn metrics(State(state): State<HttpState>) -> Response {
    let body = state.core.metrics.render() + &state.core.mesh.render_metrics();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn config(
    State(state): State<HttpState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> HttpResult {
    let repo = state
        .core
        .mesh
        .repo_by_name(&name)
        .await
        .ok_or_else(|| not_found(format!("no cluster or node named {name:?}")))?;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
        .ok_or_else(|| bad("missing Host header"))?;
    let body = format!(
        "[core]\n\tbare = true\n[annex]\n\tuuid = {}\n\turl = annex+http://{host}/git-annex/\n",
        repo.uuid()
    );
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

async fn plain_get(
    State(state): State<HttpState>,
    Path((uuid, key)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> HttpResult {
    let params = Params::parse(q);
    download(&state, &uuid, &key, &params, 1).await
}

async fn versioned_get(
    State(state): State<HttpState>,
    Path((uuid, version, key)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
) -> HttpResult {
    let version = parse_version(&version)
        .ok_or_else(|| not_found(format!("unsupported version {version}")))?;
    download(&state, &uuid, &key, &Params::parse(q), version).await
}

async fn download(
    state: &HttpState,
    uuid: &str,
    key: &str,
    params: &Params,
    version: u32,
) -> HttpResult {
    // BYPASS applies to downloads as to every other request from v2 on.
    let bypass = if version >= 2 { params.bypass()? } else { Default::default() };
    let repo = repo(state, uuid).await?.bypassing(bypass);
    let key = parse_key(key)?;
    let offset = params.number("offset")?.unwrap_or(0);
    let dl = state
        .core
        .get(&repo, &key, offset)
        .await?
        .ok_or_else(|| not_found(format!("{key} is not present")))?;
    let mut resp = Response::new(Body::from_stream(dl.body));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    if version >= 1 {
        h.insert(DATA_LENGTH, HeaderValue::from(dl.length));
    }
    // For operators: which node started serving the content.
    if let Ok(v) = HeaderValue::from_str(&dl.node) {
        h.insert(SERVING_NODE, v);
    }
    Ok(resp)
}

async fn operation(
    State(state): State<HttpState>,
    Path((uuid, version, op)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> HttpResult {
    let version = parse_version(&version)
        .ok_or_else(|| not_found(format!("unsupported version {version}")))?;
    let since = match op.as_str() {
        "checkpresent" | "lockcontent" | "keeplocked" | "remove" | "put" => 0,
        "putoffset" => 1,
        "remove-before" | "gettimestamp" => 3,
        _ => return Err(not_found(format!("unknown operation {op}"))),
    };
    if version < since {
        return Err(not_found(format!("{op} needs protocol version {since} or later")));
    }
    let params = Params::parse(q);
    if op != "keeplocked" {
        params.client_uuid()?;
    }
    // BYPASS exists from v2; older clients cannot send it.
    let bypass = if version >= 2 { params.bypass()? } else { Default::default() };
    let repo = repo(&state, &uuid).await?.bypassing(bypass);
    let core = &state.core;
    match op.as_str() {
        "checkpresent" => {
            let present = core.checkpresent(&repo, &params.key()?).await?;
            Ok(json(json!({ "present": present })))
        }
        "lockcontent" => lockcontent(&state, &repo, &params.key()?).await,
        "keeplocked" => keeplocked(&state, params.required("lockid")?, body).await,
        "remove" | "remove-before" => {
            let key = params.key()?;
            let before = if op == "remove-before" {
                Some(
                    params
                        .number("timestamp")?
                        .ok_or_else(|| bad("missing parameter timestamp"))?,
                )
            } else {
                None
            };
            let out = core.remove(&repo, &key, before).await?;
            Ok(json(with_plus(json!({ "removed": out.ok }), version, &out.plus)))
        }
        "gettimestamp" => Ok(json(json!({ "timestamp": core.timestamp(&repo).await? }))),
        "putoffset" => {
            let key = params.key()?;
            match core.put_offset(&repo, &key, params.file()?.as_deref()).await? {
                PutOffset::AlreadyHave(plus) => {
                    Ok(json(with_plus(json!({ "alreadyhave": true }), version, &plus)))
                }
                PutOffset::Offset(o) => Ok(json(json!({ "offset": o }))),
            }
        }
        "put" => {
            let key = params.key()?;
            let data_present = version >= 4 && params.one("data-present") == Some("true");
            let offset = params.number("offset")?.unwrap_or(0);
            let length = match headers.get(DATA_LENGTH) {
                Some(v) => v
                    .to_str()
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .ok_or_else(|| bad(format!("bad {DATA_LENGTH} header")))?,
                None if data_present => 0,
                None => return Err(bad(format!("missing {DATA_LENGTH} header"))),
            };
            let file = params.file()?;
            let file = file.as_deref();
            let req = PutRequest { repo: &repo, key: &key, file, offset, length, data_present };
            let out = core.put(req, body.into_data_stream()).await?;
            if let Some(msg) = out.no_space {
                return Ok(insufficient_storage(&msg));
            }
            Ok(json(with_plus(json!({ "stored": out.ok }), version, &out.plus)))
        }
        _ => unreachable!("operations were matched above"),
    }
}

async fn lockcontent(state: &HttpState, repo: &Repo, key: &Key) -> HttpResult {
    let Some(lock) = state.core.lock(repo, key).await? else {
        return Ok(json(json!({ "locked": false })));
    };
    let lockid = uuid::Uuid::new_v4().to_string();
    let locks = state.locks.clone();
    let id = lockid.clone();
    // The lock lasts the safety window unless keeplocked releases it first.
    let expiry = state
        .core
        .tasks
        .spawn(async move {
            tokio::time::sleep(LOCK_WINDOW).await;
            if locks.lock().unwrap().remove(&id).is_some() {
                info!(lockid = %id, "lock expired");
            }
        })
        .abort_handle();
    state.locks.lock().unwrap().insert(lockid.clone(), LockEntry { lock, expiry });
    Ok(json(json!({ "locked": true, "lockid": lockid })))
}

/// Long poll: the request body carries JSON `{"unlock": bool}` messages; on
/// `{"unlock": true}` the lock is released and the answer sent. When the body
/// ends without it, the lock stays until its window passes.
async fn keeplocked(state: &HttpState, lockid: &str, body: Body) -> HttpResult {
    if !state.locks.lock().unwrap().contains_key(lockid) {
        return Ok(json(json!({ "locked": false })));
    }
    let mut stream = body.into_data_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut unlock = false;
    'read: while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { break };
        buf.extend_from_slice(&chunk);
        let mut values = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
        let mut consumed = 0;
        while let Some(v) = values.next() {
            match v {
                Ok(v) => {
                    consumed = values.byte_offset();
                    if v.get("unlock") == Some(&Value::Bool(true)) {
                        unlock = true;
                        break 'read;
                    }
                }
                Err(e) if e.is_eof() => break,
                Err(e) => return Err(bad(format!("bad keeplocked message: {e}"))),
            }
        }
        buf.drain(..consumed);
        if buf.len() > 64 * 1024 {
            return Err(bad("keeplocked message too long"));
        }
    }
    if unlock {
        let entry = state.locks.lock().unwrap().remove(lockid);
        if let Some(e) = entry {
            e.expiry.abort();
            e.lock.unlock().await;
        }
    }
    Ok(json(json!({ "locked": false })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_phrases_keep_only_visible_ascii_and_spaces() {
        assert_eq!(
            reason_phrase("n1: no space left on device (5 bytes free, 9 needed) storing K\n"),
            "n1: no space left on device (5 bytes free, 9 needed) storing K"
        );
        assert_eq!(reason_phrase("a\tb\r\nc é\u{7f}\0"), "a b  c ???");
        assert_eq!(reason_phrase(&"x".repeat(1000)).len(), MAX_REASON);
    }

    #[test]
    fn a_full_disk_answers_507_with_the_message_as_reason() {
        let r = insufficient_storage("node1: no space left on device (1 bytes free, 2 needed)");
        assert_eq!(r.status(), StatusCode::INSUFFICIENT_STORAGE);
        let reason = r.extensions().get::<hyper::ext::ReasonPhrase>().expect("a reason phrase");
        assert_eq!(reason.as_bytes(), b"node1: no space left on device (1 bytes free, 2 needed)");
    }
}
