//! The coordinator's durable state in an embedded redb database: clusters,
//! nodes, what operators set on them (preferred content, draining, minimum
//! copies, space reserve), the location log, the clock's persisted floor and
//! the access tokens of the line-protocol front-end.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::auth::{self, Mode};

const CLUSTERS: TableDefinition<&str, &str> = TableDefinition::new("clusters");
const NODES: TableDefinition<&str, &str> = TableDefinition::new("nodes");
/// "KEY\tNODE-UUID" -> (changed unix ms, present). A tab never occurs in a
/// valid key, so all entries of one key form one contiguous range.
const LOCATIONS: TableDefinition<&str, (u64, bool)> = TableDefinition::new("locations");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Node UUID -> NodeSettings, apart from `nodes` so that an agent's
/// registration never overwrites what an operator set.
const NODE_SETTINGS: TableDefinition<&str, &str> = TableDefinition::new("node_settings");
/// Cluster UUID -> ClusterSettings.
const CLUSTER_SETTINGS: TableDefinition<&str, &str> = TableDefinition::new("cluster_settings");
/// Hex SHA-256 of an access token -> TokenRecord. Only the hash is kept, so
/// the database alone grants no access.
const TOKENS: TableDefinition<&str, &str> = TableDefinition::new("tokens");

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("database error: {0}")]
    Db(#[from] redb::Error),
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StateError {
            fn from(e: $t) -> Self { StateError::Db(e.into()) }
        }
    )*};
}
db_err!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub type Result<T> = std::result::Result<T, StateError>;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cluster {
    pub uuid: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Node {
    pub uuid: String,
    pub name: String,
    pub cluster_uuid: String,
    pub address: String,
}

impl crate::names::Named for Cluster {
    fn name(&self) -> &str {
        &self.name
    }
    fn uuid(&self) -> &str {
        &self.uuid
    }
}

impl crate::names::Named for Node {
    fn name(&self) -> &str {
        &self.name
    }
    fn uuid(&self) -> &str {
        &self.uuid
    }
}

/// What operators set on a node.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct NodeSettings {
    /// Preferred content expression; None wants everything.
    pub wanted: Option<String>,
    /// A draining node gets no new content but still serves what it has.
    pub draining: bool,
    /// Preference among holders for GET and CHECKPRESENT, lower first; None
    /// means DEFAULT_NODE_COST.
    pub cost: Option<u32>,
}

/// A node's cost when operators set none (git-annex's cost of a remote
/// reached over the network is 200 and a local one 100; nodes start equal).
pub const DEFAULT_NODE_COST: u32 = 100;

/// What operators set on a cluster.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ClusterSettings {
    /// Nodes that must store a PUT for it to succeed; None means 1.
    pub min_copies: Option<u32>,
    /// Free space a PUT must leave on a node; None means the coordinator's
    /// default.
    pub reserve_bytes: Option<u64>,
}

/// An access token as stored: what it may do, never the token itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// Hex SHA-256 of the lower-cased token (`auth::hash_token`).
    pub sha256: String,
    pub mode: Mode,
    pub label: String,
    pub created_unix_ms: u64,
}

impl Token {
    /// The public name operators see and revoke by.
    pub fn id(&self) -> &str {
        auth::token_id(&self.sha256)
    }
}

#[derive(Serialize, Deserialize)]
struct TokenRecord {
    mode: String,
    label: String,
    created_unix_ms: u64,
}

fn decode_token(sha256: &str, v: &str) -> Result<Token> {
    let r: TokenRecord = decode(v)?;
    let mode = r
        .mode
        .parse()
        .map_err(|e| StateError::Corrupt(format!("token {}: {e}", auth::token_id(sha256))))?;
    Ok(Token {
        sha256: sha256.to_string(),
        mode,
        label: r.label,
        created_unix_ms: r.created_unix_ms,
    })
}

/// What revoking by an id prefix did.
#[derive(Debug, Clone, PartialEq)]
pub enum Revoked {
    Done(Token),
    NotFound,
    /// The prefix matches these tokens; none was revoked.
    Ambiguous(Vec<Token>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct LocationEntry {
    pub node_uuid: String,
    pub present: bool,
    pub changed_unix_ms: u64,
}

pub struct State {
    db: Database,
    /// Location timestamps strictly increase, so "newest wins" is a total
    /// order even for changes recorded within one millisecond.
    last_stamp: AtomicU64,
}

fn location_key(key: &str, node: &str) -> String {
    format!("{key}\t{node}")
}

fn decode<T: for<'de> Deserialize<'de>>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StateError::Corrupt(format!("{e}: {s}")))
}

fn encode<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("records serialise")
}

impl State {
    pub fn open(dir: &Path) -> Result<State> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StateError::Corrupt(format!("cannot create {}: {e}", dir.display())))?;
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
        txn.commit()?;
        Ok(State { db, last_stamp: AtomicU64::new(0) })
    }

    pub fn clusters(&self) -> Result<Vec<Cluster>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(CLUSTERS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (_, v) = row?;
            out.push(decode::<Cluster>(v.value())?);
        }
        Ok(out)
    }

    pub fn cluster_by_name(&self, name: &str) -> Result<Option<Cluster>> {
        Ok(self.clusters()?.into_iter().find(|c| c.name == name))
    }

    pub fn cluster_by_uuid(&self, uuid: &str) -> Result<Option<Cluster>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(CLUSTERS)?;
        t.get(uuid)?.map(|v| decode(v.value())).transpose()
    }

    /// Creates a cluster; returns the existing one when the name is taken.
    pub fn create_cluster(&self, name: &str) -> Result<(Cluster, bool)> {
        if let Some(c) = self.cluster_by_name(name)? {
            return Ok((c, false));
        }
        let c = Cluster { uuid: uuid::Uuid::new_v4().to_string(), name: name.to_string() };
        let txn = self.db.begin_write()?;
        txn.open_table(CLUSTERS)?.insert(c.uuid.as_str(), encode(&c).as_str())?;
        txn.commit()?;
        Ok((c, true))
    }

    pub fn nodes(&self) -> Result<Vec<Node>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(NODES)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (_, v) = row?;
            out.push(decode::<Node>(v.value())?);
        }
        Ok(out)
    }

    pub fn node(&self, uuid: &str) -> Result<Option<Node>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(NODES)?;
        t.get(uuid)?.map(|v| decode(v.value())).transpose()
    }

    pub fn upsert_node(&self, node: &Node) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(NODES)?.insert(node.uuid.as_str(), encode(node).as_str())?;
        txn.commit()?;
        Ok(())
    }

    pub fn node_settings(&self) -> Result<HashMap<String, NodeSettings>> {
        self.all_settings(NODE_SETTINGS)
    }

    pub fn cluster_settings(&self) -> Result<HashMap<String, ClusterSettings>> {
        self.all_settings(CLUSTER_SETTINGS)
    }

    /// Changes a node's settings in one transaction; returns the result.
    pub fn update_node_settings(
        &self,
        uuid: &str,
        f: impl FnOnce(&mut NodeSettings),
    ) -> Result<NodeSettings> {
        self.update_settings(NODE_SETTINGS, uuid, f)
    }

    pub fn update_cluster_settings(
        &self,
        uuid: &str,
        f: impl FnOnce(&mut ClusterSettings),
    ) -> Result<ClusterSettings> {
        self.update_settings(CLUSTER_SETTINGS, uuid, f)
    }

    fn all_settings<T: for<'de> Deserialize<'de>>(
        &self,
        table: TableDefinition<&str, &str>,
    ) -> Result<HashMap<String, T>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(table)?;
        let mut out = HashMap::new();
        for row in t.iter()? {
            let (k, v) = row?;
            out.insert(k.value().to_string(), decode(v.value())?);
        }
        Ok(out)
    }

    fn update_settings<T: Default + Serialize + for<'de> Deserialize<'de>>(
        &self,
        table: TableDefinition<&str, &str>,
        uuid: &str,
        f: impl FnOnce(&mut T),
    ) -> Result<T> {
        let txn = self.db.begin_write()?;
        let value = {
            let mut t = txn.open_table(table)?;
            let mut value: T = match t.get(uuid)? {
                Some(v) => decode(v.value())?,
                None => T::default(),
            };
            f(&mut value);
            t.insert(uuid, encode(&value).as_str())?;
            value
        };
        txn.commit()?;
        Ok(value)
    }

    fn next_stamp(&self) -> u64 {
        let now = crate::clock::unix_ms();
        let mut prev = self.last_stamp.load(Ordering::Relaxed);
        loop {
            let next = now.max(prev + 1);
            match self.last_stamp.compare_exchange(prev, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(p) => prev = p,
            }
        }
    }

    /// Records location changes in one transaction. Per key and node the
    /// newest entry wins, as in git-annex's location log.
    pub fn record(&self, changes: &[(String, String, bool)]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(LOCATIONS)?;
            for (key, node, present) in changes {
                let stamp = self.next_stamp();
                let lk = location_key(key, node);
                let newer = match t.get(lk.as_str())? {
                    Some(v) => v.value().0 < stamp,
                    None => true,
                };
                if newer {
                    t.insert(lk.as_str(), (stamp, *present))?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// A writer thread that commits location changes in groups: concurrent
    /// requests share one transaction (and one fsync), and no async worker
    /// blocks on the disk.
    pub fn group_recorder(self: &Arc<Self>) -> GroupRecorder {
        let (tx, rx) = std::sync::mpsc::channel::<Pending>();
        let state = self.clone();
        std::thread::Builder::new()
            .name("location-log".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while let Ok(more) = rx.try_recv() {
                        batch.push(more);
                    }
                    // Order is kept: a later request's entry gets a later stamp.
                    let all: Vec<_> = batch.iter().flat_map(|(c, _)| c.iter().cloned()).collect();
                    let result = state.record(&all).map_err(|e| e.to_string());
                    for (_, done) in batch {
                        let _ = done.send(result.clone());
                    }
                }
            })
            .expect("spawn the location-log writer");
        GroupRecorder { tx }
    }

    /// Every node's newest entry for `key`.
    pub fn locations(&self, key: &str) -> Result<Vec<LocationEntry>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(LOCATIONS)?;
        let start = format!("{key}\t");
        // '\n' is the character after '\t', so this bounds the key's range.
        let end = format!("{key}\n");
        let mut out = Vec::new();
        for row in t.range(start.as_str()..end.as_str())? {
            let (k, v) = row?;
            let (changed_unix_ms, present) = v.value();
            let node_uuid = k.value()[start.len()..].to_string();
            out.push(LocationEntry { node_uuid, present, changed_unix_ms });
        }
        Ok(out)
    }

    /// Stores a token's hash; false (and nothing changed) when that hash is
    /// stored already.
    pub fn create_token(&self, token: &Token) -> Result<bool> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(TOKENS)?;
            if t.get(token.sha256.as_str())?.is_some() {
                return Ok(false);
            }
            let r = TokenRecord {
                mode: token.mode.as_str().to_string(),
                label: token.label.clone(),
                created_unix_ms: token.created_unix_ms,
            };
            t.insert(token.sha256.as_str(), encode(&r).as_str())?;
        }
        txn.commit()?;
        Ok(true)
    }

    /// The token with this hash, if any.
    pub fn token(&self, sha256: &str) -> Result<Option<Token>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(TOKENS)?;
        t.get(sha256)?.map(|v| decode_token(sha256, v.value())).transpose()
    }

    /// Every token, by hash.
    pub fn tokens(&self) -> Result<Vec<Token>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(TOKENS)?;
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
    pub fn revoke_token(&self, prefix: &str) -> Result<Revoked> {
        let txn = self.db.begin_write()?;
        let outcome = {
            let mut t = txn.open_table(TOKENS)?;
            let mut found = Vec::new();
            // Keys are lowercase hex, all below 'g', so this bounds the prefix.
            let end = format!("{prefix}g");
            for row in t.range(prefix..end.as_str())? {
                let (k, v) = row?;
                found.push(decode_token(k.value(), v.value())?);
            }
            match found.len() {
                0 => Revoked::NotFound,
                1 => {
                    let token = found.remove(0);
                    t.remove(token.sha256.as_str())?;
                    Revoked::Done(token)
                }
                _ => Revoked::Ambiguous(found),
            }
        };
        if matches!(outcome, Revoked::Done(_)) {
            txn.commit()?;
        } else {
            txn.abort()?;
        }
        Ok(outcome)
    }

    pub fn meta(&self, name: &str) -> Result<Option<u64>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(META)?;
        Ok(t.get(name)?.map(|v| v.value()))
    }

    pub fn set_meta(&self, name: &str, value: u64) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(META)?.insert(name, value)?;
        txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_entry_wins_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let key = "SHA256E-s6--5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
        {
            let s = State::open(dir.path()).unwrap();
            s.record(&[(key.into(), "n1".into(), true), (key.into(), "n2".into(), true)]).unwrap();
            s.record(&[(key.into(), "n2".into(), false)]).unwrap();
            // A key that shares a prefix must not leak into the range.
            s.record(&[(format!("{key}x"), "n3".into(), true)]).unwrap();
        }
        let s = State::open(dir.path()).unwrap();
        let mut got: Vec<_> =
            s.locations(key).unwrap().into_iter().map(|e| (e.node_uuid, e.present)).collect();
        got.sort();
        assert_eq!(got, vec![("n1".to_string(), true), ("n2".to_string(), false)]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn grouped_records_commit_every_change_in_request_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(State::open(dir.path()).unwrap());
        let rec = s.group_recorder();
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let rec = rec.clone();
                tokio::spawn(async move {
                    let key = format!("SHA256E-s{i}--{i:064x}");
                    rec.record(vec![
                        (key.clone(), "n1".into(), true),
                        (key.clone(), "n2".into(), true),
                    ])
                    .await
                    .unwrap();
                    // A later request for the same key and node wins.
                    rec.record(vec![(key, "n2".into(), false)]).await.unwrap();
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        for i in 0..64 {
            let key = format!("SHA256E-s{i}--{i:064x}");
            let present: Vec<_> = s
                .locations(&key)
                .unwrap()
                .into_iter()
                .filter(|e| e.present)
                .map(|e| e.node_uuid)
                .collect();
            assert_eq!(present, vec!["n1".to_string()], "{key}");
        }
        assert!(rec.record(Vec::new()).await.is_ok());
    }

    #[test]
    fn settings_survive_reopen_and_registration() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node {
            uuid: "n1".into(),
            name: "node1".into(),
            cluster_uuid: "c".into(),
            address: "a".into(),
        };
        {
            let s = State::open(dir.path()).unwrap();
            s.upsert_node(&node).unwrap();
            let set = s
                .update_node_settings("n1", |n| {
                    n.wanted = Some("largerthan=1MB".into());
                    n.draining = true;
                })
                .unwrap();
            assert_eq!(
                set,
                NodeSettings { wanted: Some("largerthan=1MB".into()), draining: true, cost: None }
            );
            let set = s.update_node_settings("n1", |n| n.cost = Some(10)).unwrap();
            assert_eq!(set.cost, Some(10));
            s.update_cluster_settings("c", |c| c.min_copies = Some(3)).unwrap();
            s.update_cluster_settings("c", |c| c.reserve_bytes = Some(5)).unwrap();
            // An agent registering again does not reset what operators set.
            s.upsert_node(&Node { address: "b".into(), ..node.clone() }).unwrap();
        }
        let s = State::open(dir.path()).unwrap();
        assert_eq!(
            s.node_settings().unwrap().get("n1"),
            Some(&NodeSettings {
                wanted: Some("largerthan=1MB".into()),
                draining: true,
                cost: Some(10)
            })
        );
        assert_eq!(
            s.cluster_settings().unwrap().get("c"),
            Some(&ClusterSettings { min_copies: Some(3), reserve_bytes: Some(5) })
        );
        let set = s.update_node_settings("n1", |n| n.draining = false).unwrap();
        assert_eq!(set.wanted.as_deref(), Some("largerthan=1MB"));
        assert!(!s.node_settings().unwrap()["n1"].draining);
    }

    fn token(secret: &str, mode: Mode, label: &str) -> Token {
        Token {
            sha256: auth::hash_token(secret),
            mode,
            label: label.into(),
            created_unix_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn tokens_are_created_checked_listed_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let rw = token("secret-rw", Mode::ReadWrite, "ci");
        let ro = token("secret-ro", Mode::ReadOnly, "");
        {
            let s = State::open(dir.path()).unwrap();
            assert!(s.create_token(&rw).unwrap());
            assert!(s.create_token(&ro).unwrap());
            // The same hash again changes nothing, whatever the mode.
            assert!(
                !s.create_token(&Token {
                    mode: Mode::ReadOnly,
                    label: "other".into(),
                    ..rw.clone()
                })
                .unwrap()
            );
            assert_eq!(s.token(&rw.sha256).unwrap(), Some(rw.clone()));
        }
        let s = State::open(dir.path()).unwrap();
        assert_eq!(s.token(&auth::hash_token("SECRET-RW")).unwrap(), Some(rw.clone()));
        assert_eq!(s.token(&ro.sha256).unwrap(), Some(ro.clone()));
        assert_eq!(s.token(&auth::hash_token("secret-other")).unwrap(), None);
        let mut all = s.tokens().unwrap();
        all.sort_by(|a, b| a.sha256.cmp(&b.sha256));
        let mut want = vec![rw, ro];
        want.sort_by(|a, b| a.sha256.cmp(&b.sha256));
        assert_eq!(all, want);
    }

    #[test]
    fn tokens_are_revoked_by_a_unique_id_prefix_and_stay_revoked() {
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
            let s = State::open(dir.path()).unwrap();
            s.create_token(&a).unwrap();
            s.create_token(&b).unwrap();
            match s.revoke_token(&a.sha256[..1]).unwrap() {
                Revoked::Ambiguous(ts) => assert_eq!(ts.len(), 2),
                other => panic!("{other:?}"),
            }
            assert_eq!(s.tokens().unwrap().len(), 2, "an ambiguous prefix revokes nothing");
            let unknown = if a.sha256.starts_with('0') { "ffffffffffff" } else { "000000000000" };
            assert_eq!(s.revoke_token(unknown).unwrap(), Revoked::NotFound);
            assert_eq!(s.revoke_token(a.id()).unwrap(), Revoked::Done(a.clone()));
            assert_eq!(s.revoke_token(a.id()).unwrap(), Revoked::NotFound);
            assert_eq!(s.token(&a.sha256).unwrap(), None);
        }
        let s = State::open(dir.path()).unwrap();
        assert_eq!(s.token(&a.sha256).unwrap(), None);
        assert_eq!(s.tokens().unwrap(), vec![b.clone()]);
        // The full hash is a prefix too.
        assert_eq!(s.revoke_token(&b.sha256).unwrap(), Revoked::Done(b));
        assert!(s.tokens().unwrap().is_empty());
    }

    #[test]
    fn clusters_are_unique_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let s = State::open(dir.path()).unwrap();
        let (a, created) = s.create_cluster("mesh").unwrap();
        assert!(created);
        let (b, created) = s.create_cluster("mesh").unwrap();
        assert!(!created);
        assert_eq!(a, b);
        assert_eq!(s.cluster_by_uuid(&a.uuid).unwrap(), Some(a));
    }
}

type Pending =
    (Vec<(String, String, bool)>, tokio::sync::oneshot::Sender<std::result::Result<(), String>>);

/// Hands location changes to the writer thread of `State::group_recorder`.
#[derive(Clone)]
pub struct GroupRecorder {
    tx: std::sync::mpsc::Sender<Pending>,
}

impl GroupRecorder {
    /// Returns once the changes are committed (with whatever else was
    /// waiting); the error is the commit's.
    pub async fn record(
        &self,
        changes: Vec<(String, String, bool)>,
    ) -> std::result::Result<(), String> {
        if changes.is_empty() {
            return Ok(());
        }
        let (done, wait) = tokio::sync::oneshot::channel();
        self.tx
            .send((changes, done))
            .map_err(|_| "the location-log writer has stopped".to_string())?;
        wait.await.map_err(|_| "the location-log writer has stopped".to_string())?
    }
}
