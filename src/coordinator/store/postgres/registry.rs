//! Clusters, nodes, their removal and what operators set on them.
//!
//! Writers of `nodes` take it in SHARE ROW EXCLUSIVE mode first: that mode
//! excludes itself, so a name check (or the sole-copy scan of a removal)
//! and its write run as if alone, whichever coordinator runs them.

use std::collections::HashMap;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_postgres::Row;

use super::{Ctx, Postgres, Result, from_json, json, notify};
use crate::coordinator::store::{
    Cluster, ClusterDeletion, Node, Registration, Removal, RemovedNode,
};

/// Keys named in a refusal to remove a node, as the embedded store does.
const SAMPLE: i64 = 5;

fn cluster(r: &Row) -> Cluster {
    Cluster { uuid: r.get(0), name: r.get(1) }
}

fn node(r: &Row) -> Node {
    Node { uuid: r.get(0), name: r.get(1), cluster_uuid: r.get(2), address: r.get(3) }
}

const NODE_COLUMNS: &str = "SELECT uuid, name, cluster_uuid, address FROM nodes";

impl Postgres {
    pub(super) async fn pg_clusters(&self) -> Result<Vec<Cluster>> {
        let c = self.client().await?;
        let rows = c.query("SELECT uuid, name FROM clusters ORDER BY uuid", &[]).await;
        Ok(rows.ctx(&self.at)?.iter().map(cluster).collect())
    }

    pub(super) async fn pg_cluster_by(&self, column: &str, value: &str) -> Result<Option<Cluster>> {
        let c = self.client().await?;
        let sql = format!("SELECT uuid, name FROM clusters WHERE {column} = $1");
        Ok(c.query_opt(&sql, &[&value]).await.ctx(&self.at)?.as_ref().map(cluster))
    }

    pub(super) async fn pg_create_cluster(&self, name: &str) -> Result<(Cluster, bool)> {
        let mut c = self.client().await?;
        let txn = c.transaction().await.ctx(&self.at)?;
        let fresh =
            Cluster { uuid: crate::coordinator::store::new_cluster_uuid(), name: name.into() };
        // A concurrent insert of the name makes this wait for it, then do
        // nothing: the name's owner is read below.
        let inserted = txn
            .execute(
                "INSERT INTO clusters (uuid, name) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&fresh.uuid, &fresh.name],
            )
            .await
            .ctx(&self.at)?;
        if inserted == 1 {
            notify(&txn, &self.at).await?;
            txn.commit().await.ctx(&self.at)?;
            return Ok((fresh, true));
        }
        let row = txn
            .query_one("SELECT uuid, name FROM clusters WHERE name = $1", &[&name])
            .await
            .ctx(&self.at)?;
        txn.commit().await.ctx(&self.at)?;
        Ok((cluster(&row), false))
    }

    pub(super) async fn pg_delete_cluster(&self, uuid: &str) -> Result<ClusterDeletion> {
        let mut c = self.client().await?;
        let txn = c.transaction().await.ctx(&self.at)?;
        // As node writers do, so that no node registers in it meanwhile.
        txn.execute("LOCK TABLE nodes IN SHARE ROW EXCLUSIVE MODE", &[]).await.ctx(&self.at)?;
        let rows = txn
            .query("SELECT name FROM nodes WHERE cluster_uuid = $1 ORDER BY name", &[&uuid])
            .await
            .ctx(&self.at)?;
        if !rows.is_empty() {
            return Ok(ClusterDeletion::HasNodes(rows.iter().map(|r| r.get(0)).collect()));
        }
        let n =
            txn.execute("DELETE FROM clusters WHERE uuid = $1", &[&uuid]).await.ctx(&self.at)?;
        if n == 0 {
            return Ok(ClusterDeletion::NotFound);
        }
        txn.execute("DELETE FROM cluster_settings WHERE uuid = $1", &[&uuid])
            .await
            .ctx(&self.at)?;
        notify(&txn, &self.at).await?;
        txn.commit().await.ctx(&self.at)?;
        Ok(ClusterDeletion::Deleted)
    }

    pub(super) async fn pg_nodes(&self) -> Result<Vec<Node>> {
        let c = self.client().await?;
        let rows = c.query(&format!("{NODE_COLUMNS} ORDER BY uuid"), &[]).await;
        Ok(rows.ctx(&self.at)?.iter().map(node).collect())
    }

    pub(super) async fn pg_node(&self, uuid: &str) -> Result<Option<Node>> {
        let c = self.client().await?;
        let row = c.query_opt(&format!("{NODE_COLUMNS} WHERE uuid = $1"), &[&uuid]).await;
        Ok(row.ctx(&self.at)?.as_ref().map(node))
    }

    pub(super) async fn pg_register_node(&self, n: Node) -> Result<Registration> {
        let at = &*self.at;
        let mut c = self.client().await?;
        let txn = c.transaction().await.ctx(at)?;
        txn.batch_execute("LOCK TABLE nodes IN SHARE ROW EXCLUSIVE MODE").await.ctx(at)?;
        let tomb = txn
            .query_opt("SELECT record FROM removed_nodes WHERE uuid = $1", &[&n.uuid])
            .await
            .ctx(at)?;
        if let Some(row) = tomb {
            return Ok(Registration::Removed(from_json(row.get(0))?));
        }
        let other = txn
            .query_opt(
                &format!("{NODE_COLUMNS} WHERE name = $1 AND uuid <> $2"),
                &[&n.name, &n.uuid],
            )
            .await
            .ctx(at)?;
        if let Some(row) = other {
            return Ok(Registration::NameTaken(node(&row)));
        }
        let stored = txn.query_opt(&format!("{NODE_COLUMNS} WHERE uuid = $1"), &[&n.uuid]).await;
        if stored.ctx(at)?.is_some_and(|r| node(&r) == n) {
            return Ok(Registration::Unchanged);
        }
        txn.execute(
            "INSERT INTO nodes (uuid, name, cluster_uuid, address) VALUES ($1, $2, $3, $4)
             ON CONFLICT (uuid) DO UPDATE SET name = excluded.name,
                 cluster_uuid = excluded.cluster_uuid, address = excluded.address",
            &[&n.uuid, &n.name, &n.cluster_uuid, &n.address],
        )
        .await
        .ctx(at)?;
        notify(&txn, at).await?;
        txn.commit().await.ctx(at)?;
        Ok(Registration::Saved)
    }

    pub(super) async fn pg_remove_node(&self, uuid: &str, lost: bool) -> Result<Removal> {
        let at = &*self.at;
        let mut c = self.client().await?;
        let txn = c.transaction().await.ctx(at)?;
        txn.batch_execute("LOCK TABLE nodes IN SHARE ROW EXCLUSIVE MODE").await.ctx(at)?;
        // The stamp counter's row lock keeps location writes out until this
        // commits, so no copy recorded meanwhile goes unnoticed, and none of
        // the node's entries is written after its tombstone.
        txn.execute("SELECT 1 FROM location_clock FOR UPDATE", &[]).await.ctx(at)?;
        let Some(row) =
            txn.query_opt(&format!("{NODE_COLUMNS} WHERE uuid = $1"), &[&uuid]).await.ctx(at)?
        else {
            return Ok(Removal::Done { struck: 0, lost_keys: 0 });
        };
        let gone = node(&row);
        // Keys it holds with no other registered node listed as holding them.
        let sole = "FROM locations l WHERE l.node_uuid = $1 AND l.present AND NOT EXISTS (
                 SELECT 1 FROM locations o JOIN nodes n ON n.uuid = o.node_uuid
                 WHERE o.key = l.key AND o.node_uuid <> $1 AND o.present)";
        let count: i64 =
            txn.query_one(&format!("SELECT count(*) {sole}"), &[&uuid]).await.ctx(at)?.get(0);
        if !lost && count > 0 {
            let rows = txn
                .query(&format!("SELECT l.key {sole} ORDER BY l.key LIMIT {SAMPLE}"), &[&uuid])
                .await
                .ctx(at)?;
            let sample = rows.iter().map(|r| r.get(0)).collect();
            return Ok(Removal::SoleCopies { count: count as u64, sample });
        }
        let struck =
            txn.execute("DELETE FROM locations WHERE node_uuid = $1", &[&uuid]).await.ctx(at)?;
        txn.execute("DELETE FROM nodes WHERE uuid = $1", &[&uuid]).await.ctx(at)?;
        txn.execute("DELETE FROM node_settings WHERE uuid = $1", &[&uuid]).await.ctx(at)?;
        let tomb = RemovedNode { node: gone, removed_unix_ms: crate::clock::unix_ms(), lost };
        txn.execute(
            "INSERT INTO removed_nodes (uuid, record) VALUES ($1, $2)
             ON CONFLICT (uuid) DO UPDATE SET record = excluded.record",
            &[&uuid, &json(&tomb)],
        )
        .await
        .ctx(at)?;
        notify(&txn, at).await?;
        txn.commit().await.ctx(at)?;
        Ok(Removal::Done { struck, lost_keys: count as u64 })
    }

    pub(super) async fn pg_removed_nodes(&self) -> Result<Vec<RemovedNode>> {
        let c = self.client().await?;
        let rows = c.query("SELECT record FROM removed_nodes ORDER BY uuid", &[]).await;
        rows.ctx(&self.at)?.into_iter().map(|r| from_json(r.get(0))).collect()
    }

    pub(super) async fn pg_all_settings<T: DeserializeOwned>(
        &self,
        table: &str,
    ) -> Result<HashMap<String, T>> {
        let c = self.client().await?;
        let rows = c.query(&format!("SELECT uuid, settings FROM {table}"), &[]).await;
        rows.ctx(&self.at)?.into_iter().map(|r| Ok((r.get(0), from_json(r.get(1))?))).collect()
    }

    /// Reads, changes and writes one settings row with the row locked.
    pub(super) async fn pg_update_settings<T>(
        &self,
        table: &str,
        uuid: &str,
        f: Box<dyn FnOnce(&mut T) + Send>,
    ) -> Result<T>
    where
        T: Default + Serialize + DeserializeOwned,
    {
        let at = &*self.at;
        let mut c = self.client().await?;
        let txn = c.transaction().await.ctx(at)?;
        // Make sure the row exists, so that there is one to lock.
        txn.execute(
            &format!("INSERT INTO {table} (uuid, settings) VALUES ($1, $2) ON CONFLICT DO NOTHING"),
            &[&uuid, &json(&T::default())],
        )
        .await
        .ctx(at)?;
        let row = txn
            .query_one(
                &format!("SELECT settings FROM {table} WHERE uuid = $1 FOR UPDATE"),
                &[&uuid],
            )
            .await
            .ctx(at)?;
        let mut value: T = from_json(row.get(0))?;
        f(&mut value);
        txn.execute(
            &format!("UPDATE {table} SET settings = $2 WHERE uuid = $1"),
            &[&uuid, &json(&value)],
        )
        .await
        .ctx(at)?;
        notify(&txn, at).await?;
        txn.commit().await.ctx(at)?;
        Ok(value)
    }
}

/// Settings tables, by what they are for.
pub(super) const NODE_SETTINGS: &str = "node_settings";
pub(super) const CLUSTER_SETTINGS: &str = "cluster_settings";
