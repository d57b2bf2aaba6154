//! Access tokens for the line-protocol front-end (AUTH). The coordinator
//! keeps only a token's SHA-256, so a leaked database grants nothing.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// What a token (or an ssh login) may do, as git-annex's server modes.
/// Ordered from least to most access, so `min` restricts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// GET, CHECKPRESENT, LOCKCONTENT, GETTIMESTAMP.
    ReadOnly,
    /// Also PUT; no REMOVE.
    AppendOnly,
    ReadWrite,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::ReadOnly => "readonly",
            Mode::AppendOnly => "appendonly",
            Mode::ReadWrite => "readwrite",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "readonly" => Ok(Mode::ReadOnly),
            "appendonly" => Ok(Mode::AppendOnly),
            "readwrite" => Ok(Mode::ReadWrite),
            _ => Err(format!("unknown access mode {s:?} (readonly, appendonly or readwrite)")),
        }
    }
}

/// Length of generated tokens: 40 characters of [a-z0-9] is about 206 bits.
pub const TOKEN_LEN: usize = 40;

/// A new random token in git-annex's AuthToken alphabet (a-z, 0-9), so it
/// can be part of a `p2p-annex::` address.
pub fn generate_token() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..TOKEN_LEN).map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char).collect()
}

/// The hex SHA-256 the coordinator stores. git-annex lower-cases tokens
/// before sending them, so the hash is of the lower-cased token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.to_ascii_lowercase().as_bytes()))
}

/// A short public name for a token: the start of its hash.
pub fn token_id(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_in_git_annex_alphabet_and_distinct() {
        let a = generate_token();
        let b = generate_token();
        assert_eq!(a.len(), TOKEN_LEN);
        assert!(a.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn hash_ignores_case_as_git_annex_does() {
        assert_eq!(hash_token("AbC1"), hash_token("abc1"));
        assert_eq!(hash_token("abc").len(), 64);
        assert_eq!(token_id(&hash_token("abc")).len(), 12);
    }

    #[test]
    fn modes_order_from_least_access() {
        assert!(Mode::ReadOnly < Mode::AppendOnly && Mode::AppendOnly < Mode::ReadWrite);
        for m in [Mode::ReadOnly, Mode::AppendOnly, Mode::ReadWrite] {
            assert_eq!(m.as_str().parse::<Mode>().unwrap(), m);
        }
        assert!("admin".parse::<Mode>().is_err());
    }
}
