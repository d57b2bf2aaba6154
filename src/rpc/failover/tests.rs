//! The failover channel against real tonic servers on loopback ports.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::rpc::{self, Dialer, coordinator_server};

/// A coordinator that answers `Topology` with its own name as the one
/// cluster, refuses `Locate` when it is called "refuses", and knows nothing
/// else.
struct Fake {
    name: &'static str,
    calls: Arc<AtomicUsize>,
}

type Res<T> = Result<Response<T>, Status>;

fn no<T>() -> Res<T> {
    Err(Status::unimplemented("not in this test"))
}

#[tonic::async_trait]
impl coordinator_server::Coordinator for Fake {
    async fn register(&self, _: Request<rpc::RegisterRequest>) -> Res<rpc::RegisterReply> {
        no()
    }
    async fn heartbeat(&self, _: Request<rpc::HeartbeatRequest>) -> Res<rpc::HeartbeatReply> {
        no()
    }
    async fn topology(&self, _: Request<rpc::TopologyRequest>) -> Res<rpc::TopologyReply> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let cluster = rpc::ClusterInfo { name: self.name.to_string(), ..Default::default() };
        Ok(Response::new(rpc::TopologyReply { clusters: vec![cluster], nodes: Vec::new() }))
    }
    async fn locate(&self, _: Request<rpc::LocateRequest>) -> Res<rpc::LocateReply> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.name == "refuses" {
            return Err(Status::not_found("no such key here"));
        }
        Ok(Response::new(rpc::LocateReply { node_uuids: vec![self.name.to_string()] }))
    }
    async fn plan_put(&self, _: Request<rpc::PlanPutRequest>) -> Res<rpc::PlanPutReply> {
        no()
    }
    async fn record_locations(
        &self,
        _: Request<rpc::RecordLocationsRequest>,
    ) -> Res<rpc::RecordLocationsReply> {
        no()
    }
    async fn cluster_timestamp(
        &self,
        _: Request<rpc::ClusterTimestampRequest>,
    ) -> Res<rpc::TimestampReply> {
        no()
    }
    async fn check_token(&self, _: Request<rpc::CheckTokenRequest>) -> Res<rpc::CheckTokenReply> {
        no()
    }
    async fn report_node_failure(
        &self,
        _: Request<rpc::ReportNodeFailureRequest>,
    ) -> Res<rpc::ReportNodeFailureReply> {
        no()
    }
    async fn join(&self, _: Request<rpc::JoinRequest>) -> Res<rpc::JoinReply> {
        no()
    }
    async fn renew(&self, _: Request<rpc::RenewRequest>) -> Res<rpc::JoinReply> {
        no()
    }
    type GitStream = ReceiverStream<Result<rpc::GitReply, Status>>;
    async fn git(&self, _: Request<Streaming<rpc::GitRequest>>) -> Res<Self::GitStream> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        no()
    }
    type WatchTopologyStream = ReceiverStream<Result<rpc::TopologyChanged, Status>>;
    async fn watch_topology(
        &self,
        _: Request<rpc::WatchTopologyRequest>,
    ) -> Res<Self::WatchTopologyStream> {
        no()
    }
}

/// A running fake; dropping it stops the server and waits until it is gone.
struct Server {
    url: String,
    calls: Arc<AtomicUsize>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    async fn start(name: &'static str) -> Server {
        Server::on(TcpListener::bind("127.0.0.1:0").await.unwrap(), name)
    }

    fn on(listener: TcpListener, name: &'static str) -> Server {
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let svc = coordinator_server::CoordinatorServer::new(Fake { name, calls: calls.clone() });
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener),
                    token.cancelled_owned(),
                )
                .await;
        });
        Server { url: format!("http://{addr}"), calls, stop, task: Some(task) }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    async fn kill(mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), t).await.unwrap().unwrap();
        }
    }
}

/// A loopback URL where nothing listens.
async fn dead_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    url
}

fn client(urls: &[&str], bound: Duration) -> rpc::CoordinatorApi {
    let urls: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
    let channel = Dialer::insecure().with_failover(bound).coordinators(&urls).unwrap();
    rpc::coordinator_client::CoordinatorClient::new(channel)
}

async fn answerer(c: &mut rpc::CoordinatorApi) -> Result<String, Status> {
    let t = c.topology(rpc::TopologyRequest {}).await?.into_inner();
    Ok(t.clusters[0].name.clone())
}

/// Every test ends within this, whatever happens.
const GUARD: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_refused_first_endpoint_is_passed_over() {
    tokio::time::timeout(GUARD, async {
        let live = Server::start("live").await;
        let mut c = client(&[&dead_url().await, &live.url], Duration::from_secs(20));
        assert_eq!(answerer(&mut c).await.unwrap(), "live");
        assert_eq!(answerer(&mut c).await.unwrap(), "live");
        assert_eq!(live.calls(), 2);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_server_gone_between_calls_is_replaced_by_the_next() {
    tokio::time::timeout(GUARD, async {
        let one = Server::start("one").await;
        let two = Server::start("two").await;
        let mut c = client(&[&one.url, &two.url], Duration::from_secs(20));
        assert_eq!(answerer(&mut c).await.unwrap(), "one");
        one.kill().await;
        assert_eq!(answerer(&mut c).await.unwrap(), "two");
        // The next call starts at the one that worked.
        assert_eq!(answerer(&mut c).await.unwrap(), "two");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_status_from_a_coordinator_that_answered_is_not_retried() {
    tokio::time::timeout(GUARD, async {
        let refuses = Server::start("refuses").await;
        let other = Server::start("other").await;
        let mut c = client(&[&refuses.url, &other.url], Duration::from_secs(20));
        let e = c.locate(rpc::LocateRequest { key: "k".into() }).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        assert_eq!(e.message(), "no such key here");
        assert_eq!((refuses.calls(), other.calls()), (1, 0));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn all_down_fails_within_the_bound_naming_every_url() {
    tokio::time::timeout(GUARD, async {
        let (a, b) = (dead_url().await, dead_url().await);
        let mut c = client(&[&a, &b], Duration::from_millis(500));
        let e = answerer(&mut c).await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
        assert!(e.message().contains(&a) && e.message().contains(&b), "{}", e.message());
        assert!(e.message().contains("--coordinator-failover"), "{}", e.message());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_failed_streaming_call_is_not_retried_but_moves_the_next_call_on() {
    tokio::time::timeout(GUARD, async {
        let dead = dead_url().await;
        let live = Server::start("live").await;
        let mut c = client(&[&dead, &live.url], Duration::from_secs(20));
        let (tx, rx) = tokio::sync::mpsc::channel::<rpc::GitRequest>(1);
        drop(tx);
        let e = c.git(ReceiverStream::new(rx)).await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
        assert!(e.message().contains(&dead), "{}", e.message());
        assert_eq!(live.calls(), 0);
        // The next streaming call goes to the live one, which answers.
        let (tx, rx) = tokio::sync::mpsc::channel::<rpc::GitRequest>(1);
        drop(tx);
        let e = c.git(ReceiverStream::new(rx)).await.unwrap_err();
        assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
        assert_eq!(live.calls(), 1);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_host_name_stands_for_each_of_its_addresses() {
    tokio::time::timeout(GUARD, async {
        // The same port on 127.0.0.1 and, where the host has it, on ::1.
        let v4 = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = v4.local_addr().unwrap().port();
        let v6 = TcpListener::bind(("::1", port)).await.ok();
        let url = format!("http://localhost:{port}");
        let places = super::targets::resolve(std::slice::from_ref(&url)).await;
        let addrs: Vec<_> = places.iter().filter_map(|p| p.addr).collect();
        assert!(addrs.iter().any(|a| a.to_string() == format!("127.0.0.1:{port}")), "{places:?}");
        if v6.is_some() && addrs.iter().any(|a| a.is_ipv6()) {
            assert!(places.iter().any(|p| p.dial == format!("http://[::1]:{port}")), "{places:?}");
        }
        assert!(places.iter().all(|p| p.url == url), "{places:?}");

        // A call reaches a server behind the name; when the name also
        // stands for ::1, the other address takes over once the first
        // server is gone.
        let s4 = Server::on(v4, "v4");
        let s6 = v6.filter(|_| addrs.iter().any(|a| a.is_ipv6())).map(|l| Server::on(l, "v6"));
        let mut c = client(&[&url], Duration::from_secs(20));
        let first = answerer(&mut c).await.unwrap();
        if let Some(s6) = s6 {
            let (gone, stays) = if first == "v4" { (s4, s6) } else { (s6, s4) };
            gone.kill().await;
            let second = answerer(&mut c).await.unwrap();
            assert_ne!(first, second);
            stays.kill().await;
        } else {
            assert_eq!(first, "v4");
        }
    })
    .await
    .unwrap();
}
