//! Keeps each cluster's `refs/heads/git-annex` saying what git-annex's own
//! cluster gateway would: the cluster's structure (descriptions,
//! `cluster.log`, `proxy.log`, dead nodes in `trust.log`; see
//! `crate::annexbranch::structure`) and the location log entries of its
//! nodes, so that clients that fetch the cluster's repository learn them.
//!
//! One task per coordinator passes over every cluster each `--branch-interval`
//! and at once when a push arrives. A pass union-merges what clients pushed
//! (`git-annex`, `synced/git-annex`) with the mesh's own last state, kept
//! under `refs/annexmesh/git-annex` so that a forced push cannot make
//! entries vanish, adds what changed, commits with all of them as parents
//! and moves the branch by compare-and-swap, merging again when a push
//! moved it meanwhile. The largest location stamp written is kept in the
//! private commit's message, so a restarted coordinator carries on from
//! there and misses no change.

mod plumbing;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::broadcast::error::RecvError;
use tracing::warn;

use super::core::Core;
use super::store::StampedChange;
use crate::annexbranch::merge::{self, Merged};
use crate::annexbranch::structure::{self, ClusterView, NodeView, Wanted};
use crate::annexbranch::{Stamp, location};
use crate::tasks::Tasks;
pub use plumbing::{BRANCH_REF, PRIVATE_REF, SYNCED_REF};
use plumbing::{Heads, Repo};

/// How the branch writer paces itself.
#[derive(Debug, Clone, clap::Args)]
pub struct BranchConfig {
    /// Time between passes of the writer that keeps each cluster's
    /// git-annex branch up to date (e.g. 1s, 500ms); each pass makes at
    /// most one commit per cluster. A push is merged at once.
    #[arg(
        long = "branch-interval",
        env = "ANNEXMESH_BRANCH_INTERVAL",
        default_value = "1s",
        value_parser = crate::clock::parse_duration
    )]
    pub interval: Duration,
    /// Most location log changes one commit of the git-annex branch takes;
    /// more wait for the next pass.
    #[arg(long = "branch-batch", env = "ANNEXMESH_BRANCH_BATCH", default_value_t = 10_000)]
    pub batch: usize,
}

impl Default for BranchConfig {
    fn default() -> BranchConfig {
        BranchConfig { interval: Duration::from_secs(1), batch: 10_000 }
    }
}

/// Attempts of one pass at moving a branch that pushes keep moving.
const ATTEMPTS: usize = 5;

/// Commits to a cluster's branch between checks for loose objects to pack
/// (each commit leaves some; `git gc --auto` decides whether to pack).
const COMMITS_PER_GC: u32 = 100;

/// The line of the private commit's message that keeps the watermark.
const WATERMARK: &str = "annexmesh-locations: ";

/// Starts the writer; it stops with `tasks`.
pub fn spawn(core: Arc<Core>, cfg: BranchConfig, tasks: &Tasks) {
    let mut pushes = Some(core.repos.subscribe());
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(cfg.interval.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut writer = Writer::new(core, cfg);
        loop {
            let only = tokio::select! {
                _ = tick.tick() => None,
                r = async { pushes.as_mut().expect("guarded").recv().await }, if pushes.is_some() => {
                    match r {
                        Ok(cluster) => Some(cluster),
                        Err(RecvError::Lagged(_)) => None,
                        Err(RecvError::Closed) => {
                            pushes = None;
                            None
                        }
                    }
                }
            };
            writer.pass(only.as_deref()).await;
        }
    });
}

/// What the writer remembers of a cluster between passes.
#[derive(Default)]
struct State {
    /// The largest location stamp written; read from the private commit
    /// on the first pass.
    watermark: Option<u64>,
    /// The structure last written, to tell the mesh's changes from edits
    /// made in the branch since.
    wanted: Option<Wanted>,
    /// The refs as the last pass left them.
    seen: Option<Heads>,
    /// Commits since loose objects were last checked for.
    commits: u32,
    /// The last failure logged, so that one that repeats every pass (git
    /// missing, a full disk) is logged once.
    failed: Option<String>,
}

/// The branch writer of one coordinator.
pub struct Writer {
    core: Arc<Core>,
    cfg: BranchConfig,
    clusters: HashMap<String, State>,
}

impl Writer {
    pub fn new(core: Arc<Core>, cfg: BranchConfig) -> Writer {
        Writer { core, cfg, clusters: HashMap::new() }
    }

    /// One pass over every cluster, or only over `only`; failures are
    /// logged and retried on the next pass.
    pub async fn pass(&mut self, only: Option<&str>) {
        let clusters = match self.core.store.clusters().await {
            Ok(c) => c,
            Err(e) => {
                warn!("git-annex branch: cannot read the clusters: {e}");
                return;
            }
        };
        for c in clusters.iter().filter(|c| only.is_none_or(|o| o == c.uuid)) {
            let result = self.sync(&c.uuid, &c.name).await;
            let st = self.clusters.entry(c.uuid.clone()).or_default();
            match result {
                Ok(()) => st.failed = None,
                Err(e) => {
                    let e = format!("{e:#}");
                    if st.failed.as_ref() != Some(&e) {
                        warn!(cluster = %c.name, "cannot update the git-annex branch: {e}");
                    }
                    st.failed = Some(e);
                }
            }
        }
    }

    /// Brings one cluster's branch up to date.
    pub async fn sync(&mut self, cluster: &str, name: &str) -> anyhow::Result<()> {
        let repo = Repo::new(self.core.repos.ensure(cluster).await?);
        let view = self.view(cluster, name).await?;
        let members: HashSet<String> = view.nodes.iter().map(|n| n.uuid.clone()).collect();
        let wanted = view.wanted();
        let batch = self.cfg.batch.max(1);
        let st = self.clusters.entry(cluster.to_string()).or_default();
        for _ in 0..ATTEMPTS {
            let heads = repo.heads().await?;
            let mark = match st.watermark {
                Some(w) => w,
                None => match &heads.private {
                    Some(p) => watermark(&repo.message(p).await?),
                    None => 0,
                },
            };
            st.watermark = Some(mark);
            let raw = self.core.store.changes_after(mark, batch).await?;
            let next_mark = raw.last().map_or(mark, |c| c.entry.changed_unix_ms);
            let changes: Vec<&StampedChange> =
                raw.iter().filter(|c| members.contains(&c.entry.node_uuid)).collect();
            if changes.is_empty()
                && st.wanted.as_ref() == Some(&wanted)
                && st.seen.as_ref() == Some(&heads)
            {
                st.watermark = Some(next_mark);
                return Ok(());
            }
            // What clients pushed that the mesh's state lacks.
            let mut others: Vec<String> = Vec::new();
            for r in [&heads.branch, &heads.synced].into_iter().flatten() {
                if others.contains(r) || heads.private.as_ref() == Some(r) {
                    continue;
                }
                if let Some(p) = &heads.private
                    && repo.is_ancestor(r, p).await?
                {
                    continue;
                }
                others.push(r.clone());
            }
            repo.read_tree(heads.private.as_deref()).await?;
            for o in &others {
                merge_into_index(&repo, heads.private.as_deref(), o).await?;
            }
            let now = Stamp::from_secs((crate::clock::unix_ms() / 1000) as i64);
            write_changes(&repo, &wanted, st.wanted.as_ref(), now, &changes).await?;
            let tree = repo.write_tree().await?;
            let unchanged = match &heads.private {
                Some(p) => others.is_empty() && repo.tree_of(p).await? == tree,
                None => false,
            };
            let new = if unchanged {
                heads.private.clone().expect("unchanged only with a private head")
            } else {
                let parents: Vec<String> =
                    heads.private.iter().cloned().chain(others.iter().cloned()).collect();
                let msg = format!(
                    "annexmesh: cluster structure and locations\n\n{WATERMARK}{next_mark}\n"
                );
                let new = repo.commit(&tree, &parents, &msg).await?;
                if !repo.swap(PRIVATE_REF, &new, heads.private.as_deref()).await? {
                    continue;
                }
                st.commits += 1;
                if st.commits >= COMMITS_PER_GC {
                    st.commits = 0;
                    if let Err(e) = repo.gc_auto().await {
                        warn!(cluster = %name, "git gc --auto failed: {e:#}");
                    }
                }
                new
            };
            // The private state holds all of it now, whatever happens next.
            st.watermark = Some(if unchanged { mark.max(next_mark) } else { next_mark });
            st.wanted = Some(wanted.clone());
            if heads.branch.as_deref() != Some(new.as_str())
                && !repo.swap(BRANCH_REF, &new, heads.branch.as_deref()).await?
            {
                // A push moved it: merge that too.
                continue;
            }
            st.seen = Some(Heads {
                private: Some(new.clone()),
                branch: Some(new),
                synced: heads.synced.clone(),
            });
            return Ok(());
        }
        anyhow::bail!("the branch kept moving; trying again on the next pass")
    }

    /// The cluster's structure as the store has it.
    async fn view(&self, cluster: &str, name: &str) -> anyhow::Result<ClusterView> {
        let store = &self.core.store;
        let settings = store.node_settings().await?;
        let mut nodes: Vec<NodeView> = store
            .nodes()
            .await?
            .into_iter()
            .filter(|n| n.cluster_uuid == cluster)
            .map(|n| NodeView {
                draining: settings.get(&n.uuid).is_some_and(|s| s.draining),
                uuid: n.uuid,
                name: n.name,
            })
            .collect();
        nodes.sort_by(|a, b| a.uuid.cmp(&b.uuid));
        let removed = store
            .removed_nodes()
            .await?
            .into_iter()
            .filter(|r| r.node.cluster_uuid == cluster)
            .map(|r| NodeView { uuid: r.node.uuid, name: r.node.name, draining: false })
            .collect();
        Ok(ClusterView { uuid: cluster.to_string(), name: name.to_string(), nodes, removed })
    }
}

/// The watermark a private commit's message keeps; 0 when none.
fn watermark(message: &str) -> u64 {
    message
        .lines()
        .find_map(|l| l.strip_prefix(WATERMARK))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Union-merges commit `other` into the private index, which holds `base`
/// (plus what earlier merges staged).
async fn merge_into_index(repo: &Repo, base: Option<&str>, other: &str) -> anyhow::Result<()> {
    let diffs = repo.diff(base, other).await?;
    // Current blob of each differing path: the index's, which starts as
    // `base` and has what earlier merges staged.
    let specs: Vec<String> = diffs.iter().map(|d| format!(":{}", d.path)).collect();
    let ours = repo.cat(&specs).await?;
    let theirs: Vec<String> = diffs.iter().filter_map(|d| d.new.clone()).collect();
    let theirs = repo.cat(&theirs).await?;
    let mut theirs = theirs.into_iter();
    let mut stage: Vec<(String, String)> = Vec::new();
    let mut fresh: Vec<(Vec<u8>, String)> = Vec::new();
    for (d, ours) in diffs.iter().zip(ours) {
        // A file the other side deleted stays: union.
        let Some(new) = &d.new else { continue };
        let theirs = theirs.next().flatten().context("a blob of the pushed branch is missing")?;
        match ours {
            None => stage.push((new.clone(), d.path.clone())),
            Some(ours) => match merge::union(&[&ours, &theirs]) {
                Merged::Same(0) => {}
                Merged::Same(_) => stage.push((new.clone(), d.path.clone())),
                Merged::New(text) => fresh.push((text, d.path.clone())),
            },
        }
    }
    let blobs: Vec<Vec<u8>> = fresh.iter().map(|(b, _)| b.clone()).collect();
    let ids = repo.hash(&blobs).await?;
    stage.extend(ids.into_iter().zip(fresh.into_iter().map(|(_, p)| p)));
    repo.stage(&stage).await
}

/// Stages the structure logs that differ from `wanted` and the location
/// log `changes` on top of the private index.
async fn write_changes(
    repo: &Repo,
    wanted: &Wanted,
    before: Option<&Wanted>,
    now: Stamp,
    changes: &[&StampedChange],
) -> anyhow::Result<()> {
    let files =
        [structure::UUID_LOG, structure::CLUSTER_LOG, structure::PROXY_LOG, structure::TRUST_LOG];
    let specs: Vec<String> = files.iter().map(|f| format!(":{f}")).collect();
    let current: HashMap<&str, String> = files
        .iter()
        .zip(repo.cat(&specs).await?)
        .filter_map(|(f, c)| Some((*f, String::from_utf8_lossy(&c?).into_owned())))
        .collect();
    let mut out: BTreeMap<String, String> =
        structure::apply(wanted, before, now, |f| current.get(f).cloned())
            .into_iter()
            .map(|(f, t)| (f.to_string(), t))
            .collect();
    // Location lines by log file.
    let mut by_path: BTreeMap<String, Vec<location::Line>> = BTreeMap::new();
    for c in changes {
        by_path.entry(location::path(&c.key)).or_default().push(location::Line {
            stamp: Stamp::from_unix_ms(c.entry.changed_unix_ms),
            status: if c.entry.present {
                location::Status::Present
            } else {
                location::Status::Missing
            },
            uuid: c.entry.node_uuid.clone(),
        });
    }
    let paths: Vec<String> = by_path.keys().cloned().collect();
    let specs: Vec<String> = paths.iter().map(|p| format!(":{p}")).collect();
    for (p, old) in paths.iter().zip(repo.cat(&specs).await?) {
        let old = old.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        if let Some(text) = location::apply(&old, &by_path[p]) {
            out.insert(p.clone(), text);
        }
    }
    let (paths, blobs): (Vec<String>, Vec<Vec<u8>>) =
        out.into_iter().map(|(p, t)| (p, t.into_bytes())).unzip();
    let ids = repo.hash(&blobs).await?;
    repo.stage(&ids.into_iter().zip(paths).collect::<Vec<_>>()).await
}
