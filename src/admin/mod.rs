//! `annexmesh admin`: the operators' command line over the admin API.

mod cli;
mod clusters;
mod connect;
mod migrate;
mod nodes;
pub mod output;
mod progress;
mod repair;
mod scrub;
mod status;
mod tokens;
mod users;

use serde_json::json;

pub use cli::{
    AdminArgs, AdminCommand, ClusterCommand, JoinTokenCommand, NodeCommand, TokenCommand,
};
use output::Out;

use crate::names::Named;
use crate::rpc;

/// An admin API error as the operator should read it.
/// The reply, after printing on stderr the coordinator's warning about a
/// setting that cannot be met as things are (the setting is made anyway).
fn warned<T>(r: tonic::Response<T>) -> T {
    let key = crate::coordinator::validate::WARNING_METADATA;
    if let Some(w) = r.metadata().get(key).and_then(|v| v.to_str().ok()) {
        eprintln!("warning: {w}");
    }
    r.into_inner()
}

pub(crate) fn status(e: tonic::Status) -> anyhow::Error {
    let msg = e.message();
    if msg.contains("grpc-status header missing") || msg.contains("invalid content-type") {
        return anyhow::anyhow!(
            "the coordinator URL answers HTTP, but not as a gRPC server (wrong port? the \
             coordinator's gRPC port is its --listen, 7400 by default): {msg}"
        );
    }
    if msg.contains("cannot connect to ") {
        let each: Vec<String> = msg.split("; ").map(|m| connect::explain(m, None)).collect();
        return anyhow::anyhow!("{}", each.join("; "));
    }
    if msg.is_empty() {
        return anyhow::anyhow!("the coordinator failed the call: {:?}", e.code());
    }
    anyhow::anyhow!("{msg}")
}

/// Names for an error message: comma-separated, "none" for none.
pub(crate) fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let mut v: Vec<&str> = names.map(String::as_str).collect();
    v.sort_unstable();
    if v.is_empty() { "none".to_string() } else { v.join(", ") }
}

/// Unix milliseconds as an RFC 3339 UTC time, to the second.
fn utc_time(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

async fn find_cluster(c: &mut connect::Client, cluster: &str) -> anyhow::Result<rpc::ClusterInfo> {
    let clusters =
        c.list_clusters(rpc::ListClustersRequest {}).await.map_err(status)?.into_inner().clusters;
    let known = known(clusters.iter().map(|c| &c.name));
    clusters
        .into_iter()
        .find(|c| c.is(cluster))
        .ok_or_else(|| anyhow::anyhow!("unknown cluster {cluster:?}; known clusters: {known}"))
}

/// Prints an fsck reply; an error when the log and the nodes disagree
/// unfixed, or a node could not be asked.
fn fsck_report(r: rpc::FsckReply, out: Out) -> anyhow::Result<()> {
    if out.json {
        let diffs: Vec<_> = r
            .differences
            .iter()
            .map(|d| {
                json!({
                    "node": d.node_name,
                    "node_uuid": d.node_uuid,
                    "key": d.key,
                    "listed": d.listed,
                })
            })
            .collect();
        out.json(&json!({
            "differences": diffs,
            "nodes_checked": r.nodes_checked,
            "unreachable": r.unreachable,
            "fixed": r.fixed,
        }));
    }
    for d in r.differences.iter().filter(|_| !out.json) {
        let what = if d.listed {
            "listed in the log but absent from the node"
        } else {
            "held by the node but not listed in the log"
        };
        println!("{}\t{}\t{what}", d.node_name, d.key);
    }
    for u in &r.unreachable {
        eprintln!("not checked: {u}");
    }
    let n = r.differences.len();
    if r.fixed && n > 0 {
        eprintln!(
            "{n} difference(s) on {} node(s), recorded as the nodes hold them",
            r.nodes_checked
        );
    } else {
        eprintln!("{n} difference(s) on {} node(s)", r.nodes_checked);
    }
    if !r.unreachable.is_empty() {
        anyhow::bail!("{} node(s) could not be checked", r.unreachable.len());
    }
    if n > 0 && !r.fixed {
        anyhow::bail!("the location log differs from the nodes; `--fix` records what they hold");
    }
    Ok(())
}

/// `admin whereis KEY`: an error when the location log does not know it.
async fn whereis(c: &mut connect::Client, out: Out, key: String) -> anyhow::Result<()> {
    let req = rpc::WhereisRequest { key: key.clone() };
    let entries = c.whereis(req).await.map_err(status)?.into_inner().entries;
    if entries.is_empty() {
        anyhow::bail!("{key}: key not in the location log");
    }
    let present: Vec<_> = entries.iter().filter(|e| e.present).collect();
    if out.json {
        let nodes: Vec<_> =
            present.iter().map(|e| json!({ "name": e.node_name, "uuid": e.node_uuid })).collect();
        out.json(&json!({ "key": key, "copies": present.len(), "nodes": nodes }));
    } else {
        println!("{key}: {} cop{}", present.len(), if present.len() == 1 { "y" } else { "ies" });
        for e in present {
            println!("\t{} -- {}", e.node_uuid, e.node_name);
        }
    }
    Ok(())
}

/// Runs one admin command.
pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let out = Out { json: args.json };
    if let AdminCommand::MigrateStore(m) = args.command {
        return migrate::run(m, out).await;
    }
    if let AdminCommand::Status = args.command {
        return status::run(&args.connect, out).await;
    }
    let mut c = connect::connect(&args.connect).await?;
    match args.command {
        AdminCommand::MigrateStore(_) | AdminCommand::Status => unreachable!("handled above"),
        AdminCommand::JoinToken(cmd) => tokens::join(&mut c, out, cmd).await?,
        AdminCommand::Cluster(cmd) => clusters::run(&mut c, out, cmd).await?,
        AdminCommand::Node(cmd) => nodes::run(&mut c, out, cmd).await?,
        AdminCommand::Token(cmd) => tokens::run(&mut c, out, cmd).await?,
        AdminCommand::User(cmd) => users::run(&mut c, out, cmd).await?,
        AdminCommand::Wanted { node, expr } => nodes::wanted(&mut c, out, node, expr).await?,
        AdminCommand::Repair { status: true, .. } => repair::show_status(&mut c, out).await?,
        AdminCommand::Repair { cluster, dry_run, status: false } => {
            repair::repair(&mut c, cluster.unwrap_or_default(), dry_run, out).await?;
        }
        AdminCommand::Fsck { cluster, fix } => {
            let req = rpc::FsckRequest { cluster: cluster.unwrap_or_default(), fix };
            fsck_report(c.fsck(req).await.map_err(status)?.into_inner(), out)?;
        }
        AdminCommand::Scrub { node, cluster, rate } => {
            let req = rpc::ScrubNodesRequest {
                node: node.unwrap_or_default(),
                cluster: cluster.unwrap_or_default(),
                rate_bytes_per_s: scrub::rate_bytes(rate)?,
            };
            scrub::scrub(&mut c, req, out).await?;
        }
        AdminCommand::Whereis { key } => whereis(&mut c, out, key).await?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_time_formats_civil_dates() {
        assert_eq!(utc_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_time(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc_time(1_764_049_641_999), "2025-11-25T05:47:21Z");
    }

    #[test]
    fn token_modes_conflict() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            admin: AdminArgs,
        }
        let parse =
            |args: &[&str]| Cli::try_parse_from(["admin", "token", "create"].iter().chain(args));
        assert!(parse(&["--readonly", "--appendonly"]).is_err());
        match parse(&["--appendonly", "--label", "ci"]).unwrap().admin.command {
            AdminCommand::Token(TokenCommand::Create { readonly, appendonly, label }) => {
                assert!(!readonly && appendonly);
                assert_eq!(label, "ci");
            }
            other => panic!("{other:?}"),
        }
    }
}
