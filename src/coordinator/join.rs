//! Letting members in: the mesh CA and the coordinator's own certificate,
//! join tokens (created by operators, used by joining agents and
//! gateways) and the admin token `annexmesh admin` presents.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tonic::Status;
use tracing::{info, warn};

use super::core::Core;
use super::store::{JoinCheck, JoinTokenRecord, Store, StoreError};

/// How often the guard's copy of the admin tokens is read again.
const ADMIN_REFRESH: Duration = Duration::from_secs(2);
use super::validate::valid_uuid;
use crate::pki::{self, Ca, Credentials, Identity, JoinToken, Role};
use crate::rpc;

/// The file in the data directory that holds the first admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// The mesh CA's certificate and key in the data directory.
pub const CA_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";

/// Longest life of a join token.
const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The CA (the operator's, or the one kept in `data`, created on first
/// start) and this coordinator's credentials, issued afresh.
pub fn coordinator_tls(
    data: &Path,
    ca_cert: Option<&Path>,
    ca_key: Option<&Path>,
) -> anyhow::Result<(Arc<Ca>, Credentials)> {
    let ca = match (ca_cert, ca_key) {
        (Some(c), Some(k)) => Ca::load(c, k)?,
        _ => {
            std::fs::create_dir_all(data)?;
            Ca::load_or_create(&data.join(CA_FILE), &data.join(CA_KEY_FILE))?
        }
    };
    let own = ca.issue_new(&Identity::Coordinator)?;
    Ok((Arc::new(ca), own))
}

/// Creates an admin token on the first start (no admin token stored yet),
/// writes it to `data/admin-token` (owner only) and says where it is.
pub async fn bootstrap_admin(store: &Store, data: &Path) -> anyhow::Result<PathBuf> {
    let path = data.join(ADMIN_TOKEN_FILE);
    if store.admin_token_count().await? == 0 {
        let token = format!("amadmin1.{}", hex::encode(rand::random::<[u8; 24]>()));
        pki::write_private(&path, &format!("{token}\n"))?;
        store.add_admin_token(crate::auth::hash_token(&token), crate::clock::unix_ms()).await?;
        info!(file = %path.display(), "created the admin token");
    }
    Ok(path)
}

/// Whether `token` is an admin token.
///
/// The guard checks synchronously, so the check reads a copy of the admin
/// tokens' hashes that a task refreshes every `ADMIN_REFRESH` (another
/// coordinator on a shared store may add one).
pub async fn admin_check(
    store: Arc<Store>,
    tasks: &crate::tasks::Tasks,
) -> Result<pki::guard::AdminCheck, StoreError> {
    let known = Arc::new(std::sync::RwLock::new(store.admin_token_hashes().await?));
    let copy = known.clone();
    tasks.spawn(async move {
        loop {
            tokio::time::sleep(ADMIN_REFRESH).await;
            match store.admin_token_hashes().await {
                Ok(h) => *copy.write().unwrap() = h,
                Err(e) => warn!("cannot read the admin tokens: {e}"),
            }
        }
    });
    Ok(Arc::new(move |token| known.read().unwrap().contains(&crate::auth::hash_token(token))))
}

/// `admin join-token create`.
pub async fn create_token(
    core: &Core,
    req: rpc::CreateJoinTokenRequest,
) -> Result<rpc::JoinTokenInfo, Status> {
    let ca = core.ca().ok_or_else(|| {
        Status::failed_precondition("this coordinator serves plaintext (--insecure): no joining")
    })?;
    let role: Role = req.role.parse().map_err(Status::invalid_argument)?;
    if !matches!(role, Role::Agent | Role::Gateway) {
        return Err(Status::invalid_argument("join tokens are for agents and gateways"));
    }
    let ttl = Duration::from_secs(req.ttl_seconds);
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(Status::invalid_argument("a join token lives between 1 s and 7 days"));
    }
    let uses = req.uses.max(1);
    let token = JoinToken::generate(ca.sha256());
    let expires_unix_ms = crate::clock::unix_ms() + ttl.as_millis() as u64;
    let record =
        JoinTokenRecord { role: role.as_str().to_string(), expires_unix_ms, uses_left: uses };
    core.store.create_join_token(token.secret_sha256(), record).await?;
    info!(role = role.as_str(), uses, ?ttl, "join token created");
    Ok(rpc::JoinTokenInfo { token: token.to_string(), expires_unix_ms })
}

/// The `Join` RPC: a certificate for a new member with a valid token.
pub async fn join(core: &Core, req: rpc::JoinRequest) -> Result<rpc::JoinReply, Status> {
    let ca = core.ca().ok_or_else(|| {
        Status::failed_precondition("this coordinator serves plaintext: no joining")
    })?;
    let token = JoinToken::parse(&req.token)
        .map_err(|e| Status::unauthenticated(format!("bad join token: {e}")))?;
    let role: Role = req.role.parse().map_err(Status::invalid_argument)?;
    let identity = match role {
        Role::Agent => {
            valid_uuid(&req.node_uuid)?;
            Identity::Agent(req.node_uuid.clone())
        }
        Role::Gateway => Identity::Gateway(uuid::Uuid::new_v4().to_string()),
        _ => return Err(Status::invalid_argument("only agents and gateways join")),
    };
    // Check the request before a token use is spent on it.
    ca.issue_csr(&identity, &req.csr_pem).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let node = matches!(role, Role::Agent).then(|| req.node_uuid.clone());
    let check = core
        .store
        .use_join_token(token.secret_sha256(), req.role.clone(), node, crate::clock::unix_ms())
        .await?;
    let refuse = |why: String| {
        warn!(role = %req.role, node = %req.node_uuid, "refused a join: {why}");
        Err(Status::permission_denied(why))
    };
    match check {
        JoinCheck::Admitted => {}
        JoinCheck::Unknown => return refuse("unknown join token".into()),
        JoinCheck::Expired => return refuse("the join token has expired".into()),
        JoinCheck::UsedUp => return refuse("the join token is used up".into()),
        JoinCheck::WrongRole(r) => return refuse(format!("the join token is for a {r}")),
        JoinCheck::NodeTaken => {
            return refuse(format!(
                "node {} has joined before: its identity is taken; an agent with a new, \
                 empty store gets a new one",
                req.node_uuid
            ));
        }
    }
    let cert_pem = ca
        .issue_csr(&identity, &req.csr_pem)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    info!(member = %identity, "member joined");
    Ok(rpc::JoinReply { cert_pem, ca_pem: ca.cert_pem().to_string() })
}

/// The `Renew` RPC: a new certificate for the caller's own identity. A
/// removed node gets none.
pub async fn renew(
    core: &Core,
    caller: Option<Identity>,
    req: rpc::RenewRequest,
) -> Result<rpc::JoinReply, Status> {
    let ca = core
        .ca()
        .ok_or_else(|| Status::failed_precondition("this coordinator serves plaintext"))?;
    let id = caller.ok_or_else(|| Status::permission_denied("renewal needs a mesh certificate"))?;
    if let Identity::Agent(uuid) = &id
        && core.store.removed_nodes().await?.iter().any(|r| &r.node.uuid == uuid)
    {
        return Err(Status::permission_denied(format!("node {uuid} was removed from the mesh")));
    }
    let cert_pem =
        ca.issue_csr(&id, &req.csr_pem).map_err(|e| Status::invalid_argument(e.to_string()))?;
    info!(member = %id, "certificate renewed");
    Ok(rpc::JoinReply { cert_pem, ca_pem: ca.cert_pem().to_string() })
}
