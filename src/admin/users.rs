//! `annexmesh admin user`: users of P2P over HTTP (basic auth). A user is an
//! access token with a name: the token is the password, and it also works
//! as a line-protocol AUTH token. The coordinator keeps only its hash.

use clap::Subcommand;

use serde_json::{Value, json};

use super::output::{Out, Table};
use super::tokens::token_json;
use super::{status, utc_time};
use crate::auth::{self, Mode};
use crate::rpc;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user and print its password on stdout, once: it is generated
    /// here and only its hash is sent. Default access: readwrite.
    Add {
        /// The user name clients give (letters, digits, '-', '_', '.').
        name: String,
        /// GET, CHECKPRESENT and locking only.
        #[arg(long, env = "ANNEXMESH_ADMIN_USER_ADD_READONLY", conflicts_with = "appendonly")]
        readonly: bool,
        /// Also PUT, but no REMOVE.
        #[arg(long, env = "ANNEXMESH_ADMIN_USER_ADD_APPENDONLY")]
        appendonly: bool,
    },
    /// Names, access modes, token ids and creation times (never passwords).
    List,
    /// Remove a user: its password stops working at once (gateways may
    /// accept it for up to their cache time, 30 s by default).
    Remove {
        /// The user's name.
        name: String,
    },
}

/// The access a `user add` asks for.
fn mode(readonly: bool, appendonly: bool) -> Mode {
    if readonly {
        Mode::ReadOnly
    } else if appendonly {
        Mode::AppendOnly
    } else {
        Mode::ReadWrite
    }
}

pub(super) async fn run(
    c: &mut super::connect::Client,
    out: Out,
    cmd: UserCommand,
) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add { name, readonly, appendonly } => {
            let password = auth::generate_token();
            let req = rpc::CreateTokenRequest {
                token_sha256: auth::hash_token(&password),
                mode: mode(readonly, appendonly).as_str().to_string(),
                label: String::new(),
                user: name,
            };
            let info = c.create_token(req).await.map_err(status)?.into_inner();
            let mut v = token_json(&info);
            v["password"] = json!(password);
            // Without --json stdout carries only the password, for scripts.
            out.either(v, || password.clone());
            eprintln!(
                "added {} user {} (token {}); the password cannot be shown again, so store it now",
                info.mode, info.user, info.id
            );
        }
        UserCommand::List => {
            let tokens =
                c.list_tokens(rpc::ListTokensRequest {}).await.map_err(status)?.into_inner().tokens;
            let users: Vec<_> = tokens.iter().filter(|t| !t.user.is_empty()).collect();
            let v: Vec<Value> = users.iter().map(|t| token_json(t)).collect();
            out.either(json!(v), || {
                let mut table = Table::new(&["USER", "MODE", "ID", "CREATED"]);
                for t in &users {
                    table.row(vec![
                        t.user.clone(),
                        t.mode.clone(),
                        t.id.clone(),
                        utc_time(t.created_unix_ms),
                    ]);
                }
                table.render()
            });
        }
        UserCommand::Remove { name } => {
            let req = rpc::RemoveUserRequest { user: name };
            let t = c.remove_user(req).await.map_err(status)?.into_inner();
            out.either(token_json(&t), || {
                format!("removed {} user {} (token {})", t.mode, t.user, t.id)
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_access_is_readwrite() {
        assert_eq!(mode(false, false), Mode::ReadWrite);
        assert_eq!(mode(true, false), Mode::ReadOnly);
        assert_eq!(mode(false, true), Mode::AppendOnly);
    }
}
