//! Join tokens: `amjoin1.SECRET.CA-SHA256`. The coordinator keeps only the
//! secret's SHA-256 (with the role, expiry and uses left); the CA hash lets
//! the joining member check it reached the right coordinator before it
//! sends the secret, as kubeadm's discovery hash does.

use sha2::{Digest, Sha256};

use super::PkiError;

const PREFIX: &str = "amjoin1";

/// A join token, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// 32 lowercase hex digits.
    pub secret: String,
    /// Hex SHA-256 of the mesh CA's certificate.
    pub ca_sha256: String,
}

impl JoinToken {
    /// A new random token for the CA with hash `ca_sha256`.
    pub fn generate(ca_sha256: &str) -> JoinToken {
        let bytes: [u8; 16] = rand::random();
        JoinToken { secret: hex::encode(bytes), ca_sha256: ca_sha256.to_string() }
    }

    pub fn parse(s: &str) -> Result<JoinToken, PkiError> {
        let bad = || {
            PkiError::Bad(
                "a join token looks like amjoin1.SECRET.CAHASH; create one with \
                 `annexmesh admin join-token create --role ROLE`"
                    .to_string(),
            )
        };
        let mut parts = s.trim().split('.');
        let (Some(PREFIX), Some(secret), Some(ca), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let hex_of = |s: &str, n| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex_of(secret, 32) || !hex_of(ca, 64) {
            return Err(bad());
        }
        Ok(JoinToken { secret: secret.to_ascii_lowercase(), ca_sha256: ca.to_ascii_lowercase() })
    }

    /// What the coordinator stores and looks the token up by.
    pub fn secret_sha256(&self) -> String {
        secret_sha256(&self.secret)
    }
}

/// Hex SHA-256 of a join token's secret.
pub fn secret_sha256(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PREFIX}.{}.{}", self.secret, self.ca_sha256)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let t = JoinToken::generate(&"ab".repeat(32));
        assert_eq!(JoinToken::parse(&t.to_string()).unwrap(), t);
        for bad in ["", "amjoin1", "amjoin2.00.00", &format!("amjoin1.{}.x", t.secret)] {
            assert!(JoinToken::parse(bad).is_err(), "{bad}");
        }
        assert_ne!(t.secret_sha256(), JoinToken::generate(&t.ca_sha256).secret_sha256());
    }
}
