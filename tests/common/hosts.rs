//! A mesh across namespaced hosts: the coordinator on host 0, the gateway
//! on host 1, agents node1.. on hosts 2.., each a real process listening on
//! its host's address, joined with mTLS and join tokens as `Mesh::separate`
//! does.

use super::netns::{Host, Net, net_or_skip};
use super::{Mesh, Site};

pub struct HostMesh {
    // Declared first so it drops first: the processes are stopped by PID
    // before their namespaces are deleted.
    pub mesh: Mesh,
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
        let mesh = Mesh::separate_on(agents, &[], false, sites);
        Some(HostMesh { mesh, net })
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
