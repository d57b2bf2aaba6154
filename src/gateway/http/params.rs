//! Query parameters and values of P2P over HTTP requests. Pure: no I/O.

use base64::Engine;

use super::{Failure, bad};
use crate::p2p::key::Key;

/// Decodes one part of a query string (`+` is a space, `%XX` a byte);
/// None when the result is not UTF-8. A malformed `%` escape stays as it
/// is, as form_urlencoded leaves it.
fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1).and_then(|&c| hex(c)), b.get(i + 2).and_then(|&c| hex(c))) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Values may be wrapped as `[base64url]` (for keys, UUIDs and file names
/// that are not UTF-8 or would be ambiguous).
pub(super) fn unwrap_b64(v: &str) -> std::result::Result<String, Failure> {
    match v.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        None => Ok(v.to_string()),
        Some(inner) => {
            let bytes = base64::engine::general_purpose::URL_SAFE
                .decode(inner)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(inner))
                .map_err(|e| bad(format!("bad base64url value {v:?}: {e}")))?;
            String::from_utf8(bytes).map_err(|_| bad(format!("value {v:?} is not UTF-8")))
        }
    }
}

pub(super) fn parse_key(v: &str) -> std::result::Result<Key, Failure> {
    let s = unwrap_b64(v)?;
    s.parse::<Key>().map_err(|e| bad(format!("bad key {s:?}: {e}")))
}

/// The query parameters of one request.
pub(super) struct Params(Vec<(String, String)>);

impl Params {
    /// Parses a query string. Names and values must be UTF-8 once
    /// percent-decoded: a lossy decoding would make distinct keys collide
    /// (git-annex sends anything else wrapped as `[base64url]`).
    pub(super) fn parse(q: Option<String>) -> std::result::Result<Params, Failure> {
        let q = q.unwrap_or_default();
        let mut out = Vec::new();
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match (decode(name), decode(value)) {
                (Some(n), Some(v)) => out.push((n, v)),
                _ => {
                    return Err(bad(format!(
                        "query parameter {pair:?} is not UTF-8 once decoded (git-annex sends \
                         such values as [base64url]); refused rather than stored under a \
                         mangled name"
                    )));
                }
            }
        }
        Ok(Params(out))
    }

    pub(super) fn one(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub(super) fn required(&self, name: &str) -> std::result::Result<&str, Failure> {
        self.one(name).ok_or_else(|| bad(format!("missing parameter {name}")))
    }

    pub(super) fn key(&self) -> std::result::Result<Key, Failure> {
        parse_key(self.required("key")?)
    }

    pub(super) fn number(&self, name: &str) -> std::result::Result<Option<u64>, Failure> {
        self.one(name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| bad(format!("parameter {name} is not a number: {v:?}")))
            })
            .transpose()
    }

    pub(super) fn file(&self) -> std::result::Result<Option<String>, Failure> {
        self.one("associatedfile").map(unwrap_b64).transpose()
    }

    /// BYPASS (v2+): UUIDs the request must not go through.
    pub(super) fn bypass(
        &self,
    ) -> std::result::Result<std::collections::BTreeSet<String>, Failure> {
        let mut set = std::collections::BTreeSet::new();
        for (_, v) in self.0.iter().filter(|(k, _)| k == "bypass") {
            let u = unwrap_b64(v)?;
            if u.is_empty() || u.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(bad(format!("bad bypass UUID {u:?}")));
            }
            set.insert(u);
        }
        Ok(set)
    }

    /// clientuuid is required on every versioned request but the key download.
    pub(super) fn client_uuid(&self) -> std::result::Result<String, Failure> {
        let u = unwrap_b64(self.required("clientuuid")?)?;
        if u.is_empty() || u.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(bad(format!("bad clientuuid {u:?}")));
        }
        Ok(u)
    }
}

pub(super) fn parse_version(v: &str) -> Option<u32> {
    match v {
        "v0" => Some(0),
        "v1" => Some(1),
        "v2" => Some(2),
        "v3" => Some(3),
        "v4" => Some(4),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_decode_strictly() {
        let p = Params::parse(Some("key=a%2Bb+c&x&clientuuid=%5Bab%5D".into())).unwrap();
        assert_eq!(p.one("key"), Some("a+b c"));
        assert_eq!(p.one("x"), Some(""));
        assert_eq!(p.one("clientuuid"), Some("[ab]"));
        // A bad escape stays as written.
        assert_eq!(Params::parse(Some("k=100%".into())).unwrap().one("k"), Some("100%"));
        assert_eq!(Params::parse(Some("k=%zz".into())).unwrap().one("k"), Some("%zz"));
        // Multi-byte UTF-8 passes; invalid UTF-8 is refused, not mangled.
        assert_eq!(Params::parse(Some("k=%C3%A9".into())).unwrap().one("k"), Some("é"));
        for bad in ["key=SHA256E-s1--%FF%FE%C3%28", "%FF=1", "k=%C3"] {
            match Params::parse(Some(bad.into())) {
                Err(Failure::Status(s, m)) => {
                    assert_eq!(s, axum::http::StatusCode::BAD_REQUEST);
                    assert!(m.contains("not UTF-8"), "{m}");
                }
                _ => panic!("{bad} accepted"),
            }
        }
    }
}
