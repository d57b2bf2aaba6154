//! The location log. Changes are recorded by one task per coordinator fed by
//! a bounded queue: what is waiting when it gets to it shares one
//! transaction and one multi-row statement, and each caller is answered
//! after the commit.
//!
//! Stamps come from the one-row counter `location_clock`, raised first thing
//! in the recording transaction to `max(database clock, last + 1)` per
//! change. Its row lock is held until the commit, so recording transactions
//! of every coordinator commit one at a time and in stamp order: a reader
//! of `changes_after` never sees a stamp before a smaller one is committed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};

use super::{Ctx, NOW_MS, Postgres, Result, int, uint};
use crate::coordinator::store::{Change, LocationEntry, StampedChange, StoreError};

/// Recording requests that may wait for the writer task; more wait to queue.
const QUEUE: usize = 1024;
/// Changes one transaction takes at most (unless one request has more).
const BATCH: usize = 20_000;

struct Job {
    changes: Vec<Change>,
    done: oneshot::Sender<Result<()>>,
}

/// The handle on the recording task; it ends when this is dropped.
pub(super) struct Writer {
    queue: mpsc::Sender<Job>,
}

impl Writer {
    pub(super) fn start(pool: Pool, at: Arc<str>) -> Writer {
        let (queue, jobs) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, at, jobs));
        Writer { queue }
    }

    pub(super) async fn record(&self, changes: Vec<Change>) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let (done, reply) = oneshot::channel();
        self.queue.send(Job { changes, done }).await.map_err(|_| StoreError::WriterStopped)?;
        reply.await.map_err(|_| StoreError::Abandoned)?
    }
}

async fn run(pool: Pool, at: Arc<str>, mut jobs: mpsc::Receiver<Job>) {
    while let Some(first) = jobs.recv().await {
        let mut count = first.changes.len();
        let mut batch = vec![first];
        while count < BATCH
            && let Ok(job) = jobs.try_recv()
        {
            count += job.changes.len();
            batch.push(job);
        }
        let result = write(&pool, &at, &batch).await;
        if let Err(e) = &result {
            tracing::warn!("recording {count} location changes failed: {e}");
        }
        for job in batch {
            let _ = job.done.send(result.clone());
        }
    }
}

/// Columns of rows to upsert, one array each.
#[derive(Default)]
pub(super) struct Rows {
    pub keys: Vec<String>,
    pub nodes: Vec<String>,
    pub stamps: Vec<i64>,
    pub present: Vec<bool>,
}

impl Rows {
    /// The rows for `changes` with consecutive stamps from `first`; of
    /// several changes to one entry only the last, which has the largest.
    fn stamped<'a>(changes: impl Iterator<Item = &'a Change>, first: i64) -> Rows {
        let mut rows = Rows::default();
        let mut at: HashMap<(&str, &str), usize> = HashMap::new();
        for (i, (key, node, present)) in changes.enumerate() {
            let stamp = first + i as i64;
            match at.get(&(key.as_str(), node.as_str())) {
                Some(&j) => (rows.stamps[j], rows.present[j]) = (stamp, *present),
                None => {
                    at.insert((key, node), rows.keys.len());
                    rows.keys.push(key.clone());
                    rows.nodes.push(node.clone());
                    rows.stamps.push(stamp);
                    rows.present.push(*present);
                }
            }
        }
        rows
    }

    /// Writes the rows where they are newer than what is stored, leaving
    /// out entries of removed nodes.
    pub(super) async fn upsert(
        &self,
        txn: &deadpool_postgres::Transaction<'_>,
        at: &str,
    ) -> Result<()> {
        txn.execute(
            "INSERT INTO locations (key, node_uuid, stamp, present)
             SELECT c.key, c.node, c.stamp, c.present
             FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bool[])
                 AS c(key, node, stamp, present)
             WHERE NOT EXISTS (SELECT 1 FROM removed_nodes r WHERE r.uuid = c.node)
             ON CONFLICT (key, node_uuid) DO UPDATE
                 SET stamp = excluded.stamp, present = excluded.present
                 WHERE locations.stamp < excluded.stamp",
            &[&self.keys, &self.nodes, &self.stamps, &self.present],
        )
        .await
        .ctx(at)?;
        Ok(())
    }
}

async fn write(pool: &Pool, at: &str, batch: &[Job]) -> Result<()> {
    let n = batch.iter().map(|j| j.changes.len()).sum::<usize>() as i64;
    let mut c = pool.get().await.ctx(at)?;
    let txn = c.transaction().await.ctx(at)?;
    // Locks the counter's row until the commit: see the module's comment.
    let top: i64 = txn
        .query_one(
            &format!(
                "UPDATE location_clock SET stamp = GREATEST(stamp + $1, {NOW_MS} + $1 - 1)
                 RETURNING stamp"
            ),
            &[&n],
        )
        .await
        .ctx(at)?
        .get(0);
    let rows = Rows::stamped(batch.iter().flat_map(|j| j.changes.iter()), top - n + 1);
    rows.upsert(&txn, at).await?;
    txn.commit().await.ctx(at)?;
    Ok(())
}

fn stamped_change(r: &tokio_postgres::Row) -> StampedChange {
    StampedChange {
        key: r.get(0),
        entry: LocationEntry {
            node_uuid: r.get(1),
            present: r.get(2),
            changed_unix_ms: uint(r.get(3)),
        },
    }
}

impl Postgres {
    pub(super) async fn pg_present_by_node(&self) -> Result<HashMap<String, HashSet<String>>> {
        let c = self.client().await?;
        let rows = c.query("SELECT node_uuid, key FROM locations WHERE present", &[]).await;
        let mut out: HashMap<String, HashSet<String>> = HashMap::new();
        for r in rows.ctx(&self.at)? {
            out.entry(r.get(0)).or_default().insert(r.get(1));
        }
        Ok(out)
    }

    pub(super) async fn pg_changes_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StampedChange>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT key, node_uuid, present, stamp FROM locations WHERE stamp > $1
                 ORDER BY stamp LIMIT $2",
                &[&int(after), &int(limit as u64)],
            )
            .await
            .ctx(&self.at)?;
        Ok(rows.iter().map(stamped_change).collect())
    }

    pub(super) async fn pg_locations(&self, key: &str) -> Result<Vec<LocationEntry>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT node_uuid, present, stamp FROM locations WHERE key = $1 ORDER BY node_uuid",
                &[&key],
            )
            .await
            .ctx(&self.at)?;
        Ok(rows
            .iter()
            .map(|r| LocationEntry {
                node_uuid: r.get(0),
                present: r.get(1),
                changed_unix_ms: uint(r.get(2)),
            })
            .collect())
    }

    pub(super) async fn pg_location_keys_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        let c = self.client().await?;
        let limit = int(limit as u64);
        let rows = match after {
            Some(after) => {
                c.query(
                    "SELECT key FROM locations WHERE key > $1 GROUP BY key ORDER BY key LIMIT $2",
                    &[&after, &limit],
                )
                .await
            }
            None => {
                c.query("SELECT key FROM locations GROUP BY key ORDER BY key LIMIT $1", &[&limit])
                    .await
            }
        };
        Ok(rows.ctx(&self.at)?.iter().map(|r| r.get(0)).collect())
    }

    /// Writes entries with the stamps they have, and raises the counter
    /// above the largest, so that this store's own stamps continue above.
    pub(super) async fn pg_import_locations(&self, entries: Vec<StampedChange>) -> Result<()> {
        let at = &*self.at;
        let mut rows = Rows::default();
        let mut seen: HashMap<(String, String), usize> = HashMap::new();
        for e in entries {
            let stamp = int(e.entry.changed_unix_ms);
            let k = (e.key, e.entry.node_uuid);
            if let Some(&i) = seen.get(&k) {
                if rows.stamps[i] < stamp {
                    (rows.stamps[i], rows.present[i]) = (stamp, e.entry.present);
                }
                continue;
            }
            seen.insert(k.clone(), rows.keys.len());
            rows.keys.push(k.0);
            rows.nodes.push(k.1);
            rows.stamps.push(stamp);
            rows.present.push(e.entry.present);
        }
        let top = rows.stamps.iter().copied().max().unwrap_or(0);
        let mut c = self.client().await?;
        let txn = c.transaction().await.ctx(at)?;
        txn.execute("UPDATE location_clock SET stamp = GREATEST(stamp, $1)", &[&top])
            .await
            .ctx(at)?;
        rows.upsert(&txn, at).await?;
        txn.commit().await.ctx(at)?;
        Ok(())
    }
}
