//! Counters, the cluster clock, health reports and the coordinators'
//! announcements: what every coordinator reads the same, timed by the
//! database's clock so that the coordinators' clocks need not agree.

use super::{Ctx, NOW_MS, Postgres, Result, from_json, int, json, uint};
use crate::coordinator::store::locations::META_LAST_STAMP;
use crate::coordinator::store::{CoordinatorRecord, HealthRow, SharedHealth};

/// The meta counter that carries the cluster clock between stores.
pub(super) const CLOCK_LEASE: &str = "clock_lease_ms";
/// Coordinators listed: those that announced themselves this lately.
const LISTED_FOR: &str = "10 minutes";
/// Coordinators forgotten: those silent this long.
const FORGOTTEN_AFTER: &str = "1 day";

/// Milliseconds since a `timestamptz` column, by the database's clock.
fn age(column: &str) -> String {
    format!("GREATEST(0, (extract(epoch from clock_timestamp() - {column}) * 1000)::bigint)")
}

impl Postgres {
    pub(super) async fn pg_meta(&self, name: &str) -> Result<Option<u64>> {
        let c = self.client().await?;
        if name == META_LAST_STAMP {
            // Kept by the stamp counter itself; 0 until anything was recorded.
            let row = c.query_one("SELECT stamp FROM location_clock", &[]).await.ctx(&self.at)?;
            return Ok(Some(uint(row.get(0))).filter(|v| *v > 0));
        }
        let row = c.query_opt("SELECT value FROM meta WHERE name = $1", &[&name]).await;
        Ok(row.ctx(&self.at)?.map(|r| uint(r.get(0))))
    }

    pub(super) async fn pg_set_meta(&self, name: &str, value: u64) -> Result<()> {
        let at = &*self.at;
        let mut c = self.client().await?;
        let txn = c.transaction().await.ctx(at)?;
        if name == META_LAST_STAMP {
            // Only ever raised, so that stamps never repeat.
            txn.execute("UPDATE location_clock SET stamp = GREATEST(stamp, $1)", &[&int(value)])
                .await
                .ctx(at)?;
        } else {
            txn.execute(
                "INSERT INTO meta (name, value) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                &[&name, &int(value)],
            )
            .await
            .ctx(at)?;
        }
        if name == CLOCK_LEASE {
            txn.execute("UPDATE cluster_clock SET ms = GREATEST(ms, $1)", &[&int(value)])
                .await
                .ctx(at)?;
        }
        txn.commit().await.ctx(at)?;
        Ok(())
    }

    pub(super) async fn pg_shared_clock_ms(&self, floor_ms: u64) -> Result<u64> {
        let c = self.client().await?;
        let row = c
            .query_one(
                &format!("UPDATE cluster_clock SET ms = GREATEST(ms, $1, {NOW_MS}) RETURNING ms"),
                &[&int(floor_ms)],
            )
            .await
            .ctx(&self.at)?;
        Ok(uint(row.get(0)))
    }

    pub(super) async fn pg_save_health(&self, node_uuid: &str, health: SharedHealth) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO node_health (node_uuid, health, seen) VALUES ($1, $2, clock_timestamp())
             ON CONFLICT (node_uuid) DO UPDATE SET health = excluded.health, seen = excluded.seen",
            &[&node_uuid, &json(&health)],
        )
        .await
        .ctx(&self.at)?;
        Ok(())
    }

    pub(super) async fn pg_load_health(&self) -> Result<Vec<HealthRow>> {
        let c = self.client().await?;
        let sql = format!(
            "SELECT node_uuid, health, {} FROM node_health ORDER BY node_uuid",
            age("seen")
        );
        let rows = c.query(&sql, &[]).await.ctx(&self.at)?;
        rows.into_iter()
            .map(|r| {
                Ok(HealthRow {
                    node_uuid: r.get(0),
                    health: from_json(r.get(1))?,
                    age_ms: uint(r.get(2)),
                })
            })
            .collect()
    }

    pub(super) async fn pg_announce(&self, me: CoordinatorRecord) -> Result<()> {
        let c = self.client().await?;
        let record = CoordinatorRecord { age_ms: 0, ..me };
        c.execute(
            "INSERT INTO coordinators (id, record, seen) VALUES ($1, $2, clock_timestamp())
             ON CONFLICT (id) DO UPDATE SET record = excluded.record, seen = excluded.seen",
            &[&record.id, &json(&record)],
        )
        .await
        .ctx(&self.at)?;
        Ok(())
    }

    pub(super) async fn pg_coordinators(&self) -> Result<Vec<CoordinatorRecord>> {
        let c = self.client().await?;
        let forget = format!(
            "DELETE FROM coordinators WHERE seen < clock_timestamp() - interval '{FORGOTTEN_AFTER}'"
        );
        c.execute(&forget, &[]).await.ctx(&self.at)?;
        let sql = format!(
            "SELECT record, {} FROM coordinators
             WHERE seen >= clock_timestamp() - interval '{LISTED_FOR}' ORDER BY id",
            age("seen")
        );
        let rows = c.query(&sql, &[]).await.ctx(&self.at)?;
        rows.into_iter()
            .map(|r| {
                let record: CoordinatorRecord = from_json(r.get(0))?;
                Ok(CoordinatorRecord { age_ms: uint(r.get(1)), ..record })
            })
            .collect()
    }
}
