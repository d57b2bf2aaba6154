//! Node health as heartbeats and gateways report it: kept in memory only,
//! since a restarted coordinator hears from every live node within seconds.
//!
//! A node is up while it heartbeats. It is *degraded* from a failure a
//! gateway reports (a PUT or a data call failed on it) or a heartbeat saying
//! its store is not writable, until, after the last such report, a heartbeat
//! says the store is writable, the coordinator reached the node's data
//! address itself, and `COOL_DOWN` has passed, so a flapping node does not
//! bounce back and forth. Every transition takes the time as an argument, so
//! tests drive them without waiting.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A node that missed this long of heartbeats is unhealthy.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(7);

/// How long a degraded node must go without a new failure before it is up
/// again.
pub const COOL_DOWN: Duration = Duration::from_secs(10);

/// How often a coordinator on a shared store publishes what it heard and
/// reads what the others did.
pub const SHARE_INTERVAL: Duration = Duration::from_secs(1);

/// What the last heartbeat (or registration) of a node said.
#[derive(Debug, Clone)]
pub struct Health {
    pub last_seen: Instant,
    pub last_seen_unix_ms: u64,
    /// The boot id the agent last reported: another one is another run.
    pub boot_id: String,
    /// None until the first heartbeat reports it.
    pub free_bytes: Option<u64>,
    pub active_transfers: u32,
    /// Bytes in partial uploads, and copies quarantined since the agent
    /// started, as its last heartbeat said.
    pub partial_bytes: u64,
    pub quarantined: u64,
}

/// What failed on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A PUT to the node failed.
    Put,
    /// A GET, CHECKPRESENT or REMOVE call to it failed or stalled.
    Data,
    /// Its own heartbeat said the store is not writable.
    Store,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Put => "put",
            Failure::Data => "data",
            Failure::Store => "store",
        }
    }
}

/// Why and since when a node is degraded, and what it has shown since the
/// last failure.
#[derive(Debug, Clone)]
pub struct Degraded {
    pub last_failure: Instant,
    /// The same moment by the wall clock, which identifies the failure to
    /// other coordinators.
    pub last_failure_unix_ms: u64,
    pub kind: Failure,
    pub error: String,
    /// A heartbeat after the last failure said the store is writable.
    pub writable: bool,
    /// The coordinator reached the node's data address after the last
    /// failure.
    pub reached: bool,
}

impl Degraded {
    fn recovered(&self, now: Instant) -> bool {
        self.writable && self.reached && now.duration_since(self.last_failure) >= COOL_DOWN
    }
}

/// What a heartbeat says of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreCheck {
    /// The agent does not check (an older agent): says nothing.
    Unchecked,
    Writable,
    Unwritable(String),
}

/// Every node's last report, by node UUID.
#[derive(Debug, Default)]
pub struct HealthBoard {
    nodes: Mutex<HashMap<String, Health>>,
    degraded: Mutex<HashMap<String, Degraded>>,
    /// Nodes with news heard here that other coordinators have yet to read.
    dirty: Mutex<std::collections::HashSet<String>>,
}

impl HealthBoard {
    /// Whether the node was heard from within `HEALTH_TIMEOUT`, and its last
    /// report.
    pub fn get(&self, uuid: &str) -> (bool, Option<Health>) {
        let health = self.nodes.lock().unwrap().get(uuid).cloned();
        let healthy = health.as_ref().is_some_and(|h| h.last_seen.elapsed() < HEALTH_TIMEOUT);
        (healthy, health)
    }

    /// Notes that the node was heard from now.
    pub fn touch(&self, uuid: &str, boot_id: &str, free_bytes: Option<u64>, active_transfers: u32) {
        self.touch_with(uuid, boot_id, free_bytes, active_transfers, (0, 0));
    }

    /// As `touch`, with the store's `(partial_bytes, quarantined)`.
    pub fn touch_with(
        &self,
        uuid: &str,
        boot_id: &str,
        free_bytes: Option<u64>,
        active_transfers: u32,
        (partial_bytes, quarantined): (u64, u64),
    ) {
        self.nodes.lock().unwrap().insert(
            uuid.to_string(),
            Health {
                last_seen: Instant::now(),
                last_seen_unix_ms: crate::clock::unix_ms(),
                boot_id: boot_id.to_string(),
                free_bytes,
                active_transfers,
                partial_bytes,
                quarantined,
            },
        );
        self.dirty.lock().unwrap().insert(uuid.to_string());
    }

    /// Forgets a node, as when it is removed from the mesh.
    pub fn forget(&self, uuid: &str) {
        self.nodes.lock().unwrap().remove(uuid);
        self.degraded.lock().unwrap().remove(uuid);
    }

    /// Whether the node is degraded at `now`.
    pub fn is_degraded(&self, uuid: &str, now: Instant) -> bool {
        self.degraded.lock().unwrap().get(uuid).is_some_and(|d| !d.recovered(now))
    }

    /// Why the node is degraded, if it is at `now`.
    pub fn degradation(&self, uuid: &str, now: Instant) -> Option<Degraded> {
        self.degraded.lock().unwrap().get(uuid).filter(|d| !d.recovered(now)).cloned()
    }

    /// The degraded nodes the coordinator has not reached since their last
    /// failure: those to probe.
    pub fn unreached(&self) -> Vec<String> {
        let degraded = self.degraded.lock().unwrap();
        degraded.iter().filter(|(_, d)| !d.reached).map(|(u, _)| u.clone()).collect()
    }

    /// Notes a failure on the node at `now`; true when it was not degraded
    /// before.
    pub fn fail(&self, uuid: &str, kind: Failure, error: &str, now: Instant) -> bool {
        let mut degraded = self.degraded.lock().unwrap();
        let was = degraded.get(uuid).is_some_and(|d| !d.recovered(now));
        self.dirty.lock().unwrap().insert(uuid.to_string());
        let entry = Degraded {
            last_failure: now,
            last_failure_unix_ms: crate::clock::unix_ms(),
            kind,
            error: error.to_string(),
            writable: false,
            reached: false,
        };
        degraded.insert(uuid.to_string(), entry);
        !was
    }

    /// Takes what a heartbeat at `now` says of the store. An unwritable
    /// store is a failure of its own; a writable one counts toward recovery.
    /// Returns true when the node is newly degraded.
    pub fn store_checked(&self, uuid: &str, check: &StoreCheck, now: Instant) -> bool {
        match check {
            StoreCheck::Unchecked => false,
            StoreCheck::Unwritable(e) => self.fail(uuid, Failure::Store, e, now),
            StoreCheck::Writable => {
                self.update(uuid, now, |d| d.writable = true);
                false
            }
        }
    }

    /// Takes the result of a probe of the node's data address that started
    /// at `started`: only a probe begun after the last failure counts.
    pub fn probed(&self, uuid: &str, started: Instant, reached: bool, now: Instant) {
        self.update(uuid, now, |d| {
            if reached && started >= d.last_failure {
                d.reached = true;
            }
        });
    }

    /// Applies `f` to the node's degradation, and forgets the degradation
    /// once the node has recovered.
    fn update(&self, uuid: &str, now: Instant, f: impl FnOnce(&mut Degraded)) {
        let mut degraded = self.degraded.lock().unwrap();
        let Some(d) = degraded.get_mut(uuid) else { return };
        f(d);
        self.dirty.lock().unwrap().insert(uuid.to_string());
        if d.recovered(now) {
            degraded.remove(uuid);
            tracing::info!(node = %uuid, "node recovered: its store is writable and its data address answers");
        }
    }
}

use super::store::{HealthRow, SharedDegraded, SharedHealth};

impl HealthBoard {
    /// What was heard here since the last call, for other coordinators.
    pub fn take_news(&self) -> Vec<(String, SharedHealth)> {
        let dirty: Vec<String> = self.dirty.lock().unwrap().drain().collect();
        let nodes = self.nodes.lock().unwrap();
        let degraded = self.degraded.lock().unwrap();
        dirty
            .into_iter()
            .filter_map(|uuid| {
                let h = nodes.get(&uuid)?;
                let shared = SharedHealth {
                    heard_ms_ago: h.last_seen.elapsed().as_millis() as u64,
                    boot_id: h.boot_id.clone(),
                    free_bytes: h.free_bytes,
                    active_transfers: h.active_transfers,
                    partial_bytes: h.partial_bytes,
                    quarantined: h.quarantined,
                    degraded: degraded.get(&uuid).map(|d| SharedDegraded {
                        kind: d.kind.as_str().to_string(),
                        error: d.error.clone(),
                        writable: d.writable,
                        reached: d.reached,
                        failure_unix_ms: d.last_failure_unix_ms,
                    }),
                };
                Some((uuid, shared))
            })
            .collect()
    }

    /// Takes what other coordinators heard: a report newer than this
    /// board's replaces it, a newer failure degrades the node here too, and
    /// recovery steps of the same failure count here as well.
    pub fn merge(&self, rows: Vec<HealthRow>, now: Instant) {
        let wall_now = crate::clock::unix_ms();
        let mut nodes = self.nodes.lock().unwrap();
        let mut degraded = self.degraded.lock().unwrap();
        for row in rows {
            let age_ms = row.age_ms.saturating_add(row.health.heard_ms_ago);
            let age = Duration::from_millis(age_ms);
            let seen = now.checked_sub(age).unwrap_or(now);
            if nodes.get(&row.node_uuid).is_none_or(|h| h.last_seen < seen) {
                let h = &row.health;
                nodes.insert(
                    row.node_uuid.clone(),
                    Health {
                        last_seen: seen,
                        last_seen_unix_ms: wall_now.saturating_sub(age_ms),
                        boot_id: h.boot_id.clone(),
                        free_bytes: h.free_bytes,
                        active_transfers: h.active_transfers,
                        partial_bytes: h.partial_bytes,
                        quarantined: h.quarantined,
                    },
                );
            }
            let Some(d) = row.health.degraded else { continue };
            match degraded.get_mut(&row.node_uuid) {
                Some(local) if local.last_failure_unix_ms == d.failure_unix_ms => {
                    local.writable |= d.writable;
                    local.reached |= d.reached;
                }
                Some(local) if local.last_failure_unix_ms > d.failure_unix_ms => {}
                _ => {
                    let ago = Duration::from_millis(wall_now.saturating_sub(d.failure_unix_ms));
                    let kind = match d.kind.as_str() {
                        "put" => Failure::Put,
                        "store" => Failure::Store,
                        _ => Failure::Data,
                    };
                    degraded.insert(
                        row.node_uuid.clone(),
                        Degraded {
                            last_failure: now.checked_sub(ago).unwrap_or(now),
                            last_failure_unix_ms: d.failure_unix_ms,
                            kind,
                            error: d.error,
                            writable: d.writable,
                            reached: d.reached,
                        },
                    );
                }
            }
        }
        degraded.retain(|_, d| !d.recovered(now));
    }
}

/// On a shared store: publishes what this coordinator heard and reads what
/// the others did, every `SHARE_INTERVAL`, so that every coordinator gives
/// the same health whichever one a node or gateway talks to.
pub fn spawn_sharing(core: std::sync::Arc<super::core::Core>, tasks: &crate::tasks::Tasks) {
    if !core.store.shared() {
        return;
    }
    tasks.spawn(async move {
        loop {
            for (uuid, h) in core.health.take_news() {
                if let Err(e) = core.store.save_health(&uuid, h).await {
                    tracing::warn!(node = %uuid, "cannot share the node's health: {e}");
                }
            }
            match core.store.load_health().await {
                Ok(rows) => core.health.merge(rows, Instant::now()),
                Err(e) => tracing::warn!("cannot read the nodes' health: {e}"),
            }
            tokio::time::sleep(SHARE_INTERVAL).await;
        }
    });
}

#[cfg(test)]
mod sharing_tests {
    use super::*;

    #[test]
    fn a_report_written_late_does_not_make_a_silent_node_look_heard_from() {
        let here = HealthBoard::default();
        here.touch("n", "boot", Some(1), 0);
        // Reported, then silent; a failure noted 8 s later writes the report
        // again.
        let news = here.take_news();
        let (_, mut h) = news.into_iter().next().unwrap();
        h.heard_ms_ago = 8_000;
        let other = HealthBoard::default();
        let row = |age_ms, health| HealthRow { node_uuid: "n".into(), age_ms, health };
        other.merge(vec![row(0, h.clone())], Instant::now());
        assert!(!other.get("n").0, "8 s of silence is down, however fresh the row");
        h.heard_ms_ago = 500;
        other.merge(vec![row(100, h)], Instant::now());
        assert!(other.get("n").0, "a heartbeat 0.6 s ago is up");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: &str = "node-1";

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    #[test]
    fn a_reported_failure_degrades_the_node() {
        let board = HealthBoard::default();
        let t0 = Instant::now();
        assert!(!board.is_degraded(N, t0));
        assert!(board.fail(N, Failure::Put, "read-only file system", t0));
        assert!(board.is_degraded(N, t0));
        // A second report is no new degradation.
        assert!(!board.fail(N, Failure::Data, "connection refused", at(t0, 1)));
        let d = board.degradation(N, at(t0, 1)).unwrap();
        assert_eq!((d.kind, d.error.as_str()), (Failure::Data, "connection refused"));
        // Time alone does not heal it.
        assert!(board.is_degraded(N, at(t0, 3600)));
    }

    #[test]
    fn writable_reachable_and_cooled_down_is_up_again() {
        let board = HealthBoard::default();
        let t0 = Instant::now();
        board.fail(N, Failure::Put, "read-only file system", t0);
        assert_eq!(board.unreached(), [N]);
        board.store_checked(N, &StoreCheck::Writable, at(t0, 2));
        assert!(board.is_degraded(N, at(t0, 2)), "not reached yet");
        board.probed(N, at(t0, 2), true, at(t0, 3));
        assert!(board.unreached().is_empty());
        assert!(board.is_degraded(N, at(t0, 3)), "still cooling down");
        assert!(!board.is_degraded(N, at(t0, 10)));
        // The next heartbeat forgets the degradation.
        board.store_checked(N, &StoreCheck::Writable, at(t0, 10));
        assert!(board.degradation(N, at(t0, 10)).is_none());
        assert!(board.fail(N, Failure::Data, "stalled", at(t0, 11)), "degraded anew");
    }

    #[test]
    fn only_evidence_after_the_last_failure_counts() {
        let board = HealthBoard::default();
        let t0 = Instant::now();
        board.fail(N, Failure::Data, "connection refused", t0);
        board.store_checked(N, &StoreCheck::Writable, at(t0, 1));
        // A probe that started before the new failure says nothing of it.
        board.probed(N, at(t0, 1), true, at(t0, 1));
        board.fail(N, Failure::Data, "connection refused", at(t0, 2));
        board.probed(N, at(t0, 1), true, at(t0, 3));
        board.store_checked(N, &StoreCheck::Writable, at(t0, 3));
        assert!(board.is_degraded(N, at(t0, 20)), "no probe since the last failure");
        // A failed probe does not help either.
        board.probed(N, at(t0, 20), false, at(t0, 20));
        assert!(board.is_degraded(N, at(t0, 20)));
        board.probed(N, at(t0, 21), true, at(t0, 21));
        assert!(!board.is_degraded(N, at(t0, 21)));
    }

    #[test]
    fn an_unwritable_store_degrades_by_itself_and_keeps_it_degraded() {
        let board = HealthBoard::default();
        let t0 = Instant::now();
        assert!(!board.store_checked(N, &StoreCheck::Unchecked, t0));
        assert!(!board.is_degraded(N, t0));
        let ro = StoreCheck::Unwritable("annex/tmp: read-only file system".into());
        assert!(board.store_checked(N, &ro, t0));
        board.probed(N, at(t0, 1), true, at(t0, 1));
        // Each heartbeat that finds it unwritable is a new failure.
        assert!(!board.store_checked(N, &ro, at(t0, 20)));
        let d = board.degradation(N, at(t0, 20)).unwrap();
        assert_eq!(d.kind, Failure::Store);
        assert!(!d.reached, "the new failure wants a new probe");
        board.store_checked(N, &StoreCheck::Writable, at(t0, 22));
        board.probed(N, at(t0, 22), true, at(t0, 22));
        assert!(board.is_degraded(N, at(t0, 29)));
        assert!(!board.is_degraded(N, at(t0, 30)));
    }

    #[test]
    fn forgetting_a_node_forgets_its_degradation() {
        let board = HealthBoard::default();
        let t0 = Instant::now();
        board.fail(N, Failure::Put, "x", t0);
        board.forget(N);
        assert!(!board.is_degraded(N, t0));
    }
}
