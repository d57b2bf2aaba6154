//! Access tokens, join tokens, admin tokens and the agents that joined.
//!
//! Writers of `tokens` take it in SHARE ROW EXCLUSIVE mode, so a check by
//! hash, user name or id prefix and the write it guards run as if alone.

use std::collections::HashSet;

use tokio_postgres::Row;

use super::{Ctx, Postgres, Result, int, uint};
use crate::coordinator::store::{Created, JoinCheck, JoinTokenRecord, Revoked, StoreError, Token};

const TOKEN_COLUMNS: &str = "SELECT sha256, mode, label, created_unix_ms, user_name FROM tokens";

fn token(r: &Row) -> Result<Token> {
    let sha256: String = r.get(0);
    let mode: String = r.get(1);
    let mode = mode.parse().map_err(|e| {
        StoreError::Corrupt(format!("token {}: {e}", crate::auth::token_id(&sha256)))
    })?;
    Ok(Token { sha256, mode, label: r.get(2), created_unix_ms: uint(r.get(3)), user: r.get(4) })
}

const LOCK_TOKENS: &str = "LOCK TABLE tokens IN SHARE ROW EXCLUSIVE MODE";

impl Postgres {
    pub(super) async fn pg_create_token(&self, t: Token) -> Result<Created> {
        let at = &*self.at;
        let mut c = self.client().await?;
        let txn = c.transaction().await.ctx(at)?;
        txn.batch_execute(LOCK_TOKENS).await.ctx(at)?;
        let taken = txn.query_opt("SELECT 1 FROM tokens WHERE sha256 = $1", &[&t.sha256]).await;
        if taken.ctx(at)?.is_some() {
            return Ok(Created::HashTaken);
        }
        if let Some(user) = &t.user {
            let taken = txn.query_opt("SELECT 1 FROM tokens WHERE user_name = $1", &[user]).await;
            if taken.ctx(at)?.is_some() {
                return Ok(Created::UserTaken);
            }
        }
        txn.execute(
            "INSERT INTO tokens (sha256, mode, label, created_unix_ms, user_name)
             VALUES ($1, $2, $3, $4, $5)",
            &[&t.sha256, &t.mode.as_str(), &t.label, &int(t.created_unix_ms), &t.user],
        )
        .await
        .ctx(at)?;
        txn.commit().await.ctx(at)?;
        Ok(Created::Done)
    }

    pub(super) async fn pg_remove_user(&self, name: &str) -> Result<Option<Token>> {
        let at = &*self.at;
        let c = self.client().await?;
        let row = c
            .query_opt(
                "DELETE FROM tokens WHERE user_name = $1
                 RETURNING sha256, mode, label, created_unix_ms, user_name",
                &[&name],
            )
            .await
            .ctx(at)?;
        row.as_ref().map(token).transpose()
    }

    pub(super) async fn pg_token(&self, sha256: &str) -> Result<Option<Token>> {
        let c = self.client().await?;
        let row = c.query_opt(&format!("{TOKEN_COLUMNS} WHERE sha256 = $1"), &[&sha256]).await;
        row.ctx(&self.at)?.as_ref().map(token).transpose()
    }

    pub(super) async fn pg_tokens(&self) -> Result<Vec<Token>> {
        let c = self.client().await?;
        let rows = c.query(&format!("{TOKEN_COLUMNS} ORDER BY sha256"), &[]).await;
        rows.ctx(&self.at)?.iter().map(token).collect()
    }

    pub(super) async fn pg_revoke_token(&self, prefix: &str) -> Result<Revoked> {
        let at = &*self.at;
        let mut c = self.client().await?;
        let txn = c.transaction().await.ctx(at)?;
        txn.batch_execute(LOCK_TOKENS).await.ctx(at)?;
        // Hashes are lowercase hex, all below 'g', so this bounds the prefix
        // (bytewise, as the column's collation is "C").
        let end = format!("{prefix}g");
        let rows = txn
            .query(
                &format!("{TOKEN_COLUMNS} WHERE sha256 >= $1 AND sha256 < $2 ORDER BY sha256"),
                &[&prefix, &end],
            )
            .await
            .ctx(at)?;
        let mut found = rows.iter().map(token).collect::<Result<Vec<_>>>()?;
        let outcome = match found.len() {
            0 => Revoked::NotFound,
            1 => {
                let t = found.remove(0);
                txn.execute("DELETE FROM tokens WHERE sha256 = $1", &[&t.sha256]).await.ctx(at)?;
                Revoked::Done(t)
            }
            _ => Revoked::Ambiguous(found),
        };
        txn.commit().await.ctx(at)?;
        Ok(outcome)
    }

    pub(super) async fn pg_create_join_token(
        &self,
        sha256: String,
        r: JoinTokenRecord,
    ) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO join_tokens (sha256, role, expires_unix_ms, uses_left)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (sha256) DO UPDATE SET role = excluded.role,
                 expires_unix_ms = excluded.expires_unix_ms, uses_left = excluded.uses_left",
            &[
                &sha256,
                &r.role,
                &int(r.expires_unix_ms),
                &(r.uses_left.min(i32::MAX as u32) as i32),
            ],
        )
        .await
        .ctx(&self.at)?;
        Ok(())
    }

    /// Checks a join and takes one use of the token with its row locked, so
    /// that concurrent joins with one token are admitted one at a time.
    pub(super) async fn pg_use_join_token(
        &self,
        sha256: String,
        role: String,
        node: Option<String>,
        now_unix_ms: u64,
    ) -> Result<JoinCheck> {
        let at = &*self.at;
        let mut c = self.client().await?;
        let txn = c.transaction().await.ctx(at)?;
        let row = txn
            .query_opt(
                "SELECT role, expires_unix_ms, uses_left FROM join_tokens
                 WHERE sha256 = $1 FOR UPDATE",
                &[&sha256],
            )
            .await
            .ctx(at)?;
        let Some(row) = row else { return Ok(JoinCheck::Unknown) };
        let (token_role, expires, uses_left): (String, i64, i32) =
            (row.get(0), row.get(1), row.get(2));
        if uint(expires) <= now_unix_ms {
            txn.execute("DELETE FROM join_tokens WHERE sha256 = $1", &[&sha256]).await.ctx(at)?;
            txn.commit().await.ctx(at)?;
            return Ok(JoinCheck::Expired);
        }
        if uses_left <= 0 {
            return Ok(JoinCheck::UsedUp);
        }
        if token_role != role {
            return Ok(JoinCheck::WrongRole(token_role));
        }
        if let Some(uuid) = &node {
            // No registration or removal of this identity meanwhile.
            txn.batch_execute("LOCK TABLE nodes, removed_nodes IN SHARE MODE").await.ctx(at)?;
            let registered = txn
                .query_opt(
                    "SELECT 1 FROM nodes WHERE uuid = $1
                     UNION ALL SELECT 1 FROM removed_nodes WHERE uuid = $1",
                    &[uuid],
                )
                .await
                .ctx(at)?
                .is_some();
            // A concurrent join of the same identity makes this wait for
            // it, then insert nothing.
            let issued = !registered
                && txn
                    .execute(
                        "INSERT INTO joined_agents (node_uuid, issued_unix_ms) VALUES ($1, $2)
                         ON CONFLICT DO NOTHING",
                        &[uuid, &int(now_unix_ms)],
                    )
                    .await
                    .ctx(at)?
                    == 1;
            if !issued {
                return Ok(JoinCheck::NodeTaken);
            }
        }
        if uses_left == 1 {
            txn.execute("DELETE FROM join_tokens WHERE sha256 = $1", &[&sha256]).await.ctx(at)?;
        } else {
            txn.execute(
                "UPDATE join_tokens SET uses_left = uses_left - 1 WHERE sha256 = $1",
                &[&sha256],
            )
            .await
            .ctx(at)?;
        }
        txn.commit().await.ctx(at)?;
        Ok(JoinCheck::Admitted)
    }

    pub(super) async fn pg_add_admin_token(
        &self,
        sha256: String,
        created_unix_ms: u64,
    ) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO admin_tokens (sha256, created_unix_ms) VALUES ($1, $2)
             ON CONFLICT (sha256) DO UPDATE SET created_unix_ms = excluded.created_unix_ms",
            &[&sha256, &int(created_unix_ms)],
        )
        .await
        .ctx(&self.at)?;
        Ok(())
    }

    pub(super) async fn pg_is_admin_token(&self, sha256: &str) -> Result<bool> {
        let c = self.client().await?;
        let row = c.query_opt("SELECT 1 FROM admin_tokens WHERE sha256 = $1", &[&sha256]).await;
        Ok(row.ctx(&self.at)?.is_some())
    }

    pub(super) async fn pg_admin_token_hashes(&self) -> Result<HashSet<String>> {
        let c = self.client().await?;
        let rows = c.query("SELECT sha256 FROM admin_tokens", &[]).await.ctx(&self.at)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub(super) async fn pg_admin_token_count(&self) -> Result<u64> {
        let c = self.client().await?;
        let row = c.query_one("SELECT count(*) FROM admin_tokens", &[]).await.ctx(&self.at)?;
        Ok(uint(row.get(0)))
    }
}
