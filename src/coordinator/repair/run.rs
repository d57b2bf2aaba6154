//! One repair pass: walks the location log a page of keys at a time, plans
//! each key against a fresh view of its cluster, and carries the plan out:
//! copies (recorded once stored), then drops from draining nodes (struck
//! from the log before the agent deletes).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::Channel;
use tracing::{debug, warn};

use super::plan::{KeyPlan, NodeState, NodeView, plan_key};
use super::{PassRequest, Progress, RepairError, Repairer};
use crate::coordinator::placement::Candidate;
use crate::p2p::key::Key;
use crate::preferred::Expr;
use crate::rpc::{self, ReplicateOutcome, agent_client::AgentClient};

/// Keys read from the log at a time; the cluster view is refreshed with
/// every page, so a long pass follows nodes going down or coming back.
const PAGE: usize = 500;

/// How often the totals so far are reported to an operator watching.
const REPORT_EVERY: Duration = Duration::from_millis(250);

/// One cluster as a page of the pass sees it.
struct ClusterView {
    min_copies: u32,
    reserve: u64,
    nodes: Vec<NodeView>,
}

impl ClusterView {
    fn node(&self, uuid: &str) -> &NodeView {
        self.nodes
            .iter()
            .find(|n| n.candidate.uuid == uuid)
            .expect("planned nodes are the cluster's")
    }

    fn names(&self, uuids: &[String]) -> String {
        uuids.iter().map(|u| self.node(u).candidate.name.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// Keeps copies to the configured byte rate, on average since the pass
/// began.
struct Pacer {
    rate: u64,
    start: Instant,
    admitted: u64,
}

impl Pacer {
    async fn admit(&mut self, bytes: u64) {
        if self.rate > 0 {
            let due = Duration::from_secs_f64(self.admitted as f64 / self.rate as f64);
            tokio::time::sleep_until(self.start + due).await;
        }
        self.admitted += bytes;
    }
}

pub(super) struct Pass<'a> {
    repairer: &'a Repairer,
    req: &'a PassRequest,
    progress: Option<&'a Progress>,
    counts: rpc::RepairCounts,
    /// Keys each draining node in the pass still holds.
    drain_left: HashMap<String, u64>,
    clusters: Vec<Arc<ClusterView>>,
    agents: HashMap<String, AgentClient<Channel>>,
    pacer: Pacer,
    reported: Instant,
}

impl<'a> Pass<'a> {
    pub(super) fn new(
        repairer: &'a Repairer,
        req: &'a PassRequest,
        progress: Option<&'a Progress>,
    ) -> Pass<'a> {
        let rate = repairer.config.rate;
        Pass {
            repairer,
            req,
            progress,
            counts: rpc::RepairCounts::default(),
            drain_left: HashMap::new(),
            clusters: Vec::new(),
            agents: HashMap::new(),
            pacer: Pacer { rate, start: Instant::now(), admitted: 0 },
            reported: Instant::now(),
        }
    }

    pub(super) async fn run(
        mut self,
    ) -> Result<(rpc::RepairCounts, HashMap<String, u64>), RepairError> {
        let mut after: Option<String> = None;
        loop {
            self.refresh().await?;
            let page = self.repairer.core.store.location_keys_after(after.as_deref(), PAGE).await?;
            let Some(last) = page.last().cloned() else { break };
            for key in &page {
                self.key(key).await?;
            }
            after = Some(last);
        }
        Ok((self.counts, self.drain_left))
    }

    /// Reads the clusters of the pass and their nodes' states now.
    async fn refresh(&mut self) -> Result<(), RepairError> {
        let core = &self.repairer.core;
        let config = &self.repairer.config;
        let settings = core.store.node_settings().await?;
        let cluster_settings = core.store.cluster_settings().await?;
        let nodes = core.store.nodes().await?;
        self.clusters.clear();
        for c in core.store.clusters().await? {
            if self.req.cluster.as_ref().is_some_and(|u| *u != c.uuid) {
                continue;
            }
            let cs = cluster_settings.get(&c.uuid);
            let views = nodes
                .iter()
                .filter(|n| n.cluster_uuid == c.uuid)
                .map(|n| {
                    let (healthy, health) = core.health.get(&n.uuid);
                    let s = settings.get(&n.uuid);
                    let draining = s.is_some_and(|s| s.draining);
                    let seen = health.as_ref().map_or(self.repairer.started, |h| h.last_seen);
                    let state = NodeState::of(healthy, draining, seen.elapsed(), config.grace);
                    if draining {
                        self.drain_left.entry(n.uuid.clone()).or_insert(0);
                    }
                    // An expression that no longer parses wants nothing, as
                    // placement reads it.
                    let wanted = s.and_then(|s| s.wanted.as_deref()).map(|t| {
                        core.expr(t).unwrap_or_else(|_| Arc::new(Expr::parse("nothing").unwrap()))
                    });
                    let candidate = Candidate {
                        uuid: n.uuid.clone(),
                        name: n.name.clone(),
                        healthy,
                        // A degraded node is no destination (placement
                        // skips it) until it recovers.
                        degraded: core.health.is_degraded(&n.uuid, std::time::Instant::now()),
                        draining,
                        free_bytes: health.and_then(|h| h.free_bytes),
                        wanted,
                    };
                    NodeView { candidate, state, address: n.address.clone() }
                })
                .collect();
            self.clusters.push(Arc::new(ClusterView {
                min_copies: cs.and_then(|s| s.min_copies).unwrap_or(1),
                reserve: cs.and_then(|s| s.reserve_bytes).unwrap_or(core.reserve_default),
                nodes: views,
            }));
        }
        Ok(())
    }

    /// Plans and repairs one key in every cluster of the pass that holds it.
    async fn key(&mut self, text: &str) -> Result<(), RepairError> {
        let present: HashSet<String> = self
            .repairer
            .core
            .store
            .locations(text)
            .await?
            .into_iter()
            .filter(|e| e.present)
            .map(|e| e.node_uuid)
            .collect();
        if present.is_empty() {
            return Ok(());
        }
        let key: Key = match text.parse() {
            Ok(k) => k,
            Err(e) => {
                warn!(key = %text, error = %e, "the location log lists a key that does not parse");
                return Ok(());
            }
        };
        self.counts.keys_checked += 1;
        for cluster in self.clusters.clone() {
            let holders: HashSet<String> = cluster
                .nodes
                .iter()
                .map(|n| n.candidate.uuid.clone())
                .filter(|u| present.contains(u))
                .collect();
            if holders.is_empty() {
                continue;
            }
            let plan =
                plan_key(&key, &cluster.nodes, &holders, cluster.min_copies, cluster.reserve);
            if plan.needs_work() {
                self.counts.under_replicated += 1;
                self.carry_out(&cluster, &key, &plan).await?;
            }
        }
        if self.reported.elapsed() >= REPORT_EVERY {
            self.report(String::new()).await;
        }
        Ok(())
    }

    async fn carry_out(
        &mut self,
        cluster: &ClusterView,
        key: &Key,
        plan: &KeyPlan,
    ) -> Result<(), RepairError> {
        let sources: Vec<String> =
            plan.sources.iter().map(|u| cluster.node(u).address.clone()).collect();
        let mut made = 0;
        for target in &plan.copy_to {
            let to = cluster.node(target);
            let name = &to.candidate.name;
            if self.req.dry_run {
                let from = cluster.names(&plan.sources);
                self.report(format!("would copy {key} to {name} from {from}")).await;
                made += 1;
                continue;
            }
            self.pacer.admit(key.size.unwrap_or(0)).await;
            match self.replicate(to, key, &sources, &plan.sources).await {
                Ok(bytes) => {
                    self.record(key, target, true).await?;
                    made += 1;
                    self.counts.copies_made += 1;
                    self.counts.bytes_copied += bytes;
                    self.report(format!("copied {key} to {name} ({bytes} bytes)")).await;
                }
                Err(e) => {
                    self.counts.failures += 1;
                    self.report(format!("could not copy {key} to {name}: {e}")).await;
                }
            }
        }
        let have = plan.counted.len() + made;
        if have < plan.target {
            self.counts.short += 1;
            if plan.short > 0 {
                let why = format!(
                    "{key} has {have} of its {} copies and no node can take another now",
                    plan.target
                );
                self.report(why).await;
            }
            self.still_on(&plan.drop_from);
            return Ok(());
        }
        if !plan.drop_from.is_empty() {
            self.drain(cluster, key, plan, made).await?;
        }
        Ok(())
    }

    /// Drops the key from the draining nodes of `plan`, once its copies on
    /// other nodes are confirmed by the nodes themselves (or were just made).
    async fn drain(
        &mut self,
        cluster: &ClusterView,
        key: &Key,
        plan: &KeyPlan,
        made: usize,
    ) -> Result<(), RepairError> {
        let confirmed = if self.req.dry_run {
            plan.counted.len()
        } else {
            self.confirm(cluster, key, plan).await?
        };
        if confirmed + made < plan.target {
            self.still_on(&plan.drop_from);
            let why = format!(
                "kept {key} on {}: only {} of its {} copies elsewhere are confirmed",
                cluster.names(&plan.drop_from),
                confirmed + made,
                plan.target
            );
            self.report(why).await;
            return Ok(());
        }
        for uuid in &plan.drop_from {
            let node = cluster.node(uuid);
            let name = &node.candidate.name;
            if self.req.dry_run {
                self.report(format!("would drop {key} from {name} (draining)")).await;
                continue;
            }
            match self.drop_copy(node, key).await? {
                Ok(()) => {
                    self.counts.drained += 1;
                    self.report(format!("dropped {key} from {name} (draining)")).await;
                }
                Err(e) => {
                    self.counts.failures += 1;
                    self.still_on(std::slice::from_ref(uuid));
                    self.report(format!("could not drop {key} from {name}: {e}")).await;
                }
            }
        }
        Ok(())
    }

    /// How many of the counted holders that are up say they have the key.
    /// One that says it has not is struck from the log, as a gateway's
    /// CHECKPRESENT would.
    async fn confirm(
        &mut self,
        cluster: &ClusterView,
        key: &Key,
        plan: &KeyPlan,
    ) -> Result<usize, RepairError> {
        let mut confirmed = 0;
        for uuid in &plan.counted {
            let node = cluster.node(uuid);
            if node.state != NodeState::Up {
                continue;
            }
            let Ok(mut agent) = self.agent(node) else { continue };
            let req = rpc::KeyRequest { key: key.to_string() };
            match agent.check_present(req).await {
                Ok(r) if r.get_ref().present => confirmed += 1,
                Ok(_) => self.record(key, uuid, false).await?,
                Err(s) => {
                    let node = &node.candidate.name;
                    debug!(%key, %node, error = %s.message(), "cannot confirm a copy");
                }
            }
        }
        Ok(confirmed)
    }

    /// Strikes the copy from the log, then asks the agent to delete it; when
    /// the agent refuses, the copy is listed again, since it is still there.
    /// When the call itself fails the copy may or may not be gone, so it
    /// stays struck: the log never claims a copy that may be gone (a later
    /// probe or `admin fsck` lists it again if it is there).
    async fn drop_copy(
        &mut self,
        node: &NodeView,
        key: &Key,
    ) -> Result<Result<(), String>, RepairError> {
        let uuid = &node.candidate.uuid;
        let mut agent = match self.agent(node) {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        self.record(key, uuid, false).await?;
        let req =
            rpc::RemoveRequest { key: key.to_string(), before_ms: None, boot_id: String::new() };
        match agent.remove(crate::telemetry::traced(req)).await {
            Ok(r) if r.get_ref().removed => Ok(Ok(())),
            Ok(r) => {
                self.record(key, uuid, true).await?;
                Ok(Err(r.into_inner().error))
            }
            Err(s) => Ok(Err(s.message().to_string())),
        }
    }

    /// Asks `to` to fetch the key from `sources`; the bytes it received.
    async fn replicate(
        &mut self,
        to: &NodeView,
        key: &Key,
        sources: &[String],
        source_uuids: &[String],
    ) -> Result<u64, String> {
        let req = rpc::ReplicateRequest {
            key: key.to_string(),
            sources: sources.to_vec(),
            source_uuids: source_uuids.to_vec(),
        };
        let mut agent = self.agent(to)?;
        let r = agent
            .replicate(crate::telemetry::traced(req))
            .await
            .map_err(|s| {
                rpc::unreachable_node(&to.candidate.name, &to.address, s).message().to_string()
            })?
            .into_inner();
        match r.outcome() {
            ReplicateOutcome::Stored | ReplicateOutcome::AlreadyHad => Ok(r.bytes),
            ReplicateOutcome::Failed => Err(r.error.replace('\n', "; ")),
        }
    }

    /// A client for the agent at `address`, one channel per agent.
    fn agent(&mut self, node: &NodeView) -> Result<AgentClient<Channel>, String> {
        let address = &node.address;
        if let Some(c) = self.agents.get(address) {
            return Ok(c.clone());
        }
        let peer = rpc::Peer::Agent(&node.candidate.uuid);
        let channel =
            self.repairer.core.dialer().channel(address, peer).map_err(|e| e.to_string())?;
        let client = AgentClient::new(channel);
        self.agents.insert(address.to_string(), client.clone());
        Ok(client)
    }

    async fn record(&self, key: &Key, node: &str, present: bool) -> Result<(), RepairError> {
        let change = (key.to_string(), node.to_string(), present);
        Ok(self.repairer.core.store.record(vec![change]).await?)
    }

    fn still_on(&mut self, draining: &[String]) {
        for uuid in draining {
            *self.drain_left.entry(uuid.clone()).or_insert(0) += 1;
        }
    }

    /// Sends the totals so far, with `event` when not empty, to an operator
    /// watching; logs the event otherwise.
    async fn report(&mut self, event: String) {
        self.reported = Instant::now();
        match self.progress {
            Some(p) => {
                let msg = rpc::RepairProgress { counts: Some(self.counts), event, done: false };
                let _ = p.send(Ok(msg)).await;
            }
            None if !event.is_empty() => debug!("{event}"),
            None => {}
        }
    }
}
