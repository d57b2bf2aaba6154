//! Limits on the gRPC servers (coordinator and agent): a concurrency limit
//! with load shedding in front of it, so a flood is refused at once with
//! UNAVAILABLE rather than queued without bound; HTTP/2 stream and
//! per-connection caps; and keepalives that find dead peers.
//!
//! The concurrency limit counts requests being handled: a unary call, or a
//! client-streaming one (an agent's PUT), until it answers; a
//! server-streaming call (GET, a lock) until its response starts. Streams
//! are bounded per connection by `--grpc-max-concurrent-streams`.

use std::time::Duration;

use tonic::transport::Server;
use tower::BoxError;
use tower::layer::util::{Identity, Stack};
use tower::limit::ConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::util::MapErrLayer;

use crate::clock::parse_duration;

/// Limits of a gRPC server, as flags of the roles that run one.
#[derive(Debug, Clone, clap::Args)]
pub struct GrpcLimits {
    /// Most gRPC requests handled at once, across all connections; more are
    /// refused at once with UNAVAILABLE (load shedding).
    #[arg(long, env = "ANNEXMESH_GRPC_MAX_CONCURRENT", default_value_t = 1024)]
    pub grpc_max_concurrent: usize,
    /// Most gRPC requests handled at once on one connection.
    #[arg(long, env = "ANNEXMESH_GRPC_MAX_PER_CONNECTION", default_value_t = 256)]
    pub grpc_max_per_connection: usize,
    /// Most HTTP/2 streams open at once on one connection (each PUT, GET
    /// and content lock is one).
    #[arg(long, env = "ANNEXMESH_GRPC_MAX_CONCURRENT_STREAMS", default_value_t = 1024)]
    pub grpc_max_concurrent_streams: u32,
    /// Interval of HTTP/2 keepalive pings to each peer.
    #[arg(long, env = "ANNEXMESH_GRPC_KEEPALIVE_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub grpc_keepalive_interval: Duration,
    /// A peer that does not answer a keepalive ping within this long is
    /// dropped (with the interval, a dead peer is found within ~20 s).
    #[arg(long, env = "ANNEXMESH_GRPC_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub grpc_keepalive_timeout: Duration,
    /// TCP keepalive on accepted connections.
    #[arg(long, env = "ANNEXMESH_GRPC_TCP_KEEPALIVE", default_value = "60s", value_parser = parse_duration)]
    pub grpc_tcp_keepalive: Duration,
}

impl Default for GrpcLimits {
    fn default() -> Self {
        GrpcLimits {
            grpc_max_concurrent: 1024,
            grpc_max_per_connection: 256,
            grpc_max_concurrent_streams: 1024,
            grpc_keepalive_interval: Duration::from_secs(10),
            grpc_keepalive_timeout: Duration::from_secs(10),
            grpc_tcp_keepalive: Duration::from_secs(60),
        }
    }
}

type Shed = MapErrLayer<fn(BoxError) -> BoxError>;

/// The layers `GrpcLimits::server` puts in front of every service.
pub type Layers = Stack<ConcurrencyLimitLayer, Stack<LoadShedLayer, Stack<Shed, Identity>>>;

/// Refusals by load shedding as UNAVAILABLE, which callers retry or fail
/// over on (tonic's default, RESOURCE_EXHAUSTED, reads as a full disk).
fn overloaded_as_unavailable(e: BoxError) -> BoxError {
    if e.is::<tower::load_shed::error::Overloaded>() {
        return Box::new(tonic::Status::unavailable("server overloaded; try again shortly"));
    }
    e
}

impl GrpcLimits {
    /// A server builder with these limits.
    pub fn server(&self) -> Server<Layers> {
        let shed: Shed = MapErrLayer::new(overloaded_as_unavailable as fn(BoxError) -> BoxError);
        Server::builder()
            .concurrency_limit_per_connection(self.grpc_max_per_connection.max(1))
            .max_concurrent_streams(self.grpc_max_concurrent_streams.max(1))
            .http2_keepalive_interval(Some(self.grpc_keepalive_interval))
            .http2_keepalive_timeout(Some(self.grpc_keepalive_timeout))
            .tcp_keepalive(Some(self.grpc_tcp_keepalive))
            .layer(shed)
            .layer(LoadShedLayer::new())
            .layer(ConcurrencyLimitLayer::new(self.grpc_max_concurrent.max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Service, ServiceBuilder, ServiceExt};

    #[tokio::test]
    async fn over_the_limit_is_refused_at_once_as_unavailable() {
        let shed: Shed = MapErrLayer::new(overloaded_as_unavailable as fn(BoxError) -> BoxError);
        let gate = std::sync::Arc::new(tokio::sync::Notify::new());
        let g = gate.clone();
        let mut svc = ServiceBuilder::new()
            .layer(shed)
            .layer(LoadShedLayer::new())
            .layer(ConcurrencyLimitLayer::new(1))
            .service(tower::service_fn(move |()| {
                let g = g.clone();
                async move {
                    g.notified().await;
                    Ok::<_, BoxError>(())
                }
            }));
        let first = svc.ready().await.unwrap().call(());
        let busy = tokio::spawn(first);
        let e = svc.ready().await.unwrap().call(()).await.unwrap_err();
        let status = e.downcast::<tonic::Status>().expect("a gRPC status");
        assert_eq!(status.code(), tonic::Code::Unavailable);
        gate.notify_one();
        busy.await.unwrap().unwrap();
    }
}
