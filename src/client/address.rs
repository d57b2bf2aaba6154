//! Gateway addresses as clients write them: `[tls:]HOST:PORT[/NAME]`.

use std::fmt;
use std::str::FromStr;

/// Where a gateway listens: `HOST:PORT`, `[IPV6]:PORT`, optionally with the
/// repository (cluster or node name) to ask for: `HOST:PORT/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayAddress {
    /// `tls:` before the address: the listener speaks TLS.
    pub tls: bool,
    /// Without brackets, ready for name resolution.
    pub host: String,
    pub port: u16,
    pub repo: Option<String>,
}

impl FromStr for GatewayAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<GatewayAddress, String> {
        let bad = |why: &str| {
            format!(
                "bad gateway address {s:?}: {why} (expected [tls:]HOST:PORT or [tls:]HOST:PORT/NAME)"
            )
        };
        let (tls, s) = match s.strip_prefix("tls:") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (hostport, repo) = match s.split_once('/') {
            Some((hp, name)) => {
                let name = valid_repo_name(name).map_err(|e| bad(&e))?;
                (hp, Some(name.to_owned()))
            }
            None => (s, None),
        };
        let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            let port = after.strip_prefix(':').ok_or_else(|| bad("missing port"))?;
            (host, port)
        } else {
            let (host, port) = hostport.rsplit_once(':').ok_or_else(|| bad("missing port"))?;
            if host.contains(':') {
                return Err(bad("an IPv6 address must be in brackets"));
            }
            (host, port)
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("bad host"));
        }
        let port = match port.parse::<u16>() {
            Ok(p) if p != 0 && port.bytes().all(|b| b.is_ascii_digit()) => p,
            _ => return Err(bad("bad port")),
        };
        Ok(GatewayAddress { tls, host: host.to_owned(), port, repo })
    }
}

impl fmt::Display for GatewayAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tls {
            f.write_str("tls:")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "{}:{}", self.host, self.port)?;
        }
        if let Some(r) = &self.repo {
            write!(f, "/{r}")?;
        }
        Ok(())
    }
}

/// A repository name as the gateway knows it (see `names::validate`).
pub(super) fn valid_repo_name(name: &str) -> Result<&str, String> {
    crate::names::validate(name).map(|()| name).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let a: GatewayAddress = "gw.example:9418/mesh".parse().unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.repo.as_deref()),
            ("gw.example", 9418, Some("mesh"))
        );
        let a: GatewayAddress = "10.0.0.1:1".parse().unwrap();
        assert_eq!((a.host.as_str(), a.port, a.repo), ("10.0.0.1", 1, None));
        let a: GatewayAddress = "[::1]:9418/node-a".parse().unwrap();
        assert_eq!((a.host.as_str(), a.port, a.repo.as_deref()), ("::1", 9418, Some("node-a")));
        assert_eq!(a.to_string(), "[::1]:9418/node-a");
        let a: GatewayAddress = "[fe80::1]:7".parse().unwrap();
        assert_eq!(a.host, "fe80::1");
        assert!(!a.tls);
        let a: GatewayAddress = "tls:gw.example:9418/mesh".parse().unwrap();
        assert!(a.tls);
        assert_eq!((a.host.as_str(), a.port), ("gw.example", 9418));
        assert_eq!(a.to_string(), "tls:gw.example:9418/mesh");
        for bad in [
            "tls:",
            "tls:host",
            "",
            "host",
            "host:",
            ":9418",
            "host:0",
            "host:65536",
            "host:+1",
            "host:x",
            "::1:9418",
            "[::1]9418",
            "[::1",
            "host:9418/",
            "host:9418/a/b",
            "host:9418/a b",
            "ho st:1",
        ] {
            assert!(bad.parse::<GatewayAddress>().is_err(), "{bad:?} accepted");
        }
    }
}
