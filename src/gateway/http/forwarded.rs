//! The URL clients reach the gateway at, for `/NAME/config`: the request's
//! Host and the listener's scheme, or what a trusted TLS-terminating proxy
//! says in `Forwarded` / `X-Forwarded-Proto` / `X-Forwarded-Host`. Pure: no
//! I/O.

use std::net::IpAddr;
use std::str::FromStr;

use axum::http::{HeaderMap, header};

/// A proxy address or network (`10.0.0.1`, `10.0.0.0/8`, `::1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proxy {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for Proxy {
    type Err = String;
    fn from_str(s: &str) -> Result<Proxy, String> {
        let s = s.trim();
        let (ip, prefix) = s.split_once('/').map_or((s, None), |(a, p)| (a, Some(p)));
        let addr: IpAddr =
            ip.parse().map_err(|_| format!("bad proxy address {s:?}: give an IP or IP/prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("bad prefix length in {s:?}: 0 to {max}"))?,
        };
        Ok(Proxy { addr, prefix })
    }
}

impl Proxy {
    /// Whether `ip` is this address or inside this network. IPv4-mapped
    /// IPv6 peers count as their IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

/// A host[:port] fit to put in a URL: visible ASCII only, no '/', '@'.
fn clean_host(h: &str) -> Option<&str> {
    let h = h.trim().trim_matches('"');
    let ok = !h.is_empty()
        && h.len() <= 255
        && h.chars().all(|c| c.is_ascii_graphic() && !matches!(c, '/' | '@' | '\\' | '?' | '#'));
    ok.then_some(h)
}

/// The first `proto=` and `host=` of a `Forwarded` header (RFC 7239): the
/// ones the proxy nearest the client added.
fn forwarded(headers: &HeaderMap) -> (Option<String>, Option<String>) {
    let (mut proto, mut host) = (None, None);
    let Some(v) = headers.get(header::FORWARDED).and_then(|v| v.to_str().ok()) else {
        return (None, None);
    };
    let first = v.split(',').next().unwrap_or("");
    for part in first.split(';') {
        if let Some((k, val)) = part.trim().split_once('=') {
            let val = val.trim().trim_matches('"').to_string();
            match k.trim().to_ascii_lowercase().as_str() {
                "proto" => proto = Some(val),
                "host" => host = Some(val),
                _ => {}
            }
        }
    }
    (proto, host)
}

fn first_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let v = headers.get(name)?.to_str().ok()?;
    Some(v.split(',').next()?.trim().to_string())
}

/// The scheme ("http" or "https") and host:port clients use. Proxy headers
/// count only when `trusted` (the peer is a configured proxy). A host
/// without a port gets the scheme's default, since `annex+http(s)` URLs
/// otherwise mean port 9417. None when no usable host is known.
pub fn origin(headers: &HeaderMap, tls: bool, trusted: bool) -> Option<(&'static str, String)> {
    let mut scheme = if tls { "https" } else { "http" };
    let mut host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string);
    if trusted {
        let (fproto, fhost) = forwarded(headers);
        let proto = fproto.or_else(|| first_value(headers, "x-forwarded-proto"));
        match proto.map(|p| p.to_ascii_lowercase()).as_deref() {
            Some("https") => scheme = "https",
            Some("http") => scheme = "http",
            _ => {}
        }
        if let Some(h) = fhost.or_else(|| first_value(headers, "x-forwarded-host")) {
            host = Some(h);
        }
    }
    let host = clean_host(host.as_deref()?)?.to_string();
    // "[::1]" or "name" without a port; "[::1]:80" or "name:80" with.
    let has_port = match host.rfind(']') {
        Some(end) => host[end..].contains(':'),
        None => host.contains(':'),
    };
    let host = if has_port {
        host
    } else {
        format!("{host}:{}", if scheme == "https" { 443 } else { 80 })
    };
    Some((scheme, host))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn proxies_match_addresses_and_networks() {
        let one: Proxy = "10.0.0.1".parse().unwrap();
        assert!(one.contains("10.0.0.1".parse().unwrap()));
        assert!(!one.contains("10.0.0.2".parse().unwrap()));
        assert!(one.contains("::ffff:10.0.0.1".parse().unwrap()));
        let net: Proxy = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        let all: Proxy = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.168.1.1".parse().unwrap()));
        let v6: Proxy = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!("10.0.0.1/33".parse::<Proxy>().is_err());
        assert!("proxy.example".parse::<Proxy>().is_err());
    }

    #[test]
    fn the_origin_comes_from_host_and_trusted_proxy_headers() {
        let h = headers(&[("host", "gw:9417")]);
        assert_eq!(origin(&h, false, false), Some(("http", "gw:9417".into())));
        assert_eq!(origin(&h, true, false), Some(("https", "gw:9417".into())));
        let h = headers(&[
            ("host", "10.0.0.5:9417"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "annex.example.org"),
        ]);
        assert_eq!(origin(&h, false, false), Some(("http", "10.0.0.5:9417".into())));
        assert_eq!(origin(&h, false, true), Some(("https", "annex.example.org:443".into())));
        let h = headers(&[
            ("host", "10.0.0.5:9417"),
            ("forwarded", "for=1.2.3.4;proto=https;host=\"a.example:8443\", proto=http"),
            ("x-forwarded-proto", "http"),
        ]);
        assert_eq!(origin(&h, false, true), Some(("https", "a.example:8443".into())));
        let h = headers(&[("host", "[::1]")]);
        assert_eq!(origin(&h, false, false), Some(("http", "[::1]:80".into())));
        assert_eq!(origin(&headers(&[("host", "a/b")]), false, false), None);
        assert_eq!(origin(&HeaderMap::new(), false, false), None);
    }
}
