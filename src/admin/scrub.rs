//! `annexmesh admin scrub`: one scrub pass now on the chosen nodes, a line
//! per node as each finishes.

use tokio_stream::StreamExt;

use serde_json::json;

use super::output::{Out, human_bytes};
use super::progress::Progress;
use super::status;
use crate::rpc;

/// The rate to ask for, in bytes per second, from MB/s (10^6 bytes); 0 for
/// full speed.
pub(super) fn rate_bytes(mb_per_s: Option<f64>) -> anyhow::Result<u64> {
    match mb_per_s {
        None => Ok(0),
        Some(r) if r.is_finite() && r > 0.0 => Ok((r * 1e6).max(1.0) as u64),
        Some(r) => anyhow::bail!("--rate must be a positive number of MB/s, not {r}"),
    }
}

/// Runs the passes and prints each node's summary; an error when a node
/// held a bad copy or could not be asked.
pub(super) async fn scrub(
    c: &mut super::connect::Client,
    req: rpc::ScrubNodesRequest,
    out: Out,
) -> anyhow::Result<()> {
    let mut stream = c.scrub_nodes(req).await.map_err(status)?.into_inner();
    let (mut bad, mut unasked, mut nodes) = (0usize, 0usize, 0usize);
    let mut progress = Progress::new("scrub", None);
    let mut results = Vec::new();
    while let Some(r) = stream.next().await {
        let r = r.map_err(status)?;
        nodes += 1;
        results.push(json!({
            "name": r.node_name,
            "uuid": r.node_uuid,
            "objects": r.objects,
            "bytes": r.bytes,
            "bad_keys": r.bad_keys,
            "error": (!r.error.is_empty()).then_some(&r.error),
        }));
        progress.update(nodes as u64, None, &format!("{nodes} node(s) done, {bad} bad copies"));
        if !r.error.is_empty() {
            unasked += 1;
            eprintln!("{}: not scrubbed: {}", r.node_name, r.error);
            continue;
        }
        bad += r.bad_keys.len();
        if out.json {
            continue;
        }
        progress.println(&format!(
            "{}: {} objects checked, {}, {} bad",
            r.node_name,
            r.objects,
            human_bytes(r.bytes),
            r.bad_keys.len()
        ));
        for key in &r.bad_keys {
            progress.println(&format!(
                "{}: {key}: bad copy quarantined and struck from the log",
                r.node_name
            ));
        }
    }
    progress.finish();
    if out.json {
        out.json(&json!({ "nodes": results, "bad": bad, "unreachable": unasked }));
    }
    if nodes == 0 {
        anyhow::bail!("no node to scrub");
    }
    if unasked > 0 {
        anyhow::bail!("{unasked} node(s) could not be asked to scrub");
    }
    if bad > 0 {
        anyhow::bail!(
            "{bad} bad cop{} quarantined; the repair loop makes them again from good holders \
             (`annexmesh admin repair` runs a pass now)",
            if bad == 1 { "y" } else { "ies" }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_positive_megabytes_per_second() {
        assert_eq!(rate_bytes(None).unwrap(), 0);
        assert_eq!(rate_bytes(Some(2.5)).unwrap(), 2_500_000);
        assert!(rate_bytes(Some(0.0)).is_err());
        assert!(rate_bytes(Some(-1.0)).is_err());
        assert!(rate_bytes(Some(f64::NAN)).is_err());
    }
}
