//! What the coordinator keeps to let members in: join tokens and admin
//! tokens, both by the SHA-256 of their secret only, and the agent UUIDs a
//! certificate was issued for (so that nobody joins as an existing node).

use redb::{ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};

use super::{
    ADMIN_TOKENS, JOIN_TOKENS, JOINED_AGENTS, NODES, REMOVED_NODES, Redb, Result, decode, encode,
};

/// A join token as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    /// agent or gateway.
    pub role: String,
    pub expires_unix_ms: u64,
    pub uses_left: u32,
}

/// What a join with a token found.
#[derive(Debug, Clone, PartialEq)]
pub enum JoinCheck {
    /// Admitted; one use taken.
    Admitted,
    Unknown,
    Expired,
    UsedUp,
    /// The token is for this other role.
    WrongRole(String),
    /// A certificate was issued for this node before, or it is registered
    /// or was removed: its identity is taken.
    NodeTaken,
}

impl Redb {
    pub async fn create_join_token(&self, sha256: String, r: JoinTokenRecord) -> Result<()> {
        self.write(move |txn| {
            txn.open_table(JOIN_TOKENS)?.insert(sha256.as_str(), encode(&r).as_str())?;
            Ok(())
        })
        .await
    }

    /// Checks a join and, when admitted, takes one use of the token and
    /// records `node` (an agent's UUID) as issued, in one transaction.
    pub async fn use_join_token(
        &self,
        sha256: String,
        role: String,
        node: Option<String>,
        now_unix_ms: u64,
    ) -> Result<JoinCheck> {
        self.write(move |txn| {
            let mut tokens = txn.open_table(JOIN_TOKENS)?;
            let Some(v) = tokens.get(sha256.as_str())?.map(|v| v.value().to_string()) else {
                return Ok(JoinCheck::Unknown);
            };
            let mut r: JoinTokenRecord = decode(&v)?;
            if r.expires_unix_ms <= now_unix_ms {
                tokens.remove(sha256.as_str())?;
                return Ok(JoinCheck::Expired);
            }
            if r.uses_left == 0 {
                return Ok(JoinCheck::UsedUp);
            }
            if r.role != role {
                return Ok(JoinCheck::WrongRole(r.role));
            }
            if let Some(uuid) = &node {
                let mut joined = txn.open_table(JOINED_AGENTS)?;
                let taken = joined.get(uuid.as_str())?.is_some()
                    || txn.open_table(NODES)?.get(uuid.as_str())?.is_some()
                    || txn.open_table(REMOVED_NODES)?.get(uuid.as_str())?.is_some();
                if taken {
                    return Ok(JoinCheck::NodeTaken);
                }
                joined.insert(uuid.as_str(), now_unix_ms)?;
            }
            r.uses_left -= 1;
            if r.uses_left == 0 {
                tokens.remove(sha256.as_str())?;
            } else {
                tokens.insert(sha256.as_str(), encode(&r).as_str())?;
            }
            Ok(JoinCheck::Admitted)
        })
        .await
    }

    /// Stores an admin token's hash.
    pub async fn add_admin_token(&self, sha256: String, created_unix_ms: u64) -> Result<()> {
        self.write(move |txn| {
            txn.open_table(ADMIN_TOKENS)?.insert(sha256.as_str(), created_unix_ms)?;
            Ok(())
        })
        .await
    }

    /// Whether an admin token with this hash exists.
    pub fn is_admin_token(&self, sha256: &str) -> Result<bool> {
        Ok(self.read()?.open_table(ADMIN_TOKENS)?.get(sha256)?.is_some())
    }

    pub fn admin_token_count(&self) -> Result<u64> {
        Ok(self.read()?.open_table(ADMIN_TOKENS)?.len()?)
    }
}
