//! What every gRPC server of the mesh serves besides its own API:
//! `grpc.health.v1.Health` with the role's readiness, server reflection (v1
//! and v1alpha), and the per-method latency histogram
//! `annexmesh_grpc_request_duration_seconds`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tonic::codegen::http;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use super::{Labels, latency_histogram};

/// Latency per gRPC method, labelled `service` and `method`.
pub type GrpcLatency = Family<Labels, Histogram, fn() -> Histogram>;

/// Registers the gRPC latency histogram in `registry` (the `annexmesh_`
/// sub-registry) and returns the layer that fills it.
pub fn timing_layer(registry: &mut Registry) -> TimingLayer {
    let family = GrpcLatency::new_with_constructor(latency_histogram as fn() -> Histogram);
    registry.register(
        "grpc_request_duration_seconds",
        "Time from a gRPC request's arrival to its response's headers, per method.",
        family.clone(),
    );
    TimingLayer(family)
}

/// The reflection services (v1 and v1alpha) for the mesh's API and the
/// health service.
pub fn reflection() -> (
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
) {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::rpc::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // Both descriptor sets are compiled in; they cannot fail to decode.
    let v1 = builder().build_v1().expect("the compiled descriptors decode");
    let v1alpha = builder().build_v1alpha().expect("the compiled descriptors decode");
    (v1, v1alpha)
}

/// Sets the overall status ("") and that of each of `services`.
pub async fn set_health(reporter: &HealthReporter, services: &[&str], serving: bool) {
    let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
    reporter.set_service_status("", status).await;
    for s in services {
        reporter.set_service_status(*s, status).await;
    }
}

/// See [`timing_layer`].
#[derive(Clone)]
pub struct TimingLayer(GrpcLatency);

impl<S> tower::Layer<S> for TimingLayer {
    type Service = Timing<S>;
    fn layer(&self, inner: S) -> Timing<S> {
        Timing { inner, family: self.0.clone() }
    }
}

/// The service [`TimingLayer`] makes.
#[derive(Clone)]
pub struct Timing<S> {
    inner: S,
    family: GrpcLatency,
}

/// The labels of a gRPC path `/package.Service/Method`; paths outside the
/// mesh's own API (health, reflection) share one series each service.
fn labels(path: &str) -> Labels {
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
    let method = if service.starts_with("annexmesh.") { method } else { "" };
    vec![("service".into(), service.into()), ("method".into(), method.into())]
}

impl<S, B> tower::Service<http::Request<B>> for Timing<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let labels = labels(req.uri().path());
        let family = self.family.clone();
        let start = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            family.get_or_create(&labels).observe(start.elapsed().as_secs_f64());
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_label_by_service_and_method() {
        let l = |s: &str, m: &str| vec![("service".into(), s.into()), ("method".into(), m.into())];
        assert_eq!(labels("/annexmesh.v1.Agent/Put"), l("annexmesh.v1.Agent", "Put"));
        assert_eq!(labels("/grpc.health.v1.Health/Check"), l("grpc.health.v1.Health", ""));
    }
}
