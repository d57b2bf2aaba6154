//! REMOVE and REMOVE-BEFORE on every node of the repository.

use super::fake::Behaviour::*;
use super::*;

struct Case {
    name: &'static str,
    nodes: Vec<N>,
    repo: &'static str,
    bypass: Vec<&'static str>,
    /// REMOVE-BEFORE this second of the cluster clock.
    before: Option<u64>,
    ok: bool,
    plus: Vec<&'static str>,
    error: Option<&'static str>,
    holders_after: Vec<&'static str>,
    listed_after: Vec<&'static str>,
    /// Whether writes to the location log fail.
    records_fail: bool,
    /// Part of the error refusing the whole request.
    refused: Option<&'static str>,
}

fn case(name: &'static str, nodes: Vec<N>) -> Case {
    Case {
        name,
        nodes,
        repo: "c",
        bypass: vec![],
        before: None,
        ok: true,
        plus: vec![],
        error: None,
        holders_after: vec![],
        listed_after: vec![],
        records_fail: false,
        refused: None,
    }
}

/// The cluster clock in the cases: 100 s.
const CLOCK_MS: u64 = 100_000;

cases! {
    #[tokio::test] check;
    every_node_listed_or_not => Case {
        plus: vec!["a", "b", "x"],
        ..case(
            "every node, listed or not, and one without the content",
            vec![n("a").has(), n("b").has_unlisted(), n("x")],
        )
    },
    failure_plus_names_the_nodes_it_was_removed_from => Case {
        ok: false,
        plus: vec!["a", "x"],
        error: Some("content is locked"),
        holders_after: vec!["b"],
        listed_after: vec!["b"],
        ..case(
            "FAILURE-PLUS names the nodes it was removed from",
            vec![n("a").has(), n("b").has().behaving(KeepsContent), n("x")],
        )
    },
    the_first_error_is_reported => Case {
        ok: false,
        plus: vec!["b"],
        error: Some("a: connection refused"),
        holders_after: vec!["a", "d"],
        // d refused and still holds it; what the unreachable a did is unknown,
        // so the log no longer claims its copy.
        listed_after: vec!["d"],
        ..case(
            "the first error is reported",
            vec![
                n("a").has().behaving(Unreachable),
                n("b").has(),
                n("d").has().behaving(KeepsContent),
            ],
        )
    },
    an_unwritable_log_removes_nothing => Case {
        records_fail: true,
        refused: Some("cannot update the location log: coordinator unreachable"),
        holders_after: vec!["a", "b"],
        listed_after: vec!["a", "b"],
        ..case(
            "the log cannot be written: no node is asked to remove",
            vec![n("a").has(), n("b").has()],
        )
    },
    a_refusing_node_without_the_content_stays_struck => Case {
        ok: false,
        plus: vec!["a"],
        error: Some("x: content is locked"),
        ..case(
            "a node that refused but lacks the content is not listed again",
            vec![n("a").has(), n("x").lies().behaving(KeepsContent)],
        )
    },
    remove_before_a_passed_deadline_removes_nothing => Case {
        before: Some(50),
        ok: false,
        error: Some("the deadline has passed"),
        holders_after: vec!["a", "b"],
        listed_after: vec!["a", "b"],
        ..case(
            "REMOVE-BEFORE a passed deadline removes nothing",
            vec![n("a").has(), n("b").has()],
        )
    },
    remove_before_a_deadline_to_come_removes => Case {
        before: Some(CLOCK_MS / 1000 + 3600),
        plus: vec!["a", "b"],
        ..case("REMOVE-BEFORE a deadline to come removes", vec![n("a").has(), n("b").has()])
    },
    bypass_leaves_a_node_alone => Case {
        bypass: vec!["b"],
        plus: vec!["a"],
        holders_after: vec!["b"],
        listed_after: vec!["b"],
        ..case("BYPASS leaves a node alone", vec![n("a").has(), n("b").has()])
    },
    a_node_addressed_alone_reports_no_other_nodes => Case {
        repo: "a",
        holders_after: vec!["b"],
        listed_after: vec!["b"],
        ..case(
            "a node addressed alone reports no other nodes",
            vec![n("a").has(), n("b").has()],
        )
    },
}

async fn check(c: Case) {
    let key = checksum_key();
    let w = World::planned(&c.nodes, &key, vec![], 1, CLOCK_MS);
    let bypass = c.bypass.iter().map(|s| s.to_string()).collect();
    let repo = w.repo(c.repo).await.bypassing(bypass);
    if c.records_fail {
        w.fail_records();
    }
    let out = match (w.core.remove(&repo, &key, c.before).await, c.refused) {
        (Ok(out), None) => out,
        (Err(e), Some(want)) => {
            assert!(e.to_string().contains(want), "{}: {e}", c.name);
            assert_eq!(w.holders(&key), names(&c.holders_after), "{}: holders", c.name);
            assert_eq!(w.control.listed(&key.to_string()), names(&c.listed_after), "{}", c.name);
            for (name, node) in &w.nodes {
                assert!(node.removes.lock().unwrap().is_empty(), "{}: asked {name}", c.name);
            }
            return;
        }
        (got, want) => panic!("{}: got {got:?}, want an error with {want:?}", c.name),
    };
    if c.before.is_none() || c.ok {
        // The first write strikes every node addressed, before any removal.
        let first = w.control.recorded.lock().unwrap().first().cloned().unwrap_or_default();
        let struck: Vec<String> =
            first.iter().filter(|ch| !ch.present).map(|ch| ch.node_uuid.clone()).collect();
        let asked: Vec<String> = repo.nodes().iter().map(|n| n.uuid.clone()).collect();
        assert_eq!(sorted(struck), sorted(asked), "{}: struck first", c.name);
    }
    assert_eq!(out.ok, c.ok, "{}: {out:?}", c.name);
    assert_eq!(sorted(out.plus), names(&c.plus), "{}: plus", c.name);
    match (&out.error, c.error) {
        (None, None) => {}
        (Some(e), Some(want)) => assert!(e.contains(want), "{}: {e}", c.name),
        (e, want) => panic!("{}: error {e:?}, want {want:?}", c.name),
    }
    assert_eq!(w.holders(&key), names(&c.holders_after), "{}: holders", c.name);
    assert_eq!(w.control.listed(&key.to_string()), names(&c.listed_after), "{}", c.name);
    if c.before.is_some() && c.ok {
        for (name, node) in &w.nodes {
            let removes = node.removes.lock().unwrap();
            assert!(removes.iter().all(|r| r.before_ms.is_some()), "{}: {name}", c.name);
        }
    }
}
