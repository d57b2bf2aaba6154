//! The PostgreSQL store against a real PostgreSQL server the harness starts:
//! every method of the storage interface as the embedded store answers it,
//! and two stores on one database (two coordinators) racing each other.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use annexmesh::auth::{self, Mode};
use annexmesh::coordinator::store::postgres::Postgres;
use annexmesh::coordinator::store::{
    Backend, Cluster, ClusterSettings, CoordinatorRecord, Created, JoinCheck, JoinTokenRecord,
    Migrate, Node, NodeSettings, Registration, Removal, Revoked, SharedDegraded, SharedHealth,
    StampedChange, Token,
};
use common::pg::PgServer;

const K1: &str = "SHA256E-s1--1111111111111111111111111111111111111111111111111111111111111111";
const K2: &str = "SHA256E-s2--2222222222222222222222222222222222222222222222222222222222222222";

/// A store on `url` and how often it heard of a topology change.
async fn open(url: &str) -> (Postgres, Arc<AtomicUsize>) {
    let heard = Arc::new(AtomicUsize::new(0));
    let h = heard.clone();
    let s = Postgres::connect(
        url,
        Arc::new(move || {
            h.fetch_add(1, Ordering::SeqCst);
        }),
    )
    .await
    .unwrap();
    (s, heard)
}

async fn fresh() -> (Postgres, String) {
    let url = PgServer::shared().create_database();
    (open(&url).await.0, url)
}

fn db_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

fn node(uuid: &str, name: &str) -> Node {
    Node { uuid: uuid.into(), name: name.into(), cluster_uuid: "c".into(), address: "a".into() }
}

fn token(secret: &str, mode: Mode) -> Token {
    Token {
        sha256: auth::hash_token(secret),
        mode,
        label: "ci".into(),
        created_unix_ms: 1_700_000_000_000,
        user: None,
    }
}

/// Waits (bounded) until `f` holds.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clusters_are_unique_by_name_across_coordinators() {
    let (a, url) = fresh().await;
    let b = Arc::new(open(&url).await.0);
    let a = Arc::new(a);
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { s.create_cluster("mesh").await.unwrap() })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1);
    let clusters = a.clusters().await.unwrap();
    assert_eq!(clusters.len(), 1);
    assert!(results.iter().all(|(c, _)| *c == clusters[0]));
    let c = &clusters[0];
    assert!(annexmesh::coordinator::store::is_cluster_uuid(&c.uuid));
    assert_eq!(b.cluster_by_name("mesh").await.unwrap().as_ref(), Some(c));
    assert_eq!(b.cluster_by_uuid(&c.uuid).await.unwrap().as_ref(), Some(c));
    assert_eq!(b.cluster_by_name("other").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_registrations_of_one_name_let_one_node_have_it() {
    let (a, url) = fresh().await;
    let (a, b) = (Arc::new(a), Arc::new(open(&url).await.0));
    let (rounds, contenders) = (10, 6);
    for round in 0..rounds {
        let name = format!("node{round}");
        let start = Arc::new(tokio::sync::Barrier::new(contenders));
        let tasks: Vec<_> = (0..contenders)
            .map(|i| {
                let s = if i % 2 == 0 { a.clone() } else { b.clone() };
                let (n, start) = (node(&format!("u{round}-{i}"), &name), start.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    (n.clone(), s.register_node(n).await.unwrap())
                })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        let winners: Vec<_> =
            results.iter().filter(|(_, r)| *r == Registration::Saved).map(|(n, _)| n).collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        for (_, r) in &results {
            assert!(
                *r == Registration::Saved || *r == Registration::NameTaken(winners[0].clone()),
                "{results:?}"
            );
        }
    }
    let nodes = a.nodes().await.unwrap();
    assert_eq!(nodes.len(), rounds);
    assert_eq!(nodes.iter().map(|n| &n.name).collect::<HashSet<_>>().len(), rounds);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_again_and_settings_behave_as_in_the_embedded_store() {
    let (s, url) = fresh().await;
    let n = node("u-a", "node1");
    assert_eq!(s.register_node(n.clone()).await.unwrap(), Registration::Saved);
    assert_eq!(s.register_node(n.clone()).await.unwrap(), Registration::Unchanged);
    let moved = Node { address: "127.0.0.1:2".into(), ..n.clone() };
    assert_eq!(s.register_node(moved.clone()).await.unwrap(), Registration::Saved);
    assert_eq!(s.node("u-a").await.unwrap(), Some(moved.clone()));
    assert_eq!(
        s.register_node(node("u-b", "node1")).await.unwrap(),
        Registration::NameTaken(moved.clone())
    );
    assert_eq!(s.nodes().await.unwrap(), vec![moved.clone()]);

    let set = s
        .update_node_settings_boxed(
            "u-a",
            Box::new(|n| {
                n.wanted = Some("largerthan=1MB".into());
                n.draining = true;
            }),
        )
        .await
        .unwrap();
    assert_eq!(
        set,
        NodeSettings { wanted: Some("largerthan=1MB".into()), draining: true, cost: None }
    );
    let set = s.update_node_settings_boxed("u-a", Box::new(|n| n.cost = Some(10))).await.unwrap();
    assert_eq!(set.cost, Some(10));
    s.update_cluster_settings_boxed("c", Box::new(|c| c.min_copies = Some(3))).await.unwrap();
    s.update_cluster_settings_boxed("c", Box::new(|c| c.reserve_bytes = Some(5))).await.unwrap();
    s.register_node(Node { address: "b".into(), ..moved }).await.unwrap();
    drop(s);
    // Kept across a reconnect, and not reset by a registration.
    let (s, _) = open(&url).await;
    assert_eq!(
        s.node_settings().await.unwrap().get("u-a"),
        Some(&NodeSettings {
            wanted: Some("largerthan=1MB".into()),
            draining: true,
            cost: Some(10)
        })
    );
    assert_eq!(
        s.cluster_settings().await.unwrap().get("c"),
        Some(&ClusterSettings { min_copies: Some(3), reserve_bytes: Some(5), replication: None })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_created_revoked_by_prefix_and_removed_by_user() {
    let (s, _) = fresh().await;
    let rw = token("secret-rw", Mode::ReadWrite);
    assert_eq!(s.create_token(rw.clone()).await.unwrap(), Created::Done);
    let again = Token { mode: Mode::ReadOnly, ..rw.clone() };
    assert_eq!(s.create_token(again).await.unwrap(), Created::HashTaken);
    assert_eq!(s.token(&auth::hash_token("SECRET-RW")).await.unwrap(), Some(rw.clone()));
    assert_eq!(s.token(&auth::hash_token("other")).await.unwrap(), None);
    let alice = Token { user: Some("alice".into()), ..token("pw-a", Mode::ReadOnly) };
    assert_eq!(s.create_token(alice.clone()).await.unwrap(), Created::Done);
    let twin = Token { user: Some("alice".into()), ..token("pw-b", Mode::ReadWrite) };
    assert_eq!(s.create_token(twin).await.unwrap(), Created::UserTaken);
    let mut want = vec![rw.clone(), alice.clone()];
    want.sort_by(|a, b| a.sha256.cmp(&b.sha256));
    assert_eq!(s.tokens().await.unwrap(), want);
    assert_eq!(s.remove_user("bob").await.unwrap(), None);
    assert_eq!(s.remove_user("alice").await.unwrap(), Some(alice));

    // Two tokens whose hashes share a first digit make a prefix ambiguous.
    let mut made: Vec<Token> = Vec::new();
    let mut i = 0;
    while made.len() < 2 {
        let t = token(&format!("secret-{i}"), Mode::AppendOnly);
        if t.sha256[..1] != rw.sha256[..1]
            && made.first().is_none_or(|m| m.sha256[..1] == t.sha256[..1])
        {
            made.push(t);
        }
        i += 1;
    }
    let (a, b) = (made[0].clone(), made[1].clone());
    s.create_token(a.clone()).await.unwrap();
    s.create_token(b.clone()).await.unwrap();
    match s.revoke_token(&a.sha256[..1]).await.unwrap() {
        Revoked::Ambiguous(ts) => assert_eq!(ts.len(), 2),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.tokens().await.unwrap().len(), 3, "an ambiguous prefix revokes nothing");
    assert_eq!(s.revoke_token(a.id()).await.unwrap(), Revoked::Done(a.clone()));
    assert_eq!(s.revoke_token(a.id()).await.unwrap(), Revoked::NotFound);
    assert_eq!(s.revoke_token(&b.sha256).await.unwrap(), Revoked::Done(b));
    assert_eq!(s.tokens().await.unwrap(), vec![rw]);

    assert_eq!(s.admin_token_count().await.unwrap(), 0);
    s.add_admin_token("ab".repeat(32), 5).await.unwrap();
    s.add_admin_token("ab".repeat(32), 6).await.unwrap();
    assert!(s.is_admin_token(&"ab".repeat(32)).await.unwrap());
    assert_eq!(s.admin_token_hashes().await.unwrap(), HashSet::from(["ab".repeat(32)]));
    assert!(!s.is_admin_token(&"cd".repeat(32)).await.unwrap());
    assert_eq!(s.admin_token_count().await.unwrap(), 1);
}

fn join(role: &str, uses_left: u32, expires_unix_ms: u64) -> JoinTokenRecord {
    JoinTokenRecord { role: role.into(), expires_unix_ms, uses_left }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_tokens_check_expiry_uses_role_and_identity() {
    let (s, _) = fresh().await;
    let now = 1_000_000;
    s.create_join_token("t1".into(), join("agent", 2, now + 10)).await.unwrap();
    let use_ = |node: Option<&str>, role: &str, at: u64| {
        s.use_join_token("t1".into(), role.into(), node.map(String::from), at)
    };
    assert_eq!(use_(None, "gateway", now).await.unwrap(), JoinCheck::WrongRole("agent".into()));
    assert_eq!(use_(Some("n1"), "agent", now).await.unwrap(), JoinCheck::Admitted);
    // The same identity again is refused, and takes no use.
    assert_eq!(use_(Some("n1"), "agent", now).await.unwrap(), JoinCheck::NodeTaken);
    s.register_node(node("n2", "node2")).await.unwrap();
    assert_eq!(use_(Some("n2"), "agent", now).await.unwrap(), JoinCheck::NodeTaken);
    assert_eq!(use_(Some("n3"), "agent", now).await.unwrap(), JoinCheck::Admitted);
    // Used up: gone.
    assert_eq!(use_(Some("n4"), "agent", now).await.unwrap(), JoinCheck::Unknown);
    s.create_join_token("t1".into(), join("agent", 0, now + 10)).await.unwrap();
    assert_eq!(use_(None, "agent", now).await.unwrap(), JoinCheck::UsedUp);
    s.create_join_token("t1".into(), join("agent", 5, now + 10)).await.unwrap();
    assert_eq!(use_(None, "agent", now + 10).await.unwrap(), JoinCheck::Expired);
    assert_eq!(
        use_(None, "agent", now).await.unwrap(),
        JoinCheck::Unknown,
        "an expired token is removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_single_use_join_token_raced_by_two_coordinators_admits_one() {
    let (a, url) = fresh().await;
    let (a, b) = (Arc::new(a), Arc::new(open(&url).await.0));
    let (rounds, contenders) = (20, 8);
    for round in 0..rounds {
        let t = format!("token{round}");
        a.create_join_token(t.clone(), join("agent", 1, u64::MAX / 2)).await.unwrap();
        // All start together, half through each coordinator.
        let start = Arc::new(tokio::sync::Barrier::new(contenders));
        let tasks: Vec<_> = (0..contenders)
            .map(|i| {
                let s = if i % 2 == 0 { a.clone() } else { b.clone() };
                let (t, start, n) = (t.clone(), start.clone(), format!("n{round}-{i}"));
                tokio::spawn(async move {
                    start.wait().await;
                    s.use_join_token(t, "agent".into(), Some(n), 1).await.unwrap()
                })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        assert_eq!(results.iter().filter(|r| **r == JoinCheck::Admitted).count(), 1, "{results:?}");
        assert!(results.iter().all(|r| matches!(r, JoinCheck::Admitted | JoinCheck::Unknown)));
    }
    assert_eq!(a.export().await.unwrap().joined_agents.len(), rounds);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_location_log_keeps_the_newest_entry_and_lists_changes_in_order() {
    let (s, url) = fresh().await;
    s.record(vec![(K1.into(), "n1".into(), true), (K1.into(), "n2".into(), true)]).await.unwrap();
    s.record(vec![(K1.into(), "n2".into(), false)]).await.unwrap();
    s.record(vec![(format!("{K1}x"), "n3".into(), true)]).await.unwrap();
    // Within one request too, the later change to an entry wins.
    s.record(vec![(K2.into(), "n1".into(), true), (K2.into(), "n1".into(), false)]).await.unwrap();
    assert!(s.record(Vec::new()).await.is_ok());
    let got: Vec<_> =
        s.locations(K1).await.unwrap().into_iter().map(|e| (e.node_uuid, e.present)).collect();
    assert_eq!(got, vec![("n1".to_string(), true), ("n2".to_string(), false)]);
    assert!(!s.locations(K2).await.unwrap()[0].present);

    let all = s.changes_after(0, 100).await.unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|w| w[0].entry.changed_unix_ms < w[1].entry.changed_unix_ms));
    assert_eq!(s.changes_after(0, 1).await.unwrap(), all[..1]);
    let w = all[3].entry.changed_unix_ms;
    assert!(s.changes_after(w, 100).await.unwrap().is_empty());
    s.record(vec![(K1.into(), "n1".into(), false)]).await.unwrap();
    let next = s.changes_after(w, 100).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!((next[0].key.as_str(), next[0].entry.present), (K1, false));
    assert_eq!(s.meta("location_stamp_max").await.unwrap(), Some(next[0].entry.changed_unix_ms));

    let present = s.present_by_node().await.unwrap();
    assert_eq!(present.get("n3"), Some(&HashSet::from([format!("{K1}x")])));
    assert!(!present.contains_key("n1"));

    // Keys in pages, each once, in byte order.
    let mut keys = vec![K1.to_string(), format!("{K1}x"), K2.to_string()];
    keys.sort();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..10 {
        let page = s.location_keys_after(after.as_deref(), 2).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        after = page.last().cloned();
        seen.extend(page);
    }
    assert_eq!(seen, keys);
    drop(s);
    let (s, _) = open(&url).await;
    assert_eq!(s.changes_after(w, 100).await.unwrap(), next);
    s.set_meta("lease", 7).await.unwrap();
    s.set_meta("lease", 9).await.unwrap();
    assert_eq!((s.meta("lease").await.unwrap(), s.meta("other").await.unwrap()), (Some(9), None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_refuses_sole_copies_strikes_entries_and_keeps_the_identity_out() {
    let (s, _) = fresh().await;
    for n in [node("u1", "node1"), node("u2", "node2")] {
        assert_eq!(s.register_node(n).await.unwrap(), Registration::Saved);
    }
    s.record(vec![(K1.into(), "u1".into(), true), (K1.into(), "u2".into(), true)]).await.unwrap();
    s.record(vec![(K2.into(), "u2".into(), true)]).await.unwrap();
    assert_eq!(
        s.remove_node("u2", false).await.unwrap(),
        Removal::SoleCopies { count: 1, sample: vec![K2.to_string()] }
    );
    assert!(s.node("u2").await.unwrap().is_some());
    assert_eq!(
        s.remove_node("u1", false).await.unwrap(),
        Removal::Done { struck: 1, lost_keys: 0 }
    );
    assert_eq!(
        s.remove_node("u1", false).await.unwrap(),
        Removal::Done { struck: 0, lost_keys: 0 }
    );
    // u1 gone, u2 now holds K1 alone too.
    assert_eq!(s.remove_node("u2", true).await.unwrap(), Removal::Done { struck: 2, lost_keys: 2 });
    assert!(s.locations(K2).await.unwrap().is_empty());
    assert!(s.nodes().await.unwrap().is_empty());
    let removed = s.removed_nodes().await.unwrap();
    assert_eq!(
        removed.iter().map(|r| (r.node.uuid.as_str(), r.lost)).collect::<Vec<_>>(),
        [("u1", false), ("u2", true)]
    );
    // A late report on a removed node is not recorded.
    s.record(vec![(K2.into(), "u2".into(), true)]).await.unwrap();
    assert!(s.locations(K2).await.unwrap().is_empty());
    assert_eq!(s.register_node(node("u3", "node2")).await.unwrap(), Registration::Saved);
    assert!(matches!(
        s.register_node(node("u2", "node9")).await.unwrap(),
        Registration::Removed(_)
    ));
    s.create_join_token("t".into(), join("agent", 1, u64::MAX / 2)).await.unwrap();
    let check = s.use_join_token("t".into(), "agent".into(), Some("u2".into()), 1).await.unwrap();
    assert_eq!(check, JoinCheck::NodeTaken);
}

/// Two coordinators record at once while a reader pages through
/// `changes_after`: it sees every entry, none skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_of_changes_never_skips_one_written_concurrently() {
    let (a, url) = fresh().await;
    let (a, b) = (Arc::new(a), Arc::new(open(&url).await.0));
    let (writers, per_writer) = (8, 60);
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let s = if w % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                for i in 0..per_writer {
                    let key = format!("SHA256E-s{w}--{i:064x}");
                    s.record(vec![(key.clone(), "n1".into(), true), (key, "n2".into(), true)])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (s, done) = (b.clone(), done.clone());
        tokio::spawn(async move {
            let (mut after, mut seen) = (0u64, Vec::<StampedChange>::new());
            let start = Instant::now();
            // Reads on until the writers are done and nothing is left.
            loop {
                assert!(start.elapsed() < Duration::from_secs(120), "the reader never caught up");
                let finished = done.load(Ordering::SeqCst);
                let page = s.changes_after(after, 7).await.unwrap();
                match page.last() {
                    Some(last) => after = last.entry.changed_unix_ms,
                    None if finished => break,
                    None => {}
                }
                seen.extend(page);
            }
            seen
        })
    };
    for t in tasks {
        t.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let seen = reader.await.unwrap();
    assert!(seen.windows(2).all(|w| w[0].entry.changed_unix_ms < w[1].entry.changed_unix_ms));
    let distinct: HashSet<_> =
        seen.iter().map(|c| (c.key.clone(), c.entry.node_uuid.clone())).collect();
    assert_eq!(distinct.len(), writers * per_writer * 2, "every entry once");
    assert_eq!(a.changes_after(0, 100_000).await.unwrap(), seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cluster_clock_never_runs_backwards_across_coordinators_and_reconnects() {
    let (a, url) = fresh().await;
    let (b, _) = open(&url).await;
    let mut last = 0;
    for i in 0..50 {
        let s = if i % 2 == 0 { &a } else { &b };
        let v = s.shared_clock_ms(0).await.unwrap();
        assert!(v >= last, "{v} after {last}");
        last = v;
    }
    // A floor far ahead (a clock running fast) raises it for everyone.
    let ahead = last + 3_600_000;
    assert_eq!(a.shared_clock_ms(ahead).await.unwrap(), ahead);
    drop(a);
    assert!(b.shared_clock_ms(0).await.unwrap() >= ahead);
    let (a, _) = open(&url).await;
    assert!(a.shared_clock_ms(0).await.unwrap() >= ahead);
    assert!(a.shared_clock_ms(5).await.unwrap() >= ahead);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrations_run_once_under_parallel_starts_and_a_newer_schema_is_refused() {
    let server = PgServer::shared();
    let url = server.create_database();
    let starts: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Postgres::connect(&url, Arc::new(|| {})).await.map(|_| ()) })
        })
        .collect();
    for s in starts {
        s.await.unwrap().unwrap();
    }
    let (s, _) = open(&url).await;
    s.create_cluster("mesh").await.unwrap();
    drop(s);
    server.execute(db_name(&url), "INSERT INTO schema_migrations (version) VALUES (999)");
    let err =
        Postgres::connect(&url, Arc::new(|| {})).await.err().expect("a newer schema is refused");
    let msg = err.to_string();
    assert!(msg.contains("schema version 999") && msg.contains("upgrade"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn topology_changes_by_one_coordinator_reach_the_other() {
    let (a, url) = fresh().await;
    let (b, heard) = open(&url).await;
    let before = heard.load(Ordering::SeqCst);
    a.create_cluster("mesh").await.unwrap();
    eventually("a new cluster to be heard", || heard.load(Ordering::SeqCst) > before).await;
    let before = heard.load(Ordering::SeqCst);
    a.register_node(node("n1", "node1")).await.unwrap();
    eventually("a registration to be heard", || heard.load(Ordering::SeqCst) > before).await;
    let before = heard.load(Ordering::SeqCst);
    a.update_cluster_settings_boxed("c", Box::new(|c| c.min_copies = Some(2))).await.unwrap();
    eventually("a settings change to be heard", || heard.load(Ordering::SeqCst) > before).await;
    // Location changes are not topology.
    let before = heard.load(Ordering::SeqCst);
    a.record(vec![(K1.into(), "n1".into(), true)]).await.unwrap();
    a.create_cluster("other").await.unwrap();
    eventually("the next change", || heard.load(Ordering::SeqCst) > before).await;
    // Dropped, the stores close their connections, the listening one too.
    let db = db_name(&url);
    let count = format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}'");
    assert_ne!(PgServer::shared().query("postgres", &count), "0");
    drop((a, b));
    let start = Instant::now();
    while PgServer::shared().query("postgres", &count) != "0" {
        assert!(start.elapsed() < Duration::from_secs(20), "connections left open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_coordinators_are_shared_with_their_ages() {
    let (a, url) = fresh().await;
    let (b, _) = open(&url).await;
    let health = SharedHealth { boot_id: "boot".into(), free_bytes: Some(7), ..Default::default() };
    a.save_health("n1", health.clone()).await.unwrap();
    let rows = b.load_health().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].node_uuid.as_str(), &rows[0].health), ("n1", &health));
    assert!(rows[0].age_ms < 3_600_000);
    // A degraded node's report comes back as it was written.
    let degraded = SharedDegraded {
        kind: "put".into(),
        failure_unix_ms: 1_700_000_000_000,
        ..Default::default()
    };
    let report = SharedHealth { degraded: Some(degraded), ..health.clone() };
    a.save_health("n2", report.clone()).await.unwrap();
    let rows = b.load_health().await.unwrap();
    assert_eq!(rows.iter().map(|r| r.node_uuid.as_str()).collect::<Vec<_>>(), ["n1", "n2"]);
    assert_eq!(rows[1].health, report);
    let db = db_name(&url);

    let me = CoordinatorRecord {
        id: "c-a".into(),
        address: "10.0.0.1:1".into(),
        version: "1".into(),
        started_unix_ms: 5,
        age_ms: 0,
    };
    a.announce(me.clone()).await.unwrap();
    b.announce(CoordinatorRecord { id: "c-b".into(), ..me.clone() }).await.unwrap();
    b.announce(CoordinatorRecord { id: "c-old".into(), ..me.clone() }).await.unwrap();
    PgServer::shared().execute(
        db,
        "UPDATE coordinators SET seen = now() - interval '2 hours' WHERE id = 'c-old'",
    );
    let listed = b.coordinators().await.unwrap();
    assert_eq!(listed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["c-a", "c-b"]);
    assert_eq!(CoordinatorRecord { age_ms: 0, ..listed[0].clone() }, me);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_moves_between_databases_with_export_import_and_its_log() {
    let (a, _) = fresh().await;
    let (mesh, _) = a.create_cluster("mesh").await.unwrap();
    a.register_node(Node { cluster_uuid: mesh.uuid.clone(), ..node("u1", "node1") }).await.unwrap();
    a.register_node(Node { cluster_uuid: mesh.uuid.clone(), ..node("u2", "node2") }).await.unwrap();
    a.update_node_settings_boxed("u1", Box::new(|n| n.cost = Some(3))).await.unwrap();
    a.update_cluster_settings_boxed(&mesh.uuid, Box::new(|c| c.min_copies = Some(2)))
        .await
        .unwrap();
    a.create_token(Token { user: Some("alice".into()), ..token("pw", Mode::ReadWrite) })
        .await
        .unwrap();
    a.create_join_token("jt".into(), join("gateway", 3, u64::MAX / 2)).await.unwrap();
    a.add_admin_token("ad".into(), 9).await.unwrap();
    a.create_join_token("jt2".into(), join("agent", 3, u64::MAX / 2)).await.unwrap();
    a.use_join_token("jt2".into(), "agent".into(), Some("u9".into()), 1).await.unwrap();
    a.set_meta("clock_lease_ms", 4_000_000_000_000).await.unwrap();
    for i in 0..30 {
        a.record(vec![(format!("SHA256E-s{i}--{i:064x}"), format!("u{}", 1 + i % 2), true)])
            .await
            .unwrap();
    }
    a.register_node(node("u3", "node3")).await.unwrap();
    a.remove_node("u3", true).await.unwrap();
    let snapshot = a.export().await.unwrap();
    assert_eq!(snapshot.nodes.len(), 2);
    assert_eq!(snapshot.removed.len(), 1);
    assert!(snapshot.meta.iter().any(|(n, v)| n == "clock_lease_ms" && *v == 4_000_000_000_000));

    let (b, _) = fresh().await;
    b.import(snapshot.clone()).await.unwrap();
    let mut after = 0;
    for _ in 0..100 {
        let page = a.changes_after(after, 7).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.entry.changed_unix_ms;
        b.import_locations(page).await.unwrap();
    }
    assert_eq!(b.export().await.unwrap(), snapshot);
    assert_eq!(b.changes_after(0, 1000).await.unwrap(), a.changes_after(0, 1000).await.unwrap());
    // The clock and the stamps carry on above what was imported.
    assert!(b.shared_clock_ms(0).await.unwrap() >= 4_000_000_000_000);
    b.record(vec![(K1.into(), "u1".into(), true)]).await.unwrap();
    assert!(b.locations(K1).await.unwrap()[0].changed_unix_ms > after);
    let by_key: BTreeMap<_, _> = b
        .changes_after(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.key, c.entry.node_uuid))
        .collect();
    assert_eq!(by_key.len(), 31);

    // Only into an empty database.
    let err = b.import(snapshot).await.unwrap_err().to_string();
    assert!(err.contains("empty"), "{err}");
    assert_eq!(b.clusters().await.unwrap(), vec![Cluster { ..mesh }]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_and_unreachable_servers_give_clear_errors() {
    let err = Postgres::connect("mysql://h/db", Arc::new(|| {})).await.err().unwrap().to_string();
    assert!(err.contains("postgres://"), "{err}");
    let err = Postgres::connect("postgres://h/db?pool_max_size=0", Arc::new(|| {}))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("pool_max_size"), "{err}");
    let port = common::free_port();
    let url = format!("postgres://u:secret@127.0.0.1:{port}/db?connect_timeout=5");
    let err = Postgres::connect(&url, Arc::new(|| {})).await.err().unwrap().to_string();
    assert!(err.contains(&format!("cannot reach PostgreSQL at 127.0.0.1:{port}")), "{err}");
    assert!(!err.contains("secret"), "{err}");
    // A database that does not exist: the server says so.
    let server = PgServer::shared();
    let err = Postgres::connect(&server.url("no_such_db"), Arc::new(|| {}))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no_such_db"), "{err}");
    let (s, _) = open(&server.create_database()).await;
    assert_eq!(s.describe(), server.url(db_name(&s.describe())));
    assert!(s.shared());
}

/// The listening connection is cut (as by a database restart): the store
/// reconnects, says something may have changed, and hears changes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_listening_connection_is_replaced_and_changes_heard_again() {
    let (a, url) = fresh().await;
    let (b, heard) = open(&url).await;
    a.create_cluster("first").await.unwrap();
    eventually("the first change", || heard.load(Ordering::SeqCst) >= 1).await;
    let before = heard.load(Ordering::SeqCst);
    let db = db_name(&url);
    PgServer::shared().execute(
        db,
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = '{db}' AND pid <> pg_backend_pid()"
        ),
    );
    eventually("a call after reconnecting", || heard.load(Ordering::SeqCst) > before).await;
    // The pool's connections were cut too; a request may fail once.
    let start = Instant::now();
    while a.create_cluster("second").await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "the pool never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = heard.load(Ordering::SeqCst);
    a.create_cluster("third").await.unwrap();
    eventually("a change after reconnecting", || heard.load(Ordering::SeqCst) > before).await;
    assert_eq!(b.clusters().await.unwrap().len(), 3);
}

/// PostgreSQL on a host of its own: the store reaches it across the
/// network; cut off, requests fail rather than hang, and once the link is
/// back they succeed and topology changes are heard again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_on_another_host_cut_off_and_back() {
    let Some(net) = common::netns::net_or_skip(1) else { return };
    let host = net.host(0);
    let server = PgServer::start_on(&host.addr().to_string(), Some(host.netns()));
    // Short timeouts, so that the cut is noticed quickly.
    let url = format!("{}?tcp_user_timeout=3&connect_timeout=3", server.create_database());
    let (a, heard) = open(&url).await;
    a.create_cluster("mesh").await.unwrap();
    eventually("the change", || heard.load(Ordering::SeqCst) >= 1).await;

    host.link_down();
    let cut = tokio::time::timeout(Duration::from_secs(120), a.create_cluster("cut")).await;
    let err = cut.expect("a request to a cut-off database must fail, not hang").unwrap_err();
    assert!(err.to_string().contains(&format!("PostgreSQL at {}", host.addr())), "{err}");

    host.link_up();
    let start = Instant::now();
    while a.create_cluster("back").await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(120), "the store never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = heard.load(Ordering::SeqCst);
    a.update_cluster_settings_boxed("c", Box::new(|c| c.min_copies = Some(2))).await.unwrap();
    eventually("a change after the link came back", || heard.load(Ordering::SeqCst) > before).await;
    drop(a);
    drop(server);
}

/// Changes to one entry through alternating coordinators: the later always
/// wins, whatever the coordinators' batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_later_change_wins_across_coordinators() {
    let (a, url) = fresh().await;
    let (b, _) = open(&url).await;
    for i in 0..20 {
        let s = if i % 2 == 0 { &a } else { &b };
        let present = i % 3 != 0;
        s.record(vec![(K1.into(), "n1".into(), present)]).await.unwrap();
        let other = if i % 2 == 0 { &b } else { &a };
        assert_eq!(other.locations(K1).await.unwrap()[0].present, present, "change {i}");
    }
}

/// TLS to the database: the server's certificate is verified, so an
/// unknown authority is refused with a hint, and trusted with
/// `sslrootcert` the connection is encrypted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_database_verifies_the_certificate() {
    let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (ca.cert.pem(), ca.signing_key.serialize_pem());
    let server = PgServer::start_with("127.0.0.1", None, Some((&cert, &key)));
    let url = server.create_database().replace("@127.0.0.1:", "@localhost:");
    let err = Postgres::connect(&url, Arc::new(|| {})).await.err().unwrap().to_string();
    assert!(err.contains("TLS") && err.contains("sslrootcert"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &cert).unwrap();
    let trusted = format!("{url}?sslmode=verify-full&sslrootcert={}", ca_file.display());
    let (s, _) = open(&trusted).await;
    s.create_cluster("mesh").await.unwrap();
    let encrypted = server.query(
        "postgres",
        &format!(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
             WHERE datname = '{}' AND ssl",
            db_name(&url)
        ),
    );
    assert_ne!(encrypted, "0");
    assert!(!s.describe().contains("sslrootcert"), "{}", s.describe());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_with_nodes_is_not_deleted_as_in_the_embedded_store() {
    use annexmesh::coordinator::store::ClusterDeletion;
    let (s, _) = fresh().await;
    let (c, _) = s.create_cluster("mesh").await.unwrap();
    let n = Node { cluster_uuid: c.uuid.clone(), ..node("n1", "node1") };
    s.register_node(n).await.unwrap();
    let refused = s.delete_cluster(&c.uuid).await.unwrap();
    assert_eq!(refused, ClusterDeletion::HasNodes(vec!["node1".into()]));
    s.remove_node("n1", true).await.unwrap();
    assert_eq!(s.delete_cluster(&c.uuid).await.unwrap(), ClusterDeletion::Deleted);
    assert!(s.clusters().await.unwrap().is_empty());
    assert_eq!(s.delete_cluster(&c.uuid).await.unwrap(), ClusterDeletion::NotFound);
}
