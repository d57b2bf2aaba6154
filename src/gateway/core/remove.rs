//! REMOVE and REMOVE-BEFORE on every node of a repository, and the cluster
//! clock (GETTIMESTAMP) their deadlines are measured in.

use futures::future::join_all;
use tracing::{debug, info, warn};

use super::locations::LocationChange;
use super::{Core, Outcome, Result, unavailable};
use crate::clock::boottime_ms;
use crate::gateway::mesh::Repo;
use crate::gateway::metrics::Metrics;
use crate::p2p::key::Key;
use crate::rpc;

const DEADLINE_PASSED: &str = "not removed: the deadline has passed";

impl Core {
    /// The repository's clock (GETTIMESTAMP): the cluster's one clock, kept
    /// by the coordinator, whichever gateway or node is asked.
    pub async fn timestamp(&self, repo: &Repo) -> Result<u64> {
        Ok(self.cluster_clock_ms(repo).await?.0 / 1000)
    }

    /// The cluster clock in ms, the moment of our clock when the reply came,
    /// and the round trip: at that moment the cluster clock was at most the
    /// reading plus the round trip.
    async fn cluster_clock_ms(&self, repo: &Repo) -> Result<(u64, u64, u64)> {
        let sent = boottime_ms();
        let r = self
            .mesh
            .control()
            .cluster_timestamp(repo.cluster_uuid().to_string())
            .await
            .map_err(|s| unavailable("coordinator", s))?;
        let received = boottime_ms();
        Ok((r.timestamp_ms, received, received - sent))
    }

    /// The deadline of a REMOVE-BEFORE `secs` in our own clock, never later
    /// than the true one: the client's deadline counts from the start of its
    /// second, and the cluster clock may have moved on by a whole round
    /// trip. None when it has passed already.
    async fn local_deadline(&self, repo: &Repo, secs: u64) -> Result<Option<u64>> {
        let (now_ms, received, rtt) = self.cluster_clock_ms(repo).await?;
        let left = secs.saturating_mul(1000).saturating_sub(now_ms + rtt);
        Ok((left > 0).then_some(received + left))
    }

    /// REMOVE and REMOVE-BEFORE: every node of the repository, in parallel,
    /// including nodes the location log does not list. Every node is struck
    /// from the location log before any is asked to delete, so the log
    /// never lists a copy that may be gone; when that cannot be recorded,
    /// nothing is removed.
    #[tracing::instrument(name = "remove", skip_all, fields(repo = %repo.name(), key = %key))]
    pub async fn remove(&self, repo: &Repo, key: &Key, before: Option<u64>) -> Result<Outcome> {
        let deadline = match before {
            None => None,
            Some(secs) => match self.local_deadline(repo, secs).await? {
                Some(d) => Some(d),
                None => {
                    let error = Some(DEADLINE_PASSED.into());
                    return Ok(Outcome { ok: false, plus: Vec::new(), error, no_space: None });
                }
            },
        };
        // Every node, also one that joined or moved a moment ago.
        let nodes = self.mesh.fresh(repo).await.nodes();
        Metrics::add(&self.metrics.removes, 1);
        let struck = nodes.iter().map(|n| LocationChange::absent(key, &n.uuid)).collect();
        if let Err(e) = self.record(struck).await {
            Metrics::add(&self.metrics.removes_failed, 1);
            warn!(%key, "remove refused: {e}");
            return Err(e);
        }
        let removes =
            nodes.iter().map(|n| async move { (n, self.remove_on(n, key, deadline).await) });
        let results = join_all(removes).await;
        let removed: Vec<String> =
            results.iter().filter(|(_, r)| r.is_ok()).map(|(n, _)| n.uuid.clone()).collect();
        let error = results.iter().find_map(|(_, r)| r.as_ref().err().map(NotRemoved::why));
        let refused: Vec<_> = results
            .iter()
            .filter(|(_, r)| matches!(r, Err(NotRemoved::Refused(_))))
            .map(|(n, _)| *n)
            .collect();
        self.restore(&refused, key).await;
        if let Some(e) = &error {
            Metrics::add(&self.metrics.removes_failed, 1);
            info!(%key, error = %e, "remove failed on some node");
        }
        Ok(Outcome { ok: error.is_none(), plus: Self::plus(repo, removed), error, no_space: None })
    }

    /// Lists again the nodes that refused to remove and still hold the
    /// content. A node that could not be asked may have removed it or not:
    /// it stays struck until a probe finds it.
    async fn restore(&self, refused: &[&rpc::NodeInfo], key: &Key) {
        let asks = refused.iter().map(|n| async move {
            matches!(self.present_on(n, key).await, Ok(true)).then(|| n.uuid.clone())
        });
        let holding: Vec<_> = join_all(asks).await.into_iter().flatten().collect();
        self.repair(holding.iter().map(|u| LocationChange::present(key, u)).collect()).await;
    }

    /// Removes from one node; `deadline` is in our clock.
    async fn remove_on(
        &self,
        n: &rpc::NodeInfo,
        key: &Key,
        deadline: Option<u64>,
    ) -> std::result::Result<(), NotRemoved> {
        let failed = |s: tonic::Status| {
            self.mesh.agent_failed(n, s.message());
            NotRemoved::Unknown(format!("{}: {}", n.name, s.message()))
        };
        let c = self.mesh.agent(n).map_err(failed)?;
        // One retry: the agent refuses a deadline tied to a clock run that
        // has since restarted, and then it is measured again.
        for attempt in 0..2 {
            let (before_ms, boot_id) = match deadline {
                None => (None, String::new()),
                Some(d) => match self.clocks.translate(&n.uuid, &*c, d).await.map_err(failed)? {
                    Some(t) => (Some(t.before_ms), t.boot_id),
                    None => return Err(NotRemoved::Refused(DEADLINE_PASSED.into())),
                },
            };
            match c.remove(rpc::RemoveRequest { key: key.to_string(), before_ms, boot_id }).await {
                Ok(r) if r.removed => return Ok(()),
                Ok(r) => return Err(NotRemoved::Refused(format!("{}: {}", n.name, r.error))),
                Err(s) if s.code() == tonic::Code::FailedPrecondition && attempt == 0 => {
                    debug!(node = %n.name, "agent clock restarted: {}", s.message());
                    self.clocks.forget(&n.uuid);
                }
                Err(s) => return Err(failed(s)),
            }
        }
        Err(NotRemoved::Refused(format!("{}: its clock keeps restarting", n.name)))
    }
}

/// Why a node did not remove the content.
enum NotRemoved {
    /// The node answered and kept the content (locked, deadline passed).
    Refused(String),
    /// The node may or may not have removed it.
    Unknown(String),
}

impl NotRemoved {
    fn why(&self) -> String {
        match self {
            NotRemoved::Refused(w) | NotRemoved::Unknown(w) => w.clone(),
        }
    }
}
