//! PUTOFFSET and PUT: resume offsets, ALREADY-HAVE, fan-out, minimum
//! copies, broken and overlong bodies.

use bytes::Bytes;

use super::fake::Behaviour::*;
use super::*;
use crate::gateway::core::{PutOffset, PutRequest};

struct OffsetCase {
    name: &'static str,
    nodes: Vec<N>,
    min: u32,
    repo: &'static str,
    expect: Result<PutOffset, &'static str>,
}

/// ALREADY-HAVE from these nodes.
fn have(uuids: &[&str]) -> Result<PutOffset, &'static str> {
    Ok(PutOffset::AlreadyHave(names(uuids)))
}

cases! {
    #[tokio::test] check_offset;
    offset_is_the_lowest_resume_offset => OffsetCase {
        name: "the lowest resume offset of the targets that want it",
        nodes: vec![n("a").partial(4), n("b").partial(8), n("d").has()],
        min: 1,
        repo: "c",
        expect: Ok(PutOffset::Offset(4)),
    },
    offset_already_have_when_enough_targets_have_it => OffsetCase {
        name: "ALREADY-HAVE when as many targets as required have it",
        nodes: vec![n("a").has(), n("b").has()],
        min: 2,
        repo: "c",
        expect: have(&["a", "b"]),
    },
    offset_fewer_holders_than_required_is_no_already_have => OffsetCase {
        name: "fewer holders than required: nothing left to send, but no ALREADY-HAVE",
        nodes: vec![n("a").has(), n("b").behaving(Unreachable)],
        min: 2,
        repo: "c",
        expect: Ok(PutOffset::Offset(16)),
    },
    offset_no_target_reachable => OffsetCase {
        name: "no target reachable",
        nodes: vec![n("a").behaving(Unreachable)],
        min: 1,
        repo: "c",
        expect: Err("no node can take the content now"),
    },
    offset_a_node_addressed_alone_reports_no_other_nodes => OffsetCase {
        name: "a node addressed alone reports no other nodes",
        nodes: vec![n("a").has(), n("b").has()],
        min: 1,
        repo: "a",
        expect: have(&[]),
    },
}

async fn check_offset(c: OffsetCase) {
    let key = checksum_key();
    let all = c.nodes.iter().map(|n| n.name).collect();
    let w = World::planned(&c.nodes, &key, all, c.min, 0);
    let got = w.core.put_offset(&w.repo(c.repo).await, &key, None).await;
    match (got, c.expect) {
        (Ok(PutOffset::AlreadyHave(p)), Ok(PutOffset::AlreadyHave(want))) => {
            assert_eq!(sorted(p), want, "{}", c.name)
        }
        (Ok(got), Ok(want)) => assert_eq!(got, want, "{}", c.name),
        (Err(e), Err(want)) => assert!(e.to_string().contains(want), "{}: {e}", c.name),
        (got, want) => panic!("{}: got {got:?}, want {want:?}", c.name),
    }
}

/// What the client sends after the PUT.
#[derive(Clone, Copy)]
enum Body {
    /// The promised bytes, in 3-byte reads.
    Whole,
    /// This many bytes, then the connection fails.
    CutAfter(usize),
    /// The promised bytes and four more.
    TooLong,
}

struct Case {
    name: &'static str,
    nodes: Vec<N>,
    targets: Vec<&'static str>,
    min: u32,
    repo: &'static str,
    bypass: Vec<&'static str>,
    offset: u64,
    data_present: bool,
    body: Body,
    /// Whether the PUT succeeded, or part of its error when it is refused.
    ok: Result<bool, &'static str>,
    plus: Vec<&'static str>,
    error: Option<&'static str>,
    holders_after: Vec<&'static str>,
    partial_after: Vec<(&'static str, usize)>,
    /// The offset each node's upload started at.
    headers: Vec<(&'static str, Vec<u64>)>,
    /// Whether writes to the location log fail.
    records_fail: bool,
    /// What the log lists afterwards, when not the holders.
    listed_after: Option<Vec<&'static str>>,
}

/// A whole PUT from offset 0 to every node, of which one copy is enough.
fn case(name: &'static str, nodes: Vec<N>) -> Case {
    let targets = nodes.iter().map(|n| n.name).collect();
    Case {
        name,
        nodes,
        targets,
        min: 1,
        repo: "c",
        bypass: vec![],
        offset: 0,
        data_present: false,
        body: Body::Whole,
        ok: Ok(true),
        plus: vec![],
        error: None,
        holders_after: vec![],
        partial_after: vec![],
        headers: vec![],
        records_fail: false,
        listed_after: None,
    }
}

fn body(c: &Case) -> Vec<Result<Bytes, String>> {
    let data = &CONTENT[c.offset as usize..];
    let (data, fail) = match c.body {
        Body::Whole => (data.to_vec(), None),
        Body::CutAfter(n) => (data[..n].to_vec(), Some("client connection lost".to_string())),
        Body::TooLong => ([data, b"more"].concat(), None),
    };
    let mut items: Vec<_> = data.chunks(3).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    items.extend(fail.map(Err));
    items
}

cases! {
    #[tokio::test] check;
    every_target_from_its_own_resume_offset => Case {
        plus: vec!["a", "b", "d"],
        holders_after: vec!["a", "b", "d"],
        headers: vec![("a", vec![4]), ("b", vec![8]), ("d", vec![0])],
        ..case(
            "every target gets the data from its own resume offset",
            vec![n("a").partial(4), n("b").partial(8), n("d")],
        )
    },
    a_client_resuming_at_an_offset => Case {
        offset: 4,
        plus: vec!["a", "b"],
        holders_after: vec!["a", "b"],
        headers: vec![("a", vec![8]), ("b", vec![4])],
        ..case("a client resuming at an offset", vec![n("a").partial(8), n("b").partial(4)])
    },
    a_target_that_has_it_counts_as_stored => Case {
        plus: vec!["a", "b"],
        holders_after: vec!["a", "b"],
        headers: vec![("a", vec![]), ("b", vec![0])],
        ..case("a target that has it counts as stored", vec![n("a").has(), n("b")])
    },
    fewer_copies_than_the_minimum_fail => Case {
        min: 2,
        ok: Ok(false),
        plus: vec!["a"],
        error: Some("stored on 1 node(s), but the cluster requires 2 (b: no space left"),
        holders_after: vec!["a"],
        ..case(
            "fewer copies than the minimum fail, listing where it was stored",
            vec![n("a"), n("b").behaving(RefusesWrites)],
        )
    },
    stored_nowhere => Case {
        ok: Ok(false),
        error: Some("a: no space left on device"),
        ..case("stored nowhere", vec![n("a").behaving(RefusesWrites)])
    },
    an_unreachable_target_does_not_stop_the_others => Case {
        plus: vec!["a"],
        holders_after: vec!["a"],
        ..case(
            "an unreachable target does not stop the others",
            vec![n("a"), n("b").behaving(Unreachable)],
        )
    },
    a_body_cut_short_stores_nothing => Case {
        body: Body::CutAfter(6),
        ok: Ok(false),
        error: Some("without its end marker"),
        // Reads are coalesced into chunk-sized messages, so what the
        // nodes had before is what they keep.
        partial_after: vec![("a", 4), ("b", 0)],
        ..case(
            "a body cut short stores nothing and keeps the partials",
            vec![n("a").partial(4), n("b")],
        )
    },
    data_beyond_the_promised_length_is_refused => Case {
        body: Body::TooLong,
        ok: Ok(false),
        error: Some("without its end marker"),
        ..case("data beyond the promised length is refused", vec![n("a")])
    },
    data_present_counts_only_the_targets_that_have_it => Case {
        data_present: true,
        min: 2,
        ok: Ok(false),
        plus: vec!["a"],
        error: Some("b: content not present"),
        holders_after: vec!["a"],
        ..case("DATA-PRESENT counts only the targets that have it", vec![n("a").has(), n("b")])
    },
    a_node_addressed_alone_is_the_only_target => Case {
        repo: "a",
        targets: vec!["b"],
        holders_after: vec!["a"],
        headers: vec![("b", vec![])],
        ..case("a node addressed alone is the only target", vec![n("a"), n("b")])
    },
    a_put_that_cannot_be_recorded_fails => Case {
        records_fail: true,
        ok: Ok(false),
        plus: vec!["a", "b"],
        error: Some("stored on 2 node(s), but cannot update the location log"),
        holders_after: vec!["a", "b"],
        listed_after: Some(vec![]),
        ..case(
            "stored but not recorded: FAILURE naming the nodes, content kept",
            vec![n("a"), n("b")],
        )
    },
    bypass_leaves_a_planned_target_out => Case {
        bypass: vec!["b"],
        plus: vec!["a"],
        holders_after: vec!["a"],
        headers: vec![("b", vec![])],
        ..case("BYPASS leaves a planned target out", vec![n("a"), n("b")])
    },
}

async fn check(c: Case) {
    let key = checksum_key();
    let w = World::planned(&c.nodes, &key, c.targets.clone(), c.min, 0);
    let bypass = c.bypass.iter().map(|s| s.to_string()).collect();
    let repo = w.repo(c.repo).await.bypassing(bypass);
    let length = CONTENT.len() as u64 - c.offset;
    let (offset, data_present) = (c.offset, c.data_present);
    let req = PutRequest { repo: &repo, key: &key, file: None, offset, length, data_present };
    if c.records_fail {
        w.fail_records();
    }
    let got = w.core.put(req, futures::stream::iter(body(&c))).await;
    let out = match (got, c.ok) {
        (Ok(out), Ok(ok)) => {
            assert_eq!(out.ok, ok, "{}: {out:?}", c.name);
            out
        }
        (Err(e), Err(want)) => {
            assert!(e.to_string().contains(want), "{}: {e}", c.name);
            return;
        }
        (got, want) => panic!("{}: got {got:?}, want {want:?}", c.name),
    };
    assert_eq!(sorted(out.plus), names(&c.plus), "{}: plus", c.name);
    match (&out.error, c.error) {
        (None, None) => {}
        (Some(e), Some(want)) => assert!(e.contains(want), "{}: {e}", c.name),
        (e, want) => panic!("{}: error {e:?}, want {want:?}", c.name),
    }
    assert_eq!(w.holders(&key), names(&c.holders_after), "{}: holders", c.name);
    let listed = c.listed_after.as_ref().unwrap_or(&c.holders_after);
    assert_eq!(w.control.listed(&key.to_string()), names(listed), "{}", c.name);
    for (node, len) in &c.partial_after {
        assert_eq!(w.node(node).partial_len(&key.to_string()), *len, "{}: {node}", c.name);
    }
    for (node, offsets) in &c.headers {
        let seen: Vec<u64> =
            w.node(node).put_headers.lock().unwrap().iter().map(|h| h.offset).collect();
        assert_eq!(seen, *offsets, "{}: uploads to {node}", c.name);
    }
}

#[tokio::test]
async fn a_size_that_does_not_match_the_key_is_refused() {
    let key = checksum_key();
    let w = World::new(&[n("a")], &key);
    let repo = w.repo("c").await;
    let req = PutRequest {
        repo: &repo,
        key: &key,
        file: None,
        offset: 0,
        length: 10,
        data_present: false,
    };
    let got = w.core.put(req, futures::stream::empty::<Result<Bytes, String>>()).await;
    assert!(matches!(got, Err(crate::gateway::core::CoreError::BadRequest(_))), "{got:?}");
    assert!(w.node("a").put_headers.lock().unwrap().is_empty());
}

/// Waits (a bounded number of turns) for `n` reports to reach the fake
/// coordinator, and returns who and what they are.
async fn reports(w: &World, n: usize) -> Vec<(String, rpc::FailureKind)> {
    w.core.mesh.spawn_reports(&w.core.tasks);
    for _ in 0..100 {
        if w.control.failures.lock().unwrap().len() >= n {
            break;
        }
        tokio::task::yield_now().await;
    }
    let sent = w.control.failures.lock().unwrap();
    sent.iter().map(|r| (r.node_uuid.clone(), r.kind())).collect()
}

#[tokio::test]
async fn failed_targets_are_counted_and_reported_and_the_put_still_succeeds() {
    let key = checksum_key();
    let w = World::new(&[n("a"), n("b").behaving(FailsWrites), n("d").behaving(Unreachable)], &key);
    let repo = w.repo("c").await;
    let length = CONTENT.len() as u64;
    let req =
        PutRequest { repo: &repo, key: &key, file: None, offset: 0, length, data_present: false };
    let body = futures::stream::iter([Ok::<_, String>(Bytes::from_static(CONTENT))]);
    let out = w.core.put(req, body).await.unwrap();
    assert!(out.ok, "one copy is the minimum: {out:?}");
    assert_eq!(out.plus, ["a"]);
    let put_failures = |u: &str| w.core.mesh.failures(u).put;
    assert_eq!((put_failures("a"), put_failures("b"), put_failures("d")), (0, 1, 1));
    let mut got = reports(&w, 2).await;
    got.sort();
    use rpc::FailureKind::Put;
    assert_eq!(got, [("b".to_string(), Put), ("d".to_string(), Put)]);
}

#[tokio::test]
async fn a_body_cut_short_reports_no_node() {
    let key = checksum_key();
    let w = World::new(&[n("a"), n("b").behaving(FailsWrites)], &key);
    let repo = w.repo("c").await;
    let length = CONTENT.len() as u64;
    let req =
        PutRequest { repo: &repo, key: &key, file: None, offset: 0, length, data_present: false };
    let body = futures::stream::iter([
        Ok(Bytes::from_static(&CONTENT[..4])),
        Err("client connection lost".to_string()),
    ]);
    let out = w.core.put(req, body).await.unwrap();
    assert!(!out.ok);
    assert_eq!(w.core.mesh.failures("a").put + w.core.mesh.failures("b").put, 0);
    assert!(reports(&w, 1).await.is_empty());
}

/// A PUT larger than a target's buffer, with one target that stops taking
/// data after its header.
struct StallCase {
    name: &'static str,
    nodes: Vec<N>,
    min: u32,
    ok: bool,
    plus: Vec<&'static str>,
    error: Option<&'static str>,
}

cases! {
    #[tokio::test(start_paused = true)] check_stall;
    a_stalled_target_is_dropped_and_the_others_complete => StallCase {
        name: "a stalled target is dropped after the stall timeout; the PUT completes without it",
        nodes: vec![n("a"), n("b"), n("s").behaving(StopsReading)],
        min: 1,
        ok: true,
        plus: vec!["a", "b"],
        error: None,
    },
    a_stalled_target_that_was_needed_fails_the_put_clearly => StallCase {
        name: "without the stalled target the minimum is not met",
        nodes: vec![n("a"), n("b"), n("s").behaving(StopsReading)],
        min: 3,
        ok: false,
        plus: vec!["a", "b"],
        error: Some("took no data for 15 s"),
    },
}

async fn check_stall(c: StallCase) {
    let buffer = crate::gateway::limits::call_limits().put_buffer;
    let size = (buffer + 4 * 1024 * 1024) as u64;
    let key: Key = format!("WORM-s{size}-m1700000000--big").parse().unwrap();
    let all = c.nodes.iter().map(|n| n.name).collect();
    let w = World::planned(&c.nodes, &key, all, c.min, 0);
    let repo = w.repo("c").await;
    let req = PutRequest {
        repo: &repo,
        key: &key,
        file: None,
        offset: 0,
        length: size,
        data_present: false,
    };
    let chunk = Bytes::from(vec![7u8; 1024 * 1024]);
    let body = futures::stream::iter(
        (0..size / chunk.len() as u64).map(|_| Ok::<_, String>(chunk.clone())),
    );
    let started = tokio::time::Instant::now();
    let out = w.core.put(req, body).await.unwrap();
    let took = started.elapsed();
    assert_eq!(out.ok, c.ok, "{}: {out:?}", c.name);
    assert_eq!(sorted(out.plus.clone()), names(&c.plus), "{}", c.name);
    match (&out.error, c.error) {
        (None, None) => {}
        (Some(e), Some(want)) => assert!(e.contains(want), "{}: {e}", c.name),
        (e, want) => panic!("{}: error {e:?}, want {want:?}", c.name),
    }
    let stored = names(&c.plus);
    assert_eq!(w.holders(&key), stored, "{}: holders", c.name);
    assert_eq!(w.control.listed(&key.to_string()), stored, "{}: listed", c.name);
    // Paused time: the stalled target held the PUT for the stall timeout,
    // not for good.
    let stall = crate::gateway::core::stall();
    assert!(took >= stall && took < stall * 2, "{}: took {took:?}", c.name);
    assert_eq!(w.core.mesh.failures("s").put, 1, "{}: the stalled node is reported", c.name);
}
