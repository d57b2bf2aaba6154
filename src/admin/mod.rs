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
    /// Clusters: create and list.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Nodes: list with health.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Which nodes hold a key, from the location log.
    Whereis { key: String },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    Create { name: String },
    List,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    List {
        /// Only the nodes of this cluster.
        #[arg(long)]
        cluster: Option<String>,
    },
}

fn status(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", e.message())
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
            for c in c.list_clusters(rpc::ListClustersRequest {}).await.map_err(status)?.into_inner().clusters {
                println!("{}\t{}", c.name, c.uuid);
            }
        }
        AdminCommand::Node(NodeCommand::List { cluster }) => {
            let req = rpc::ListNodesRequest { cluster: cluster.unwrap_or_default() };
            println!("NAME\tUUID\tHEALTH\tADDRESS\tFREE\tTRANSFERS");
            for n in c.list_nodes(req).await.map_err(status)?.into_inner().nodes {
                let health = if n.healthy { "up" } else { "down" };
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    n.name, n.uuid, health, n.address, n.free_bytes, n.active_transfers
                );
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
