//! CHECKPRESENT, LOCKCONTENT and GETTIMESTAMP.

use super::fake::Behaviour::*;
use super::*;

struct Case {
    name: &'static str,
    nodes: Vec<N>,
    /// The repository asked: "c" for the cluster, or a node's name.
    repo: &'static str,
    /// Ok(present), or Err(part of the error message).
    expect: Result<bool, &'static str>,
    /// Nodes the location log lists afterwards.
    listed_after: Vec<&'static str>,
    /// Nodes that must not have been asked.
    not_asked: Vec<&'static str>,
}

cases! {
    #[tokio::test(start_paused = true)] check;
    trusts_the_log => Case {
        name: "trusts the log: the listed holder answers, others are not asked",
        nodes: vec![n("a").has(), n("b").has_unlisted(), n("x")],
        repo: "c",
        expect: Ok(true),
        listed_after: vec!["a"],
        not_asked: vec!["b", "x"],
    },
    a_lying_listed_node_is_struck_from_the_log => Case {
        name: "a listed node that lied is struck from the log, the next one asked",
        nodes: vec![n("a").lies().cost(10), n("b").has().cost(20)],
        repo: "c",
        expect: Ok(true),
        listed_after: vec!["b"],
        not_asked: vec![],
    },
    unlisted_nodes_are_probed_and_the_log_repaired => Case {
        name: "no listed holder: unlisted healthy nodes are probed and the log repaired",
        nodes: vec![n("a"), n("b").has_unlisted(), n("d").has_unlisted().down()],
        repo: "c",
        expect: Ok(true),
        listed_after: vec!["b"],
        not_asked: vec!["d"],
    },
    nowhere_is_not_present => Case {
        name: "nowhere: not present",
        nodes: vec![n("a"), n("b")],
        repo: "c",
        expect: Ok(false),
        listed_after: vec![],
        not_asked: vec![],
    },
    only_an_unreachable_listed_node_is_an_error => Case {
        name: "only an unreachable listed node could answer: an error, not absent",
        nodes: vec![n("a").has().behaving(Unreachable), n("b")],
        repo: "c",
        expect: Err("cannot tell whether"),
        listed_after: vec!["a"],
        not_asked: vec![],
    },
    only_a_down_listed_node_is_an_error_naming_it => Case {
        name: "only a listed node that is down could answer: an error naming it",
        nodes: vec![n("a").has().down(), n("b")],
        repo: "c",
        expect: Err("a is down"),
        listed_after: vec!["a"],
        not_asked: vec!["a"],
    },
    an_unreachable_listed_node_does_not_hide_an_unlisted_holder => Case {
        name: "an unreachable listed node does not hide an unlisted holder",
        nodes: vec![n("a").has().behaving(Unreachable), n("b").has_unlisted()],
        repo: "c",
        expect: Ok(true),
        listed_after: vec!["a", "b"],
        not_asked: vec![],
    },
    a_stalled_listed_node_counts_as_unreachable => Case {
        name: "a stalled listed node counts as unreachable",
        nodes: vec![n("a").has().behaving(Stalls)],
        repo: "c",
        expect: Err("no answer in"),
        listed_after: vec!["a"],
        not_asked: vec![],
    },
    a_node_addressed_alone_answers_for_itself => Case {
        name: "a node addressed alone answers for itself, whatever the log says",
        nodes: vec![n("a").has_unlisted(), n("b").has()],
        repo: "a",
        expect: Ok(true),
        listed_after: vec!["b"],
        not_asked: vec!["b"],
    },
    a_corrupt_listed_copy_is_struck_and_the_next_asked => Case {
        name: "a listed node answering DATA_LOSS is struck, the next one asked",
        nodes: vec![n("a").has().cost(10).behaving(Corrupt), n("b").has().cost(20)],
        repo: "c",
        expect: Ok(true),
        listed_after: vec!["b"],
        not_asked: vec![],
    },
    a_corrupt_only_copy_is_absent => Case {
        name: "the only copy is corrupt: not present, and the log lists none",
        nodes: vec![n("a").has().behaving(Corrupt), n("b")],
        repo: "c",
        expect: Ok(false),
        listed_after: vec![],
        not_asked: vec![],
    },
    a_corrupt_node_addressed_alone_is_absent => Case {
        name: "a node addressed alone whose copy is corrupt does not have it",
        nodes: vec![n("a").has().behaving(Corrupt), n("b").has()],
        repo: "a",
        expect: Ok(false),
        listed_after: vec!["b"],
        not_asked: vec!["b"],
    },
    an_unreachable_node_addressed_alone_is_an_error => Case {
        name: "a node addressed alone that cannot be reached is an error",
        nodes: vec![n("a").behaving(Unreachable), n("b").has()],
        repo: "a",
        expect: Err("a: connection refused"),
        listed_after: vec!["b"],
        not_asked: vec!["b"],
    },
}

async fn check(case: Case) {
    let key = checksum_key();
    let w = World::new(&case.nodes, &key);
    let got = w.core.checkpresent(&w.repo(case.repo).await, &key).await;
    match (&got, case.expect) {
        (Ok(p), Ok(want)) => assert_eq!(*p, want, "{}", case.name),
        (Err(e), Err(want)) => {
            assert!(e.to_string().contains(want), "{}: {e}", case.name)
        }
        _ => panic!("{}: got {got:?}, want {:?}", case.name, case.expect),
    }
    assert_eq!(w.control.listed(&key.to_string()), names(&case.listed_after), "{}", case.name);
    for name in case.not_asked {
        assert_eq!(*w.node(name).checks.lock().unwrap(), 0, "{}: asked {name}", case.name);
    }
}

#[tokio::test]
async fn bypassed_nodes_are_not_asked() {
    let key = checksum_key();
    let w = World::new(&[n("a").has(), n("b").has_unlisted()], &key);
    let repo = w.repo("c").await.bypassing(["a".to_string()].into());
    assert!(w.core.checkpresent(&repo, &key).await.unwrap());
    assert_eq!(*w.node("a").checks.lock().unwrap(), 0);
}

#[tokio::test]
async fn a_lock_is_taken_on_a_holder_and_none_without_one() {
    let key = checksum_key();
    let w = World::new(&[n("a").lies().cost(10), n("b").has().cost(20)], &key);
    let lock = w.core.lock(&w.repo("c").await, &key).await.unwrap();
    assert_eq!(lock.map(|l| l.node), Some("b".to_string()));

    let w = World::new(&[n("a"), n("b")], &key);
    assert!(w.core.lock(&w.repo("c").await, &key).await.unwrap().is_none());
}

#[tokio::test]
async fn a_lock_skips_a_corrupt_copy_and_strikes_it() {
    let key = checksum_key();
    let w = World::new(&[n("a").has().cost(10).behaving(Corrupt), n("b").has().cost(20)], &key);
    let lock = w.core.lock(&w.repo("c").await, &key).await.unwrap();
    assert_eq!(lock.map(|l| l.node), Some("b".to_string()));
    assert_eq!(w.control.listed(&key.to_string()), names(&["b"]));
    assert_eq!(w.corrupt_copies(), 1);
}

#[tokio::test]
async fn the_timestamp_is_the_cluster_clock_in_seconds() {
    let key = checksum_key();
    let w = World::planned(&[n("a")], &key, vec![], 1, 123_456);
    assert_eq!(w.core.timestamp(&w.repo("c").await).await.unwrap(), 123);
    assert_eq!(w.core.timestamp(&w.repo("a").await).await.unwrap(), 123);
}
