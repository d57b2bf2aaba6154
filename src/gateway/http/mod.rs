//! The P2P over HTTP front-end (`annex+http`), versions 0 to 4, plus client
//! discovery (`/<name>/config`) and the plain `GET /git-annex/$uuid/key/$key`.
//! Access is decided in [`auth`]; [`serve`] bounds connections.

mod args;
pub mod auth;
pub mod forwarded;
mod git;
pub mod observe;
mod params;
pub mod serve;
pub mod trace;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde_json::{Value, json};
use tracing::{debug, info};

pub use self::args::{ArgsError, HttpArgs, HttpServing};
use self::auth::{Action, Authenticator, Caller, Denied, PasswordCheck, Policy};
use self::forwarded::Proxy;
use self::params::{Params, parse_key, parse_version, unwrap_b64};
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

/// Default cap on `lockcontent` locks held at once.
pub const DEFAULT_MAX_LOCKS: usize = 1024;
/// Default cap on locks held at once for one client address.
pub const DEFAULT_MAX_LOCKS_PER_CLIENT: usize = 64;

/// How the HTTP front-end decides access and builds its URL.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub policy: Policy,
    /// Whether the listener speaks TLS (`annex+https` in `/NAME/config`).
    pub tls: bool,
    /// Peers whose `Forwarded`/`X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<Proxy>,
    pub max_locks: usize,
    pub max_locks_per_client: usize,
    /// Failed basic-auth attempts per source address; the gateway shares
    /// it with the line protocol's AUTH.
    pub throttle: Arc<crate::gateway::throttle::AuthThrottle>,
    /// Other roles' metrics to serve at `/metrics/ROLE` (`annexmesh up`).
    pub role_metrics: observe::RoleMetrics,
}

impl HttpOptions {
    /// Options with `policy` and the default limits, no TLS, no proxies.
    pub fn new(policy: Policy) -> HttpOptions {
        HttpOptions {
            policy,
            tls: false,
            trusted_proxies: Vec::new(),
            max_locks: DEFAULT_MAX_LOCKS,
            max_locks_per_client: DEFAULT_MAX_LOCKS_PER_CLIENT,
            throttle: Arc::default(),
            role_metrics: Default::default(),
        }
    }
}

#[derive(Clone)]
pub struct HttpState {
    core: Core,
    opts: Arc<HttpOptions>,
    auth: Arc<Authenticator>,
    locks: Arc<Mutex<HashMap<String, LockEntry>>>,
}

struct LockEntry {
    lock: HeldLock,
    expiry: tokio::task::AbortHandle,
    /// Who took it, for the per-client cap.
    client: IpAddr,
}

/// The router; `passwords` checks basic-auth passwords (tokens).
pub fn router(core: Core, opts: HttpOptions, passwords: Arc<dyn PasswordCheck>) -> Router {
    let auth = Arc::new(Authenticator::new(opts.policy, passwords, opts.throttle.clone()));
    let opts = Arc::new(opts);
    let metrics = core.metrics.clone();
    let state = HttpState { core, opts, auth, locks: Arc::new(Mutex::new(HashMap::new())) };
    let app = Router::new()
        .route("/health", get(observe::health))
        .route("/ready", get(observe::ready))
        .route("/metrics", get(observe::metrics))
        .route("/metrics/{role}", get(observe::role_metrics))
        .route("/{name}/config", get(config))
        .route("/{name}/info/refs", get(git::info_refs))
        .route("/{name}/{service}", post(git::rpc))
        .route("/git-annex/{uuid}/key/{key}", get(plain_get))
        .route("/git-annex/{uuid}/{version}/key/{key}", get(versioned_get))
        .route("/git-annex/{uuid}/{version}/{op}", post(operation))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(metrics, observe::time_requests));
    Router::new().fallback_service(tower::util::MapRequest::new(app, single_slashes))
}

/// A remote URL ending in `/` makes clients ask for `NAME//config`: runs of
/// slashes in the path count as one, as a file system would have them.
fn single_slashes(mut req: axum::extract::Request) -> axum::extract::Request {
    let uri = req.uri();
    if !uri.path().contains("//") {
        return req;
    }
    let mut path = String::with_capacity(uri.path().len());
    for c in uri.path().chars() {
        if !(c == '/' && path.ends_with('/')) {
            path.push(c);
        }
    }
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = uri.clone().into_parts();
    if let Ok(p) = pq.parse() {
        parts.path_and_query = Some(p);
        if let Ok(u) = axum::http::Uri::from_parts(parts) {
            *req.uri_mut() = u;
        }
    }
    req
}

/// An error answer: a status and a message for the client, or an access
/// denial.
#[derive(Debug)]
pub enum Failure {
    Status(StatusCode, String),
    Denied(Denied),
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::Status(status, msg) => {
                debug!(%status, "{msg}");
                let mut r = (
                    status,
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    format!("{msg}\n"),
                )
                    .into_response();
                // git-annex shows a failed request's status line, not its
                // body: the reason phrase carries the message.
                if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(reason_phrase(&msg)) {
                    r.extensions_mut().insert(reason);
                }
                r.extensions_mut().insert(trace::FailureReason(msg));
                r
            }
            Failure::Denied(d) => {
                debug!("access denied: {d:?}");
                let why = format!("access denied: {d:?}");
                let mut r = d.into_response();
                r.extensions_mut().insert(trace::FailureReason(why));
                r
            }
        }
    }
}

impl From<CoreError> for Failure {
    fn from(e: CoreError) -> Failure {
        match e {
            CoreError::BadRequest(m) => Failure::Status(StatusCode::BAD_REQUEST, m),
            CoreError::Unavailable(m) => Failure::Status(StatusCode::SERVICE_UNAVAILABLE, m),
        }
    }
}

fn bad(msg: impl Into<String>) -> Failure {
    Failure::Status(StatusCode::BAD_REQUEST, msg.into())
}

fn not_found(msg: impl Into<String>) -> Failure {
    Failure::Status(StatusCode::NOT_FOUND, msg.into())
}

type HttpResult = std::result::Result<Response, Failure>;

impl From<Denied> for Failure {
    fn from(d: Denied) -> Failure {
        // Keeps the status and headers (realm, Retry-After) of the denial.
        Failure::Denied(d)
    }
}

/// The client of a request: where it connects from and who it is.
pub struct Who {
    pub peer: SocketAddr,
    pub caller: Caller,
    /// The basic-auth user name sent, for refusals to name.
    pub user: Option<String>,
}

impl FromRequestParts<HttpState> for Who {
    type Rejection = Failure;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &HttpState,
    ) -> std::result::Result<Who, Failure> {
        // The accept loop adds the peer; a router used without it (tests)
        // sees an unspecified address.
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0);
        let caller = state.auth.caller(&parts.headers, peer.ip()).await?;
        let user = auth::basic_credentials(&parts.headers).map(|(u, _)| u);
        Ok(Who { peer, caller, user })
    }
}

impl Who {
    /// Ok when this caller may do `action`.
    fn may(&self, state: &HttpState, action: Action) -> std::result::Result<(), Failure> {
        state.auth.policy.check(&self.caller, action).map_err(|d| match d {
            Denied::Forbidden => Failure::Status(StatusCode::FORBIDDEN, self.forbidden(action)),
            d => Failure::Denied(d),
        })
    }

    /// Why this caller may not do `action`, and what would allow it.
    fn forbidden(&self, action: Action) -> String {
        let what = match action {
            Action::Read => "read content",
            Action::Write => "store content",
            Action::Remove => "remove content",
            Action::Lock => "lock content",
        };
        let needs = match action {
            Action::Write => "appendonly or readwrite",
            _ => "readwrite",
        };
        match (&self.caller, &self.user) {
            (Caller::User(mode), Some(user)) => format!(
                "permission denied: user {user:?} is {mode} and may not {what}; it needs                  {needs} access (annexmesh admin user add --help)"
            ),
            (Caller::User(mode), None) => {
                format!("permission denied: a {mode} token may not {what}; it needs {needs} access")
            }
            (Caller::Anonymous, _) => format!(
                "permission denied: anonymous clients may not {what} on this gateway (its --unauth \
                 setting); log in as a user with {needs} access"
            ),
        }
    }
}

/// Longest reason phrase sent: enough for a node's full-disk message or
/// placement's account of every node of a small cluster.
const MAX_REASON: usize = 600;

/// HTTP 507 for a PUT no node could store for lack of space. git-annex
/// shows a failed request's status code and reason phrase, not its body,
/// so the reason phrase carries the node's message.
fn insufficient_storage(msg: &str) -> Response {
    Failure::Status(StatusCode::INSUFFICIENT_STORAGE, msg.to_string()).into_response()
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
async fn config(
    State(state): State<HttpState>,
    Path(name): Path<String>,
    who: Who,
    headers: HeaderMap,
) -> HttpResult {
    who.may(&state, Action::Read)?;
    // `NAME.git` as git's own repositories are named.
    let bare = name.strip_suffix(".git").filter(|n| !n.is_empty()).unwrap_or(&name);
    let repo = state
        .core
        .mesh
        .repo_by_name(bare)
        .await
        .ok_or_else(|| not_found(format!("no cluster or node named {name:?}")))?;
    let trusted = state.opts.trusted_proxies.iter().any(|p| p.contains(who.peer.ip()));
    let (scheme, host) = forwarded::origin(&headers, state.opts.tls, trusted)
        .ok_or_else(|| bad("missing or bad Host header"))?;
    let body = format!(
        "[core]\n\tbare = true\n[annex]\n\tuuid = {}\n\turl = annex+{scheme}://{host}/git-annex/\n",
        repo.uuid()
    );
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

async fn plain_get(
    State(state): State<HttpState>,
    Path((uuid, key)): Path<(String, String)>,
    who: Who,
    RawQuery(q): RawQuery,
) -> HttpResult {
    who.may(&state, Action::Read)?;
    let params = Params::parse(q)?;
    download(&state, &uuid, &key, &params, 1).await
}

async fn versioned_get(
    State(state): State<HttpState>,
    Path((uuid, version, key)): Path<(String, String, String)>,
    who: Who,
    RawQuery(q): RawQuery,
) -> HttpResult {
    who.may(&state, Action::Read)?;
    let version = parse_version(&version)
        .ok_or_else(|| not_found(format!("unsupported version {version}")))?;
    download(&state, &uuid, &key, &Params::parse(q)?, version).await
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
    // The exact length rather than chunked framing: the client reads the
    // body as it comes, with no chunk headers to parse. A node failing
    // part-way still shows, as a body shorter than announced.
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(dl.length));
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
    who: Who,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> HttpResult {
    let version = parse_version(&version)
        .ok_or_else(|| not_found(format!("unsupported version {version}")))?;
    let (since, action) = match op.as_str() {
        "checkpresent" => (0, Action::Read),
        "lockcontent" | "keeplocked" => (0, Action::Lock),
        "remove" => (0, Action::Remove),
        "put" => (0, Action::Write),
        "putoffset" => (1, Action::Write),
        "remove-before" => (3, Action::Remove),
        "gettimestamp" => (3, Action::Read),
        _ => return Err(not_found(format!("unknown operation {op}"))),
    };
    who.may(&state, action)?;
    if version < since {
        return Err(not_found(format!("{op} needs protocol version {since} or later")));
    }
    let params = Params::parse(q)?;
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
        "lockcontent" => lockcontent(&state, &repo, &params.key()?, who.peer.ip()).await,
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

async fn lockcontent(state: &HttpState, repo: &Repo, key: &Key, client: IpAddr) -> HttpResult {
    // Over a cap, answer as git-annex's server does when it has no lock to
    // spare: not locked (the client then does not count this copy).
    {
        let locks = state.locks.lock().unwrap();
        let mine = locks.values().filter(|e| e.client == client).count();
        if locks.len() >= state.opts.max_locks || mine >= state.opts.max_locks_per_client {
            info!(%client, held = locks.len(), by_client = mine, "lock refused: too many locks");
            return Ok(json(json!({ "locked": false })));
        }
    }
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
    state.locks.lock().unwrap().insert(lockid.clone(), LockEntry { lock, expiry, client });
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
