//! Access tokens of the line-protocol front-end, stored by the SHA-256 of
//! the token: what each may do, never the token itself.

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::{Result, Store, StoreError, TOKENS, decode, encode};
use crate::auth::{self, Mode};

/// An access token as stored: what it may do, never the token itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// Hex SHA-256 of the lower-cased token (`auth::hash_token`).
    pub sha256: String,
    pub mode: Mode,
    pub label: String,
    pub created_unix_ms: u64,
}

impl Token {
    /// The public name operators see and revoke by.
    pub fn id(&self) -> &str {
        auth::token_id(&self.sha256)
    }
}

/// What revoking by an id prefix did.
#[derive(Debug, Clone, PartialEq)]
pub enum Revoked {
    Done(Token),
    NotFound,
    /// The prefix matches these tokens; none was revoked.
    Ambiguous(Vec<Token>),
}

/// A token's value in the table; the key is its hash.
#[derive(Serialize, Deserialize)]
struct TokenRecord {
    mode: String,
    label: String,
    created_unix_ms: u64,
}

fn decode_token(sha256: &str, v: &str) -> Result<Token> {
    let r: TokenRecord = decode(v)?;
    let mode = r
        .mode
        .parse()
        .map_err(|e| StoreError::Corrupt(format!("token {}: {e}", auth::token_id(sha256))))?;
    Ok(Token {
        sha256: sha256.to_string(),
        mode,
        label: r.label,
        created_unix_ms: r.created_unix_ms,
    })
}

impl Store {
    /// Stores a token's hash; false (and nothing changed) when that hash is
    /// stored already.
    pub async fn create_token(&self, token: Token) -> Result<bool> {
        self.write(move |txn| {
            let mut t = txn.open_table(TOKENS)?;
            if t.get(token.sha256.as_str())?.is_some() {
                return Ok(false);
            }
            let r = TokenRecord {
                mode: token.mode.as_str().to_string(),
                label: token.label,
                created_unix_ms: token.created_unix_ms,
            };
            t.insert(token.sha256.as_str(), encode(&r).as_str())?;
            Ok(true)
        })
        .await
    }

    /// The token with this hash, if any.
    pub fn token(&self, sha256: &str) -> Result<Option<Token>> {
        let t = self.read()?.open_table(TOKENS)?;
        t.get(sha256)?.map(|v| decode_token(sha256, v.value())).transpose()
    }

    /// Every token, by hash.
    pub fn tokens(&self) -> Result<Vec<Token>> {
        let t = self.read()?.open_table(TOKENS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            out.push(decode_token(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Removes the one token whose hash starts with `prefix` (lowercase hex),
    /// in one transaction so that a concurrent create cannot make the match
    /// ambiguous between the lookup and the removal.
    pub async fn revoke_token(&self, prefix: &str) -> Result<Revoked> {
        let prefix = prefix.to_string();
        self.write(move |txn| {
            let mut t = txn.open_table(TOKENS)?;
            let mut found = Vec::new();
            // Keys are lowercase hex, all below 'g', so this bounds the prefix.
            let end = format!("{prefix}g");
            for row in t.range(prefix.as_str()..end.as_str())? {
                let (k, v) = row?;
                found.push(decode_token(k.value(), v.value())?);
            }
            Ok(match found.len() {
                0 => Revoked::NotFound,
                1 => {
                    let token = found.remove(0);
                    t.remove(token.sha256.as_str())?;
                    Revoked::Done(token)
                }
                _ => Revoked::Ambiguous(found),
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(secret: &str, mode: Mode, label: &str) -> Token {
        Token {
            sha256: auth::hash_token(secret),
            mode,
            label: label.into(),
            created_unix_ms: 1_700_000_000_000,
        }
    }

    #[tokio::test]
    async fn tokens_are_created_checked_listed_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let rw = token("secret-rw", Mode::ReadWrite, "ci");
        let ro = token("secret-ro", Mode::ReadOnly, "");
        {
            let s = Store::open(dir.path()).unwrap();
            assert!(s.create_token(rw.clone()).await.unwrap());
            assert!(s.create_token(ro.clone()).await.unwrap());
            // The same hash again changes nothing, whatever the mode.
            assert!(
                !s.create_token(Token {
                    mode: Mode::ReadOnly,
                    label: "other".into(),
                    ..rw.clone()
                })
                .await
                .unwrap()
            );
            assert_eq!(s.token(&rw.sha256).unwrap(), Some(rw.clone()));
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.token(&auth::hash_token("SECRET-RW")).unwrap(), Some(rw.clone()));
        assert_eq!(s.token(&ro.sha256).unwrap(), Some(ro.clone()));
        assert_eq!(s.token(&auth::hash_token("secret-other")).unwrap(), None);
        let mut all = s.tokens().unwrap();
        all.sort_by(|a, b| a.sha256.cmp(&b.sha256));
        let mut want = vec![rw, ro];
        want.sort_by(|a, b| a.sha256.cmp(&b.sha256));
        assert_eq!(all, want);
    }

    #[tokio::test]
    async fn tokens_are_revoked_by_a_unique_id_prefix_and_stay_revoked() {
        let dir = tempfile::tempdir().unwrap();
        // Two tokens whose hashes share a first digit, to make a prefix
        // ambiguous.
        let mut made: Vec<Token> = Vec::new();
        let mut i = 0;
        while made.len() < 2 {
            let t = token(&format!("secret-{i}"), Mode::AppendOnly, "");
            if made.first().is_none_or(|m| m.sha256[..1] == t.sha256[..1]) {
                made.push(t);
            }
            i += 1;
        }
        let (a, b) = (made[0].clone(), made[1].clone());
        {
            let s = Store::open(dir.path()).unwrap();
            s.create_token(a.clone()).await.unwrap();
            s.create_token(b.clone()).await.unwrap();
            match s.revoke_token(&a.sha256[..1]).await.unwrap() {
                Revoked::Ambiguous(ts) => assert_eq!(ts.len(), 2),
                other => panic!("{other:?}"),
            }
            assert_eq!(s.tokens().unwrap().len(), 2, "an ambiguous prefix revokes nothing");
            let unknown = if a.sha256.starts_with('0') { "ffffffffffff" } else { "000000000000" };
            assert_eq!(s.revoke_token(unknown).await.unwrap(), Revoked::NotFound);
            assert_eq!(s.revoke_token(a.id()).await.unwrap(), Revoked::Done(a.clone()));
            assert_eq!(s.revoke_token(a.id()).await.unwrap(), Revoked::NotFound);
            assert_eq!(s.token(&a.sha256).unwrap(), None);
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.token(&a.sha256).unwrap(), None);
        assert_eq!(s.tokens().unwrap(), vec![b.clone()]);
        // The full hash is a prefix too.
        assert_eq!(s.revoke_token(&b.sha256).await.unwrap(), Revoked::Done(b));
        assert!(s.tokens().unwrap().is_empty());
    }
}
