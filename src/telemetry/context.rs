//! Which trace the current span belongs to, and how it crosses gRPC: a
//! client sends `traceparent` metadata with each call (`traced`), a server
//! reads it (`GrpcTraceLayer`) and records `trace_id` on its request span,
//! so the lines of one request share a trace id in every role.

use std::task::{Context, Poll};

use tracing::field::{Field, Visit};
use tracing::{Instrument, Subscriber};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::{Context as LayerContext, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::traceparent::{TraceId, TraceParent};

/// The metadata/header name of the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// Remembers the `trace_id` field of spans that declare one, so that calls
/// made inside them can pass the trace on.
pub struct TraceIdLayer;

struct FindTraceId(Option<TraceId>);

impl Visit for FindTraceId {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "trace_id" {
            self.0 = parse_id(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "trace_id" {
            self.0 = parse_id(&format!("{value:?}"));
        }
    }
}

fn parse_id(s: &str) -> Option<TraceId> {
    let bytes: [u8; 16] = hex::decode(s.trim_matches('"')).ok()?.try_into().ok()?;
    Some(TraceId(bytes))
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for TraceIdLayer {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: LayerContext<'_, S>,
    ) {
        if attrs.metadata().fields().field("trace_id").is_none() {
            return;
        }
        let mut found = FindTraceId(None);
        attrs.record(&mut found);
        if let (Some(t), Some(span)) = (found.0, ctx.span(id)) {
            span.extensions_mut().insert(t);
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: LayerContext<'_, S>,
    ) {
        let mut found = FindTraceId(None);
        values.record(&mut found);
        if let (Some(t), Some(span)) = (found.0, ctx.span(id)) {
            span.extensions_mut().replace(t);
        }
    }
}

/// The trace of the current span or its nearest ancestor with one; None
/// outside any traced span or without `TraceIdLayer` installed.
pub fn current_trace_id() -> Option<TraceId> {
    tracing::Span::current()
        .with_subscriber(|(id, dispatch)| {
            let registry = dispatch.downcast_ref::<Registry>()?;
            let span = registry.span(id)?;
            span.scope().find_map(|s| s.extensions().get::<TraceId>().copied())
        })
        .flatten()
}

/// `msg` as a gRPC request carrying the current trace (when there is one)
/// as `traceparent` metadata. Call it where the request is made, inside
/// the request's span.
pub fn traced<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(t) = current_trace_id()
        && let Ok(v) = TraceParent::child_of(t).to_string().parse()
    {
        req.metadata_mut().insert(TRACEPARENT, v);
    }
    req
}

/// Adds the current trace (when there is one and `headers` has none) as
/// `traceparent`: for channels that see the HTTP request of each call.
pub fn inject(headers: &mut axum::http::HeaderMap) {
    if headers.contains_key(TRACEPARENT) {
        return;
    }
    if let Some(t) = current_trace_id()
        && let Ok(v) = TraceParent::child_of(t).to_string().parse()
    {
        headers.insert(TRACEPARENT, v);
    }
}

/// The trace of an incoming request: the caller's, or a fresh one.
pub fn incoming_trace(headers: &axum::http::HeaderMap) -> TraceId {
    headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| TraceParent::parse(v).ok())
        .map_or_else(TraceId::random, |t| t.trace_id)
}

/// Runs every gRPC call inside a `grpc` span naming the method and the
/// caller's trace id (`traceparent`), so handler logs can be followed.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcTraceLayer;

impl<S> tower::Layer<S> for GrpcTraceLayer {
    type Service = GrpcTrace<S>;

    fn layer(&self, inner: S) -> GrpcTrace<S> {
        GrpcTrace(inner)
    }
}

/// See `GrpcTraceLayer`.
#[derive(Debug, Clone)]
pub struct GrpcTrace<S>(S);

impl<S, B> tower::Service<axum::http::Request<B>> for GrpcTrace<S>
where
    S: tower::Service<axum::http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        let trace_id = incoming_trace(req.headers());
        let span = tracing::info_span!("grpc", rpc = %req.uri().path(), trace_id = %trace_id);
        let fut = span.in_scope(|| {
            tracing::debug!("gRPC call");
            self.0.call(req)
        });
        Box::pin(fut.instrument(span))
    }
}
