//! `annexmesh admin repair` and `admin node drain --wait`: run repair passes
//! on the coordinator and show their progress, as a line redrawn in place
//! on a terminal and as plain lines otherwise.

use std::io::{IsTerminal, Write};

use anyhow::bail;

use super::status;
use crate::rpc;

/// Passes `drain --wait` runs at most; each moves every key it can, so more
/// are needed only when copies failed or nodes came and went.
const DRAIN_PASSES: usize = 20;

fn counts_line(c: &rpc::RepairCounts) -> String {
    format!(
        "checked {} keys, {} needing repair, {} copies made ({} bytes), {} dropped from draining nodes, {} failures, {} short of target",
        c.keys_checked,
        c.under_replicated,
        c.copies_made,
        c.bytes_copied,
        c.drained,
        c.failures,
        c.short
    )
}

/// Runs one pass and prints what it does; its totals.
pub async fn pass(
    c: &mut super::connect::Client,
    cluster: String,
    dry_run: bool,
) -> anyhow::Result<rpc::RepairCounts> {
    let mut stream =
        c.repair(rpc::RepairRequest { cluster, dry_run }).await.map_err(status)?.into_inner();
    let tty = std::io::stdout().is_terminal();
    let mut out = std::io::stdout().lock();
    while let Some(p) = stream.message().await.map_err(status)? {
        let counts = p.counts.unwrap_or_default();
        if !p.event.is_empty() {
            // On a terminal the event goes above the progress line.
            if tty {
                write!(out, "\r\x1b[2K")?;
            }
            writeln!(out, "{}", p.event)?;
        }
        if tty {
            write!(out, "\r\x1b[2K{}", counts_line(&counts))?;
            out.flush()?;
        }
        if p.done {
            if tty {
                write!(out, "\r\x1b[2K")?;
            }
            writeln!(out, "{}{}", if dry_run { "dry run: " } else { "" }, counts_line(&counts))?;
            return Ok(counts);
        }
    }
    bail!("the coordinator ended the repair pass without its totals; see its log")
}

/// `admin repair`: one pass; an error when keys stay short of their target.
pub async fn repair(
    c: &mut super::connect::Client,
    cluster: String,
    dry_run: bool,
) -> anyhow::Result<()> {
    let counts = pass(c, cluster, dry_run).await?;
    if counts.short > 0 {
        bail!(
            "{} keys could not be brought to their target copies (see the lines above)",
            counts.short
        );
    }
    Ok(())
}

/// `admin repair --status`: the last pass and the draining nodes.
pub async fn show_status(c: &mut super::connect::Client) -> anyhow::Result<()> {
    let s = c.repair_status(rpc::RepairStatusRequest {}).await.map_err(status)?.into_inner();
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
/// holds nothing the log lists, or a pass gets no further.
pub async fn wait_drained(
    c: &mut super::connect::Client,
    node: &rpc::NodeInfo,
) -> anyhow::Result<()> {
    for _ in 0..DRAIN_PASSES {
        let counts = pass(c, node.cluster_uuid.clone(), false).await?;
        let left = drain_left(c, &node.uuid).await?;
        if left == 0 {
            println!("{} is drained: the mesh lists no content on it", node.name);
            return Ok(());
        }
        println!("{} still holds {left} keys", node.name);
        if counts.copies_made == 0 && counts.drained == 0 {
            bail!(
                "{left} keys could not be moved off {} (see the lines above); it stays draining",
                node.name
            );
        }
    }
    bail!("{} is not drained after {DRAIN_PASSES} passes; it stays draining", node.name)
}

async fn drain_left(c: &mut super::connect::Client, uuid: &str) -> anyhow::Result<u64> {
    let s = c.repair_status(rpc::RepairStatusRequest {}).await.map_err(status)?.into_inner();
    Ok(s.draining.iter().find(|d| d.node_uuid == uuid).map_or(0, |d| d.keys_left))
}
