//! `annexmesh admin migrate-store`: moves a mesh's state from one store to
//! another (e.g. from the embedded redb database to PostgreSQL), then reads
//! both back and compares them. It opens the stores itself, not through a
//! coordinator: stop every coordinator of the source first (an embedded
//! database refuses a second opener anyway).

use std::time::Instant;

use anyhow::Context;

use crate::coordinator::store::{StampedChange, Store, StoreSpec, system_clock};

/// Location entries moved per transaction.
const PAGE: usize = 10_000;

#[derive(Debug, Clone, clap::Args)]
pub struct MigrateArgs {
    /// The store to read: redb:DIRECTORY (a coordinator's --data, or
    /// DATA/coordinator for `annexmesh up`) or postgres://...
    #[arg(long, env = "ANNEXMESH_ADMIN_MIGRATE_STORE_FROM")]
    pub from: StoreSpec,
    /// The store to write, which must be empty: postgres://... or
    /// redb:DIRECTORY.
    #[arg(long, env = "ANNEXMESH_ADMIN_MIGRATE_STORE_TO")]
    pub to: StoreSpec,
}

async fn open(spec: &StoreSpec, what: &str) -> anyhow::Result<Store> {
    Store::connect(spec, system_clock()).await.with_context(|| match spec {
        StoreSpec::Redb(dir) => format!(
            "cannot open the {what} store in {} (is a coordinator still running on it?)",
            dir.display()
        ),
        StoreSpec::Postgres(_) => format!("cannot open the {what} PostgreSQL store"),
    })
}

/// Every location entry, in stamp order, a page at a time.
async fn log_page(store: &Store, after: u64) -> anyhow::Result<Vec<StampedChange>> {
    Ok(store.changes_after(after, PAGE).await?)
}

pub async fn run(args: MigrateArgs, out: super::output::Out) -> anyhow::Result<()> {
    if args.from == args.to {
        anyhow::bail!("--from and --to name the same store");
    }
    // Opening an embedded store creates it: check there is one first.
    if let StoreSpec::Redb(dir) = &args.from
        && !dir.join(crate::coordinator::store::REDB_FILE).is_file()
    {
        anyhow::bail!("no coordinator database in {}", dir.display());
    }
    let from = open(&args.from, "source").await?;
    let to = open(&args.to, "target").await?;
    let started = Instant::now();
    let snapshot = from.backend().export().await?;
    eprintln!(
        "moving {} cluster(s), {} node(s), {} removed node(s), {} token(s) from {} to {}",
        snapshot.clusters.len(),
        snapshot.nodes.len(),
        snapshot.removed.len(),
        snapshot.tokens.len(),
        from.describe(),
        to.describe()
    );
    let expected = snapshot.clone();
    to.backend().import(snapshot).await?;

    let (mut after, mut moved) = (0, 0u64);
    let mut progress = super::progress::Progress::new("migrate-store", None);
    loop {
        let page = log_page(&from, after).await?;
        let Some(last) = page.last() else { break };
        after = last.entry.changed_unix_ms;
        moved += page.len() as u64;
        to.backend().import_locations(page).await?;
        progress.update(moved, None, &format!("location log: {moved} entries moved"));
    }
    progress.finish();
    eprintln!("location log: {moved} entries moved");

    // Read both back: the same records, and the same log entry by entry.
    let got = to.backend().export().await?;
    let same = |a: &crate::coordinator::store::Snapshot,
                b: &crate::coordinator::store::Snapshot| {
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        sorted(a.clusters.iter().map(|c| format!("{c:?}")).collect())
            == sorted(b.clusters.iter().map(|c| format!("{c:?}")).collect())
            && sorted(a.nodes.iter().map(|n| format!("{n:?}")).collect())
                == sorted(b.nodes.iter().map(|n| format!("{n:?}")).collect())
            && a.node_settings == b.node_settings
            && a.cluster_settings == b.cluster_settings
            && a.removed.len() == b.removed.len()
            && sorted(a.tokens.iter().map(|t| t.sha256.clone()).collect())
                == sorted(b.tokens.iter().map(|t| t.sha256.clone()).collect())
            && a.admin_tokens.len() <= b.admin_tokens.len()
    };
    if !same(&expected, &got) {
        anyhow::bail!("the target store does not read back what was written; do not use it");
    }
    let (mut a, mut b, mut checked) = (0, 0, 0u64);
    loop {
        let (pa, pb) = (log_page(&from, a).await?, log_page(&to, b).await?);
        if pa != pb {
            anyhow::bail!(
                "the target's location log differs from the source's after {checked} entries; \
                 do not use it"
            );
        }
        let Some(last) = pa.last() else { break };
        (a, b) = (last.entry.changed_unix_ms, last.entry.changed_unix_ms);
        checked += pa.len() as u64;
    }
    if out.json {
        out.json(&serde_json::json!({
            "from": from.describe(),
            "to": to.describe(),
            "clusters": expected.clusters.len(),
            "nodes": expected.nodes.len(),
            "location_entries": checked,
            "seconds": started.elapsed().as_secs_f64(),
        }));
        return Ok(());
    }
    println!(
        "moved and verified {} cluster(s), {} node(s), {checked} location entries in {:.1}s; \
         start the coordinators with --store {}",
        expected.clusters.len(),
        expected.nodes.len(),
        started.elapsed().as_secs_f64(),
        to.describe()
    );
    Ok(())
}
