//! TLS for the line protocol, on both ends: PEM certificate chains and keys,
//! the gateway's acceptor and the client's connector. Errors name the file
//! they are about.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificates from {}", path.display())]
    ReadCertificates {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("no certificate in {}", path.display())]
    NoCertificate { path: PathBuf },
    #[error("bad certificate in {}", path.display())]
    BadCertificate {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot read a private key from {}", path.display())]
    ReadKey {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("the certificate and key do not make a TLS configuration")]
    Config(#[source] rustls::Error),
}

/// Every certificate in a PEM file; at least one.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::ReadCertificates { path: path.to_owned(), source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_owned() });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|source| TlsError::ReadKey { path: path.to_owned(), source })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The gateway's side: a certificate chain and its private key.
pub fn acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let certs = load_certificates(cert)?;
    let key = load_key(key)?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Config)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The client's side: trusts the public web roots, plus the certificate
/// authorities in `extra_ca` (a PEM file) when given.
pub fn connector(extra_ca: Option<&Path>) -> Result<tokio_rustls::TlsConnector, TlsError> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = extra_ca {
        for c in load_certificates(path)? {
            roots
                .add(c)
                .map_err(|source| TlsError::BadCertificate { path: path.to_owned(), source })?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A self-signed certificate for `localhost` and its key, as PEM files.
    fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, cert.cert.pem()).unwrap();
        std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = load_certificates(&missing).unwrap_err();
        assert!(matches!(e, TlsError::ReadCertificates { .. }), "{e:?}");
        assert!(e.to_string().contains("missing.pem"), "{e}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = load_certificates(&empty).unwrap_err();
        assert_eq!(e.to_string(), format!("no certificate in {}", empty.display()));
        assert!(matches!(connector(Some(&empty)), Err(TlsError::NoCertificate { .. })));

        let (cert, key) = self_signed(dir.path());
        let e = acceptor(&cert, &empty).err().unwrap();
        assert_eq!(e.to_string(), format!("cannot read a private key from {}", empty.display()));
        // A key is not a certificate.
        assert!(matches!(load_certificates(&key), Err(TlsError::NoCertificate { .. })));
        // A certificate with another's key.
        let other = tempfile::tempdir().unwrap();
        let (_, other_key) = self_signed(other.path());
        assert!(matches!(acceptor(&cert, &other_key), Err(TlsError::Config(_))));
    }

    #[tokio::test]
    async fn acceptor_and_connector_talk() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path());
        let acceptor = acceptor(&cert, &key).unwrap();
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let mut s = acceptor.accept(server_io).await.unwrap();
            let mut got = [0; 5];
            s.read_exact(&mut got).await.unwrap();
            s.write_all(&got).await.unwrap();
            s.shutdown().await.unwrap();
        });
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let mut c = connector(Some(&cert)).unwrap().connect(name, client_io).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"hello");
        server.await.unwrap();

        // Without the extra authority the self-signed certificate is refused.
        let acceptor = super::acceptor(&cert, &key).unwrap();
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move { acceptor.accept(server_io).await.is_err() });
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        assert!(connector(None).unwrap().connect(name, client_io).await.is_err());
        assert!(server.await.unwrap());
    }
}
