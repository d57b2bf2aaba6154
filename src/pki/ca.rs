//! The mesh CA: kept by the coordinator, it signs every member's
//! certificate. The coordinator builds each certificate's names from the
//! role and node the join token and request allow; a CSR contributes only
//! its public key.

use std::path::Path;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use sha2::{Digest, Sha256};

use super::{Credentials, Identity, PkiError, write_private};

/// How long a member's certificate is valid.
pub const CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A CA certificate and the key that signs with it.
pub struct Ca {
    cert_pem: String,
    sha256: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("sha256", &self.sha256).finish()
    }
}

fn key_pair() -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(PkiError::Rcgen)
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clocks that differ between hosts.
    params.not_before = now - time::Duration::minutes(10);
    params.not_after = now + lifetime;
}

impl Ca {
    /// Reads the CA from `cert` and `key`, or creates one there when neither
    /// exists (the key readable by its owner only).
    pub fn load_or_create(cert: &Path, key: &Path) -> Result<Ca, PkiError> {
        if !cert.exists() && !key.exists() {
            let ca = Ca::generate()?;
            if let Some(dir) = cert.parent() {
                std::fs::create_dir_all(dir).map_err(|e| PkiError::io(dir, e))?;
            }
            write_private(key, &ca.issuer.key().serialize_pem())?;
            std::fs::write(cert, &ca.cert_pem).map_err(|e| PkiError::io(cert, e))?;
            tracing::info!(cert = %cert.display(), "created the mesh CA");
            return Ok(ca);
        }
        Ca::load(cert, key)
    }

    /// An operator's CA, or the one created before.
    pub fn load(cert: &Path, key: &Path) -> Result<Ca, PkiError> {
        let cert_pem = std::fs::read_to_string(cert).map_err(|e| PkiError::io(cert, e))?;
        let key_pem = std::fs::read_to_string(key).map_err(|e| PkiError::io(key, e))?;
        let pair = KeyPair::from_pem(&key_pem)
            .map_err(|e| PkiError::Bad(format!("{}: not a private key: {e}", key.display())))?;
        Ca::from_pem(cert_pem, pair)
            .map_err(|e| PkiError::Bad(format!("{}: not a CA certificate: {e}", cert.display())))
    }

    fn from_pem(cert_pem: String, key: KeyPair) -> Result<Ca, PkiError> {
        let sha256 = super::pem_sha256(&cert_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(PkiError::Rcgen)?;
        Ok(Ca { cert_pem, sha256, issuer })
    }

    /// A new CA, in memory.
    pub fn generate() -> Result<Ca, PkiError> {
        let key = key_pair()?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(PkiError::Rcgen)?;
        params.distinguished_name.push(DnType::CommonName, "annexmesh mesh CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params, CA_VALIDITY);
        let cert = params.self_signed(&key).map_err(PkiError::Rcgen)?;
        Ca::from_pem(cert.pem(), key)
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Hex SHA-256 of the CA certificate (DER): what join tokens pin.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// A certificate naming `id`, for `public_key`, as PEM.
    pub fn issue(
        &self,
        id: &Identity,
        public_key: &impl PublicKeyData,
    ) -> Result<String, PkiError> {
        self.issue_for(id, public_key, CERT_VALIDITY)
    }

    /// As `issue`, valid for `lifetime`.
    pub fn issue_for(
        &self,
        id: &Identity,
        public_key: &impl PublicKeyData,
        lifetime: Duration,
    ) -> Result<String, PkiError> {
        let mut params = CertificateParams::new(vec![id.dns_name()]).map_err(PkiError::Rcgen)?;
        let uri = id.uri().try_into().map_err(PkiError::Rcgen)?;
        params.subject_alt_names.push(SanType::URI(uri));
        params.distinguished_name.push(DnType::CommonName, id.to_string());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        validity(&mut params, lifetime);
        Ok(params.signed_by(public_key, &self.issuer).map_err(PkiError::Rcgen)?.pem())
    }

    /// A certificate naming `id` for the key of a PEM certificate request;
    /// the request's own names and extensions are ignored.
    pub fn issue_csr(&self, id: &Identity, csr_pem: &str) -> Result<String, PkiError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::Bad(format!("bad certificate request: {e}")))?;
        self.issue(id, &csr.public_key)
    }

    /// A new key and a certificate naming `id`: for the coordinator itself
    /// and for the members `annexmesh up` runs in its own process.
    pub fn issue_new(&self, id: &Identity) -> Result<Credentials, PkiError> {
        self.issue_new_for(id, CERT_VALIDITY)
    }

    /// As `issue_new`, valid for `lifetime`.
    pub fn issue_new_for(
        &self,
        id: &Identity,
        lifetime: Duration,
    ) -> Result<Credentials, PkiError> {
        let key = key_pair()?;
        let cert_pem = self.issue_for(id, &key, lifetime)?;
        Ok(Credentials { ca_pem: self.cert_pem.clone(), cert_pem, key_pem: key.serialize_pem() })
    }
}

/// A new key and a PEM certificate request for it, for joining.
pub fn new_request() -> Result<(KeyPair, String), PkiError> {
    let key = key_pair()?;
    let params = CertificateParams::new(Vec::<String>::new()).map_err(PkiError::Rcgen)?;
    let csr = params.serialize_request(&key).map_err(PkiError::Rcgen)?;
    let pem = csr.pem().map_err(PkiError::Rcgen)?;
    Ok((key, pem))
}

/// Hex SHA-256 of DER bytes.
pub fn sha256_hex(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_name_their_member_only() {
        let ca = Ca::generate().unwrap();
        let uuid = "6f1d4c2e-8a3b-4c5d-9e0f-1a2b3c4d5e6f";
        let (_, csr) = new_request().unwrap();
        let id = Identity::Agent(uuid.into());
        let pem = ca.issue_csr(&id, &csr).unwrap();
        let creds =
            Credentials { ca_pem: ca.cert_pem().into(), cert_pem: pem, key_pem: String::new() };
        assert_eq!(creds.identity(), Some(id));
        assert_eq!(super::super::pem_sha256(ca.cert_pem()).unwrap(), ca.sha256());
        assert!(ca.issue_csr(&Identity::Coordinator, "not a request").is_err());
    }

    #[test]
    fn the_ca_is_kept_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("ca.pem"), dir.path().join("ca-key.pem"));
        let first = Ca::load_or_create(&c, &k).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&k).unwrap().permissions().mode() & 0o777, 0o600);
        let again = Ca::load_or_create(&c, &k).unwrap();
        assert_eq!(first.sha256(), again.sha256());
    }
}
