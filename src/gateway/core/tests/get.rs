//! GET: choosing the holder, failing over mid-stream, probing.

use futures::StreamExt;

use super::fake::Behaviour::*;
use super::*;

struct Case {
    name: &'static str,
    key: Key,
    nodes: Vec<N>,
    /// "c" for the cluster, or a node's name.
    repo: &'static str,
    bypass: Vec<&'static str>,
    offset: u64,
    /// The node the download starts on; None when there is no download.
    first: Option<&'static str>,
    /// What the client receives before the body ends or fails.
    bytes: &'static [u8],
    /// Part of the error from the GET or its body.
    error: Option<&'static str>,
    /// The offsets each node was asked to GET from.
    gets: Vec<(&'static str, Vec<u64>)>,
    listed_after: Option<Vec<&'static str>>,
    /// Corrupt copies the gateway counted.
    corrupt: u64,
}

/// A case with the usual request (the cluster, from offset 0) and nothing
/// expected yet.
fn case(name: &'static str, key: Key, nodes: Vec<N>) -> Case {
    Case {
        name,
        key,
        nodes,
        repo: "c",
        bypass: vec![],
        offset: 0,
        first: None,
        bytes: b"",
        error: None,
        gets: vec![],
        listed_after: None,
        corrupt: 0,
    }
}

/// What a client got from one GET.
struct Got {
    first: Option<String>,
    bytes: Vec<u8>,
    error: Option<String>,
}

async fn fetch(w: &World, c: &Case) -> Got {
    let bypass = c.bypass.iter().map(|s| s.to_string()).collect();
    let repo = w.repo(c.repo).await.bypassing(bypass);
    let mut got = Got { first: None, bytes: Vec::new(), error: None };
    let mut dl = match w.core.get(&repo, &c.key, c.offset).await {
        Ok(Some(dl)) => dl,
        Ok(None) => return got,
        Err(e) => {
            got.error = Some(e.to_string());
            return got;
        }
    };
    assert_eq!(dl.length, CONTENT.len() as u64 - c.offset, "{}: promised length", c.name);
    got.first = Some(dl.node.clone());
    while let Some(item) = dl.body.next().await {
        match item {
            Ok(b) => got.bytes.extend_from_slice(&b),
            Err(e) => {
                got.error = Some(e.to_string());
                break;
            }
        }
    }
    got
}

cases! {
    #[tokio::test(start_paused = true)] check;
    the_cheapest_holder_serves => Case {
        first: Some("b"),
        bytes: CONTENT,
        gets: vec![("b", vec![0]), ("a", vec![])],
        ..case(
            "the holder with the lowest cost serves",
            checksum_key(),
            vec![n("a").has().cost(200), n("b").has().cost(50), n("x").cost(10)],
        )
    },
    a_checksum_key_continues_on_another_holder => Case {
        first: Some("a"),
        bytes: CONTENT,
        gets: vec![("a", vec![0]), ("b", vec![6])],
        ..case(
            "a checksum key continues on another holder from where the first stopped",
            checksum_key(),
            vec![n("a").has().cost(10).behaving(EndsAfter(6)), n("b").has().cost(20)],
        )
    },
    failover_from_a_requested_offset => Case {
        offset: 5,
        first: Some("a"),
        bytes: &CONTENT[5..],
        gets: vec![("a", vec![5]), ("b", vec![9])],
        ..case(
            "failover from a requested offset",
            checksum_key(),
            vec![n("a").has().cost(10).behaving(EndsAfter(4)), n("b").has().cost(20)],
        )
    },
    a_worm_key_does_not_continue_elsewhere => Case {
        first: Some("a"),
        bytes: &CONTENT[..6],
        error: Some("closed the stream early"),
        gets: vec![("a", vec![0]), ("b", vec![])],
        ..case(
            "a WORM key does not continue elsewhere",
            worm_key(),
            vec![n("a").has().cost(10).behaving(EndsAfter(6)), n("b").has().cost(20)],
        )
    },
    a_node_stalling_mid_stream_counts_as_failed => Case {
        first: Some("a"),
        bytes: CONTENT,
        gets: vec![("a", vec![0]), ("b", vec![8])],
        ..case(
            "a node that stalls mid-stream counts as failed",
            checksum_key(),
            vec![n("a").has().cost(10).behaving(StallsAfter(8)), n("b").has().cost(20)],
        )
    },
    a_node_that_never_answers_counts_as_failed => Case {
        first: Some("b"),
        bytes: CONTENT,
        gets: vec![("b", vec![0])],
        ..case(
            "a node that never answers counts as failed",
            checksum_key(),
            vec![n("a").has().cost(10).behaving(Stalls), n("b").has().cost(20)],
        )
    },
    an_unlisted_holder_is_found_by_probing => Case {
        first: Some("b"),
        bytes: CONTENT,
        listed_after: Some(vec!["b"]),
        ..case(
            "a holder the log does not list is found by probing",
            checksum_key(),
            vec![n("a"), n("b").has_unlisted()],
        )
    },
    a_listed_node_without_the_content_is_struck => Case {
        first: Some("b"),
        bytes: CONTENT,
        listed_after: Some(vec!["b"]),
        ..case(
            "a listed node without the content is struck from the log",
            checksum_key(),
            vec![n("a").lies().cost(10), n("b").has().cost(20)],
        )
    },
    a_continuation_of_another_size_is_refused => Case {
        first: Some("a"),
        bytes: CONTENT,
        gets: vec![("b", vec![4]), ("d", vec![4])],
        ..case(
            "a continuation offering another size is refused",
            checksum_key(),
            vec![
                n("a").has().cost(10).behaving(EndsAfter(4)),
                n("b").has().cost(20).behaving(WrongSize),
                n("d").has().cost(30),
            ],
        )
    },
    no_other_holder_to_continue_on => Case {
        first: Some("a"),
        bytes: &CONTENT[..6],
        error: Some("no node could continue"),
        ..case(
            "no other holder to continue on",
            checksum_key(),
            vec![n("a").has().behaving(EndsAfter(6)), n("x")],
        )
    },
    present_nowhere => case("present nowhere", checksum_key(), vec![n("a"), n("b")]),
    every_holder_unreachable_or_down => Case {
        error: Some("no node holding it can serve it (b is down; a: connection refused)"),
        ..case(
            "every holder unreachable or down",
            checksum_key(),
            vec![n("a").has().behaving(Unreachable), n("b").has().down()],
        )
    },
    a_node_addressed_alone_serves_even_when_down => Case {
        repo: "a",
        first: Some("a"),
        bytes: CONTENT,
        ..case(
            "a node addressed alone serves even when down",
            checksum_key(),
            vec![n("a").has().down()],
        )
    },
    bypass_leaves_out_the_cheaper_holder => Case {
        bypass: vec!["a"],
        first: Some("b"),
        bytes: CONTENT,
        gets: vec![("a", vec![]), ("b", vec![0])],
        ..case(
            "BYPASS leaves out the cheaper holder",
            checksum_key(),
            vec![n("a").has().cost(10), n("b").has().cost(20)],
        )
    },
    a_copy_corrupt_before_any_byte_is_skipped_and_struck => Case {
        first: Some("b"),
        bytes: CONTENT,
        gets: vec![("a", vec![0]), ("b", vec![0])],
        listed_after: Some(vec!["b"]),
        corrupt: 1,
        ..case(
            "DATA_LOSS at the start: the copy is struck, the next holder serves",
            checksum_key(),
            vec![n("a").has().cost(10).behaving(Corrupt), n("b").has().cost(20)],
        )
    },
    a_corrupt_only_holder_is_an_error_not_absent => Case {
        error: Some("a: its copy is corrupt"),
        listed_after: Some(vec![]),
        corrupt: 1,
        ..case(
            "the only holder's copy is corrupt: an error, and the log lists none",
            checksum_key(),
            vec![n("a").has().behaving(Corrupt)],
        )
    },
    a_corrupt_continuation_is_skipped => Case {
        first: Some("a"),
        bytes: CONTENT,
        gets: vec![("a", vec![0]), ("b", vec![6]), ("d", vec![6])],
        listed_after: Some(vec!["a", "d"]),
        corrupt: 1,
        ..case(
            "a continuation whose node answers DATA_LOSS goes on to the next holder",
            checksum_key(),
            vec![
                n("a").has().cost(10).behaving(EndsAfter(6)),
                n("b").has().cost(20).behaving(Corrupt),
                n("d").has().cost(30),
            ],
        )
    },
    invalid_at_the_end_withholds_the_last_chunk => Case {
        first: Some("a"),
        bytes: &CONTENT[..12],
        error: Some("a reported the data invalid"),
        gets: vec![("a", vec![0]), ("b", vec![])],
        listed_after: Some(vec!["b"]),
        corrupt: 1,
        ..case(
            "invalid at the end: the last chunk is withheld, the body fails, the copy is struck",
            checksum_key(),
            vec![n("a").has().cost(10).behaving(InvalidAfter(16)), n("b").has().cost(20)],
        )
    },
    invalid_mid_stream_is_not_continued => Case {
        first: Some("a"),
        bytes: &CONTENT[..8],
        error: Some("the data sent is not valid"),
        gets: vec![("a", vec![0]), ("b", vec![])],
        listed_after: Some(vec!["b"]),
        corrupt: 1,
        ..case(
            "invalid after some bytes: the client has corrupt bytes, so no other node continues",
            checksum_key(),
            vec![n("a").has().cost(10).behaving(InvalidAfter(8)), n("b").has().cost(20)],
        )
    },
    invalid_before_any_byte_continues_elsewhere => Case {
        first: Some("a"),
        bytes: CONTENT,
        gets: vec![("a", vec![0]), ("b", vec![0])],
        listed_after: Some(vec!["b"]),
        corrupt: 1,
        ..case(
            "invalid before any byte: nothing reached the client, another holder serves",
            checksum_key(),
            vec![n("a").has().cost(10).behaving(InvalidAfter(0)), n("b").has().cost(20)],
        )
    },
    a_continuation_invalid_at_the_end_withholds_its_last_chunk => Case {
        first: Some("a"),
        bytes: &CONTENT[..14],
        error: Some("b reported the data invalid"),
        gets: vec![("a", vec![0]), ("b", vec![6])],
        listed_after: Some(vec!["a"]),
        corrupt: 1,
        ..case(
            "a continuation found invalid at its end: its last chunk is withheld too",
            checksum_key(),
            vec![
                n("a").has().cost(10).behaving(EndsAfter(6)),
                n("b").has().cost(20).behaving(InvalidAfter(10)),
            ],
        )
    },
    a_node_that_never_vouches_fails_the_download => Case {
        first: Some("a"),
        bytes: &CONTENT[..12],
        error: Some("before confirming the data valid"),
        gets: vec![("a", vec![0]), ("b", vec![])],
        listed_after: Some(vec!["a", "b"]),
        ..case(
            "every byte but no end marker: the last chunk is withheld and the body fails",
            checksum_key(),
            vec![n("a").has().cost(10).behaving(NeverVouches), n("b").has().cost(20)],
        )
    },
    a_node_vouching_for_too_few_bytes_is_continued => Case {
        first: Some("a"),
        bytes: CONTENT,
        gets: vec![("a", vec![0]), ("b", vec![8])],
        ..case(
            "a node claiming the data whole after 8 of 16 bytes: another holder continues",
            checksum_key(),
            vec![n("a").has().cost(10).behaving(VouchesAfter(8)), n("b").has().cost(20)],
        )
    },
    a_worm_key_invalid_at_the_end_fails => Case {
        first: Some("a"),
        bytes: &CONTENT[..12],
        error: Some("a reported the data invalid"),
        listed_after: Some(vec!["b"]),
        corrupt: 1,
        ..case(
            "a WORM key found invalid at the end fails the same way",
            worm_key(),
            vec![n("a").has().cost(10).behaving(InvalidAfter(16)), n("b").has().cost(20)],
        )
    },
    an_offset_beyond_the_content_is_refused => Case {
        offset: 17,
        error: Some("offset 17 is beyond"),
        ..case("an offset beyond the content is refused", checksum_key(), vec![n("a").has()])
    },
}

async fn check(c: Case) {
    let w = World::new(&c.nodes, &c.key);
    let got = fetch(&w, &c).await;
    assert_eq!(got.first.as_deref(), c.first, "{}: first node", c.name);
    assert_eq!(got.bytes, c.bytes, "{}: bytes", c.name);
    match (&got.error, c.error) {
        (None, None) => {}
        (Some(e), Some(want)) => assert!(e.contains(want), "{}: {e}", c.name),
        (e, want) => panic!("{}: error {e:?}, want {want:?}", c.name),
    }
    for (node, offsets) in &c.gets {
        assert_eq!(*w.node(node).gets.lock().unwrap(), *offsets, "{}: GETs on {node}", c.name);
    }
    if let Some(listed) = &c.listed_after {
        assert_eq!(w.control.listed(&c.key.to_string()), names(listed), "{}", c.name);
    }
    assert_eq!(w.corrupt_copies(), c.corrupt, "{}: corrupt copies counted", c.name);
}

#[tokio::test(start_paused = true)]
async fn a_holder_that_fails_a_get_is_counted_and_reported() {
    let c = case(
        "a holder that stalls and one that refuses the connection",
        checksum_key(),
        vec![
            n("a").has().cost(10).behaving(Unreachable),
            n("b").has().cost(20).behaving(Stalls),
            n("d").has().cost(30),
        ],
    );
    let w = World::new(&c.nodes, &c.key);
    let got = fetch(&w, &c).await;
    assert_eq!((got.first.as_deref(), got.bytes.as_slice()), (Some("d"), CONTENT));
    let data = |u: &str| w.core.mesh.failures(u).data;
    assert_eq!((data("a"), data("b"), data("d")), (1, 1, 0));
    w.core.mesh.spawn_reports(&w.core.tasks);
    for _ in 0..100 {
        if w.control.failures.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    let mut sent: Vec<_> = w
        .control
        .failures
        .lock()
        .unwrap()
        .iter()
        .map(|r| (r.node_uuid.clone(), r.kind()))
        .collect();
    sent.sort();
    use rpc::FailureKind::Data;
    assert_eq!(sent, [("a".to_string(), Data), ("b".to_string(), Data)]);
}
