//! `annexmesh admin repair` and `admin node drain --wait`: run repair passes
//! on the coordinator and show their progress (see `progress`).

use anyhow::bail;
use serde_json::{Value, json};

use super::output::{Out, human_bytes};
use super::progress::Progress;
use super::status;
use crate::rpc;

/// Passes `drain --wait` runs at most; each moves every key it can, so more
/// are needed only when copies failed or nodes came and went.
const DRAIN_PASSES: usize = 20;

fn counts_line(c: &rpc::RepairCounts) -> String {
    format!(
        "checked {} keys, {} needing repair, {} copies made ({}), {} dropped from draining nodes, {} failures, {} short of target",
        c.keys_checked,
        c.under_replicated,
        c.copies_made,
        human_bytes(c.bytes_copied),
        c.drained,
        c.failures,
        c.short
    )
}

/// A pass's totals for --json.
pub(super) fn counts_json(c: &rpc::RepairCounts) -> Value {
    json!({
        "keys_checked": c.keys_checked,
        "under_replicated": c.under_replicated,
        "copies_made": c.copies_made,
        "bytes_copied": c.bytes_copied,
        "failures": c.failures,
        "drained": c.drained,
        "short": c.short,
    })
}

/// What a pass shows while it runs.
enum Watch {
    /// Keys checked so far (the total is not known ahead).
    Keys,
    /// Copies dropped from a draining node, out of the keys it held.
    Drain { left: u64 },
}

/// Runs one pass, showing its progress and events (on stdout, unless
/// --json collects them); its totals and events.
async fn pass(
    c: &mut super::connect::Client,
    cluster: String,
    dry_run: bool,
    watch: Watch,
    out: Out,
) -> anyhow::Result<(rpc::RepairCounts, Vec<String>)> {
    let mut stream =
        c.repair(rpc::RepairRequest { cluster, dry_run }).await.map_err(status)?.into_inner();
    let (what, total) = match watch {
        Watch::Keys => ("repair", None),
        Watch::Drain { left } => ("drain", Some(left)),
    };
    let mut progress = Progress::new(what, total);
    let mut events = Vec::new();
    while let Some(p) = stream.message().await.map_err(status)? {
        let counts = p.counts.unwrap_or_default();
        if !p.event.is_empty() {
            if !out.json {
                progress.println(&p.event);
            }
            events.push(p.event);
        }
        if p.done {
            progress.finish();
            if !out.json {
                let dry = if dry_run { "dry run: " } else { "" };
                println!("{dry}{}", counts_line(&counts));
            }
            return Ok((counts, events));
        }
        let msg = format!("{} keys checked, {} failed", counts.keys_checked, counts.failures);
        match total {
            Some(n) => progress.update(counts.drained.min(n), total, "keys moved off"),
            None => progress.update(counts.keys_checked, None, &msg),
        }
    }
    progress.finish();
    bail!("the coordinator ended the repair pass without its totals; see its log")
}

/// `admin repair`: one pass; an error when keys stay short of their target.
pub async fn repair(
    c: &mut super::connect::Client,
    cluster: String,
    dry_run: bool,
    out: Out,
) -> anyhow::Result<()> {
    let (counts, events) = pass(c, cluster, dry_run, Watch::Keys, out).await?;
    if out.json {
        let mut v = counts_json(&counts);
        v["dry_run"] = json!(dry_run);
        v["events"] = json!(events);
        out.json(&v);
    }
    if counts.short > 0 {
        bail!(
            "{} keys could not be brought to their target copies (see the lines above)",
            counts.short
        );
    }
    Ok(())
}

/// The repair status for --json.
pub(super) fn status_json(s: &rpc::RepairStatusReply) -> Value {
    let draining: Vec<Value> = s
        .draining
        .iter()
        .map(|d| {
            json!({
                "name": d.node_name,
                "uuid": d.node_uuid,
                "keys_left": d.counted.then_some(d.keys_left),
            })
        })
        .collect();
    json!({
        "passes": s.passes,
        "running": s.running,
        "last": (s.passes > 0).then(|| counts_json(&s.last.unwrap_or_default())),
        "last_started_unix_ms": s.last_started_unix_ms,
        "last_finished_unix_ms": s.last_finished_unix_ms,
        "total_copies_made": s.total_copies_made,
        "total_failures": s.total_failures,
        "draining": draining,
    })
}

/// `admin repair --status`: the last pass and the draining nodes.
pub async fn show_status(c: &mut super::connect::Client, out: Out) -> anyhow::Result<()> {
    let s = c.repair_status(rpc::RepairStatusRequest {}).await.map_err(status)?.into_inner();
    if out.json {
        out.json(&status_json(&s));
        return Ok(());
    }
    if s.passes == 0 {
        println!("no repair pass has finished since the coordinator started");
    } else {
        println!(
            "last pass: {} to {}: {}",
            super::utc_time(s.last_started_unix_ms),
            super::utc_time(s.last_finished_unix_ms),
            counts_line(&s.last.unwrap_or_default())
        );
        println!(
            "since start: {} passes, {} copies made, {} failures",
            s.passes, s.total_copies_made, s.total_failures
        );
    }
    if s.running {
        println!("a pass is running now");
    }
    for d in s.draining {
        println!("draining {}: {} keys left", d.node_name, keys_left(&d));
    }
    Ok(())
}

/// The keys a draining node holds, or "?" before a pass counted them.
pub fn keys_left(d: &rpc::DrainProgress) -> String {
    if d.counted { d.keys_left.to_string() } else { "?".to_string() }
}

/// `admin node drain NODE --wait`: passes over the node's cluster until it
/// holds nothing the log lists, or a pass gets no further; the passes run.
pub async fn wait_drained(
    c: &mut super::connect::Client,
    node: &rpc::NodeInfo,
    out: Out,
) -> anyhow::Result<usize> {
    let mut left = drain_left(c, &node.uuid).await?.unwrap_or(0);
    for n in 1..=DRAIN_PASSES {
        let watch = if left > 0 { Watch::Drain { left } } else { Watch::Keys };
        let (counts, _) = pass(c, node.cluster_uuid.clone(), false, watch, out).await?;
        left = drain_left(c, &node.uuid).await?.unwrap_or(0);
        if left == 0 {
            if !out.json {
                println!("{} is drained: the mesh lists no content on it", node.name);
            }
            return Ok(n);
        }
        if !out.json {
            println!("{} still holds {left} keys", node.name);
        }
        if counts.copies_made == 0 && counts.drained == 0 {
            bail!(
                "{left} keys could not be moved off {} (see the lines above); it stays draining",
                node.name
            );
        }
    }
    bail!("{} is not drained after {DRAIN_PASSES} passes; it stays draining", node.name)
}

/// Keys the node still holds, when a pass has counted them.
async fn drain_left(c: &mut super::connect::Client, uuid: &str) -> anyhow::Result<Option<u64>> {
    let s = c.repair_status(rpc::RepairStatusRequest {}).await.map_err(status)?.into_inner();
    Ok(s.draining.iter().find(|d| d.node_uuid == uuid).map(|d| d.keys_left))
}
