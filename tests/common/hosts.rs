//! A mesh across namespaced hosts: the coordinator on host 0, the gateway
//! on host 1, agents node1.. on hosts 2.., each a real process listening on
//! its host's address, joined with mTLS and join tokens as `Mesh::separate`
//! does.

use std::time::Duration;

use super::netns::{Host, Net, net_or_skip};
use super::{Mesh, Site};

pub struct HostMesh {
    // Declared first so it drops first: the processes are stopped by PID
    // before their namespaces are deleted.
    pub mesh: Mesh,
    /// The suite's PostgreSQL for this mesh, when it runs on one: on the
    /// bridge's address, which every host reaches.
    pub pg: Option<super::pg::PgServer>,
    pub net: Net,
}

impl HostMesh {
    /// The mesh with `agents` agents, or None (reason printed) where network
    /// namespaces cannot be made.
    pub fn start(agents: usize) -> Option<HostMesh> {
        let net = net_or_skip(agents + 2)?;
        let site = |h: &Host| Site { netns: h.netns().to_string(), addr: h.addr().into() };
        let mut sites = std::collections::HashMap::new();
        sites.insert("coordinator".to_string(), site(net.host(0)));
        sites.insert("gateway".to_string(), site(net.host(1)));
        for i in 1..=agents {
            sites.insert(format!("node{i}"), site(net.host(i + 1)));
        }
        let pg = super::on_postgres()
            .then(|| super::pg::PgServer::start_on(&net.bridge_addr().to_string(), None));
        let store = pg.as_ref().map(|pg| pg.create_database());
        let mesh = Mesh::separate_on_store(agents, &[], false, sites, store);
        Some(HostMesh { mesh, pg, net })
    }

    /// The host of agent `node` (node1, node2, ...).
    pub fn agent_host(&self, node: &str) -> &Host {
        let i: usize = node.strip_prefix("node").and_then(|n| n.parse().ok()).expect("nodeN");
        self.net.host(i + 1)
    }
}

impl std::ops::Deref for HostMesh {
    type Target = Mesh;
    fn deref(&self) -> &Mesh {
        &self.mesh
    }
}

/// The mesh with no single point of failure, across namespaced hosts:
/// PostgreSQL on host 0, coordinators on hosts 1 and 2 (sharing it and one
/// mesh CA), gateway A on host 3, gateway B on host 4, agents node1.. on
/// hosts 5... Every member is given both coordinators.
pub struct HaMesh {
    // Dropped in this order: the mesh's processes, then PostgreSQL, then
    // the namespaces.
    pub mesh: Mesh,
    pub pg: super::pg::PgServer,
    pub net: Net,
    /// The coordinators' URLs, in the order members are given them.
    pub coordinators: [String; 2],
    /// Gateway B's P2P over HTTP URL (gateway A's is `mesh.url()`).
    pub gateway_b: String,
}

impl HaMesh {
    pub const AGENT_HOST0: usize = 5;

    /// Or None (reason printed) where network namespaces cannot be made.
    pub fn start(agents: usize) -> Option<HaMesh> {
        let net = net_or_skip(agents + Self::AGENT_HOST0)?;
        let pg = super::pg::PgServer::start_on(
            &net.host(0).addr().to_string(),
            Some(net.host(0).netns()),
        );
        let store = pg.create_database();
        let site = |h: &Host| Site { netns: h.netns().to_string(), addr: h.addr().into() };
        let mut sites = std::collections::HashMap::new();
        sites.insert("coordinator".to_string(), site(net.host(1)));
        sites.insert("coordinator2".to_string(), site(net.host(2)));
        sites.insert("gateway".to_string(), site(net.host(3)));
        sites.insert("gateway2".to_string(), site(net.host(4)));
        for i in 1..=agents {
            sites.insert(format!("node{i}"), site(net.host(i + Self::AGENT_HOST0 - 1)));
        }
        let dir = tempfile::tempdir().unwrap();
        let url = |h: usize| format!("https://{}:{}", net.host(h).addr(), super::free_port());
        let coordinators = [url(1), url(2)];
        let mut mesh = Mesh {
            http: std::net::SocketAddr::new(net.host(3).addr().into(), super::free_port()),
            p2p: std::net::SocketAddr::new(net.host(3).addr().into(), super::free_port()),
            coordinator: coordinators[0].clone(),
            procs: Vec::new(),
            credentials: dir.path().join("coordinator"),
            dir,
            insecure: false,
            sites,
            store: Some(store),
        };
        // The first coordinator makes the mesh CA; the second is given it.
        let cmd = mesh.coordinator_command_at(&coordinators[0], "coordinator");
        mesh.spawn("coordinator", cmd);
        super::wait_until("the first coordinator", Duration::from_secs(30), || {
            mesh.admin(&["cluster", "create", "mesh"]).status.success()
        });
        let second = mesh.dir.path().join("coordinator2");
        std::fs::create_dir_all(&second).unwrap();
        for f in ["ca.pem", "ca-key.pem"] {
            std::fs::copy(mesh.credentials.join(f), second.join(f)).unwrap();
        }
        let cmd = mesh.coordinator_command_at(&coordinators[1], "coordinator2");
        mesh.spawn("coordinator2", cmd);
        mesh.coordinator = coordinators.join(",");
        super::wait_until("both coordinators", Duration::from_secs(30), || {
            mesh.admin(&["status"]).status.success()
        });
        for i in 1..=agents {
            mesh.start_agent(&format!("node{i}"));
        }
        mesh.start_gateway();
        let b = std::net::SocketAddr::new(net.host(4).addr().into(), super::free_port());
        let gateway_b = mesh.start_gateway_named("gateway2", b);
        mesh.wait_ready(agents);
        Some(HaMesh { mesh, pg, net, coordinators, gateway_b })
    }

    /// The host of agent `node` (node1, node2, ...).
    pub fn agent_host(&self, node: &str) -> &Host {
        let i: usize = node.strip_prefix("node").and_then(|n| n.parse().ok()).expect("nodeN");
        self.net.host(i + Self::AGENT_HOST0 - 1)
    }

    /// Starts coordinator `name` (coordinator, coordinator2) again after it
    /// stopped, on its address, and waits until it answers.
    pub fn restart_coordinator(&mut self, name: &str) {
        let i = usize::from(name == "coordinator2");
        if let Some(p) = self.mesh.procs.iter().position(|p| p.name == name) {
            self.mesh.procs.remove(p).kill();
        }
        let url = self.coordinators[i].clone();
        let cmd = self.mesh.coordinator_command_at(&url, name);
        self.mesh.spawn(name, cmd);
        let addr: std::net::SocketAddr = url.split_once("://").unwrap().1.parse().unwrap();
        super::wait_until("the restarted coordinator", Duration::from_secs(30), || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
        });
    }
}

impl std::ops::Deref for HaMesh {
    type Target = Mesh;
    fn deref(&self) -> &Mesh {
        &self.mesh
    }
}

impl std::ops::DerefMut for HaMesh {
    fn deref_mut(&mut self) -> &mut Mesh {
        &mut self.mesh
    }
}
