//! The store's URL: PostgreSQL's own connection URL, plus parameters of
//! ours that PostgreSQL does not know, taken out before it is parsed.
//! Pure: no I/O.

use std::path::PathBuf;

/// Connections the pool keeps at most, when the URL does not say.
pub const DEFAULT_POOL_MAX_SIZE: usize = 16;
/// The most a URL may ask for: each is a server process on the database.
const POOL_MAX_SIZE_LIMIT: usize = 1024;

/// What a store URL says.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// The URL for the PostgreSQL client: our parameters taken out.
    pub client_url: String,
    /// The URL for logs: the password taken out.
    pub describe: String,
    /// `pool_max_size`: connections the pool keeps at most.
    pub pool_max_size: usize,
    /// `sslrootcert`: a PEM file of certificate authorities trusted for the
    /// database's certificate, beside the public web roots. Certificates
    /// are verified whenever TLS is used (`sslmode` prefer, the default,
    /// require, verify-ca or verify-full); `sslmode=disable` goes without.
    pub sslrootcert: Option<PathBuf>,
}

/// Reads a `postgres://` or `postgresql://` URL.
pub fn parse(url: &str) -> Result<Options, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("not a PostgreSQL URL (postgres://USER@HOST:PORT/DATABASE): {url}"));
    };
    if scheme != "postgres" && scheme != "postgresql" {
        return Err(format!("not a PostgreSQL URL (it must begin with postgres://): {url}"));
    }
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let (mut options, mut ours, mut public) = (Vec::new(), Vec::new(), Vec::new());
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let name = pair.split_once('=').map_or(pair, |(n, _)| n);
        match name {
            "pool_max_size" | "sslrootcert" => ours.push(pair),
            "password" => options.push(pair),
            // Certificates are always verified when TLS is used: libpq's
            // verifying modes are PostgreSQL's client's `require`.
            "sslmode" if matches!(pair, "sslmode=verify-ca" | "sslmode=verify-full") => {
                options.push("sslmode=require");
                public.push(pair);
            }
            _ => {
                options.push(pair);
                public.push(pair);
            }
        }
    }
    let mut pool_max_size = DEFAULT_POOL_MAX_SIZE;
    let mut sslrootcert = None;
    for (name, value) in form_urlencoded::parse(ours.join("&").as_bytes()) {
        match &*name {
            "pool_max_size" => {
                pool_max_size = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=POOL_MAX_SIZE_LIMIT).contains(n))
                    .ok_or_else(|| {
                        format!(
                            "pool_max_size must be a number from 1 to {POOL_MAX_SIZE_LIMIT}, \
                             not {value:?}"
                        )
                    })?;
            }
            _ => sslrootcert = Some(PathBuf::from(&*value)),
        }
    }
    let with_query = |base: String, params: &[&str]| {
        if params.is_empty() { base } else { format!("{base}?{}", params.join("&")) }
    };
    let client_url = with_query(format!("{scheme}://{before_query}"), &options);
    let describe = with_query(format!("{scheme}://{}", without_password(before_query)), &public);
    Ok(Options { client_url, describe, pool_max_size, sslrootcert })
}

/// `USER:PASSWORD@HOST/DB` without `:PASSWORD`.
fn without_password(authority_and_path: &str) -> String {
    let (authority, path) = match authority_and_path.find('/') {
        Some(i) => authority_and_path.split_at(i),
        None => (authority_and_path, ""),
    };
    match authority.rsplit_once('@') {
        Some((user, hosts)) => {
            let user = user.split_once(':').map_or(user, |(u, _)| u);
            format!("{user}@{hosts}{path}")
        }
        None => authority_and_path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_parameters_are_taken_out_and_the_password_hidden() {
        let o = parse(
            "postgres://mesh:s3cret@db1:5433,db2/annex?sslmode=require&pool_max_size=4\
             &sslrootcert=%2Fetc%2Fca.pem&password=other",
        )
        .unwrap();
        assert_eq!(
            o.client_url,
            "postgres://mesh:s3cret@db1:5433,db2/annex?sslmode=require&password=other"
        );
        assert_eq!(o.describe, "postgres://mesh@db1:5433,db2/annex?sslmode=require");
        assert_eq!(o.pool_max_size, 4);
        assert_eq!(o.sslrootcert, Some(PathBuf::from("/etc/ca.pem")));
    }

    #[test]
    fn verifying_ssl_modes_require_tls() {
        let o = parse("postgres://h/db?sslmode=verify-full").unwrap();
        assert_eq!(o.client_url, "postgres://h/db?sslmode=require");
        assert_eq!(o.describe, "postgres://h/db?sslmode=verify-full");
    }

    #[test]
    fn defaults_and_refusals() {
        let o = parse("postgresql://localhost/annex").unwrap();
        assert_eq!(o.client_url, "postgresql://localhost/annex");
        assert_eq!(o.describe, o.client_url);
        assert_eq!((o.pool_max_size, o.sslrootcert), (DEFAULT_POOL_MAX_SIZE, None));
        assert!(parse("redb:/var/lib/x").unwrap_err().contains("postgres://"));
        assert!(parse("mysql://h/db").unwrap_err().contains("postgres://"));
        for bad in ["0", "x", "100000"] {
            let e = parse(&format!("postgres://h/db?pool_max_size={bad}")).unwrap_err();
            assert!(e.contains("pool_max_size"), "{e}");
        }
    }
}
