//! The embedded backend: one redb database file on the coordinator's disk,
//! for a mesh with one coordinator (and `annexmesh up`).
//!
//! Reads open a read transaction of their own: cheap, and a consistent
//! snapshot. Every write goes through one writer thread (`writer`) fed by a
//! bounded queue, so that no commit (and its fsync) runs on an async worker,
//! a check and the write it guards share one transaction, and location
//! changes are committed in groups. The methods of each concern live in its
//! own file (registry, settings, tokens, ...), beside its types.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadTransaction, WriteTransaction};

use super::locations::{self, Stamps};
use super::writer::Writer;
use super::*;

/// The embedded database: direct reads, writes through the writer.
pub struct Redb {
    pub(super) db: Arc<Database>,
    pub(super) writer: Writer,
    pub(super) stamps: Arc<Stamps>,
    path: PathBuf,
}

/// The database file in a coordinator's data directory.
pub const FILE: &str = "coordinator.redb";

/// Default size of redb's page cache, in MiB (`--store-cache`). redb reads
/// the file itself rather than mapping it, and this cache is what the
/// coordinator's memory holds of the database: without a bound it grows
/// with the pages read, up to redb's own default of 1 GiB. Pages past it
/// come from the kernel's page cache, which is not the coordinator's.
pub const DEFAULT_CACHE_MIB: usize = 256;

impl Redb {
    /// Opens (or creates) the database in `dir` and starts its writer.
    /// Blocks on the disk: call it before serving, or off the async workers.
    pub fn open(dir: &Path) -> Result<Redb> {
        Redb::open_with_clock(dir, system_clock())
    }

    /// As `open`, with location stamps starting from `wall` rather than the
    /// system's wall clock.
    pub fn open_with_clock(dir: &Path, wall: WallClock) -> Result<Redb> {
        Redb::open_with_cache(dir, wall, DEFAULT_CACHE_MIB)
    }

    /// As `open_with_clock`, with a page cache of at most `cache_mib` MiB.
    pub fn open_with_cache(dir: &Path, wall: WallClock, cache_mib: usize) -> Result<Redb> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io {
            what: format!("cannot create {}", dir.display()),
            source: Arc::new(e),
        })?;
        let path = dir.join(FILE);
        let db = redb::Builder::new()
            .set_cache_size(cache_mib.saturating_mul(1024 * 1024))
            .create(&path)?;
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
        Ok(Redb { db, writer, stamps, path })
    }

    pub(super) fn read(&self) -> Result<ReadTransaction> {
        Ok(self.db.begin_read()?)
    }

    /// Runs `f` on the writer thread in a transaction of its own, committed
    /// when `f` succeeds and abandoned when it fails; returns once committed.
    pub(super) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T> + Send + 'static,
    {
        self.writer.write(f).await
    }
}

fn not_shared() -> StoreError {
    StoreError::Backend("the embedded store is not shared between coordinators".into())
}

#[async_trait::async_trait]
impl Backend for Redb {
    fn describe(&self) -> String {
        format!("redb:{}", self.path.display())
    }

    fn shared(&self) -> bool {
        false
    }

    async fn clusters(&self) -> Result<Vec<Cluster>> {
        Redb::clusters(self)
    }
    async fn cluster_by_name(&self, name: &str) -> Result<Option<Cluster>> {
        Redb::cluster_by_name(self, name)
    }
    async fn cluster_by_uuid(&self, uuid: &str) -> Result<Option<Cluster>> {
        Redb::cluster_by_uuid(self, uuid)
    }
    async fn create_cluster(&self, name: &str) -> Result<(Cluster, bool)> {
        Redb::create_cluster(self, name).await
    }
    async fn delete_cluster(&self, uuid: &str) -> Result<ClusterDeletion> {
        Redb::delete_cluster(self, uuid).await
    }
    async fn nodes(&self) -> Result<Vec<Node>> {
        Redb::nodes(self)
    }
    async fn node(&self, uuid: &str) -> Result<Option<Node>> {
        Redb::node(self, uuid)
    }
    async fn register_node(&self, node: Node) -> Result<Registration> {
        Redb::register_node(self, node).await
    }
    async fn remove_node(&self, uuid: &str, lost: bool) -> Result<Removal> {
        Redb::remove_node(self, uuid, lost).await
    }
    async fn removed_nodes(&self) -> Result<Vec<RemovedNode>> {
        Redb::removed_nodes(self)
    }

    async fn node_settings(&self) -> Result<HashMap<String, NodeSettings>> {
        Redb::node_settings(self)
    }
    async fn cluster_settings(&self) -> Result<HashMap<String, ClusterSettings>> {
        Redb::cluster_settings(self)
    }
    async fn update_node_settings_boxed(
        &self,
        uuid: &str,
        f: NodeSettingsUpdate,
    ) -> Result<NodeSettings> {
        Redb::update_node_settings(self, uuid, f).await
    }
    async fn update_cluster_settings_boxed(
        &self,
        uuid: &str,
        f: ClusterSettingsUpdate,
    ) -> Result<ClusterSettings> {
        Redb::update_cluster_settings(self, uuid, f).await
    }

    async fn create_token(&self, token: Token) -> Result<Created> {
        Redb::create_token(self, token).await
    }
    async fn remove_user(&self, name: &str) -> Result<Option<Token>> {
        Redb::remove_user(self, name).await
    }
    async fn token(&self, sha256: &str) -> Result<Option<Token>> {
        Redb::token(self, sha256)
    }
    async fn tokens(&self) -> Result<Vec<Token>> {
        Redb::tokens(self)
    }
    async fn revoke_token(&self, prefix: &str) -> Result<Revoked> {
        Redb::revoke_token(self, prefix).await
    }

    async fn create_join_token(&self, sha256: String, r: JoinTokenRecord) -> Result<()> {
        Redb::create_join_token(self, sha256, r).await
    }
    async fn use_join_token(
        &self,
        sha256: String,
        role: String,
        node: Option<String>,
        now_unix_ms: u64,
    ) -> Result<JoinCheck> {
        Redb::use_join_token(self, sha256, role, node, now_unix_ms).await
    }
    async fn add_admin_token(&self, sha256: String, created_unix_ms: u64) -> Result<()> {
        Redb::add_admin_token(self, sha256, created_unix_ms).await
    }
    async fn is_admin_token(&self, sha256: &str) -> Result<bool> {
        Redb::is_admin_token(self, sha256)
    }
    async fn admin_token_count(&self) -> Result<u64> {
        Redb::admin_token_count(self)
    }
    async fn admin_token_hashes(&self) -> Result<HashSet<String>> {
        let txn = self.read()?;
        let t = txn.open_table(ADMIN_TOKENS)?;
        let mut out = HashSet::new();
        for row in redb::ReadableTable::iter(&t)? {
            out.insert(row?.0.value().to_string());
        }
        Ok(out)
    }

    async fn record(&self, changes: Vec<Change>) -> Result<()> {
        Redb::record(self, changes).await
    }
    async fn present_by_node(&self) -> Result<HashMap<String, HashSet<String>>> {
        Redb::present_by_node(self)
    }
    async fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<StampedChange>> {
        Redb::changes_after(self, after, limit)
    }
    async fn locations(&self, key: &str) -> Result<Vec<LocationEntry>> {
        Redb::locations(self, key)
    }
    async fn location_keys_after(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        Redb::location_keys_after(self, after, limit)
    }

    async fn meta(&self, name: &str) -> Result<Option<u64>> {
        Redb::meta(self, name)
    }
    async fn set_meta(&self, name: &str, value: u64) -> Result<()> {
        Redb::set_meta(self, name, value).await
    }

    async fn shared_clock_ms(&self, _floor_ms: u64) -> Result<u64> {
        Err(not_shared())
    }
    // One coordinator: its own memory holds all the health there is.
    async fn save_health(&self, _node_uuid: &str, _health: SharedHealth) -> Result<()> {
        Ok(())
    }
    async fn load_health(&self) -> Result<Vec<HealthRow>> {
        Ok(Vec::new())
    }
    async fn announce(&self, _me: CoordinatorRecord) -> Result<()> {
        Ok(())
    }
    async fn coordinators(&self) -> Result<Vec<CoordinatorRecord>> {
        Ok(Vec::new())
    }
}
