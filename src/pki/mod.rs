//! The mesh's own PKI: the coordinator's CA (`ca`), what a certificate
//! names (`identity`), join tokens (`token`), joining (`join`) and the
//! credential files members keep. See docs/security.md.

pub mod ca;
pub mod guard;
pub mod identity;
pub mod join;
pub mod token;

use std::path::{Path, PathBuf};

pub use ca::Ca;
pub use identity::{Identity, Role};
pub use token::JoinToken;

/// Why credentials could not be made, read or obtained.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate error: {0}")]
    Rcgen(#[source] rcgen::Error),
    #[error("{0}")]
    Bad(String),
    #[error("cannot join the mesh through {url}: {why}")]
    Join { url: String, why: String },
}

impl PkiError {
    fn io(path: &Path, source: std::io::Error) -> PkiError {
        PkiError::Io { path: path.to_owned(), source }
    }
}

/// Writes `contents` to `path`, readable by its owner only.
pub fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| PkiError::io(&tmp, e))?;
    f.write_all(contents.as_bytes()).map_err(|e| PkiError::io(&tmp, e))?;
    f.sync_all().map_err(|e| PkiError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| PkiError::io(path, e))
}

/// Hex SHA-256 of the (first) certificate in a PEM text.
pub fn pem_sha256(pem: &str) -> Result<String, PkiError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| PkiError::Bad(format!("not a PEM certificate: {e}")))?;
    Ok(ca::sha256_hex(&der))
}

/// A member's TLS credentials: its certificate and key, and the mesh CA it
/// trusts, all PEM.
#[derive(Clone)]
pub struct Credentials {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("identity", &self.identity()).finish_non_exhaustive()
    }
}

const CERT_FILE: &str = "cert.pem";
const KEY_FILE: &str = "key.pem";
const CA_FILE: &str = "ca.pem";

impl Credentials {
    /// Who the certificate names, if it names a mesh member.
    pub fn identity(&self) -> Option<Identity> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let der = CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).ok()?;
        Identity::from_certificate(&der)
    }

    /// The certificate's validity: (not before, not after), Unix seconds.
    pub fn validity(&self) -> Option<(i64, i64)> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        use x509_parser::prelude::FromDer;
        let der = CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).ok()?;
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der).ok()?;
        let v = cert.validity();
        Some((v.not_before.timestamp(), v.not_after.timestamp()))
    }

    /// Whether less than a third of the certificate's lifetime is left.
    pub fn needs_renewal(&self) -> bool {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.validity().is_none_or(|(from, to)| (to - now) * 3 < to - from)
    }

    /// Reads `cert.pem`, `key.pem` and `ca.pem` from `dir`; None when the
    /// directory holds none yet.
    pub fn load_dir(dir: &Path) -> Result<Option<Credentials>, PkiError> {
        if !dir.join(CERT_FILE).exists() {
            return Ok(None);
        }
        Credentials::load_files(&dir.join(CERT_FILE), &dir.join(KEY_FILE), &dir.join(CA_FILE))
            .map(Some)
    }

    /// Reads the three PEM files an operator's own PKI provides.
    pub fn load_files(cert: &Path, key: &Path, ca: &Path) -> Result<Credentials, PkiError> {
        let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| PkiError::io(p, e));
        Ok(Credentials { cert_pem: read(cert)?, key_pem: read(key)?, ca_pem: read(ca)? })
    }

    /// Keeps the credentials in `dir` (the key readable by its owner only).
    pub fn save_dir(&self, dir: &Path) -> Result<(), PkiError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| PkiError::io(dir, e))?;
        write_private(&dir.join(KEY_FILE), &self.key_pem)?;
        write_private(&dir.join(CA_FILE), &self.ca_pem)?;
        write_private(&dir.join(CERT_FILE), &self.cert_pem)
    }

    /// The server side: this certificate (with the CA, so that joining
    /// members can check their pin against it) and the CA for callers'
    /// certificates, which are required unless `client_optional`.
    pub fn server_tls(&self, client_optional: bool) -> tonic::transport::ServerTlsConfig {
        use tonic::transport::{Certificate, Identity as TlsIdentity, ServerTlsConfig};
        let chain = format!("{}\n{}", self.cert_pem.trim_end(), self.ca_pem);
        ServerTlsConfig::new()
            .identity(TlsIdentity::from_pem(chain, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(client_optional)
    }

    /// The client side, expecting the server to be `peer`.
    pub fn client_tls(&self, peer: &str) -> tonic::transport::ClientTlsConfig {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity as TlsIdentity};
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(TlsIdentity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(peer)
    }
}

/// How a member (agent, gateway, `up`) gets its TLS credentials, or is told
/// to talk plaintext.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MemberTlsArgs {
    /// Talk plaintext gRPC (http:// URLs, a plaintext server): only on a
    /// network where every host is trusted. Without it, http:// URLs are
    /// refused.
    #[arg(long, env = "ANNEXMESH_INSECURE", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure: bool,
    /// A join token from `annexmesh admin join-token create --role ROLE`,
    /// needed once: the certificate it obtains is kept (agents: in the
    /// store, gateways: in --state-dir) and reused on restart.
    #[arg(long, env = "ANNEXMESH_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// As --join-token, read from a file (a mounted secret): the token then
    /// appears in neither the process list nor the environment.
    #[arg(long, env = "ANNEXMESH_JOIN_TOKEN_FILE", conflicts_with = "join_token")]
    pub join_token_file: Option<PathBuf>,
    /// Where a gateway keeps the certificate it obtained by joining
    /// (agents keep theirs in their store).
    #[arg(long, env = "ANNEXMESH_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// PEM certificate from an operator's own PKI, instead of joining; needs
    /// --mesh-tls-key and --mesh-tls-ca. It must name the member as the
    /// mesh CA's certificates do (see docs/security.md).
    #[arg(long, env = "ANNEXMESH_MESH_TLS_CERT", requires_all = ["mesh_tls_key", "mesh_tls_ca"])]
    pub mesh_tls_cert: Option<PathBuf>,
    /// PEM private key for --mesh-tls-cert.
    #[arg(long, env = "ANNEXMESH_MESH_TLS_KEY", requires = "mesh_tls_cert")]
    pub mesh_tls_key: Option<PathBuf>,
    /// PEM CA certificate that every mesh member's certificate is signed by.
    #[arg(long, env = "ANNEXMESH_MESH_TLS_CA", requires = "mesh_tls_cert")]
    pub mesh_tls_ca: Option<PathBuf>,
}

impl MemberTlsArgs {
    /// The credentials this member uses, in order: operator's files, the
    /// ones kept in `dir` from an earlier join, a new join with the token.
    /// None (plaintext) only with --insecure.
    pub async fn credentials(
        &self,
        coordinator: &str,
        dir: Option<&Path>,
        role: Role,
        node_uuid: &str,
    ) -> Result<Option<Credentials>, PkiError> {
        if let (Some(c), Some(k), Some(a)) =
            (&self.mesh_tls_cert, &self.mesh_tls_key, &self.mesh_tls_ca)
        {
            return Credentials::load_files(c, k, a).map(Some);
        }
        if let Some(dir) = dir
            && let Some(c) = Credentials::load_dir(dir)?
        {
            if !c.needs_renewal() {
                return Ok(Some(c));
            }
            // Renewed at start; a member that runs for most of a year
            // without a restart must be restarted to renew.
            return match join::renew(coordinator, &c).await {
                Ok(new) => {
                    new.save_dir(dir)?;
                    tracing::info!(dir = %dir.display(), "renewed the mesh certificate");
                    Ok(Some(new))
                }
                Err(e) => {
                    tracing::warn!("cannot renew the mesh certificate, using the old one: {e}");
                    Ok(Some(c))
                }
            };
        }
        let from_file = match &self.join_token_file {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                PkiError::Bad(format!("cannot read the join token file {}: {e}", path.display()))
            })?),
            None => None,
        };
        if let Some(token) = self.join_token.as_deref().or(from_file.as_deref()) {
            let token = JoinToken::parse(token.trim())?;
            let creds = join::join(coordinator, &token, role, node_uuid).await?;
            if let Some(dir) = dir {
                creds.save_dir(dir)?;
                tracing::info!(dir = %dir.display(), "joined the mesh; credentials kept");
            }
            return Ok(Some(creds));
        }
        if self.insecure {
            return Ok(None);
        }
        let flag = if role == Role::Gateway { " (with --state-dir)" } else { "" };
        Err(PkiError::Bad(format!(
            "no TLS credentials: pass --join-token{flag} from `annexmesh admin join-token create \
             --role {}`, or --mesh-tls-cert/--mesh-tls-key/--mesh-tls-ca, or --insecure for plaintext",
            role.as_str()
        )))
    }
}
