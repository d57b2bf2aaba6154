//! What the HTTP listener serves for operators rather than clients:
//! `/health` (liveness), `/ready` (readiness), `/metrics` (and, in
//! `annexmesh up`, `/metrics/ROLE` for the other roles in the process),
//! and the request latency the front-end records. None of these need
//! credentials, and none count as client requests.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::HttpState;
use crate::gateway::metrics::Metrics;
use crate::metrics::Source;

/// Other roles' metrics served on this listener, by role name (`annexmesh
/// up`: `coordinator`, `node1`, ...).
#[derive(Clone, Default)]
pub struct RoleMetrics(pub Vec<(String, Source)>);

impl std::fmt::Debug for RoleMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(n, _)| n)).finish()
    }
}

/// Liveness: the process serves HTTP.
pub async fn health() -> &'static str {
    "ok\n"
}

/// Readiness: 200 when the gateway reaches a coordinator that knows a
/// cluster, 503 with the reason otherwise.
pub async fn ready(State(state): State<HttpState>) -> Response {
    match state.core.mesh.ready().await {
        Ok(()) => "ready\n".into_response(),
        Err(why) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")).into_response()
        }
    }
}

pub async fn metrics(State(state): State<HttpState>) -> Response {
    let body = state.core.metrics.render();
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response()
}

/// `/metrics/ROLE`: another role's metrics, when this process runs it.
pub async fn role_metrics(State(state): State<HttpState>, Path(role): Path<String>) -> Response {
    match state.opts.role_metrics.0.iter().find(|(n, _)| *n == role) {
        Some((_, source)) => crate::metrics::respond(&**source).await,
        None => (StatusCode::NOT_FOUND, format!("no role {role:?} runs here\n")).into_response(),
    }
}

/// The operation a request path asks for, from a fixed set (a label
/// must not take values from clients); None for the operator endpoints.
fn operation(path: &str) -> Option<&'static str> {
    const OPS: [&str; 8] = [
        "checkpresent",
        "lockcontent",
        "keeplocked",
        "remove",
        "remove-before",
        "put",
        "putoffset",
        "gettimestamp",
    ];
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    Some(match parts.as_slice() {
        ["health" | "ready" | "metrics"] | ["metrics", _] => return None,
        ["git-annex", _, "key", _] | ["git-annex", _, _, "key", _] => "get",
        ["git-annex", _, _, op] => OPS.iter().find(|o| *o == op).copied().unwrap_or("other"),
        [_, "config"] => "config",
        [_, "info", "refs"] | [_, "git-upload-pack" | "git-receive-pack"] => "git",
        _ => "other",
    })
}

/// Records each client request's latency and outcome.
pub async fn time_requests(
    State(metrics): State<Arc<Metrics>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(op) = operation(req.uri().path()) else {
        return next.run(req).await;
    };
    let start = Instant::now();
    let res = next.run(req).await;
    let outcome = match res.status().as_u16() {
        0..400 => "ok",
        400..500 => "refused",
        _ => "failed",
    };
    metrics.request("http", op, outcome, start);
    res
}

#[cfg(test)]
mod tests {
    use super::operation;

    #[test]
    fn paths_name_a_fixed_set_of_operations() {
        assert_eq!(operation("/git-annex/u/v4/put"), Some("put"));
        assert_eq!(operation("/git-annex/u/v4/evil\"op"), Some("other"));
        assert_eq!(operation("/git-annex/u/key/SHA256E-s1--x"), Some("get"));
        assert_eq!(operation("/git-annex/u/v3/key/SHA256E-s1--x"), Some("get"));
        assert_eq!(operation("/mesh/config"), Some("config"));
        assert_eq!(operation("/mesh/info/refs"), Some("git"));
        assert_eq!(operation("/health"), None);
        assert_eq!(operation("/metrics/node1"), None);
    }
}
