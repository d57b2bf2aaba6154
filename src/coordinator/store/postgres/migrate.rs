//! Versioned schema migrations, run as a coordinator starts: numbered SQL
//! files, each applied in a transaction of its own under a transaction-level
//! advisory lock, so that coordinators starting at once apply each exactly
//! once; the versions applied are kept in `schema_migrations`.

use super::{Ctx, Result, StoreError};

/// The migrations this build knows, in order: (version, SQL).
const MIGRATIONS: &[(i32, &str)] = &[(1, include_str!("migrations/0001_init.sql"))];

/// The advisory lock every migrating coordinator takes: an arbitrary
/// constant ("annexmsh" in ASCII), the same in every version.
const LOCK: i64 = 0x616e_6e65_786d_7368;

/// The newest schema version this build knows.
pub(super) fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Brings the schema up to date; refuses a database migrated by a newer
/// build, whose schema this one may misread.
pub(super) async fn run(client: &mut deadpool_postgres::Object, at: &str) -> Result<()> {
    for &(version, sql) in MIGRATIONS {
        let txn = client.transaction().await.ctx(at)?;
        txn.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK]).await.ctx(at)?;
        // Quiet: "already exists" notices would be logged at every start.
        txn.batch_execute(
            "SET LOCAL client_min_messages = warning;
             CREATE TABLE IF NOT EXISTS schema_migrations (
                 version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
             )",
        )
        .await
        .ctx(at)?;
        let row = txn
            .query_one("SELECT coalesce(max(version), 0) FROM schema_migrations", &[])
            .await
            .ctx(at)?;
        let current: i32 = row.get(0);
        if current > latest() {
            return Err(StoreError::Backend(format!(
                "the database at {at} has schema version {current}, newer than this \
                 annexmesh knows ({}): upgrade annexmesh",
                latest()
            )));
        }
        let applied = txn
            .query_opt("SELECT 1 FROM schema_migrations WHERE version = $1", &[&version])
            .await
            .ctx(at)?
            .is_some();
        if !applied {
            txn.batch_execute(sql).await.map_err(|e| {
                StoreError::Backend(format!(
                    "schema migration {version} failed on {at}: {}",
                    super::chain(&e)
                ))
            })?;
            txn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[&version])
                .await
                .ctx(at)?;
            tracing::info!(version, "applied schema migration on PostgreSQL at {at}");
        }
        txn.commit().await.ctx(at)?;
    }
    Ok(())
}
