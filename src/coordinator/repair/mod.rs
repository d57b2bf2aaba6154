//! Repair: the coordinator keeps every key at its target copies.
//!
//! A pass walks the location log and, for each key and cluster, plans
//! (`plan`) and carries out (`run`) what the key needs: new copies made by
//! asking the receiving agent to fetch the key from a holder (agent to
//! agent: data never passes through the coordinator), recorded in the log
//! once stored; and, once a key has its target copies elsewhere, copies on
//! draining nodes struck from the log and then removed. Passes run in the
//! background every `--repair-interval` and on an operator's request, one at
//! a time.

mod plan;
mod run;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tonic::Status;
use tracing::{info, warn};

use super::core::Core;
use super::store::StoreError;
use crate::rpc;
use crate::tasks::Tasks;

pub use plan::{KeyPlan, NodeState, NodeView, plan_key};

/// How repair runs.
#[derive(Debug, Clone, PartialEq)]
pub struct RepairConfig {
    /// How long a node may be down before its copies are written off and
    /// replaced.
    pub grace: Duration,
    /// Time between background passes; zero turns the background loop off.
    pub interval: Duration,
    /// Bytes per second copies may use; zero for no limit.
    pub rate: u64,
}

impl Default for RepairConfig {
    fn default() -> RepairConfig {
        RepairConfig {
            grace: Duration::from_secs(600),
            interval: Duration::from_secs(60),
            rate: 100 * 1024 * 1024,
        }
    }
}

/// Why a pass could not run.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error("cannot read the coordinator's state: {0}")]
    Store(#[from] StoreError),
}

impl From<RepairError> for Status {
    fn from(e: RepairError) -> Status {
        Status::internal(e.to_string())
    }
}

/// What one pass asks for.
#[derive(Debug, Clone, Default)]
pub struct PassRequest {
    /// Only this cluster (UUID); every cluster when None.
    pub cluster: Option<String>,
    /// Plan and report, change nothing.
    pub dry_run: bool,
}

/// Where a pass reports as it goes.
pub type Progress = mpsc::Sender<Result<rpc::RepairProgress, Status>>;

/// What the last passes did, for `admin repair --status` and drains.
#[derive(Debug, Clone, Default)]
struct Record {
    last: rpc::RepairCounts,
    last_started_unix_ms: u64,
    last_finished_unix_ms: u64,
    running: bool,
    passes: u64,
    total_copies_made: u64,
    total_failures: u64,
    /// Keys each draining node (UUID) still held after the last pass.
    drain_left: std::collections::HashMap<String, u64>,
}

/// Runs repair passes, one at a time.
pub struct Repairer {
    core: Arc<Core>,
    config: RepairConfig,
    /// When the coordinator started: a node not heard from since counts as
    /// silent from then on, so a restarted coordinator writes nothing off
    /// before the grace period.
    started: Instant,
    pass: tokio::sync::Mutex<()>,
    status: Mutex<Record>,
    tasks: OnceLock<Tasks>,
}

impl Repairer {
    pub fn new(core: Arc<Core>, config: RepairConfig) -> Repairer {
        Repairer {
            core,
            config,
            started: Instant::now(),
            pass: tokio::sync::Mutex::new(()),
            status: Mutex::new(Record::default()),
            tasks: OnceLock::new(),
        }
    }

    /// Starts the background loop (unless the interval is zero) on `tasks`,
    /// which on-demand passes also run on, so shutdown ends them all.
    pub fn start(self: &Arc<Self>, tasks: &Tasks) {
        let _ = self.tasks.set(tasks.clone());
        if self.config.interval.is_zero() {
            info!("background repair is off (--repair-interval 0)");
            return;
        }
        let this = self.clone();
        tasks.spawn(async move {
            loop {
                tokio::time::sleep(this.config.interval).await;
                if let Err(e) = this.pass(PassRequest::default(), None).await {
                    warn!(error = %e, "repair pass failed");
                }
            }
        });
    }

    /// Runs a pass on the role's tasks, reporting to `progress`, which gets
    /// the totals with `done` set at the end, or the error.
    pub fn spawn_pass(self: &Arc<Self>, req: PassRequest, progress: Progress) {
        let this = self.clone();
        let task = async move {
            let last = match this.pass(req, Some(&progress)).await {
                Ok(counts) => Ok(rpc::RepairProgress {
                    counts: Some(counts),
                    done: true,
                    ..Default::default()
                }),
                Err(e) => Err(e.into()),
            };
            let _ = progress.send(last).await;
        };
        match self.tasks.get() {
            Some(tasks) => {
                tasks.spawn(task);
            }
            None => {
                tokio::spawn(task);
            }
        }
    }

    /// One pass over every key of the requested clusters; waits for a pass
    /// under way to end first.
    pub async fn pass(
        &self,
        req: PassRequest,
        progress: Option<&Progress>,
    ) -> Result<rpc::RepairCounts, RepairError> {
        let _one = self.pass.lock().await;
        let started = crate::clock::unix_ms();
        self.status.lock().unwrap().running = true;
        let result = run::Pass::new(self, &req, progress).run().await;
        let mut s = self.status.lock().unwrap();
        s.running = false;
        let (counts, drain_left) = result?;
        if !req.dry_run {
            s.last = counts;
            s.last_started_unix_ms = started;
            s.last_finished_unix_ms = crate::clock::unix_ms();
            s.passes += 1;
            s.total_copies_made += counts.copies_made;
            s.total_failures += counts.failures;
            if req.cluster.is_none() {
                s.drain_left = drain_left;
            } else {
                s.drain_left.extend(drain_left);
            }
        }
        if counts.copies_made + counts.failures + counts.drained > 0 || counts.short > 0 {
            info!(
                checked = counts.keys_checked,
                under = counts.under_replicated,
                copies = counts.copies_made,
                bytes = counts.bytes_copied,
                drained = counts.drained,
                failures = counts.failures,
                short = counts.short,
                dry_run = req.dry_run,
                "repair pass done"
            );
        }
        Ok(counts)
    }

    /// The last pass's totals and the draining nodes' progress.
    pub async fn status(&self) -> Result<rpc::RepairStatusReply, RepairError> {
        let s = self.status.lock().unwrap().clone();
        let settings = self.core.store.node_settings().await?;
        let draining = self
            .core
            .store
            .nodes()
            .await?
            .into_iter()
            .filter(|n| settings.get(&n.uuid).is_some_and(|s| s.draining))
            .map(|n| rpc::DrainProgress {
                keys_left: s.drain_left.get(&n.uuid).copied().unwrap_or(0),
                counted: s.drain_left.contains_key(&n.uuid),
                node_uuid: n.uuid,
                node_name: n.name,
            })
            .collect();
        Ok(rpc::RepairStatusReply {
            last: Some(s.last),
            last_started_unix_ms: s.last_started_unix_ms,
            last_finished_unix_ms: s.last_finished_unix_ms,
            running: s.running,
            passes: s.passes,
            total_copies_made: s.total_copies_made,
            total_failures: s.total_failures,
            draining,
        })
    }
}
