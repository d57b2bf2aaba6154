//! Checks of request fields shared by the coordinator's gRPC services, with
//! errors that say what a valid value looks like.

use tonic::Status;

use crate::p2p::key::Key;

/// Longest label a token may carry.
pub const MAX_TOKEN_LABEL: usize = 200;

/// Shortest id prefix accepted for revoking, so that a typo is unlikely to
/// match another token.
pub const MIN_TOKEN_ID_PREFIX: usize = 6;

/// A git-annex key.
pub fn valid_key(s: &str) -> Result<Key, Status> {
    s.parse::<Key>().map_err(|e| Status::invalid_argument(format!("bad key {s:?}: {e}")))
}

/// A node UUID, as git-annex repositories have them.
pub fn valid_uuid(s: &str) -> Result<(), Status> {
    uuid::Uuid::parse_str(s)
        .map(|_| ())
        .map_err(|_| Status::invalid_argument(format!("not a UUID: {s:?}")))
}

/// Cluster and node names: see `names::validate`.
pub fn valid_name(s: &str) -> Result<(), Status> {
    crate::names::validate(s).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// A token's hash as `auth::hash_token` writes it.
pub fn valid_token_sha256(s: &str) -> Result<(), Status> {
    if s.len() == 64 && is_lower_hex(s) {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "bad token hash {s:?}: expected a SHA-256 as 64 lowercase hex digits (send the hash, not the token)"
        )))
    }
}

/// Labels are printed in tab-separated listings, so no control characters.
pub fn valid_token_label(s: &str) -> Result<(), Status> {
    if s.chars().count() > MAX_TOKEN_LABEL {
        return Err(Status::invalid_argument(format!(
            "token label too long: at most {MAX_TOKEN_LABEL} characters"
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!(
            "bad token label {s:?}: no control characters (tabs, newlines, ...)"
        )));
    }
    Ok(())
}

/// A token id or a prefix of it, as operators type it; returns it in
/// lowercase without surrounding spaces.
pub fn valid_token_id(s: &str) -> Result<String, Status> {
    let id = s.trim().to_ascii_lowercase();
    if id.len() < MIN_TOKEN_ID_PREFIX || id.len() > 64 || !is_lower_hex(&id) {
        return Err(Status::invalid_argument(format!(
            "bad token id {s:?}: give the id `annexmesh admin token list` shows, or at least its first \
             {MIN_TOKEN_ID_PREFIX} hex digits"
        )));
    }
    Ok(id)
}
