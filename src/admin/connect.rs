//! How `annexmesh admin` reaches the coordinator: TLS against the mesh CA
//! (plaintext only with --insecure) and the admin token on every call,
//! found by itself next to a local `annexmesh up` or coordinator.

use std::path::{Path, PathBuf};

use anyhow::Context;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, ClientTlsConfig};

use crate::coordinator::join::{ADMIN_TOKEN_FILE, CA_FILE};
use crate::rpc::{self, admin_client::AdminClient};

/// The admin API client every subcommand uses.
pub type Client = AdminClient<InterceptedService<rpc::Failover, Bearer>>;

/// Where to reach the coordinator and with what.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// Coordinator gRPC URL (https://, or http:// with --insecure), or
    /// several separated by commas: the first that answers is used, and
    /// calls fail over between them.
    #[arg(long, env = "ANNEXMESH_COORDINATOR", default_value = "https://127.0.0.1:7400")]
    pub coordinator: String,
    #[command(flatten)]
    pub failover: rpc::FailoverArgs,
    /// PEM certificate of the mesh CA (the coordinator's DATA/ca.pem);
    /// default: the one of a local `annexmesh up` or coordinator, found in
    /// $ANNEXMESH_DATA or ./annexmesh-data.
    #[arg(long, env = "ANNEXMESH_CA")]
    pub ca: Option<PathBuf>,
    /// File holding the admin token (the coordinator's DATA/admin-token);
    /// default: ANNEXMESH_ADMIN_TOKEN, else the one of a local `annexmesh up`
    /// or coordinator, found as --ca is.
    #[arg(long, env = "ANNEXMESH_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// The admin token itself (from the environment only).
    #[arg(long, env = "ANNEXMESH_ADMIN_TOKEN", hide = true, hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Allow a plaintext http:// coordinator URL.
    #[arg(long, env = "ANNEXMESH_INSECURE", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure: bool,
}

/// Puts the admin token on every call.
#[derive(Clone)]
pub struct Bearer(Option<AsciiMetadataValue>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// Where a local `up` (DATA/...) or coordinator (DATA/coordinator/... for
/// up, DATA/... for a coordinator) keeps `file`.
fn local(file: &str) -> Option<PathBuf> {
    let dirs = std::env::var_os("ANNEXMESH_DATA")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("annexmesh-data")]);
    dirs.flat_map(|d| [d.join(file), d.join("coordinator").join(file)]).find(|p| p.is_file())
}

fn read(path: &Path, what: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} {}", path.display()))
}

/// A connected client, or an error that says what to pass.
pub async fn connect(args: &ConnectArgs) -> anyhow::Result<Client> {
    let url = &args.coordinator;
    let token = match (&args.admin_token_file, &args.admin_token) {
        (Some(f), _) => Some(read(f, "admin token file")?),
        (None, Some(t)) => Some(t.clone()),
        (None, None) => {
            local(ADMIN_TOKEN_FILE).map(|f| read(&f, "admin token file")).transpose()?
        }
    };
    let bearer = token
        .map(|t| AsciiMetadataValue::try_from(format!("Bearer {}", t.trim())))
        .transpose()
        .context("the admin token is not plain text")?;
    let urls = rpc::split_urls(url);
    let ca_path = args.ca.clone().or_else(|| local(CA_FILE));
    let tls = if urls.iter().any(|u| u.starts_with("https://")) {
        let ca = match &ca_path {
            Some(ca) => {
                let pem = read(ca, "CA certificate")?;
                if !pem.contains("-----BEGIN CERTIFICATE-----") {
                    anyhow::bail!("the CA certificate {} holds no PEM certificate", ca.display());
                }
                pem
            }
            None => anyhow::bail!(
                "no CA certificate for {url}: pass --ca FILE (the coordinator's DATA/ca.pem) \
                 or set ANNEXMESH_CA"
            ),
        };
        Some(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .domain_name(crate::pki::identity::COORDINATOR_NAME),
        )
    } else {
        None
    };
    let insecure = args.insecure;
    let make = std::sync::Arc::new(move |u: &str| {
        let bad = |source| rpc::DialError::Url { url: u.to_string(), source };
        if u.starts_with("http://") {
            if !insecure {
                return Err(rpc::DialError::Plaintext(u.to_string()));
            }
            rpc::endpoint(u).map_err(bad)
        } else if let (true, Some(tls)) = (u.starts_with("https://"), &tls) {
            rpc::endpoint(u).and_then(|e| e.tls_config(tls.clone())).map_err(bad)
        } else {
            Err(rpc::DialError::Scheme(u.to_string()))
        }
    });
    let channel = rpc::Failover::new(urls, args.failover.coordinator_failover, make)?;
    // A command fails at once, with a reason per coordinator, when none
    // answers; later calls of the same command fail over.
    channel.connect().await.map_err(|e| {
        let each: Vec<String> =
            e.message().split("; ").map(|m| explain(m, ca_path.as_deref())).collect();
        anyhow::anyhow!("{}", each.join("; "))
    })?;
    Ok(AdminClient::with_interceptor(channel, Bearer(bearer)))
}

/// A connection failure as an operator reads it: what was unreachable and
/// why, without the transport's layers of wrapping.
pub(super) fn explain(failure: &str, ca: Option<&Path>) -> String {
    let Some((before, url, why)) = failure
        .split_once("cannot connect to ")
        .and_then(|(before, rest)| rest.split_once(": ").map(|(u, w)| (before, u, w)))
    else {
        return failure.to_string();
    };
    format!("{before}{}", explain_one(url, why, ca))
}

fn explain_one(url: &str, why: &str, ca: Option<&Path>) -> String {
    let lower = why.to_ascii_lowercase();
    if lower.contains("connection refused") {
        format!("cannot reach the coordinator at {url}: connection refused")
    } else if lower.contains("frame with invalid size")
        || lower.contains("invalid http")
        || lower.contains("http2 error")
    {
        format!(
            "{url} answers, but not as a gRPC server (is it the coordinator's --listen port? \
             7400 by default): {why}"
        )
    } else if ["connection closed", "connection reset", "broken pipe", "stream closed"]
        .iter()
        .any(|w| lower.contains(w))
    {
        // Which of these a server that is not gRPC causes depends on timing.
        format!(
            "{url} closed the connection: not a gRPC server, or a TLS and plaintext mismatch \
             (is it the coordinator's --listen port? 7400 by default): {why}"
        )
    } else if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake")
    {
        let ca = ca.map_or("(none)".to_string(), |p| p.display().to_string());
        format!(
            "TLS with the coordinator at {url} failed: {why}; is the CA certificate {ca} the \
             mesh CA (the coordinator's DATA/ca.pem)?"
        )
    } else {
        format!("cannot reach the coordinator at {url}: {why}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_failures_name_the_target_and_the_cause() {
        let refused = "cannot connect to http://127.0.0.1:1: transport error: tcp connect error: \
                       tcp connect error: Connection refused (os error 111)";
        assert_eq!(
            explain(refused, None),
            "cannot reach the coordinator at http://127.0.0.1:1: connection refused"
        );
        let tls = "cannot connect to https://h:7400: transport error: invalid peer certificate: \
                   UnknownIssuer";
        let got = explain(tls, Some(Path::new("/x/ca.pem")));
        assert!(got.contains("/x/ca.pem") && got.contains("https://h:7400"), "{got}");
    }
}
