//! The tower layer in front of every gRPC server of the mesh: it reads the
//! caller's identity from its TLS certificate, checks it (or the admin
//! credential) against the method's entry in the server's policy, and puts
//! the caller into the request's extensions for handlers that bind it to
//! the request (an agent registers only its own UUID).

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use tonic::Status;
use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use super::{Identity, Role};

/// Who may call a method.
#[derive(Debug, Clone, Copy)]
pub enum Allow {
    /// Anyone who reaches the port (the handler checks a credential).
    Anyone,
    /// Callers whose certificate has one of these roles.
    Roles(&'static [Role]),
    /// Operators: an admin certificate or an admin token.
    Admin,
    /// Any caller with a mesh certificate of any role (anyone on a
    /// plaintext server).
    Member,
}

/// A server's method table: gRPC path -> who may call it; None for a
/// method it does not know (refused).
pub type Policy = fn(&str) -> Option<Allow>;

/// Checks an admin bearer token.
pub type AdminCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The caller, as the guard found it: None on a plaintext (`--insecure`)
/// server, where nobody has a certificate.
#[derive(Debug, Clone)]
pub struct Caller(pub Option<Identity>);

impl Caller {
    /// The caller of a request the guard let through.
    pub fn of<T>(req: &tonic::Request<T>) -> Option<&Identity> {
        req.extensions().get::<Caller>().and_then(|c| c.0.as_ref())
    }
}

struct Config {
    policy: Policy,
    /// Whether the server runs TLS: only then do roles mean anything.
    tls: bool,
    admin: Option<AdminCheck>,
    /// Where the admin credential is, for the refusal's message.
    admin_hint: String,
}

/// See the module's documentation.
#[derive(Clone)]
pub struct GuardLayer(Arc<Config>);

impl GuardLayer {
    pub fn new(policy: Policy, tls: bool) -> GuardLayer {
        GuardLayer(Arc::new(Config { policy, tls, admin: None, admin_hint: String::new() }))
    }

    /// Also admits admin calls that carry a token `check` accepts; `hint`
    /// says where operators find it.
    pub fn with_admin(policy: Policy, tls: bool, check: AdminCheck, hint: String) -> GuardLayer {
        GuardLayer(Arc::new(Config { policy, tls, admin: Some(check), admin_hint: hint }))
    }
}

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guard<S>;
    fn layer(&self, inner: S) -> Guard<S> {
        Guard { inner, config: self.0.clone() }
    }
}

/// The service `GuardLayer` makes.
#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    config: Arc<Config>,
}

impl Config {
    fn check<B>(&self, req: &http::Request<B>) -> Result<Caller, Status> {
        let peer = req
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|i| i.peer_certs())
            .and_then(|certs| certs.first().and_then(|c| Identity::from_certificate(c)));
        let path = req.uri().path();
        let Some(allow) = (self.policy)(path) else {
            return Err(Status::unimplemented(format!("no method {path}")));
        };
        match allow {
            Allow::Anyone => {}
            Allow::Roles(roles) => {
                if self.tls && !peer.as_ref().is_some_and(|p| roles.contains(&p.role())) {
                    let who = peer
                        .as_ref()
                        .map_or("a caller without a mesh certificate".into(), |p| p.to_string());
                    let want: Vec<_> = roles.iter().map(|r| r.as_str()).collect();
                    return Err(Status::permission_denied(format!(
                        "{path} is for {} certificates; {who} may not call it",
                        want.join(" or ")
                    )));
                }
            }
            Allow::Member => {
                if self.tls && peer.is_none() {
                    return Err(Status::permission_denied(format!(
                        "{path} is for callers with a mesh certificate"
                    )));
                }
            }
            Allow::Admin => {
                let by_cert = self.tls && peer.as_ref().is_some_and(|p| p.role() == Role::Admin);
                let token = req
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "));
                let by_token = match (token, &self.admin) {
                    (Some(t), Some(check)) => check(t.trim()),
                    _ => false,
                };
                if !by_cert && !by_token {
                    let what = if token.is_some() { "was refused" } else { "is missing" };
                    return Err(Status::unauthenticated(format!(
                        "the admin credential {what}: {}",
                        self.admin_hint
                    )));
                }
            }
        }
        Ok(Caller(peer))
    }
}

impl<S, B> tower::Service<http::Request<B>> for Guard<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match self.config.check(&req) {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                Either::Right(self.inner.call(req))
            }
            Err(status) => {
                tracing::debug!(path = %req.uri().path(), "refused: {}", status.message());
                Either::Left(ready(Ok(status.into_http())))
            }
        }
    }
}

/// Who may call the services every server has besides its API: health
/// is for probes, which show no certificate (a server that requires one
/// at the TLS layer, as agents do, still needs it there); reflection is
/// for any mesh member and operators with an admin certificate.
pub fn introspection_policy(path: &str) -> Option<Allow> {
    if path.starts_with("/grpc.health.v1.Health/") {
        return Some(Allow::Anyone);
    }
    if path.starts_with("/grpc.reflection.v1.ServerReflection/")
        || path.starts_with("/grpc.reflection.v1alpha.ServerReflection/")
    {
        return Some(Allow::Member);
    }
    None
}

/// Every role that may call an agent: gateways, other agents (repair
/// copies) and the coordinator.
pub fn agent_policy(path: &str) -> Option<Allow> {
    introspection_policy(path).or(Some(Allow::Roles(&[
        Role::Gateway,
        Role::Agent,
        Role::Coordinator,
    ])))
}

/// The coordinator's table: one place for who may call what.
pub fn coordinator_policy(path: &str) -> Option<Allow> {
    const GATEWAY: &[Role] = &[Role::Gateway];
    const AGENT: &[Role] = &[Role::Agent];
    // Agents strike the copies they find corrupt from the log.
    const MEMBER: &[Role] = &[Role::Gateway, Role::Agent];
    if path.starts_with("/annexmesh.v1.Admin/") {
        return Some(Allow::Admin);
    }
    if let Some(allow) = introspection_policy(path) {
        return Some(allow);
    }
    let method = path.strip_prefix("/annexmesh.v1.Coordinator/")?;
    Some(match method {
        "Join" => Allow::Anyone,
        "Renew" => Allow::Roles(&[Role::Agent, Role::Gateway]),
        "Register" | "Heartbeat" => Allow::Roles(AGENT),
        "RecordLocations" => Allow::Roles(MEMBER),
        "Topology" | "Locate" | "PlanPut" | "CheckToken" | "ClusterTimestamp"
        | "ReportNodeFailure" | "Git" | "WatchTopology" => Allow::Roles(GATEWAY),
        _ => return None,
    })
}
