//! `annexmesh admin token ...` and `admin join-token create`.

use serde_json::{Value, json};

use super::cli::{JoinTokenCommand, TokenCommand};
use super::connect::Client;
use super::output::{Out, Table};
use super::{status, utc_time};
use crate::auth::{self, Mode};
use crate::rpc;

/// A token (never the token itself) for --json.
pub(super) fn token_json(t: &rpc::TokenInfo) -> Value {
    json!({
        "id": t.id,
        "mode": t.mode,
        "label": t.label,
        "user": t.user,
        "created_unix_ms": t.created_unix_ms,
        "created": utc_time(t.created_unix_ms),
    })
}

pub(super) async fn run(c: &mut Client, out: Out, cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create { readonly, appendonly, label } => {
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
            let mut v = token_json(&info);
            v["token"] = json!(token);
            // Without --json stdout carries only the token, for scripts.
            out.either(v, || token.clone());
            eprintln!(
                "created {} token {}; it cannot be shown again (the coordinator keeps only its hash), so store it now",
                info.mode, info.id
            );
        }
        TokenCommand::List => {
            let tokens =
                c.list_tokens(rpc::ListTokensRequest {}).await.map_err(status)?.into_inner().tokens;
            let v: Vec<Value> = tokens.iter().map(token_json).collect();
            out.either(json!(v), || {
                let mut t = Table::new(&["ID", "MODE", "CREATED", "USER", "LABEL"]);
                for k in &tokens {
                    let dash = |s: &str| if s.is_empty() { "-".to_string() } else { s.to_string() };
                    t.row(vec![
                        k.id.clone(),
                        k.mode.clone(),
                        utc_time(k.created_unix_ms),
                        dash(&k.user),
                        dash(&k.label),
                    ]);
                }
                t.render()
            });
        }
        TokenCommand::Revoke { id } => {
            let t =
                c.revoke_token(rpc::RevokeTokenRequest { id }).await.map_err(status)?.into_inner();
            out.either(token_json(&t), || format!("revoked {} token {}", t.mode, t.id));
        }
    }
    Ok(())
}

pub(super) async fn join(c: &mut Client, out: Out, cmd: JoinTokenCommand) -> anyhow::Result<()> {
    let JoinTokenCommand::Create { role, ttl, uses } = cmd;
    let req = rpc::CreateJoinTokenRequest { role: role.clone(), ttl_seconds: ttl.as_secs(), uses };
    let t = c.create_join_token(req).await.map_err(status)?.into_inner();
    let v = json!({
        "token": t.token,
        "role": role,
        "uses": uses,
        "expires_unix_ms": t.expires_unix_ms,
        "expires": utc_time(t.expires_unix_ms),
    });
    out.either(v, || t.token.clone());
    eprintln!("valid until {}", utc_time(t.expires_unix_ms));
    Ok(())
}
