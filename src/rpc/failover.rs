//! A channel over several coordinators: each call goes to the one that last
//! worked, and a call that cannot reach it is sent to the next, round after
//! round with backoff, within a bound. Only transport failures move a call
//! on: a coordinator that answered, even with an error, is believed.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full, Limited};
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http::{Request, Response, request::Parts};
use tower::ServiceExt;
use tracing::warn;

use super::DialError;
use super::targets::{self, MakeEndpoint, Target};

/// How long a call keeps going round the coordinators by default.
pub const DEFAULT_BOUND: Duration = Duration::from_secs(20);
/// The pause after a round where every coordinator failed, doubling up to
/// BACKOFF_MAX.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Calls whose request is a stream of messages: they cannot be buffered,
/// so they are sent once, and a failure only moves the next call on.
const STREAMING_REQUESTS: &[&str] = &["/annexmesh.v1.Coordinator/Git"];

/// The `--coordinator-failover` flag of every member that calls the
/// coordinator.
#[derive(Debug, Clone, clap::Args)]
pub struct FailoverArgs {
    /// How long a call keeps trying the coordinators of --coordinator (all
    /// of them in turn, with backoff) before it fails.
    #[arg(long, env = "ANNEXMESH_COORDINATOR_FAILOVER", default_value = "20s", value_parser = crate::clock::parse_duration)]
    pub coordinator_failover: Duration,
}

impl Default for FailoverArgs {
    fn default() -> FailoverArgs {
        FailoverArgs { coordinator_failover: DEFAULT_BOUND }
    }
}

struct State {
    /// Empty until the first call resolves the URLs.
    targets: Arc<Vec<Target>>,
    /// The endpoint that last worked.
    current: usize,
    /// Counts resolutions, so that a call that saw an older list does not
    /// move `current` within a newer one.
    generation: u64,
}

struct Shared {
    urls: Vec<String>,
    make: MakeEndpoint,
    bound: Duration,
    state: Mutex<State>,
    /// One resolution at a time.
    resolving: tokio::sync::Mutex<()>,
}

/// A `tower::Service` for tonic clients (`CoordinatorClient<Failover>`,
/// `AdminClient<Failover>`) over every coordinator of a list.
#[derive(Clone)]
pub struct Failover(Arc<Shared>);

/// The coordinator's client over a failover channel.
pub type CoordinatorApi = super::coordinator_client::CoordinatorClient<Failover>;

impl std::fmt::Debug for Failover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Failover").field("urls", &self.0.urls).finish()
    }
}

/// A snapshot of the endpoints for one call.
struct Round {
    targets: Arc<Vec<Target>>,
    start: usize,
    generation: u64,
}

impl Failover {
    /// A channel over `urls`, each checked by `make` now; names are resolved
    /// at the first call. Calls give up after `bound`.
    pub fn new(
        urls: Vec<String>,
        bound: Duration,
        make: MakeEndpoint,
    ) -> Result<Failover, DialError> {
        if urls.is_empty() {
            return Err(DialError::NoCoordinator);
        }
        for url in &urls {
            make(url)?;
        }
        Ok(Failover(Arc::new(Shared {
            urls,
            make,
            bound,
            state: Mutex::new(State { targets: Arc::new(Vec::new()), current: 0, generation: 0 }),
            resolving: tokio::sync::Mutex::new(()),
        })))
    }

    /// The URLs as given.
    pub fn urls(&self) -> &[String] {
        &self.0.urls
    }

    /// Connects eagerly to the first endpoint that answers, trying each
    /// once, for a command-line tool that should fail at once with a reason
    /// per endpoint.
    pub async fn connect(&self) -> Result<(), Status> {
        let round = self.round(None).await.map_err(|e| Status::unavailable(e.to_string()))?;
        let mut failures = Vec::new();
        for (i, t) in round.targets.iter().enumerate() {
            let endpoint = (self.0.make)(&t.place.dial)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            match endpoint.connect().await {
                Ok(channel) => {
                    let mut targets = (*round.targets).clone();
                    targets[i].channel = channel;
                    let mut s = self.0.state.lock().unwrap();
                    if s.generation == round.generation {
                        s.targets = Arc::new(targets);
                        s.current = i;
                    }
                    return Ok(());
                }
                Err(e) => failures.push(super::explain_connect(&t.place.label(), &e)),
            }
        }
        Err(Status::unavailable(failures.join("; ")))
    }

    /// The endpoints and the one to try first, resolving the URLs when no
    /// list is known yet or when `stale` (a generation every endpoint of
    /// which just failed) is still the current one.
    async fn round(&self, stale: Option<u64>) -> Result<Round, DialError> {
        let snapshot = |s: &State| Round {
            targets: s.targets.clone(),
            start: s.current,
            generation: s.generation,
        };
        {
            let s = self.0.state.lock().unwrap();
            if !s.targets.is_empty() && stale != Some(s.generation) {
                return Ok(snapshot(&s));
            }
        }
        let _one = self.0.resolving.lock().await;
        let old = {
            let s = self.0.state.lock().unwrap();
            if !s.targets.is_empty() && stale != Some(s.generation) {
                return Ok(snapshot(&s));
            }
            s.targets.clone()
        };
        let places = targets::resolve(&self.0.urls).await;
        let new = targets::channels(places, &old, &self.0.make)?;
        let mut s = self.0.state.lock().unwrap();
        let current = old.get(s.current).map(|t| &t.place);
        s.current = new.iter().position(|t| Some(&t.place) == current).unwrap_or(0);
        s.targets = Arc::new(new);
        s.generation += 1;
        Ok(snapshot(&s))
    }

    /// Makes `to` the endpoint calls go to first; logs the switch once,
    /// with why `from` failed.
    fn switch(&self, round: &Round, to: usize, why: &str) {
        let mut s = self.0.state.lock().unwrap();
        if s.generation != round.generation || s.current == to {
            return;
        }
        if s.current == round.start {
            let failed = round.targets[round.start].place.label();
            let now = round.targets[to].place.label();
            warn!(%failed, %now, "coordinator {failed} failed ({why}); now using {now}");
        }
        s.current = to;
    }

    /// A call whose whole request is in `body`, tried on every endpoint
    /// in turn until one answers or the bound is reached.
    async fn call_buffered(self, parts: Parts, body: Bytes) -> Result<Response<Body>, Status> {
        let deadline = tokio::time::Instant::now() + self.0.bound;
        let mut delay = BACKOFF_MIN;
        let mut stale = None;
        loop {
            let round = self.round(stale).await.map_err(|e| Status::unavailable(e.to_string()))?;
            let n = round.targets.len();
            let mut failures: Vec<String> = Vec::new();
            let mut first_why = String::new();
            for i in 0..n {
                let idx = (round.start + i) % n;
                let t = &round.targets[idx];
                let req = rebuild(&parts, &body);
                match t.channel.clone().oneshot(req).await {
                    Ok(resp) => {
                        if idx != round.start {
                            self.switch(&round, idx, &first_why);
                        }
                        return Ok(resp);
                    }
                    Err(e) => {
                        let why = super::explain_connect(&t.place.label(), &e);
                        if i == 0 {
                            first_why = why.clone();
                        }
                        failures.push(why);
                    }
                }
            }
            if tokio::time::Instant::now() + delay >= deadline {
                return Err(Status::unavailable(format!(
                    "no coordinator answered within {} s (--coordinator-failover): {}",
                    self.0.bound.as_secs_f64(),
                    failures.join("; ")
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(BACKOFF_MAX);
            stale = Some(round.generation);
        }
    }

    /// A call with a streamed request: sent once; when it cannot reach its
    /// endpoint, the next call starts at the next one.
    async fn call_streaming(self, req: Request<Body>) -> Result<Response<Body>, Status> {
        let round = self.round(None).await.map_err(|e| Status::unavailable(e.to_string()))?;
        let t = &round.targets[round.start];
        match t.channel.clone().oneshot(req).await {
            Ok(resp) => Ok(resp),
            Err(e) => {
                let why = super::explain_connect(&t.place.label(), &e);
                if round.targets.len() > 1 {
                    self.switch(&round, (round.start + 1) % round.targets.len(), &why);
                }
                Err(Status::unavailable(why))
            }
        }
    }
}

/// A copy of the buffered request.
fn rebuild(parts: &Parts, body: &Bytes) -> Request<Body> {
    let mut req = Request::new(Body::new(Full::new(body.clone())));
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    *req.extensions_mut() = parts.extensions.clone();
    req
}

impl tower::Service<Request<Body>> for Failover {
    type Response = Response<Body>;
    type Error = Status;
    type Future = BoxFuture<'static, Result<Response<Body>, Status>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        // Each endpoint's readiness is awaited within the call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        crate::telemetry::inject(req.headers_mut());
        let this = self.clone();
        Box::pin(async move {
            if STREAMING_REQUESTS.contains(&req.uri().path()) {
                return this.call_streaming(req).await;
            }
            let (parts, body) = req.into_parts();
            // One message and its 5-byte gRPC frame header.
            let limit = super::MAX_MESSAGE + 5;
            let body = Limited::new(body, limit).collect().await.map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    Status::resource_exhausted(format!(
                        "request to the coordinator not sent: larger than {limit} bytes"
                    ))
                } else {
                    Status::from_error(e)
                }
            })?;
            this.call_buffered(parts, body.to_bytes()).await
        })
    }
}

#[cfg(test)]
mod tests;
