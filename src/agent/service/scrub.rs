//! `Agent.Scrub`: one scrub pass on request (`annexmesh admin scrub`), the
//! same pass the background scrubber runs, at the rate the caller asks.

use tonic::Status;
use tracing::info;

use super::AgentService;
use crate::agent::scrub::scrub_pass;
use crate::rpc;

impl AgentService {
    pub(super) async fn serve_scrub(
        &self,
        req: rpc::ScrubRequest,
    ) -> Result<rpc::ScrubReply, Status> {
        let rate = match req.rate_bytes_per_s {
            0 => f64::INFINITY,
            r => r as f64,
        };
        info!(node = %self.name, rate_bytes_per_s = req.rate_bytes_per_s, "scrub pass requested");
        let pass = scrub_pass(&self.store, &self.integrity, rate).await;
        if let Some(m) = &self.metrics {
            m.scrubbed(&pass);
        }
        info!(node = %self.name, objects = pass.objects, bytes = pass.bytes, bad = pass.bad,
            "requested scrub pass done");
        Ok(rpc::ScrubReply { objects: pass.objects, bytes: pass.bytes, bad_keys: pass.bad_keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::scrub::tests::put_object;
    use crate::agent::store::Store;
    use crate::tasks::Tasks;

    #[tokio::test]
    async fn a_requested_pass_reports_and_quarantines_the_bad_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let good = put_object(&store, b"good", b"good");
        let bad = put_object(&store, b"rotten?", b"rotten!");
        let svc = AgentService::new(
            store.clone(),
            "u".into(),
            "n1".into(),
            "c".into(),
            Tasks::new(&Default::default()),
            None,
        );
        let reply = svc.serve_scrub(rpc::ScrubRequest { rate_bytes_per_s: 0 }).await.unwrap();
        assert_eq!((reply.objects, reply.bytes), (2, 11));
        assert_eq!(reply.bad_keys, vec![bad.to_string()]);
        assert!(store.object_path(&good).exists());
        assert!(!store.object_path(&bad).exists());
        assert!(store.bad_dir().join(bad.to_string()).exists());
    }
}
