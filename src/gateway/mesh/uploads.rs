//! What one request of an upload learned that the next request of the same
//! upload may reuse: git-annex asks CHECKPRESENT, then PUTOFFSET, then PUT
//! for every file it sends, and each would otherwise ask the coordinator
//! for a plan and every target for its offset again.
//!
//! Two things are kept per cluster and key, each for a short time only:
//! - the coordinator's placement plan, when the coordinator marked it
//!   reusable (it depends on neither the file name nor the number of
//!   copies) and for no longer than it said;
//! - the nodes that held nothing of the key (no object, no partial): an
//!   upload to them starts at offset 0, which an agent never refuses (it
//!   drops any partial it gained since, and answers "stored" at once if it
//!   gained the whole object). Nothing else a node said is reused: a node
//!   that had the content or a partial is asked again.
//!
//! An entry is taken, not copied, by the request that uses it, so no two
//! uploads of a key through this gateway share what one learned. Any node
//! failure or change of health empties the whole cache.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most entries kept. An entry lives at most `PLAN_REUSE_MAX`, so this is
/// far more than the uploads a gateway starts in that time; past it the
/// stale entries go, and when none are stale, all of them.
const MAX_ENTRIES: usize = 4096;

/// The longest a plan is reused, whatever the coordinator allows.
pub const PLAN_REUSE_MAX: Duration = Duration::from_secs(2);

/// How long the nodes found holding nothing of a key are taken at their
/// word: about the time between git-annex's requests for one file.
pub const EMPTY_FRESH: Duration = Duration::from_millis(500);

/// A placement plan the coordinator allows reusing until `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedPlan {
    pub node_uuids: Vec<String>,
    pub min_copies: u32,
    /// `rpc::Replication`, as the plan gave it.
    pub replication: i32,
    pub until: Instant,
}

/// What the cache holds for one upload.
#[derive(Debug, Clone, Default)]
pub struct Learned {
    pub plan: Option<CachedPlan>,
    /// Nodes that held nothing of the key, each with the time until which
    /// that is believed (what they said, plus `EMPTY_FRESH`).
    pub empty: BTreeMap<String, Instant>,
}

impl Learned {
    /// The plan, if it may still be used.
    pub fn plan(&self) -> Option<&CachedPlan> {
        self.plan.as_ref().filter(|p| Instant::now() < p.until)
    }

    /// Whether `uuid` was found holding nothing of the key a moment ago.
    pub fn empty_on(&self, uuid: &str) -> bool {
        self.empty.get(uuid).is_some_and(|until| Instant::now() < *until)
    }

    fn stale(&self, now: Instant) -> bool {
        self.plan.as_ref().is_none_or(|p| p.until <= now) && self.empty.values().all(|t| *t <= now)
    }
}

/// The cache, keyed by cluster UUID and key.
#[derive(Default)]
pub struct Uploads {
    entries: Mutex<HashMap<(String, String), Learned>>,
}

impl Uploads {
    /// Takes what is known of the upload of `key` to `cluster`: the next
    /// request of that upload learns it anew.
    pub fn take(&self, cluster: &str, key: &str) -> Learned {
        let mut entries = self.entries.lock().unwrap();
        entries.remove(&(cluster.to_string(), key.to_string())).unwrap_or_default()
    }

    /// Keeps `learned` for the next request of the same upload.
    pub fn keep(&self, cluster: &str, key: &str, learned: Learned) {
        let now = Instant::now();
        if learned.stale(now) {
            return;
        }
        let mut entries = self.entries.lock().unwrap();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, l| !l.stale(now));
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert((cluster.to_string(), key.to_string()), learned);
    }

    /// Notes the nodes found holding nothing of `key`, keeping any plan.
    pub fn note_empty(&self, cluster: &str, key: &str, uuids: BTreeSet<String>) {
        if uuids.is_empty() {
            return;
        }
        let mut learned = self.take(cluster, key);
        let until = Instant::now() + EMPTY_FRESH;
        learned.empty.extend(uuids.into_iter().map(|u| (u, until)));
        self.keep(cluster, key, learned);
    }

    /// Forgets everything: a node failed or its health changed.
    pub fn forget(&self) {
        self.entries.lock().unwrap().clear();
    }

    /// How many entries are kept.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(ms: u64) -> CachedPlan {
        CachedPlan {
            node_uuids: vec!["a".into()],
            min_copies: 1,
            replication: 0,
            until: Instant::now() + Duration::from_millis(ms),
        }
    }

    #[test]
    fn an_entry_is_used_once() {
        let u = Uploads::default();
        u.keep("c", "k", Learned { plan: Some(plan(1000)), empty: BTreeMap::new() });
        assert!(u.take("c", "k").plan().is_some());
        assert!(u.take("c", "k").plan().is_none(), "taken by the first request");
    }

    #[test]
    fn keys_and_clusters_are_apart() {
        let u = Uploads::default();
        u.note_empty("c", "k", BTreeSet::from(["a".to_string()]));
        assert!(!u.take("c", "other").empty_on("a"));
        assert!(!u.take("d", "k").empty_on("a"));
        let l = u.take("c", "k");
        assert!(l.empty_on("a"));
        assert!(!l.empty_on("b"));
    }

    #[test]
    fn expired_knowledge_is_not_used() {
        let u = Uploads::default();
        let past = Instant::now() - Duration::from_millis(1);
        let l = Learned {
            plan: Some(CachedPlan { until: past, ..plan(0) }),
            empty: BTreeMap::from([("a".to_string(), past)]),
        };
        assert!(l.plan().is_none());
        assert!(!l.empty_on("a"));
        u.keep("c", "k", l);
        assert!(u.is_empty(), "nothing fresh to keep");
    }

    #[test]
    fn the_cache_is_bounded() {
        let u = Uploads::default();
        for i in 0..MAX_ENTRIES + 10 {
            u.keep("c", &i.to_string(), Learned { plan: Some(plan(1000)), empty: BTreeMap::new() });
        }
        assert!(u.len() <= MAX_ENTRIES);
        u.forget();
        assert!(u.is_empty());
    }
}
