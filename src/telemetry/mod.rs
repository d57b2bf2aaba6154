//! Logging and tracing setup for every role: plain text (coloured only on a
//! terminal) or JSON lines, the `ANNEXMESH_LOG` filter, trace context across
//! gRPC (`context`, `traceparent`) and, with the `otel` feature, export of
//! spans over OTLP.

mod context;
#[cfg(feature = "otel")]
mod otel;
pub mod traceparent;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub use context::{
    GrpcTrace, GrpcTraceLayer, TRACEPARENT, TraceIdLayer, current_trace_id, incoming_trace, inject,
    traced,
};

/// The variable holding the log filter (`info`, `annexmesh=debug`, ...).
pub const LOG_FILTER_ENV: &str = "ANNEXMESH_LOG";

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines; coloured only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line, with the fields of the enclosing spans.
    Json,
}

/// Logging options every role shares.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LogArgs {
    /// Format of the log lines on stderr: text (coloured only on a
    /// terminal) or json (one object per line, for log collectors). The
    /// filter is ANNEXMESH_LOG (e.g. `info,annexmesh=debug`).
    #[arg(long, global = true, value_enum, default_value_t, env = "ANNEXMESH_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Export spans over OTLP/gRPC to this collector (e.g.
    /// http://localhost:4317); needs a build with the `otel` feature.
    #[arg(long, global = true, value_name = "URL", env = "ANNEXMESH_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "--otlp-endpoint {0} needs OpenTelemetry export, but this annexmesh was built without \
         the `otel` feature (cargo build --features otel)"
    )]
    NoOtel(String),
    #[error("cannot set up OTLP export to {endpoint}: {reason}")]
    Otlp { endpoint: String, reason: String },
}

/// Flushes exported spans when dropped; hold it until the role ends.
#[must_use]
#[derive(Default)]
pub struct Guard {
    #[cfg(feature = "otel")]
    otel: Option<otel::Provider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(p) = self.otel.take() {
            otel::shutdown(p);
        }
    }
}

/// Installs the global subscriber: the `ANNEXMESH_LOG` filter (default
/// `info`), `args.log_format` on stderr, trace ids for gRPC calls and, when
/// asked, OTLP export.
pub fn init(args: &LogArgs) -> Result<Guard, TelemetryError> {
    let filter = EnvFilter::try_from_env(LOG_FILTER_ENV).unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            // A file or the journal gets no escape codes.
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
    };
    let registry = tracing_subscriber::registry().with(TraceIdLayer).with(fmt).with(filter);
    #[allow(unused_mut)]
    let mut guard = Guard::default();
    match &args.otlp_endpoint {
        None => registry.init(),
        #[cfg(not(feature = "otel"))]
        Some(url) => return Err(TelemetryError::NoOtel(url.clone())),
        #[cfg(feature = "otel")]
        Some(url) => {
            let (layer, provider) = otel::layer(url)?;
            registry.with(layer).init();
            guard.otel = Some(provider);
        }
    }
    Ok(guard)
}
