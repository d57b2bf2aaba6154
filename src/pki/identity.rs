//! Who a mesh certificate names: its role and, for agents, the node's UUID.
//! Certificates carry it twice: a DNS name that clients check the server
//! against (`coordinator.annexmesh`, `UUID.agent.annexmesh`,
//! `gateway.annexmesh`) and a URI `annexmesh:role:ROLE[:ID]` that servers
//! read the caller's role from.

use std::fmt;

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The DNS name of the coordinator's certificate.
pub const COORDINATOR_NAME: &str = "coordinator.annexmesh";
/// The DNS name of every gateway's certificate.
pub const GATEWAY_NAME: &str = "gateway.annexmesh";
const URI_PREFIX: &str = "annexmesh:role:";

/// A mesh member as its certificate names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Coordinator,
    /// An agent, by node UUID.
    Agent(String),
    /// A gateway, by an id the coordinator gave it when it joined.
    Gateway(String),
    /// An operator with the admin role.
    Admin(String),
}

/// A role without its id, for authorisation tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Coordinator,
    Agent,
    Gateway,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Agent => "agent",
            Role::Gateway => "gateway",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        Ok(match s {
            "coordinator" => Role::Coordinator,
            "agent" => Role::Agent,
            "gateway" => Role::Gateway,
            "admin" => Role::Admin,
            _ => return Err(format!("unknown role {s:?}: agent, gateway or admin")),
        })
    }
}

impl Identity {
    pub fn role(&self) -> Role {
        match self {
            Identity::Coordinator => Role::Coordinator,
            Identity::Agent(_) => Role::Agent,
            Identity::Gateway(_) => Role::Gateway,
            Identity::Admin(_) => Role::Admin,
        }
    }

    /// The DNS name in this member's certificate, which clients expect.
    pub fn dns_name(&self) -> String {
        match self {
            Identity::Coordinator => COORDINATOR_NAME.to_string(),
            Identity::Agent(uuid) => agent_name(uuid),
            Identity::Gateway(_) => GATEWAY_NAME.to_string(),
            Identity::Admin(id) => format!("{id}.admin.annexmesh"),
        }
    }

    /// The role URI in this member's certificate.
    pub fn uri(&self) -> String {
        match self {
            Identity::Coordinator => format!("{URI_PREFIX}coordinator"),
            Identity::Agent(id) => format!("{URI_PREFIX}agent:{id}"),
            Identity::Gateway(id) => format!("{URI_PREFIX}gateway:{id}"),
            Identity::Admin(id) => format!("{URI_PREFIX}admin:{id}"),
        }
    }

    fn from_uri(uri: &str) -> Option<Identity> {
        let rest = uri.strip_prefix(URI_PREFIX)?;
        let (role, id) = rest.split_once(':').unwrap_or((rest, ""));
        let id = id.to_string();
        Some(match (role, id.is_empty()) {
            ("coordinator", true) => Identity::Coordinator,
            ("agent", false) => Identity::Agent(id),
            ("gateway", false) => Identity::Gateway(id),
            ("admin", false) => Identity::Admin(id),
            _ => return None,
        })
    }

    /// The identity a (verified) certificate names: its one role URI.
    pub fn from_certificate(der: &[u8]) -> Option<Identity> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let san = cert.subject_alternative_name().ok()??;
        let mut found = san.value.general_names.iter().filter_map(|n| match n {
            GeneralName::URI(u) => Identity::from_uri(u),
            _ => None,
        });
        let first = found.next()?;
        // Two role claims in one certificate are one too many.
        found.next().is_none().then_some(first)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Coordinator => write!(f, "the coordinator"),
            Identity::Agent(u) => write!(f, "agent {u}"),
            Identity::Gateway(u) => write!(f, "gateway {u}"),
            Identity::Admin(u) => write!(f, "admin {u}"),
        }
    }
}

/// The DNS name of node `uuid`'s agent certificate.
pub fn agent_name(uuid: &str) -> String {
    format!("{uuid}.agent.annexmesh")
}
