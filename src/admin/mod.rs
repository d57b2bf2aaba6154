//! `annexmesh admin`: the operators' command line over the admin API.

use anyhow::Context;
use clap::Subcommand;

use crate::rpc::{self, admin_client::AdminClient};

#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// Coordinator gRPC URL.
    #[arg(long, env = "ANNEXMESH_COORDINATOR", default_value = "http://127.0.0.1:7400")]
    pub coordinator: String,
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
    /// Which nodes hold a key, from the location log.
    Whereis { key: String },
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
    Create { name: String },
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
    /// Stop placing new content on a node; it still serves what it has.
    Drain {
        /// Node name or UUID.
        node: String,
    },
    /// Place new content on a drained node again.
    Undrain {
        /// Node name or UUID.
        node: String,
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

fn status(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", e.message())
}

fn reserve(c: &rpc::ClusterInfo) -> String {
    if c.reserve_default { format!("{} (default)", c.reserve_bytes) } else { c.reserve_bytes.to_string() }
}

async fn find_cluster(
    c: &mut AdminClient<tonic::transport::Channel>,
    cluster: &str,
) -> anyhow::Result<rpc::ClusterInfo> {
    c.list_clusters(rpc::ListClustersRequest {})
        .await
        .map_err(status)?
        .into_inner()
        .clusters
        .into_iter()
        .find(|c| c.name == cluster || c.uuid == cluster)
        .ok_or_else(|| anyhow::anyhow!("unknown cluster {cluster:?}"))
}

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let mut c = AdminClient::connect(args.coordinator.clone())
        .await
        .with_context(|| format!("cannot reach the coordinator at {}", args.coordinator))?;
    match args.command {
        AdminCommand::Cluster(ClusterCommand::Create { name }) => {
            let c = c.create_cluster(rpc::CreateClusterRequest { name }).await.map_err(status)?.into_inner();
            println!("{}\t{}", c.name, c.uuid);
        }
        AdminCommand::Cluster(ClusterCommand::List) => {
            println!("NAME\tUUID\tMINCOPIES\tRESERVE");
            for c in c.list_clusters(rpc::ListClustersRequest {}).await.map_err(status)?.into_inner().clusters {
                println!("{}\t{}\t{}\t{}", c.name, c.uuid, c.min_copies, reserve(&c));
            }
        }
        AdminCommand::Cluster(ClusterCommand::Mincopies { cluster, n }) => {
            let info = match n {
                Some(min_copies) => {
                    let req = rpc::SetClusterMinCopiesRequest { cluster, min_copies };
                    c.set_cluster_min_copies(req).await.map_err(status)?.into_inner()
                }
                None => find_cluster(&mut c, &cluster).await?,
            };
            println!("{}", info.min_copies);
        }
        AdminCommand::Cluster(ClusterCommand::Reserve { cluster, size }) => {
            let info = match size {
                Some(reserve) => {
                    let req = rpc::SetClusterReserveRequest { cluster, reserve };
                    c.set_cluster_reserve(req).await.map_err(status)?.into_inner()
                }
                None => find_cluster(&mut c, &cluster).await?,
            };
            println!("{}", reserve(&info));
        }
        AdminCommand::Node(NodeCommand::List { cluster }) => {
            let req = rpc::ListNodesRequest { cluster: cluster.unwrap_or_default() };
            println!("NAME\tUUID\tHEALTH\tADDRESS\tFREE\tTRANSFERS\tSTATE\tWANTED\tCOST");
            for n in c.list_nodes(req).await.map_err(status)?.into_inner().nodes {
                let health = if n.healthy { "up" } else { "down" };
                let state = if n.draining { "draining" } else { "active" };
                let wanted = if n.wanted.is_empty() { "-" } else { n.wanted.as_str() };
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    n.name, n.uuid, health, n.address, n.free_bytes, n.active_transfers, state, wanted, n.cost
                );
            }
        }
        AdminCommand::Node(NodeCommand::Drain { node }) => {
            let n = c.set_draining(rpc::SetDrainingRequest { node, draining: true }).await.map_err(status)?.into_inner();
            println!("{} is draining: it gets no new content and still serves what it has", n.name);
        }
        AdminCommand::Node(NodeCommand::Undrain { node }) => {
            let n = c.set_draining(rpc::SetDrainingRequest { node, draining: false }).await.map_err(status)?.into_inner();
            println!("{} takes new content again", n.name);
        }
        AdminCommand::Node(NodeCommand::Cost { node, n }) => {
            let info = match n {
                Some(cost) => c.set_node_cost(rpc::SetNodeCostRequest { node, cost }).await.map_err(status)?.into_inner(),
                None => c
                    .list_nodes(rpc::ListNodesRequest::default())
                    .await
                    .map_err(status)?
                    .into_inner()
                    .nodes
                    .into_iter()
                    .find(|n| n.name == node || n.uuid == node)
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
                eprintln!("{} has no preferred content expression: it wants everything", r.node_name);
            } else {
                println!("{}", r.expression);
            }
        }
        AdminCommand::Whereis { key } => {
            let entries = c.whereis(rpc::WhereisRequest { key: key.clone() }).await.map_err(status)?.into_inner().entries;
            let present: Vec<_> = entries.iter().filter(|e| e.present).collect();
            println!("{key}: {} cop{}", present.len(), if present.len() == 1 { "y" } else { "ies" });
            for e in present {
                println!("\t{} -- {}", e.node_uuid, e.node_name);
            }
        }
    }
    Ok(())
}
