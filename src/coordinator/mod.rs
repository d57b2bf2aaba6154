//! The coordinator role: registry, health, location log, cluster clock and
//! the admin API, shared by every gateway.

pub mod clock;
pub mod placement;
pub mod service;
pub mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::rpc::{self, admin_server::AdminServer, coordinator_server::CoordinatorServer};
use clock::ClusterClock;
use service::CoordinatorService;
use state::State;

#[derive(Debug, Clone, clap::Args)]
pub struct CoordinatorConfig {
    /// Address to serve gRPC (coordinator and admin API) on.
    #[arg(long, env = "ANNEXMESH_COORDINATOR_LISTEN", default_value = "127.0.0.1:7400")]
    pub listen: SocketAddr,
    /// Directory for the coordinator's database.
    #[arg(long, env = "ANNEXMESH_DATA")]
    pub data: PathBuf,
    /// Free space a PUT must leave on a node, for clusters that set none
    /// (`annexmesh admin cluster reserve`): bytes or a size such as 500MB, 2GiB.
    #[arg(long, env = "ANNEXMESH_RESERVE", default_value = "100MB", value_parser = parse_reserve)]
    pub reserve: u64,
}

fn parse_reserve(s: &str) -> Result<u64, String> {
    crate::preferred::parse_size(s)
}

pub struct Coordinator {
    pub state: Arc<State>,
    pub service: Arc<CoordinatorService>,
}

impl Coordinator {
    pub fn open(data: &std::path::Path) -> anyhow::Result<Coordinator> {
        Coordinator::open_with_reserve(data, service::DEFAULT_RESERVE)
    }

    /// `reserve`: the free space a PUT must leave on a node, for clusters
    /// that set none.
    pub fn open_with_reserve(data: &std::path::Path, reserve: u64) -> anyhow::Result<Coordinator> {
        let state = Arc::new(State::open(data).with_context(|| {
            format!("cannot open the coordinator database in {}", data.display())
        })?);
        let clock = Arc::new(ClusterClock::open(&state)?);
        clock.spawn_renewal(state.clone());
        let service = Arc::new(CoordinatorService::new(state.clone(), clock, reserve));
        Ok(Coordinator { state, service })
    }

    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        info!(addr = %listener.local_addr()?, "coordinator serving");
        tonic::transport::Server::builder()
            .add_service(
                CoordinatorServer::new(self.service.clone())
                    .max_decoding_message_size(rpc::MAX_MESSAGE)
                    .max_encoding_message_size(rpc::MAX_MESSAGE),
            )
            .add_service(AdminServer::new(self.service.clone()))
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                shutdown.cancelled_owned(),
            )
            .await
            .context("coordinator gRPC server failed")
    }
}

pub async fn run(cfg: CoordinatorConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let coordinator = Coordinator::open_with_reserve(&cfg.data, cfg.reserve)?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    coordinator.serve(listener, shutdown).await
}
