//! Opening a connection to a gateway's line-protocol listener, plain or TLS.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::address::GatewayAddress;

/// Extra certificate authorities to trust for `tls:` gateways (a PEM file),
/// besides the usual public ones.
pub const TLS_CA_ENV: &str = "ANNEXMESH_TLS_CA";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to a gateway, plain or TLS.
pub trait GatewayStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> GatewayStream for T {}

/// Connects to `addr`, over TLS for `tls:` addresses, trusting the public
/// roots and the authorities in `$ANNEXMESH_TLS_CA`.
pub async fn connect(addr: &GatewayAddress) -> anyhow::Result<Box<dyn GatewayStream>> {
    let (host, port) = (addr.host.as_str(), addr.port);
    let stream =
        tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
            .await
            .map_err(|_| anyhow::anyhow!("timed out after {}s", CONNECT_TIMEOUT.as_secs()))??;
    // Protocol lines are small and each waits for an answer.
    stream.set_nodelay(true)?;
    if !addr.tls {
        return Ok(Box::new(stream));
    }
    let extra_ca = std::env::var_os(TLS_CA_ENV).filter(|f| !f.is_empty()).map(PathBuf::from);
    let connector = crate::tls::connector(extra_ca.as_deref())
        .with_context(|| format!("cannot use the certificate authorities in ${TLS_CA_ENV}"))?;
    let name = rustls_pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| anyhow::anyhow!("{host:?} cannot be checked against a certificate: {e}"))?;
    let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, stream))
        .await
        .map_err(|_| {
            anyhow::anyhow!("TLS handshake timed out after {}s", CONNECT_TIMEOUT.as_secs())
        })?
        .context("TLS handshake failed")?;
    Ok(Box::new(tls))
}
