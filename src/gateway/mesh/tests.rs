//! The mesh's own bookkeeping: one client per node and address, backoff
//! after a failure, and a node coming back up.

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

/// A coordinator whose topology the test sets.
#[derive(Default)]
struct Topology(Mutex<rpc::TopologyReply>);

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
