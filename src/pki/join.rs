//! Joining: a new member checks the coordinator's CA against the hash in
//! its join token before it sends anything, then asks for a certificate
//! over TLS that trusts only that CA.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;

use super::{Credentials, JoinToken, PkiError, Role, ca};
use crate::rpc::{self, coordinator_client::CoordinatorClient};

/// How one coordinator of a list answered.
enum Attempt {
    /// It could not be reached (or did not prove to be the mesh's): the
    /// next one is tried.
    Unreachable(PkiError),
    /// It answered with a refusal, which every coordinator would give.
    Refused(PkiError),
}

/// The first coordinator of the comma-separated `urls` that answers, and
/// its answer; when none can be reached, why for each.
async fn first_answer<F, Fut>(urls: &str, attempt: F) -> Result<Credentials, PkiError>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<Credentials, Attempt>>,
{
    let mut failures = Vec::new();
    for url in rpc::split_urls(urls) {
        match attempt(url).await {
            Ok(c) => return Ok(c),
            Err(Attempt::Refused(e)) => return Err(e),
            Err(Attempt::Unreachable(e)) => failures.push(e),
        }
    }
    match failures.len() {
        0 => Err(PkiError::Bad("no coordinator URL given".into())),
        1 => Err(failures.remove(0)),
        _ => Err(PkiError::Join {
            url: urls.to_string(),
            why: failures.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "),
        }),
    }
}

/// Obtains credentials for `role` (and, for agents, node `node_uuid`)
/// from the first coordinator of `urls` (comma-separated) that answers,
/// with `token`.
pub async fn join(
    urls: &str,
    token: &JoinToken,
    role: Role,
    node_uuid: &str,
) -> Result<Credentials, PkiError> {
    first_answer(urls, |url| async move { join_one(&url, token, role, node_uuid).await }).await
}

async fn join_one(
    url: &str,
    token: &JoinToken,
    role: Role,
    node_uuid: &str,
) -> Result<Credentials, Attempt> {
    let fail = |why: String| Attempt::Unreachable(PkiError::Join { url: url.to_string(), why });
    let refused = |why: String| Attempt::Refused(PkiError::Join { url: url.to_string(), why });
    let Some(authority) = url.strip_prefix("https://") else {
        return Err(fail("joining needs an https:// coordinator URL".into()));
    };
    let authority = authority.trim_end_matches('/');
    let ca_pem = pinned_ca(authority, &token.ca_sha256).await.map_err(fail)?;
    let (key, csr_pem) = ca::new_request().map_err(Attempt::Refused)?;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&ca_pem))
        .domain_name(super::identity::COORDINATOR_NAME);
    let channel = rpc::endpoint(url)
        .and_then(|e| e.tls_config(tls))
        .map_err(|e| fail(e.to_string()))?
        .connect()
        .await
        .map_err(|e| fail(rpc::explain_connect(url, &e)))?;
    let req = rpc::JoinRequest {
        token: token.to_string(),
        csr_pem,
        role: role.as_str().to_string(),
        node_uuid: node_uuid.to_string(),
    };
    let reply = CoordinatorClient::new(channel)
        .join(req)
        .await
        .map_err(|s| refused(format!("refused: {}", s.message())))?
        .into_inner();
    Ok(Credentials { ca_pem, cert_pem: reply.cert_pem, key_pem: key.serialize_pem() })
}

/// A new certificate for the member `creds` names, for a new key, asked
/// for with the current certificate of the first coordinator of `urls`
/// that answers.
pub async fn renew(urls: &str, creds: &Credentials) -> Result<Credentials, PkiError> {
    first_answer(urls, |url| async move { renew_one(&url, creds).await }).await
}

async fn renew_one(url: &str, creds: &Credentials) -> Result<Credentials, Attempt> {
    let fail = |why: String| Attempt::Unreachable(PkiError::Join { url: url.to_string(), why });
    let refused = |why: String| Attempt::Refused(PkiError::Join { url: url.to_string(), why });
    let dialer = rpc::Dialer::new(Some(creds.clone()), false);
    let channel = dialer
        .endpoint(url, rpc::Peer::Coordinator)
        .map_err(|e| fail(e.to_string()))?
        .connect()
        .await
        .map_err(|e| fail(rpc::explain_connect(url, &e)))?;
    let (key, csr_pem) = ca::new_request().map_err(Attempt::Refused)?;
    let reply = CoordinatorClient::new(channel)
        .renew(rpc::RenewRequest { csr_pem })
        .await
        .map_err(|s| refused(format!("renewal refused: {}", s.message())))?
        .into_inner();
    Ok(Credentials {
        ca_pem: creds.ca_pem.clone(),
        cert_pem: reply.cert_pem,
        key_pem: key.serialize_pem(),
    })
}

/// The CA certificate (PEM) the server at `authority` presents at the end
/// of its chain, if its SHA-256 is `pin`.
async fn pinned_ca(authority: &str, pin: &str) -> Result<String, String> {
    let chain = presented_chain(authority).await?;
    let Some(ca) = chain.last().filter(|_| chain.len() > 1) else {
        return Err("the server presented no CA certificate with its own".into());
    };
    let got = ca::sha256_hex(ca);
    if got != pin {
        return Err(format!(
            "the server's CA has SHA-256 {got}, the join token expects {pin}: \
             this is not the mesh the token was made for"
        ));
    }
    Ok(pem_of(ca))
}

fn pem_of(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// The certificate chain a TLS server presents, read by a handshake that
/// stops right after it (trusting nothing, sending nothing else).
async fn presented_chain(authority: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let recorder = Arc::new(Recorder { chain: Mutex::default(), provider: provider.clone() });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let tcp =
        tokio::time::timeout(std::time::Duration::from_secs(5), TcpStream::connect(authority))
            .await
            .map_err(|_| format!("no connection to {authority} in 5 s"))?
            .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
    let name = ServerName::try_from(super::identity::COORDINATOR_NAME).expect("a valid name");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let handshake =
        tokio::time::timeout(std::time::Duration::from_secs(5), connector.connect(name, tcp)).await;
    let chain = recorder.chain.lock().expect("not poisoned").take();
    chain.ok_or_else(|| match handshake {
        Err(_) => "no TLS handshake in 5 s".to_string(),
        Ok(Err(e)) => {
            format!("no TLS from the server ({e}); is it plaintext (started with --insecure)?")
        }
        Ok(Ok(_)) => "the server presented no certificate".to_string(),
    })
}

/// Keeps the presented chain and refuses it, which ends the handshake.
#[derive(Debug)]
struct Recorder {
    chain: Mutex<Option<Vec<CertificateDer<'static>>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.clone().into_owned()];
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        *self.chain.lock().expect("not poisoned") = Some(chain);
        Err(rustls::Error::General("chain recorded".into()))
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("not verified".into()))
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("not verified".into()))
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
