//! OTLP/gRPC export of spans (feature `otel`).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::registry::LookupSpan;

use super::TelemetryError;

pub type Provider = SdkTracerProvider;

/// A layer exporting spans to the collector at `endpoint`, and the
/// provider to shut down (flush) at exit.
pub fn layer<S>(
    endpoint: &str,
) -> Result<
    (tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>, Provider),
    TelemetryError,
>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| TelemetryError::Otlp {
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
        })?;
    let resource = opentelemetry_sdk::Resource::builder().with_service_name("annexmesh").build();
    let provider =
        SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
    let tracer = provider.tracer("annexmesh");
    Ok((tracing_opentelemetry::layer().with_tracer(tracer), provider))
}

/// Flushes what is left to export.
pub fn shutdown(provider: Provider) {
    if let Err(e) = provider.shutdown() {
        eprintln!("annexmesh: cannot flush spans to the OTLP collector: {e}");
    }
}
