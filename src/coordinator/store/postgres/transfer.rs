//! Moving a mesh between stores: everything but the location log at once
//! (the log moves a page at a time, see `pg_import_locations`).

use super::shared::CLOCK_LEASE;
use super::{Ctx, Postgres, Result, int, json, notify, uint};
use crate::coordinator::store::locations::META_LAST_STAMP;
use crate::coordinator::store::{JoinTokenRecord, Snapshot, StoreError};

impl Postgres {
    pub(super) async fn pg_export(&self) -> Result<Snapshot> {
        let at = &*self.at;
        let mut s = Snapshot {
            clusters: self.pg_clusters().await?,
            nodes: self.pg_nodes().await?,
            node_settings: self.pg_all_settings(super::registry::NODE_SETTINGS).await?,
            cluster_settings: self.pg_all_settings(super::registry::CLUSTER_SETTINGS).await?,
            removed: self.pg_removed_nodes().await?,
            tokens: self.pg_tokens().await?,
            ..Snapshot::default()
        };
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT sha256, role, expires_unix_ms, uses_left FROM join_tokens ORDER BY sha256",
                &[],
            )
            .await
            .ctx(at)?;
        for r in rows {
            let uses_left: i32 = r.get(3);
            let record = JoinTokenRecord {
                role: r.get(1),
                expires_unix_ms: uint(r.get(2)),
                uses_left: uses_left.max(0) as u32,
            };
            s.join_tokens.push((r.get(0), record));
        }
        let pairs = |sql: &'static str| async {
            let rows = c.query(sql, &[]).await.ctx(at)?;
            Ok::<_, StoreError>(rows.iter().map(|r| (r.get(0), uint(r.get(1)))).collect::<Vec<_>>())
        };
        s.admin_tokens =
            pairs("SELECT sha256, created_unix_ms FROM admin_tokens ORDER BY sha256").await?;
        s.joined_agents =
            pairs("SELECT node_uuid, issued_unix_ms FROM joined_agents ORDER BY node_uuid").await?;
        let mut meta: Vec<(String, u64)> =
            pairs("SELECT name, value FROM meta ORDER BY name").await?;
        // The counters kept in rows of their own travel as meta.
        let row = c
            .query_one(
                "SELECT (SELECT stamp FROM location_clock), (SELECT ms FROM cluster_clock)",
                &[],
            )
            .await
            .ctx(at)?;
        let (stamp, clock) = (uint(row.get(0)), uint(row.get(1)));
        if stamp > 0 {
            meta.retain(|(n, _)| n != META_LAST_STAMP);
            meta.push((META_LAST_STAMP.into(), stamp));
        }
        match meta.iter_mut().find(|(n, _)| n == CLOCK_LEASE) {
            Some((_, v)) => *v = (*v).max(clock),
            None if clock > 0 => meta.push((CLOCK_LEASE.into(), clock)),
            None => {}
        }
        meta.sort();
        s.meta = meta;
        Ok(s)
    }

    pub(super) async fn pg_import(&self, s: Snapshot) -> Result<()> {
        let at = &*self.at;
        let mut c = self.client().await?;
        let txn = c.transaction().await.ctx(at)?;
        txn.batch_execute("LOCK TABLE nodes, clusters IN SHARE ROW EXCLUSIVE MODE")
            .await
            .ctx(at)?;
        txn.execute("SELECT 1 FROM location_clock FOR UPDATE", &[]).await.ctx(at)?;
        let used = txn
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM clusters) OR EXISTS (SELECT 1 FROM nodes)
                     OR EXISTS (SELECT 1 FROM locations)",
                &[],
            )
            .await
            .ctx(at)?;
        if used.get::<_, bool>(0) {
            return Err(StoreError::Backend(format!(
                "the database at {at} already holds a mesh (clusters, nodes or locations): \
                 import only into an empty one"
            )));
        }
        for x in &s.clusters {
            txn.execute("INSERT INTO clusters (uuid, name) VALUES ($1, $2)", &[&x.uuid, &x.name])
                .await
                .ctx(at)?;
        }
        for n in &s.nodes {
            txn.execute(
                "INSERT INTO nodes (uuid, name, cluster_uuid, address) VALUES ($1, $2, $3, $4)",
                &[&n.uuid, &n.name, &n.cluster_uuid, &n.address],
            )
            .await
            .ctx(at)?;
        }
        let upsert = |table: &str| {
            format!(
                "INSERT INTO {table} (uuid, settings) VALUES ($1, $2)
                 ON CONFLICT (uuid) DO UPDATE SET settings = excluded.settings"
            )
        };
        for (uuid, v) in &s.node_settings {
            txn.execute(&upsert("node_settings"), &[uuid, &json(v)]).await.ctx(at)?;
        }
        for (uuid, v) in &s.cluster_settings {
            txn.execute(&upsert("cluster_settings"), &[uuid, &json(v)]).await.ctx(at)?;
        }
        for r in &s.removed {
            txn.execute(
                "INSERT INTO removed_nodes (uuid, record) VALUES ($1, $2)
                 ON CONFLICT (uuid) DO UPDATE SET record = excluded.record",
                &[&r.node.uuid, &json(r)],
            )
            .await
            .ctx(at)?;
        }
        for t in &s.tokens {
            txn.execute(
                "INSERT INTO tokens (sha256, mode, label, created_unix_ms, user_name)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (sha256) DO UPDATE SET mode = excluded.mode, label = excluded.label,
                     created_unix_ms = excluded.created_unix_ms, user_name = excluded.user_name",
                &[&t.sha256, &t.mode.as_str(), &t.label, &int(t.created_unix_ms), &t.user],
            )
            .await
            .ctx(at)?;
        }
        for (sha256, r) in &s.join_tokens {
            txn.execute(
                "INSERT INTO join_tokens (sha256, role, expires_unix_ms, uses_left)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (sha256) DO UPDATE SET role = excluded.role,
                     expires_unix_ms = excluded.expires_unix_ms, uses_left = excluded.uses_left",
                &[
                    sha256,
                    &r.role,
                    &int(r.expires_unix_ms),
                    &(r.uses_left.min(i32::MAX as u32) as i32),
                ],
            )
            .await
            .ctx(at)?;
        }
        for (sha256, ms) in &s.admin_tokens {
            txn.execute(
                "INSERT INTO admin_tokens (sha256, created_unix_ms) VALUES ($1, $2)
                 ON CONFLICT (sha256) DO UPDATE SET created_unix_ms = excluded.created_unix_ms",
                &[sha256, &int(*ms)],
            )
            .await
            .ctx(at)?;
        }
        for (uuid, ms) in &s.joined_agents {
            txn.execute(
                "INSERT INTO joined_agents (node_uuid, issued_unix_ms) VALUES ($1, $2)
                 ON CONFLICT (node_uuid) DO UPDATE SET issued_unix_ms = excluded.issued_unix_ms",
                &[uuid, &int(*ms)],
            )
            .await
            .ctx(at)?;
        }
        for (name, value) in &s.meta {
            if name == META_LAST_STAMP {
                txn.execute(
                    "UPDATE location_clock SET stamp = GREATEST(stamp, $1)",
                    &[&int(*value)],
                )
                .await
                .ctx(at)?;
                continue;
            }
            txn.execute(
                "INSERT INTO meta (name, value) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                &[name, &int(*value)],
            )
            .await
            .ctx(at)?;
            if name == CLOCK_LEASE {
                txn.execute("UPDATE cluster_clock SET ms = GREATEST(ms, $1)", &[&int(*value)])
                    .await
                    .ctx(at)?;
            }
        }
        notify(&txn, at).await?;
        txn.commit().await.ctx(at)?;
        Ok(())
    }
}
