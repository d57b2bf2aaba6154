use sha2::{Digest, Sha256};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::agent::store::Store;
use crate::rpc::agent_server::AgentServer;
use crate::tasks::Tasks;

fn key_for(data: &[u8]) -> Key {
    format!("SHA256E-s{}--{}", data.len(), hex::encode(Sha256::digest(data))).parse().unwrap()
}

fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn service(dir: &std::path::Path, tasks: &Tasks) -> AgentService {
    let store = Store::open(dir).unwrap();
    AgentService::new(store, "u".into(), "n".into(), "c".into(), tasks.clone(), None)
}

/// Puts `data` in `store` as the object of `key`, as an earlier upload would.
fn place(store: &Store, key: &Key, data: &[u8]) {
    let p = store.object_path(key);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// Serves an agent on a loopback port; returns its address and store.
async fn source(tasks: &Tasks) -> (String, Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path(), tasks);
    let store = svc.store.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let token = tasks.token().clone();
    tasks.spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(AgentServer::new(svc))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), token.cancelled_owned())
            .await;
    });
    (addr, store, dir)
}

fn request(key: &Key, sources: &[&str]) -> rpc::ReplicateRequest {
    rpc::ReplicateRequest {
        key: key.to_string(),
        sources: sources.iter().map(|s| s.to_string()).collect(),
        source_uuids: Vec::new(),
    }
}

#[tokio::test]
async fn a_copy_comes_from_the_first_source_that_has_it_and_is_verified() {
    let tasks = Tasks::new(&CancellationToken::new());
    let (empty, _, _d1) = source(&tasks).await;
    let (holder, holder_store, _d2) = source(&tasks).await;
    let data = content(700_000);
    let key = key_for(&data);
    place(&holder_store, &key, &data);

    let dir = tempfile::tempdir().unwrap();
    let target = service(dir.path(), &tasks);
    // An unreachable source and one without the key come first.
    let r = target
        .serve_replicate(request(&key, &["http://127.0.0.1:1", &empty, &holder]))
        .await
        .unwrap();
    assert_eq!(r.outcome(), ReplicateOutcome::Stored, "{r:?}");
    assert_eq!((r.bytes, r.source.as_str()), (700_000, holder.as_str()));
    assert_eq!(std::fs::read(target.store.object_path(&key)).unwrap(), data);
    assert!(!target.store.partial_path(&key).exists());

    let again = target.serve_replicate(request(&key, &[&holder])).await.unwrap();
    assert_eq!(again.outcome(), ReplicateOutcome::AlreadyHad);
    tasks.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn bad_content_at_every_source_fails_and_stores_nothing() {
    let tasks = Tasks::new(&CancellationToken::new());
    let (bad, bad_store, _d) = source(&tasks).await;
    let data = content(300_000);
    let key = key_for(&data);
    let mut wrong = data.clone();
    wrong[1000] ^= 0xff;
    place(&bad_store, &key, &wrong);

    let dir = tempfile::tempdir().unwrap();
    let target = service(dir.path(), &tasks);
    let r = target.serve_replicate(request(&key, &[&bad, "http://127.0.0.1:1"])).await.unwrap();
    assert_eq!(r.outcome(), ReplicateOutcome::Failed);
    // The source's own verified read finds the corruption before sending
    // (and quarantines its copy); a source that sent it anyway would fail
    // the target's checksum.
    assert!(
        r.error.contains("corrupt copy") || r.error.contains("does not match the checksum"),
        "{}",
        r.error
    );
    assert!(r.error.lines().count() == 2, "one line per source: {}", r.error);
    assert!(!target.store.object_path(&key).exists());
    assert!(!target.store.partial_path(&key).exists());

    let e = target.serve_replicate(request(&key, &[])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    tasks.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_partial_copy_is_resumed_from_its_length() {
    let tasks = Tasks::new(&CancellationToken::new());
    let (holder, holder_store, _d) = source(&tasks).await;
    let data = content(1_000_000);
    let key = key_for(&data);
    place(&holder_store, &key, &data);

    let dir = tempfile::tempdir().unwrap();
    let target = service(dir.path(), &tasks);
    std::fs::write(target.store.partial_path(&key), &data[..400_000]).unwrap();
    let r = target.serve_replicate(request(&key, &[&holder])).await.unwrap();
    assert_eq!(r.outcome(), ReplicateOutcome::Stored, "{r:?}");
    assert_eq!(r.bytes, 600_000, "only the rest crossed the network");
    assert_eq!(std::fs::read(target.store.object_path(&key)).unwrap(), data);
    tasks.shutdown(Duration::from_secs(1)).await;
}
