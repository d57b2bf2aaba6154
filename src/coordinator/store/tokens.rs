//! Access tokens, stored by the SHA-256 of the token: what each may do,
//! never the token itself. A token with a user name is a user of P2P over
//! HTTP (basic auth, the token as password); every token also works as a
//! line-protocol AUTH token.

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::{Redb, Result, StoreError, TOKENS, decode, encode};
use crate::auth::{self, Mode};

/// An access token as stored: what it may do, never the token itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// Hex SHA-256 of the lower-cased token (`auth::hash_token`).
    pub sha256: String,
    pub mode: Mode,
    pub label: String,
    pub created_unix_ms: u64,
    /// The user name for HTTP basic auth, unique among tokens; None for a
    /// token accepted with any user name.
    pub user: Option<String>,
}

impl Token {
    /// The public name operators see and revoke by.
    pub fn id(&self) -> &str {
        auth::token_id(&self.sha256)
    }
}

/// Why a token could not be created.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    Done,
    /// A token with the same hash exists.
    HashTaken,
    /// Another token has this user name.
    UserTaken,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
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
        user: r.user,
    })
}

impl Redb {
    /// Stores a token's hash; nothing changes when that hash, or the
    /// token's user name, is stored already.
    pub async fn create_token(&self, token: Token) -> Result<Created> {
        self.write(move |txn| {
            let mut t = txn.open_table(TOKENS)?;
            if t.get(token.sha256.as_str())?.is_some() {
                return Ok(Created::HashTaken);
            }
            // Checked in the same transaction, so two adds of one name
            // cannot both succeed. Tokens are few; a scan is fine.
            if let Some(user) = &token.user {
                for row in t.iter()? {
                    let (k, v) = row?;
                    if decode_token(k.value(), v.value())?.user.as_ref() == Some(user) {
                        return Ok(Created::UserTaken);
                    }
                }
            }
            let r = TokenRecord {
                mode: token.mode.as_str().to_string(),
                label: token.label,
                created_unix_ms: token.created_unix_ms,
                user: token.user,
            };
            t.insert(token.sha256.as_str(), encode(&r).as_str())?;
            Ok(Created::Done)
        })
        .await
    }

    /// Removes the token of user `name`; None when there is none.
    pub async fn remove_user(&self, name: &str) -> Result<Option<Token>> {
        let name = name.to_string();
        self.write(move |txn| {
            let mut t = txn.open_table(TOKENS)?;
            let mut found = None;
            for row in t.iter()? {
                let (k, v) = row?;
                let token = decode_token(k.value(), v.value())?;
                if token.user.as_deref() == Some(name.as_str()) {
                    found = Some(token);
                    break;
                }
            }
            if let Some(token) = &found {
                t.remove(token.sha256.as_str())?;
            }
            Ok(found)
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
            user: None,
        }
    }

    #[tokio::test]
    async fn tokens_are_created_checked_listed_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let rw = token("secret-rw", Mode::ReadWrite, "ci");
        let ro = token("secret-ro", Mode::ReadOnly, "");
        {
            let s = Redb::open(dir.path()).unwrap();
            assert_eq!(s.create_token(rw.clone()).await.unwrap(), Created::Done);
            assert_eq!(s.create_token(ro.clone()).await.unwrap(), Created::Done);
            // The same hash again changes nothing, whatever the mode.
            let again = Token { mode: Mode::ReadOnly, label: "other".into(), ..rw.clone() };
            assert_eq!(s.create_token(again).await.unwrap(), Created::HashTaken);
            assert_eq!(s.token(&rw.sha256).unwrap(), Some(rw.clone()));
        }
        let s = Redb::open(dir.path()).unwrap();
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
            let s = Redb::open(dir.path()).unwrap();
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
        let s = Redb::open(dir.path()).unwrap();
        assert_eq!(s.token(&a.sha256).unwrap(), None);
        assert_eq!(s.tokens().unwrap(), vec![b.clone()]);
        // The full hash is a prefix too.
        assert_eq!(s.revoke_token(&b.sha256).await.unwrap(), Revoked::Done(b));
        assert!(s.tokens().unwrap().is_empty());
    }

    #[tokio::test]
    async fn user_names_are_unique_kept_and_removed_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let alice = Token { user: Some("alice".into()), ..token("pw-a", Mode::ReadOnly, "") };
        {
            let s = Redb::open(dir.path()).unwrap();
            assert_eq!(s.create_token(alice.clone()).await.unwrap(), Created::Done);
            let twin = Token { user: Some("alice".into()), ..token("pw-b", Mode::ReadWrite, "") };
            assert_eq!(s.create_token(twin).await.unwrap(), Created::UserTaken);
            assert_eq!(
                s.create_token(token("pw-c", Mode::ReadWrite, "")).await.unwrap(),
                Created::Done
            );
        }
        let s = Redb::open(dir.path()).unwrap();
        assert_eq!(s.token(&alice.sha256).unwrap(), Some(alice.clone()));
        assert_eq!(s.remove_user("bob").await.unwrap(), None);
        assert_eq!(s.remove_user("alice").await.unwrap(), Some(alice.clone()));
        assert_eq!(s.token(&alice.sha256).unwrap(), None);
        assert_eq!(s.tokens().unwrap().len(), 1, "the token without a user stays");
    }
}
