//! The endpoints behind a coordinator list: one per URL, or one per address
//! when a URL's host name resolves to several.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

use super::DialError;

/// Makes the endpoint (TLS included) for one URL.
pub type MakeEndpoint = Arc<dyn Fn(&str) -> Result<Endpoint, DialError> + Send + Sync>;

/// How long one name lookup may take before the URL is used as given.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The URLs of a comma-separated list, without blanks.
pub fn split_urls(list: &str) -> Vec<String> {
    list.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_string).collect()
}

/// Where one endpoint of the list is, before it is dialed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The URL as the operator gave it.
    pub url: String,
    /// The URL dialed: `url` with the host replaced by one of its addresses.
    pub dial: String,
    /// The address, when `url` named a host that was resolved.
    pub addr: Option<SocketAddr>,
}

impl Place {
    /// How logs and errors name the endpoint.
    pub fn label(&self) -> String {
        match self.addr {
            Some(a) => format!("{} ({})", self.url, a.ip()),
            None => self.url.clone(),
        }
    }
}

/// The host name and port of `url` when its host is a name rather than an
/// IP address (only names are resolved).
pub fn host_to_resolve(url: &str) -> Option<(String, u16)> {
    let uri: Uri = url.parse().ok()?;
    let host = uri.host()?;
    if host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_ok() {
        return None;
    }
    let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("http") { 80 } else { 443 });
    Some((host.to_string(), port))
}

/// `url` with its authority replaced by `addr`.
pub fn with_addr(url: &str, addr: SocketAddr) -> String {
    let scheme = url.split("://").next().unwrap_or("https");
    let rest = url.split_once("://").map_or("", |(_, r)| r);
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    format!("{scheme}://{addr}{path}")
}

/// The places behind `urls`: names resolved now, each address once; a name
/// that does not resolve stays as given, so that dialing it reports why.
pub async fn resolve(urls: &[String]) -> Vec<Place> {
    let mut places: Vec<Place> = Vec::new();
    for url in urls {
        let addrs: Vec<SocketAddr> = match host_to_resolve(url) {
            None => Vec::new(),
            Some((host, port)) => {
                let lookup = tokio::net::lookup_host((host.as_str(), port));
                match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                    Ok(Ok(found)) => found.collect(),
                    _ => Vec::new(),
                }
            }
        };
        if addrs.is_empty() {
            places.push(Place { url: url.clone(), dial: url.clone(), addr: None });
            continue;
        }
        for addr in addrs {
            let place = Place { url: url.clone(), dial: with_addr(url, addr), addr: Some(addr) };
            if !places.contains(&place) {
                places.push(place);
            }
        }
    }
    places
}

/// One endpoint and its lazily connected channel.
#[derive(Clone)]
pub struct Target {
    pub place: Place,
    pub channel: Channel,
}

/// Channels for `places`, reusing those of `old` that go to the same place.
pub fn channels(
    places: Vec<Place>,
    old: &[Target],
    make: &MakeEndpoint,
) -> Result<Vec<Target>, DialError> {
    places
        .into_iter()
        .map(|place| {
            if let Some(t) = old.iter().find(|t| t.place == place) {
                return Ok(t.clone());
            }
            let channel = make(&place.dial)?.connect_lazy();
            Ok(Target { place, channel })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_split_on_commas() {
        assert_eq!(split_urls(" http://a:1, ,http://b:2,"), vec!["http://a:1", "http://b:2"]);
        assert!(split_urls("").is_empty());
    }

    #[test]
    fn only_names_are_resolved() {
        assert_eq!(host_to_resolve("https://127.0.0.1:7400"), None);
        assert_eq!(host_to_resolve("https://[::1]:7400"), None);
        assert_eq!(
            host_to_resolve("https://coord.example:7400"),
            Some(("coord.example".into(), 7400))
        );
        assert_eq!(host_to_resolve("http://coord"), Some(("coord".into(), 80)));
        assert_eq!(host_to_resolve("https://coord/"), Some(("coord".into(), 443)));
    }

    #[test]
    fn addresses_replace_the_host() {
        let v4: SocketAddr = "10.0.0.1:7400".parse().unwrap();
        let v6: SocketAddr = "[::1]:7400".parse().unwrap();
        assert_eq!(with_addr("https://c.example:7400", v4), "https://10.0.0.1:7400");
        assert_eq!(with_addr("http://c.example:7400/", v6), "http://[::1]:7400/");
    }
}
