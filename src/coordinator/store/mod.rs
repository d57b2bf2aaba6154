//! The coordinator's durable state in an embedded redb database, split by
//! concern: the registry of clusters and nodes (`registry`), the location
//! log (`locations`), what operators set on them (`settings`), the access
//! tokens of the line-protocol front-end (`tokens`) and persisted counters
//! such as the cluster clock's lease (`meta`).
//!
//! Reads open a read transaction of their own: cheap, and a consistent
//! snapshot. Every write goes through one writer thread (`writer`) fed by a
//! bounded queue, so that no commit (and its fsync) runs on an async worker,
//! a check and the write it guards share one transaction, and location
//! changes are committed in groups.

mod backend;
mod credentials;
mod locations;
mod meta;
pub mod postgres;
mod registry;
mod removal;
mod scan;
mod settings;
mod tokens;
mod writer;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

use redb::WriteTransaction;
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use backend::{
    Backend, ClusterSettingsUpdate, CoordinatorRecord, HealthRow, Migrate, NodeSettingsUpdate,
    SharedDegraded, SharedHealth, Snapshot,
};
pub use credentials::{JoinCheck, JoinTokenRecord};
pub use locations::{Change, LocationEntry, StampedChange, WallClock, system_clock};
pub use registry::{Cluster, Node, Registration, is_cluster_uuid, new_cluster_uuid};
pub use removal::{Removal, RemovedNode};
pub use settings::{ClusterSettings, DEFAULT_NODE_COST, NodeSettings};
pub use tokens::{Created, Revoked, Token};

use locations::Stamps;
use writer::Writer;

// The on-disk format: table names and encodings must stay as they are, so
// that an existing data directory keeps opening.

/// Cluster UUID -> Cluster as JSON.
const CLUSTERS: TableDefinition<&str, &str> = TableDefinition::new("clusters");
/// Node UUID -> Node as JSON.
const NODES: TableDefinition<&str, &str> = TableDefinition::new("nodes");
/// "KEY\tNODE-UUID" -> (changed unix ms, present). A tab never occurs in a
/// valid key, so all entries of one key form one contiguous range.
const LOCATIONS: TableDefinition<&str, (u64, bool)> = TableDefinition::new("locations");
/// Location stamp -> "KEY\tNODE-UUID": the log's entries by when they
/// last changed, so that changes since a stamp are one range read.
const LOCATION_STAMPS: TableDefinition<u64, &str> = TableDefinition::new("location_stamps");
/// Counter name -> value.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Node UUID -> NodeSettings as JSON, apart from `nodes` so that an agent's
/// registration never overwrites what an operator set.
const NODE_SETTINGS: TableDefinition<&str, &str> = TableDefinition::new("node_settings");
/// Node UUID -> RemovedNode as JSON: nodes removed from the mesh, whose
/// identity may not register again.
const REMOVED_NODES: TableDefinition<&str, &str> = TableDefinition::new("removed_nodes");
/// Cluster UUID -> ClusterSettings as JSON.
const CLUSTER_SETTINGS: TableDefinition<&str, &str> = TableDefinition::new("cluster_settings");
/// Hex SHA-256 of an access token -> TokenRecord as JSON. Only the hash is
/// kept, so the database alone grants no access.
const TOKENS: TableDefinition<&str, &str> = TableDefinition::new("tokens");
/// Hex SHA-256 of a join token's secret -> JoinTokenRecord as JSON.
const JOIN_TOKENS: TableDefinition<&str, &str> = TableDefinition::new("join_tokens");
/// Hex SHA-256 of an admin token -> created unix ms.
const ADMIN_TOKENS: TableDefinition<&str, u64> = TableDefinition::new("admin_tokens");
/// Node UUID -> unix ms a certificate was issued for it by joining.
const JOINED_AGENTS: TableDefinition<&str, u64> = TableDefinition::new("joined_agents");

/// Why a store operation failed. Clone, so that one failed group commit can
/// answer every write in the group.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(Arc<redb::Error>),
    /// A backend other than redb failed (e.g. PostgreSQL unreachable).
    #[error("database error: {0}")]
    Backend(String),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("{what}: {source}")]
    Io { what: String, source: Arc<std::io::Error> },
    #[error("the database writer has stopped; restart the coordinator")]
    WriterStopped,
    #[error("the database write failed unexpectedly and was abandoned; see the coordinator's log")]
    Abandoned,
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Db(Arc::new(e.into())) }
        }
    )*};
}
db_err!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub type Result<T> = std::result::Result<T, StoreError>;

/// The coordinator's database: direct reads, writes through the writer.
pub struct Store {
    db: Arc<Database>,
    writer: Writer,
    stamps: Arc<Stamps>,
    changes: tokio::sync::watch::Sender<u64>,
}

impl Store {
    /// Opens (or creates) the database in `dir` and starts its writer.
    /// Blocks on the disk: call it before serving, or off the async workers.
    pub fn open(dir: &Path) -> Result<Store> {
        Store::open_with_clock(dir, system_clock())
    }

    /// As `open`, with location stamps starting from `wall` rather than the
    /// system's wall clock.
    pub fn open_with_clock(dir: &Path, wall: WallClock) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io {
            what: format!("cannot create {}", dir.display()),
            source: Arc::new(e),
        })?;
        let db = Database::create(dir.join("coordinator.redb"))?;
        let txn = db.begin_write()?;
        // Create every table so that readers never meet a missing one.
        txn.open_table(CLUSTERS)?;
        txn.open_table(NODES)?;
        txn.open_table(LOCATIONS)?;
        txn.open_table(META)?;
        txn.open_table(NODE_SETTINGS)?;
        txn.open_table(CLUSTER_SETTINGS)?;
        txn.open_table(TOKENS)?;
        txn.open_table(REMOVED_NODES)?;
        txn.open_table(JOIN_TOKENS)?;
        txn.open_table(ADMIN_TOKENS)?;
        txn.open_table(JOINED_AGENTS)?;
        locations::index_stamps(&txn)?;
        let stamps = Arc::new(Stamps::new(locations::last_stamp(&txn)?, wall));
        txn.commit()?;
        let db = Arc::new(db);
        let writer = Writer::start(db.clone()).map_err(|e| StoreError::Io {
            what: "cannot start the database writer thread".into(),
            source: Arc::new(e),
        })?;
        Ok(Store { db, writer, stamps, changes: tokio::sync::watch::channel(0).0 })
    }

    /// Hears of changes to clusters, nodes and their settings, made by this
    /// coordinator or (on a shared store) another: the value only counts up.
    pub fn subscribe_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Tells subscribers that the topology changed.
    #[allow(dead_code)]
    fn changed(&self) {
        self.changes.send_modify(|v| *v += 1);
    }

    fn read(&self) -> Result<ReadTransaction> {
        Ok(self.db.begin_read()?)
    }

    /// Runs `f` on the writer thread in a transaction of its own, committed
    /// when `f` succeeds and abandoned when it fails; returns once committed.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T> + Send + 'static,
    {
        self.writer.write(f).await
    }
}

/// Every value of a JSON-valued table.
fn all_values<T: DeserializeOwned>(
    t: &impl ReadableTable<&'static str, &'static str>,
) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(t.len()? as usize);
    for row in t.iter()? {
        let (_, v) = row?;
        out.push(decode(v.value())?);
    }
    Ok(out)
}

fn decode<T: DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{e}: {s}")))
}

fn encode<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("records serialise")
}
