//! The gateway's two refresh loops against a coordinator double whose watch
//! stream the test feeds, on a paused clock.

use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::*;
use crate::gateway::mesh::api::{Control, NodeClient, Nodes, Replies};
use crate::rpc;

type Msg = Result<rpc::TopologyChanged, Status>;

/// Counts topology reads and subscriptions; the first subscription gets
/// the stream the test feeds, later ones fail as an unreachable
/// coordinator would.
struct Watched {
    reads: AtomicUsize,
    subscriptions: AtomicUsize,
    stream: Mutex<Option<mpsc::Receiver<Msg>>>,
}

impl Control for Watched {
    fn topology(&self) -> BoxFuture<'_, Result<rpc::TopologyReply, Status>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(rpc::TopologyReply::default()) })
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
    fn watch_topology(&self) -> BoxFuture<'_, Result<Replies<rpc::TopologyChanged>, Status>> {
        self.subscriptions.fetch_add(1, Ordering::SeqCst);
        let rx = self.stream.lock().unwrap().take();
        Box::pin(async move {
            match rx {
                Some(rx) => Ok(ReceiverStream::new(rx).boxed()),
                None => Err(Status::unavailable("no coordinator answered")),
            }
        })
    }
}

struct NoNodes;

impl Nodes for NoNodes {
    fn connect(&self, _: &rpc::NodeInfo) -> Result<Arc<dyn NodeClient>, Status> {
        Err(Status::unavailable("no nodes in this test"))
    }
}

/// Lets every ready task run, without letting the paused clock move.
async fn settle() {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
}

fn change(keepalive: bool) -> Msg {
    Ok(rpc::TopologyChanged { version: 1, keepalive })
}

#[tokio::test(start_paused = true)]
async fn a_change_refreshes_at_once_a_keepalive_does_not_and_a_lost_stream_is_resubscribed() {
    let (tx, rx) = mpsc::channel(4);
    let control = Arc::new(Watched {
        reads: AtomicUsize::new(0),
        subscriptions: AtomicUsize::new(0),
        stream: Mutex::new(Some(rx)),
    });
    let mesh = Mesh::with(control.clone(), Arc::new(NoNodes));
    let tasks = crate::tasks::Tasks::new(&CancellationToken::new());
    mesh.spawn_refresh(&tasks);
    settle().await;
    let reads = || control.reads.load(Ordering::SeqCst);
    let subscriptions = || control.subscriptions.load(Ordering::SeqCst);
    assert_eq!(subscriptions(), 1);
    let before = reads();
    assert!(before >= 1);

    tx.send(change(false)).await.unwrap();
    settle().await;
    assert_eq!(reads(), before + 1, "a change is read at once");
    tx.send(change(true)).await.unwrap();
    settle().await;
    assert_eq!(reads(), before + 1, "a keep-alive is not a change");

    // The stream ends: what changed meanwhile is read at once, and the
    // gateway subscribes again after its backoff.
    drop(tx);
    settle().await;
    assert_eq!(reads(), before + 2);
    tokio::time::sleep(WATCH_BACKOFF_MIN + Duration::from_millis(100)).await;
    settle().await;
    assert!(subscriptions() >= 2);
    tasks.shutdown(Duration::from_secs(1)).await;
}
