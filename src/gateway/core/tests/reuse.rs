//! What one request of an upload learned, reused by the next: the plan
//! (when the coordinator allows it) and the targets found holding nothing
//! of the key. Whatever changed on the nodes in between, the PUT stores
//! the content whole and names exactly the nodes that stored it.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::fake::Behaviour::*;
use super::*;
use crate::gateway::core::{Outcome, PutOffset, PutRequest};

/// A world whose plan (every node, one copy) may be reused for `ms`.
fn world(specs: &[N], ms: u32) -> World {
    let w = World::new(specs, &checksum_key());
    w.control.reusable_ms.store(ms, Ordering::SeqCst);
    w
}

fn plans(w: &World) -> usize {
    w.control.plans.load(Ordering::SeqCst)
}

fn offsets(w: &World, name: &str) -> usize {
    *w.node(name).offsets.lock().unwrap()
}

async fn put_offset(w: &World) -> PutOffset {
    let repo = w.repo("c").await;
    w.core.put_offset(&repo, &checksum_key(), None).await.unwrap()
}

/// A PUT of the whole content, from offset `from`.
async fn put(w: &World, from: u64) -> Outcome {
    let repo = w.repo("c").await;
    let key = checksum_key();
    let req = PutRequest {
        repo: &repo,
        key: &key,
        file: Some("dir/file.txt"),
        offset: from,
        length: CONTENT.len() as u64 - from,
        data_present: false,
    };
    let body =
        futures::stream::iter([Ok::<_, String>(Bytes::from_static(&CONTENT[from as usize..]))]);
    w.core.put(req, body).await.unwrap()
}

#[tokio::test]
async fn a_put_after_putoffset_asks_neither_the_coordinator_nor_the_targets_again() {
    let w = world(&[n("a"), n("b"), n("c")], 1000);
    assert_eq!(put_offset(&w).await, PutOffset::Offset(0));
    assert_eq!((plans(&w), offsets(&w, "a")), (1, 1));
    let out = put(&w, 0).await;
    assert!(out.ok, "{out:?}");
    assert_eq!(sorted(out.plus), names(&["a", "b", "c"]));
    assert_eq!(plans(&w), 1, "the plan was reused");
    for n in ["a", "b", "c"] {
        assert_eq!(offsets(&w, n), 1, "{n} was not asked again");
    }
    assert_eq!(w.holders(&checksum_key()), names(&["a", "b", "c"]));
    assert_eq!(w.control.listed(&checksum_key().to_string()), names(&["a", "b", "c"]));
}

#[tokio::test]
async fn a_plan_the_coordinator_does_not_mark_reusable_is_asked_again() {
    let w = world(&[n("a"), n("b")], 0);
    put_offset(&w).await;
    assert!(put(&w, 0).await.ok);
    assert_eq!(plans(&w), 2);
    // The targets found empty are still not asked again.
    assert_eq!((offsets(&w, "a"), offsets(&w, "b")), (1, 1));
}

#[tokio::test]
async fn what_one_put_learned_serves_no_other() {
    let w = world(&[n("a"), n("b")], 1000);
    put_offset(&w).await;
    assert!(put(&w, 0).await.ok);
    // A second PUT of the key asks afresh, and finds it stored.
    let out = put(&w, 0).await;
    assert!(out.ok, "{out:?}");
    assert_eq!(sorted(out.plus), names(&["a", "b"]));
    assert_eq!((plans(&w), offsets(&w, "a")), (2, 2));
}

#[tokio::test]
async fn a_node_that_gained_a_partial_since_takes_the_upload_from_the_start() {
    let w = world(&[n("a"), n("b")], 1000);
    put_offset(&w).await;
    let key = checksum_key().to_string();
    w.node("b").partial.lock().unwrap().insert(key.clone(), CONTENT[..8].to_vec());
    let out = put(&w, 0).await;
    assert!(out.ok, "{out:?}");
    assert_eq!(sorted(out.plus), names(&["a", "b"]));
    assert_eq!(w.node("b").holds(&key).as_deref(), Some(CONTENT));
    assert_eq!(w.node("b").put_headers.lock().unwrap()[0].offset, 0);
}

#[tokio::test]
async fn a_node_that_gained_the_content_since_is_named_once() {
    let w = world(&[n("a"), n("b"), n("c")], 1000);
    put_offset(&w).await;
    let key = checksum_key().to_string();
    w.node("b").content.lock().unwrap().insert(key, CONTENT.into());
    let out = put(&w, 0).await;
    assert!(out.ok, "{out:?}");
    assert_eq!(out.plus, {
        let mut p = out.plus.clone();
        p.dedup();
        p
    });
    assert_eq!(sorted(out.plus), names(&["a", "b", "c"]));
}

#[tokio::test]
async fn success_plus_names_only_the_nodes_that_stored() {
    // c answered PUTOFFSET as an empty node would, then fails the write.
    let w = world(&[n("a"), n("b"), n("c").behaving(FailsWrites)], 1000);
    assert_eq!(put_offset(&w).await, PutOffset::Offset(0));
    let out = put(&w, 0).await;
    assert!(out.ok, "{out:?}");
    assert_eq!(sorted(out.plus), names(&["a", "b"]));
    assert_eq!(w.control.listed(&checksum_key().to_string()), names(&["a", "b"]));
}

#[tokio::test]
async fn a_failed_record_fails_a_put_that_reused_what_it_learned() {
    let w = world(&[n("a"), n("b")], 1000);
    put_offset(&w).await;
    w.fail_records();
    let out = put(&w, 0).await;
    assert!(!out.ok, "{out:?}");
    assert!(out.error.as_deref().unwrap_or_default().contains("location log"), "{out:?}");
}

#[tokio::test]
async fn a_resumed_upload_asks_every_target() {
    let w = world(&[n("a").partial(8), n("b")], 1000);
    assert_eq!(put_offset(&w).await, PutOffset::Offset(0));
    // The client resumes from 8 bytes (as if b had them too): every
    // target is asked where it stands, not taken at an earlier word.
    let out = put(&w, 8).await;
    assert_eq!((offsets(&w, "a"), offsets(&w, "b")), (2, 2), "{out:?}");
}

#[tokio::test]
async fn checkpresent_spares_putoffset_its_questions() {
    let w = world(&[n("a"), n("b"), n("c").partial(4)], 1000);
    let repo = w.repo("c").await;
    assert!(!w.core.checkpresent(&repo, &checksum_key()).await.unwrap());
    // c holds a partial: it is asked again, so the resume offset is right.
    assert_eq!(put_offset(&w).await, PutOffset::Offset(0));
    assert_eq!((offsets(&w, "a"), offsets(&w, "b"), offsets(&w, "c")), (1, 1, 2));
    assert!(put(&w, 0).await.ok);
    // And again by the PUT: only nodes holding nothing are taken at
    // their word.
    assert_eq!((offsets(&w, "a"), offsets(&w, "c")), (1, 3));
}

#[tokio::test]
async fn a_node_failure_forgets_what_was_learned() {
    let w = world(&[n("a"), n("b")], 1000);
    put_offset(&w).await;
    let b = w.repo("b").await;
    let crate::gateway::mesh::Repo::Node(b) = b else { panic!("a node") };
    w.core.mesh.agent_failed(&b, "test");
    assert!(put(&w, 0).await.ok);
    assert_eq!((plans(&w), offsets(&w, "a")), (2, 2));
}
