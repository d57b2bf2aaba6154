//! `annexmesh admin`: the operators' command line over the admin API.

mod connect;
mod migrate;
mod repair;
mod scrub;
mod status;
mod users;

use clap::Subcommand;

use crate::auth::{self, Mode};
use crate::names::Named;
use crate::rpc;

#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    #[command(flatten)]
    pub connect: connect::ConnectArgs,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Clusters: create, list, minimum copies, space reserve.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Nodes: list with health, drain and undrain, cost.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Access tokens for the line-protocol front-end (`annexmesh gateway
    /// --p2p`, AUTH): create, list, revoke. The coordinator keeps only their
    /// SHA-256.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Users of P2P over HTTP (basic auth): add, list, remove. A user's
    /// password is also a line-protocol token.
    #[command(subcommand)]
    User(users::UserCommand),
    /// Join tokens for new agents and gateways (`--join-token`).
    #[command(subcommand)]
    JoinToken(JoinTokenCommand),
    /// Which nodes hold a key, from the location log.
    Whereis { key: String },
    /// Compare the location log with the keys the agents hold and list
    /// every difference; exits non-zero when there are any (or a node
    /// could not be asked) and --fix was not given.
    Fsck {
        /// Only the nodes of this cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// Record what the nodes hold.
        #[arg(long)]
        fix: bool,
    },
    /// Run one repair pass now: bring every key to its target copies
    /// (copying agent to agent from a good holder) and move content off
    /// draining nodes. Fails when some keys could not be brought to target.
    Repair {
        /// Only this cluster (name or UUID).
        #[arg(long)]
        cluster: Option<String>,
        /// List the copies and drops a pass would make; change nothing.
        #[arg(long, conflicts_with = "status")]
        dry_run: bool,
        /// Show the last pass's totals and the draining nodes' progress.
        #[arg(long, conflicts_with = "cluster")]
        status: bool,
    },
    /// Run one scrub pass now on every node (or the chosen ones): each
    /// re-reads its checksum objects, and quarantines and strikes bad
    /// copies, which repair then makes again. Prints a line per node; fails
    /// when a bad copy was found or a node could not be asked.
    Scrub {
        /// Only this node (name or UUID).
        #[arg(long)]
        node: Option<String>,
        /// Only the nodes of this cluster (name or UUID).
        #[arg(long)]
        cluster: Option<String>,
        /// Read at most this many MB/s on each node (default: full speed).
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Move the mesh's state to another store (e.g. from redb to
    /// PostgreSQL) and verify it there. Stop the coordinators first; the
    /// target must be empty. Needs no coordinator.
    MigrateStore(migrate::MigrateArgs),
    /// Every coordinator given with --coordinator (a comma list), each with
    /// its own view: its store, the cluster clock, clusters and nodes' health;
    /// then the coordinators the store lists. Fails when one did not answer.
    Status,
    /// Show or set a node's preferred content: which content PUTs to its
    /// cluster place on it, in git-annex's preferred content syntax (e.g.
    /// `largerthan=1MB`, `include=*.mp3 or smallerthan=500kB`, `nothing`).
    /// Without EXPR, prints the current one; "" unsets it, and the node then
    /// wants everything. Content no eligible node wants goes to them all.
    Wanted {
        /// Node name or UUID.
        node: String,
        /// The expression; several words are joined with spaces.
        #[arg(num_args = 0.., allow_hyphen_values = true)]
        expr: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    Create {
        name: String,
    },
    List,
    /// Show or set how many nodes must store a PUT for it to succeed
    /// (default 1). Nodes that did store are reported to the client either way.
    Mincopies {
        cluster: String,
        n: Option<u32>,
    },
    /// Show or set the free space a PUT must leave on a node (bytes or a size
    /// such as 500MB, 2GiB; "default" for the coordinator's --reserve).
    Reserve {
        cluster: String,
        size: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    List {
        /// Only the nodes of this cluster.
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Stop placing new content on a node and move what it holds to other
    /// nodes (repair drops its copies once they are safe elsewhere); it
    /// serves what it has meanwhile.
    Drain {
        /// Node name or UUID.
        node: String,
        /// Run repair passes until the node holds nothing, showing progress.
        #[arg(long)]
        wait: bool,
    },
    /// Place new content on a drained node again.
    Undrain {
        /// Node name or UUID.
        node: String,
    },
    /// Remove a node from the mesh: it leaves the topology (no request
    /// waits for it, no content is placed on it), its name becomes free and
    /// its location entries are struck. Refused while the location log
    /// lists no other node for some key it holds.
    Remove {
        /// Node name or UUID.
        node: String,
        /// The node is gone for good: remove it even when it held the only
        /// copy of some keys (they are then lost to the mesh).
        #[arg(long)]
        lost: bool,
    },
    /// Show or set a node's cost (default 100): GET and CHECKPRESENT use the
    /// node with the lowest cost among those holding the content, then the
    /// least busy one.
    Cost {
        /// Node name or UUID.
        node: String,
        n: Option<u32>,
    },
}

#[derive(Debug, Subcommand)]
pub enum JoinTokenCommand {
    /// Make a join token and print it (it cannot be shown again).
    Create {
        /// agent or gateway.
        #[arg(long)]
        role: String,
        /// How long it may be used (e.g. 10m, 1h, 2d; at most 7 days).
        #[arg(long, default_value = "1h", value_parser = crate::clock::parse_duration)]
        ttl: std::time::Duration,
        /// How many members may join with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a new token and print it on stdout. It is generated here and
    /// only its hash is sent, so it cannot be shown again. Default access:
    /// readwrite.
    Create {
        /// GET, CHECKPRESENT and locking only.
        #[arg(long, conflicts_with = "appendonly")]
        readonly: bool,
        /// Also PUT, but no REMOVE.
        #[arg(long)]
        appendonly: bool,
        /// A note for operators (who or what uses the token).
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Ids, access modes, creation times and labels (never the tokens).
    List,
    /// Revoke a token by its id (or a unique prefix of at least 6 digits).
    Revoke { id: String },
}

pub(crate) fn status(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", e.message())
}

/// The reply, after printing on stderr the coordinator's warning about a
/// setting that cannot be met as things are (the setting is made anyway).
fn warned<T>(r: tonic::Response<T>) -> T {
    let key = crate::coordinator::validate::WARNING_METADATA;
    if let Some(w) = r.metadata().get(key).and_then(|v| v.to_str().ok()) {
        eprintln!("warning: {w}");
    }
    r.into_inner()
}

fn reserve(c: &rpc::ClusterInfo) -> String {
    if c.reserve_default {
        format!("{} (default)", c.reserve_bytes)
    } else {
        c.reserve_bytes.to_string()
    }
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
    c.list_clusters(rpc::ListClustersRequest {})
        .await
        .map_err(status)?
        .into_inner()
        .clusters
        .into_iter()
        .find(|c| c.is(cluster))
        .ok_or_else(|| anyhow::anyhow!("unknown cluster {cluster:?}"))
}

/// Prints an fsck reply; an error when the log and the nodes disagree
/// unfixed, or a node could not be asked.
fn fsck_report(r: rpc::FsckReply) -> anyhow::Result<()> {
    for d in &r.differences {
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

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    if let AdminCommand::MigrateStore(m) = args.command {
        return migrate::run(m).await;
    }
    if let AdminCommand::Status = args.command {
        return status::run(&args.connect).await;
    }
    let mut c = connect::connect(&args.connect).await?;
    match args.command {
        AdminCommand::MigrateStore(_) | AdminCommand::Status => unreachable!("handled above"),
        AdminCommand::JoinToken(JoinTokenCommand::Create { role, ttl, uses }) => {
            let req = rpc::CreateJoinTokenRequest { role, ttl_seconds: ttl.as_secs(), uses };
            let t = c.create_join_token(req).await.map_err(status)?.into_inner();
            println!("{}", t.token);
            eprintln!("valid until {}", utc_time(t.expires_unix_ms));
        }
        AdminCommand::Cluster(ClusterCommand::Create { name }) => {
            let c = c
                .create_cluster(rpc::CreateClusterRequest { name })
                .await
                .map_err(status)?
                .into_inner();
            println!("{}\t{}", c.name, c.uuid);
        }
        AdminCommand::Cluster(ClusterCommand::List) => {
            println!("NAME\tUUID\tMINCOPIES\tRESERVE");
            for c in c
                .list_clusters(rpc::ListClustersRequest {})
                .await
                .map_err(status)?
                .into_inner()
                .clusters
            {
                println!("{}\t{}\t{}\t{}", c.name, c.uuid, c.min_copies, reserve(&c));
            }
        }
        AdminCommand::Cluster(ClusterCommand::Mincopies { cluster, n }) => {
            let info = match n {
                Some(min_copies) => {
                    let req = rpc::SetClusterMinCopiesRequest { cluster, min_copies };
                    warned(c.set_cluster_min_copies(req).await.map_err(status)?)
                }
                None => find_cluster(&mut c, &cluster).await?,
            };
            println!("{}", info.min_copies);
        }
        AdminCommand::Cluster(ClusterCommand::Reserve { cluster, size }) => {
            let info = match size {
                Some(reserve) => {
                    let req = rpc::SetClusterReserveRequest { cluster, reserve };
                    warned(c.set_cluster_reserve(req).await.map_err(status)?)
                }
                None => find_cluster(&mut c, &cluster).await?,
            };
            println!("{}", reserve(&info));
        }
        AdminCommand::Node(NodeCommand::List { cluster }) => {
            let req = rpc::ListNodesRequest { cluster: cluster.unwrap_or_default() };
            let nodes = c.list_nodes(req).await.map_err(status)?.into_inner().nodes;
            // Keys left on draining nodes; "-" from a coordinator without repair.
            let draining = match c.repair_status(rpc::RepairStatusRequest {}).await {
                Ok(r) => r.into_inner().draining,
                Err(_) => Vec::new(),
            };
            println!(
                "NAME\tUUID\tHEALTH\tADDRESS\tFREE\tTRANSFERS\tSTATE\tWANTED\tCOST\tLEFT\tPARTIAL\tQUARANTINED"
            );
            for n in nodes {
                let left = draining
                    .iter()
                    .find(|d| d.node_uuid == n.uuid)
                    .map_or("-".to_string(), repair::keys_left);
                let health = match (n.removed, n.healthy, n.degraded) {
                    (true, _, _) => "-",
                    (false, true, true) => "degraded",
                    (false, true, false) => "up",
                    (false, false, _) => "down",
                };
                let state = match (n.removed, n.lost, n.draining) {
                    (true, true, _) => "lost",
                    (true, false, _) => "removed",
                    (false, _, true) => "draining",
                    (false, _, false) => "active",
                };
                let wanted = if n.wanted.is_empty() { "-" } else { n.wanted.as_str() };
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    n.name,
                    n.uuid,
                    health,
                    n.address,
                    n.free_bytes,
                    n.active_transfers,
                    state,
                    wanted,
                    n.cost,
                    left,
                    n.partial_bytes,
                    n.quarantined
                );
            }
        }
        AdminCommand::Node(NodeCommand::Drain { node, wait }) => {
            let n = c
                .set_draining(rpc::SetDrainingRequest { node, draining: true })
                .await
                .map_err(status)?
                .into_inner();
            println!(
                "{} is draining: it gets no new content, its content moves to other nodes, and it serves what it has meanwhile",
                n.name
            );
            if wait {
                repair::wait_drained(&mut c, &n).await?;
            }
        }
        AdminCommand::Repair { status: true, .. } => {
            repair::show_status(&mut c).await?;
        }
        AdminCommand::Repair { cluster, dry_run, status: false } => {
            repair::repair(&mut c, cluster.unwrap_or_default(), dry_run).await?;
        }
        AdminCommand::Node(NodeCommand::Undrain { node }) => {
            let n = c
                .set_draining(rpc::SetDrainingRequest { node, draining: false })
                .await
                .map_err(status)?
                .into_inner();
            println!("{} takes new content again", n.name);
        }
        AdminCommand::Node(NodeCommand::Remove { node, lost }) => {
            let r = c
                .remove_node(rpc::RemoveNodeRequest { node, lost })
                .await
                .map_err(status)?
                .into_inner();
            println!(
                "removed {} ({}) from the mesh; struck {} location entries",
                r.node_name, r.node_uuid, r.struck
            );
            if r.lost_keys > 0 {
                eprintln!(
                    "{} key(s) had their only known copy on {}: the mesh no longer holds them",
                    r.lost_keys, r.node_name
                );
            }
        }
        AdminCommand::Node(NodeCommand::Cost { node, n }) => {
            let info = match n {
                Some(cost) => c
                    .set_node_cost(rpc::SetNodeCostRequest { node, cost })
                    .await
                    .map_err(status)?
                    .into_inner(),
                None => c
                    .list_nodes(rpc::ListNodesRequest::default())
                    .await
                    .map_err(status)?
                    .into_inner()
                    .nodes
                    .into_iter()
                    .find(|n| n.is(&node))
                    .ok_or_else(|| anyhow::anyhow!("unknown node {node:?}"))?,
            };
            println!("{}", info.cost);
        }
        AdminCommand::Wanted { node, expr } => {
            let r = if expr.is_empty() {
                c.get_wanted(rpc::GetWantedRequest { node }).await.map_err(status)?.into_inner()
            } else {
                let req = rpc::SetWantedRequest { node, expression: expr.join(" ") };
                c.set_wanted(req).await.map_err(status)?.into_inner()
            };
            if r.expression.is_empty() {
                eprintln!(
                    "{} has no preferred content expression: it wants everything",
                    r.node_name
                );
            } else {
                println!("{}", r.expression);
            }
        }
        AdminCommand::Token(TokenCommand::Create { readonly, appendonly, label }) => {
            let mode = if readonly {
                Mode::ReadOnly
            } else if appendonly {
                Mode::AppendOnly
            } else {
                Mode::ReadWrite
            };
            let token = auth::generate_token();
            let req = rpc::CreateTokenRequest {
                token_sha256: auth::hash_token(&token),
                mode: mode.as_str().to_string(),
                label,
                user: String::new(),
            };
            let info = c.create_token(req).await.map_err(status)?.into_inner();
            // stdout carries only the token, so that scripts can capture it.
            println!("{token}");
            eprintln!(
                "created {} token {}; it cannot be shown again (the coordinator keeps only its hash), so store it now",
                info.mode, info.id
            );
        }
        AdminCommand::Token(TokenCommand::List) => {
            println!("ID\tMODE\tCREATED\tLABEL");
            for t in
                c.list_tokens(rpc::ListTokensRequest {}).await.map_err(status)?.into_inner().tokens
            {
                let label = if t.label.is_empty() { "-" } else { t.label.as_str() };
                println!("{}\t{}\t{}\t{}", t.id, t.mode, utc_time(t.created_unix_ms), label);
            }
        }
        AdminCommand::Token(TokenCommand::Revoke { id }) => {
            let t =
                c.revoke_token(rpc::RevokeTokenRequest { id }).await.map_err(status)?.into_inner();
            println!("revoked {} token {}", t.mode, t.id);
        }
        AdminCommand::User(cmd) => users::run(&mut c, cmd).await?,
        AdminCommand::Fsck { cluster, fix } => {
            let req = rpc::FsckRequest { cluster: cluster.unwrap_or_default(), fix };
            fsck_report(c.fsck(req).await.map_err(status)?.into_inner())?;
        }
        AdminCommand::Scrub { node, cluster, rate } => {
            let req = rpc::ScrubNodesRequest {
                node: node.unwrap_or_default(),
                cluster: cluster.unwrap_or_default(),
                rate_bytes_per_s: scrub::rate_bytes(rate)?,
            };
            scrub::scrub(&mut c, req).await?;
        }
        AdminCommand::Whereis { key } => {
            let entries = c
                .whereis(rpc::WhereisRequest { key: key.clone() })
                .await
                .map_err(status)?
                .into_inner()
                .entries;
            let present: Vec<_> = entries.iter().filter(|e| e.present).collect();
            println!(
                "{key}: {} cop{}",
                present.len(),
                if present.len() == 1 { "y" } else { "ies" }
            );
            for e in present {
                println!("\t{} -- {}", e.node_uuid, e.node_name);
            }
        }
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
