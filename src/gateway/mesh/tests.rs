//! The mesh's own bookkeeping: one client per node and address, backoff
//! after a failure, a node coming back up, degraded nodes ranked last, and
//! failures counted and reported.

use std::sync::Mutex;

use futures::future::BoxFuture;

use super::api::Replies;
use super::*;

/// Counts connections; its clients are never called.
#[derive(Default)]
struct Counting(Mutex<Vec<String>>);

struct Idle;

impl NodeClient for Idle {
    fn check_present(&self, _: String) -> BoxFuture<'_, Result<bool, Status>> {
        unreachable!("not called by these tests")
    }
    fn put_offset(&self, _: String) -> BoxFuture<'_, Result<rpc::PutOffsetReply, Status>> {
        unreachable!("not called by these tests")
    }
    fn put(
        &self,
        _: tokio::sync::mpsc::Receiver<rpc::PutRequest>,
    ) -> BoxFuture<'static, Result<rpc::PutReply, Status>> {
        unreachable!("not called by these tests")
    }
    fn get(&self, _: rpc::GetRequest) -> BoxFuture<'_, Result<Replies<rpc::GetReply>, Status>> {
        unreachable!("not called by these tests")
    }
    fn remove(&self, _: rpc::RemoveRequest) -> BoxFuture<'_, Result<rpc::RemoveReply, Status>> {
        unreachable!("not called by these tests")
    }
    fn lock_content(
        &self,
        _: tokio::sync::mpsc::Receiver<rpc::LockRequest>,
    ) -> BoxFuture<'_, Result<Replies<rpc::LockReply>, Status>> {
        unreachable!("not called by these tests")
    }
    fn clock(&self) -> BoxFuture<'_, Result<rpc::TimestampReply, Status>> {
        unreachable!("not called by these tests")
    }
}

impl Nodes for Counting {
    fn connect(&self, node: &rpc::NodeInfo) -> Result<Arc<dyn NodeClient>, Status> {
        self.0.lock().unwrap().push(node.address.clone());
        Ok(Arc::new(Idle))
    }
}

/// A coordinator whose topology the test sets; it keeps the failure
/// reports it receives.
#[derive(Default)]
struct Topology(Mutex<rpc::TopologyReply>, Mutex<Vec<rpc::ReportNodeFailureRequest>>);

impl Control for Topology {
    fn topology(&self) -> BoxFuture<'_, Result<rpc::TopologyReply, Status>> {
        let t = self.0.lock().unwrap().clone();
        Box::pin(async move { Ok(t) })
    }
    fn locate(&self, _: String) -> BoxFuture<'_, Result<Vec<String>, Status>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn record_locations(&self, _: Vec<rpc::LocationChange>) -> BoxFuture<'_, Result<(), Status>> {
        Box::pin(async { Ok(()) })
    }
    fn plan_put(&self, _: rpc::PlanPutRequest) -> BoxFuture<'_, Result<rpc::PlanPutReply, Status>> {
        Box::pin(async { Err(Status::unimplemented("no placement here")) })
    }
    fn cluster_timestamp(&self, _: String) -> BoxFuture<'_, Result<rpc::TimestampReply, Status>> {
        Box::pin(async { Err(Status::unimplemented("no clock here")) })
    }
    fn check_token(
        &self,
        _: rpc::CheckTokenRequest,
    ) -> BoxFuture<'_, Result<rpc::CheckTokenReply, Status>> {
        Box::pin(async { Ok(rpc::CheckTokenReply::default()) })
    }
    fn report_node_failure(
        &self,
        req: rpc::ReportNodeFailureRequest,
    ) -> BoxFuture<'_, Result<(), Status>> {
        self.1.lock().unwrap().push(req);
        Box::pin(async { Ok(()) })
    }
}

fn node(uuid: &str, address: &str, healthy: bool) -> rpc::NodeInfo {
    rpc::NodeInfo {
        uuid: uuid.into(),
        name: uuid.into(),
        address: address.into(),
        healthy,
        cost: 100,
        ..Default::default()
    }
}

fn uuids(nodes: &[rpc::NodeInfo]) -> Vec<&str> {
    nodes.iter().map(|n| n.uuid.as_str()).collect()
}

#[test]
fn a_client_is_reused_until_the_node_moves() {
    let nodes = Arc::new(Counting::default());
    let mesh = Mesh::with(Arc::new(Topology::default()), nodes.clone());
    let a = node("a", "http://one", true);
    mesh.agent(&a).unwrap();
    mesh.agent(&a).unwrap();
    mesh.agent(&node("a", "http://two", true)).unwrap();
    assert_eq!(*nodes.0.lock().unwrap(), ["http://one", "http://two"]);
}

#[test]
fn a_node_that_failed_is_ranked_last_until_it_answers() {
    let mesh = Mesh::with(Arc::new(Topology::default()), Arc::new(Counting::default()));
    let (a, b) = (node("a", "http://a", true), node("b", "http://b", true));
    let a = rpc::NodeInfo { cost: 10, ..a };
    mesh.agent(&a).unwrap();
    mesh.agent_failed(&a, "connection refused");
    assert_eq!(uuids(&mesh.rank(vec![a.clone(), b.clone()])), ["b", "a"]);
    mesh.agent_ok(&a);
    assert_eq!(uuids(&mesh.rank(vec![a, b])), ["a", "b"]);
}

#[tokio::test]
async fn a_node_back_up_is_tried_again_at_once() {
    let control = Arc::new(Topology::default());
    let mesh = Mesh::with(control.clone(), Arc::new(Counting::default()));
    let set = |healthy| {
        let nodes = vec![node("a", "http://a", healthy), node("b", "http://b", true)];
        *control.0.lock().unwrap() = rpc::TopologyReply { clusters: vec![], nodes };
    };
    let a = rpc::NodeInfo { cost: 10, ..node("a", "http://a", true) };
    let b = node("b", "http://b", true);
    set(false);
    mesh.refresh().await.unwrap();
    mesh.agent(&a).unwrap();
    mesh.agent_failed(&a, "connection refused");
    assert_eq!(uuids(&mesh.rank(vec![a.clone(), b.clone()])), ["b", "a"]);
    set(true);
    mesh.refresh().await.unwrap();
    assert_eq!(uuids(&mesh.rank(vec![a, b])), ["a", "b"]);
}

#[test]
fn degraded_nodes_are_ranked_last_but_still_asked_alone() {
    let mesh = Mesh::with(Arc::new(Topology::default()), Arc::new(Counting::default()));
    let a = rpc::NodeInfo { cost: 10, degraded: true, ..node("a", "http://a", true) };
    let b = node("b", "http://b", true);
    assert_eq!(uuids(&mesh.rank(vec![a.clone(), b.clone()])), ["b", "a"]);
    let (picked, _busy) = mesh.pick(&[a.clone(), b]).unwrap();
    assert_eq!(picked.uuid, "b");
    let (picked, _busy) = mesh.pick(std::slice::from_ref(&a)).unwrap();
    assert_eq!(picked.uuid, "a");
}

#[tokio::test]
async fn failures_are_counted_per_node_reported_and_rendered() {
    let control = Arc::new(Topology::default());
    let mesh = Mesh::with(control.clone(), Arc::new(Counting::default()));
    let (a, b) = (node("a", "http://a", true), node("b", "http://b", true));
    *control.0.lock().unwrap() =
        rpc::TopologyReply { clusters: vec![], nodes: vec![a.clone(), b.clone()] };
    mesh.refresh().await.unwrap();
    mesh.agent(&a).unwrap();
    mesh.put_failed(&a, "read-only file system");
    mesh.put_failed(&a, "read-only file system");
    mesh.agent_failed(&a, "no answer in 30s");
    assert_eq!(mesh.failures("a"), failures::Counts { put: 2, data: 1, failovers: 0 });
    assert_eq!(mesh.failures("b"), failures::Counts::default());
    let text = mesh.render_metrics();
    for line in [
        "# TYPE annexmesh_node_put_failures counter",
        "annexmesh_node_put_failures_total{node=\"a\",uuid=\"a\"} 2",
        "annexmesh_node_data_failures_total{node=\"a\",uuid=\"a\"} 1",
        "annexmesh_node_put_failures_total{node=\"b\",uuid=\"b\"} 0",
        "annexmesh_node_degraded{node=\"a\",uuid=\"a\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
    }
    // Queued until the sender runs, then sent in order.
    assert!(control.1.lock().unwrap().is_empty());
    let tasks = Tasks::new(&Default::default());
    mesh.spawn_reports(&tasks);
    for _ in 0..100 {
        if control.1.lock().unwrap().len() == 3 {
            break;
        }
        tokio::task::yield_now().await;
    }
    let sent = control.1.lock().unwrap().clone();
    let kinds: Vec<_> = sent.iter().map(|r| (r.node_uuid.as_str(), r.kind())).collect();
    use rpc::FailureKind::{Data, Put};
    assert_eq!(kinds, [("a", Put), ("a", Put), ("a", Data)]);
    assert_eq!(sent[0].error, "read-only file system");
    tasks.shutdown(std::time::Duration::from_secs(1)).await;
}

/// A coordinator that counts topology reads, each taking a moment.
#[derive(Default)]
struct Reads(std::sync::atomic::AtomicUsize);

impl Control for Reads {
    fn topology(&self) -> BoxFuture<'_, Result<rpc::TopologyReply, Status>> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(rpc::TopologyReply::default())
        })
    }
    fn locate(&self, _: String) -> BoxFuture<'_, Result<Vec<String>, Status>> {
        unreachable!("not called by these tests")
    }
    fn record_locations(&self, _: Vec<rpc::LocationChange>) -> BoxFuture<'_, Result<(), Status>> {
        unreachable!("not called by these tests")
    }
    fn plan_put(&self, _: rpc::PlanPutRequest) -> BoxFuture<'_, Result<rpc::PlanPutReply, Status>> {
        unreachable!("not called by these tests")
    }
    fn cluster_timestamp(&self, _: String) -> BoxFuture<'_, Result<rpc::TimestampReply, Status>> {
        unreachable!("not called by these tests")
    }
    fn check_token(
        &self,
        _: rpc::CheckTokenRequest,
    ) -> BoxFuture<'_, Result<rpc::CheckTokenReply, Status>> {
        unreachable!("not called by these tests")
    }
}

#[tokio::test(start_paused = true)]
async fn unknown_names_refresh_the_topology_at_most_once_a_second() {
    let control = Arc::new(Reads::default());
    let mesh = Mesh::with(control.clone(), Arc::new(Counting::default()));
    let reads = || control.0.load(std::sync::atomic::Ordering::SeqCst);
    // A burst of lookups for names nobody serves: one read between them.
    let burst = (0..100).map(|i| {
        let mesh = mesh.clone();
        async move { mesh.repo_by_name(&format!("nosuch{i}")).await }
    });
    let found = futures::future::join_all(burst).await;
    assert!(found.iter().all(Option::is_none));
    assert_eq!(reads(), 1);
    // Lookups that arrive after that read began wait for the second to end
    // and share one more read, which sees what exists when they asked.
    let start = tokio::time::Instant::now();
    let burst = (0..100).map(|i| {
        let mesh = mesh.clone();
        async move { mesh.repo_by_name(&format!("nosuch{i}")).await }
    });
    let found = futures::future::join_all(burst).await;
    assert!(found.iter().all(Option::is_none));
    assert_eq!(reads(), 2);
    assert!(start.elapsed() >= MISS_REFRESH - Duration::from_millis(100), "{:?}", start.elapsed());
}
