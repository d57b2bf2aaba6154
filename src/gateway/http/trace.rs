//! One span per HTTP request (method, path, trace id) and one log line for
//! each request that failed, saying which and why.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use tracing::{Instrument, debug, info, warn};

/// Why a request failed, attached to the error response by `Failure` so
/// that the request log can say it.
#[derive(Debug, Clone)]
pub struct FailureReason(pub String);

/// The request span and its outcome: server errors at warn, refusals at
/// info, the rest at debug.
pub async fn trace(req: Request, next: Next) -> Response {
    let trace_id = crate::telemetry::incoming_trace(req.headers());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let span = tracing::info_span!("http", %method, %path, trace_id = %trace_id);
    let response = next.run(req).instrument(span.clone()).await;
    let status = response.status();
    let reason = response.extensions().get::<FailureReason>().map_or("", |r| r.0.as_str());
    span.in_scope(|| {
        if status.is_server_error() {
            warn!(%method, %path, status = status.as_u16(), "request failed: {reason}");
        } else if status.is_client_error() {
            info!(%method, %path, status = status.as_u16(), "request refused: {reason}");
        } else {
            debug!(%method, %path, status = status.as_u16(), "request done");
        }
    });
    response
}
