//! Who may do what over P2P over HTTP, as `git annex p2phttp` decides it:
//! HTTP basic auth with the coordinator's users (or unnamed tokens), a mode
//! for anonymous clients, 401 when credentials would help and 403 when the
//! caller may not do it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};

use crate::auth::Mode;
use crate::gateway::throttle::AuthThrottle;

/// The realm git-annex's own server names (shown by git's credential
/// prompts).
pub const REALM: &str = "Basic realm=\"git-annex\", charset=\"UTF-8\"";

/// How long a successful credential check is reused before the coordinator
/// is asked again: git-annex makes many requests per file.
pub const CACHE_TTL: Duration = Duration::from_secs(30);

/// Most cached credential checks; past this, expired ones go, then all.
const CACHE_MAX: usize = 4096;

/// What anonymous clients may do (`--unauth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Unauth {
    /// Nothing: every request needs credentials.
    None,
    /// GET, CHECKPRESENT, GETTIMESTAMP and locking.
    Readonly,
    /// Also PUT; no REMOVE.
    Appendonly,
}

/// The kinds of request git-annex's server tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// GET, CHECKPRESENT, GETTIMESTAMP, and the `/NAME/config` discovery.
    Read,
    /// PUT and PUTOFFSET.
    Write,
    /// REMOVE and REMOVE-BEFORE.
    Remove,
    /// LOCKCONTENT and KEEPLOCKED.
    Lock,
}

/// Whether `mode` allows `action`. Locking only keeps content from being
/// dropped, so every mode may lock (as with the line protocol's readonly
/// mode; git-annex's server refuses it to authenticated readonly users
/// only, which would make drops that rely on this remote fail).
fn allows(mode: Mode, action: Action) -> bool {
    match action {
        Action::Read | Action::Lock => true,
        Action::Write => mode >= Mode::AppendOnly,
        Action::Remove => mode == Mode::ReadWrite,
    }
}

/// The operator's choice of who may use the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Check basic-auth credentials against the coordinator's users.
    pub users: bool,
    /// What a client without (valid) credentials may do; None: nothing.
    pub anonymous: Option<Mode>,
}

/// The gateway was given no access setting.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to serve P2P over HTTP without an access setting: give --auth-users (users from \
     `annexmesh admin user add`), --unauth readonly|appendonly (what anonymous clients may do), \
     or --wideopen (anyone may read, store and remove)"
)]
pub struct NoAccessChoice;

impl Policy {
    /// From the gateway's flags; an error unless the operator chose.
    pub fn new(users: bool, unauth: Unauth, wideopen: bool) -> Result<Policy, NoAccessChoice> {
        let anonymous = match (wideopen, unauth) {
            (true, _) => Some(Mode::ReadWrite),
            (false, Unauth::None) => None,
            (false, Unauth::Readonly) => Some(Mode::ReadOnly),
            (false, Unauth::Appendonly) => Some(Mode::AppendOnly),
        };
        if !users && anonymous.is_none() {
            return Err(NoAccessChoice);
        }
        Ok(Policy { users, anonymous })
    }

    /// Whether `caller` may do `action`: Ok, or the answer to send.
    pub fn check(&self, caller: &Caller, action: Action) -> Result<(), Denied> {
        match caller {
            Caller::User(mode) if allows(*mode, action) => Ok(()),
            Caller::User(_) => Err(Denied::Forbidden),
            Caller::Anonymous => match self.anonymous {
                Some(mode) if allows(mode, action) => Ok(()),
                // Credentials could help only where users are checked.
                _ if self.users => Err(Denied::NeedAuth),
                _ => Err(Denied::Forbidden),
            },
        }
    }
}

/// Who sent a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// No credentials, wrong ones, or ones this gateway does not check.
    Anonymous,
    /// A user or token with this mode.
    User(Mode),
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// 401 with the realm: git-annex asks git's credential helper and
    /// retries.
    NeedAuth,
    /// 403: the caller may not do this.
    Forbidden,
    /// 429: too many failed attempts from this address.
    Throttled(Duration),
    /// 503: the coordinator could not check the credentials.
    Unavailable(String),
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        let text = |s: StatusCode, m: &str| {
            (s, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{m}\n"))
                .into_response()
        };
        match self {
            Denied::NeedAuth => {
                let mut r = text(StatusCode::UNAUTHORIZED, "authentication required");
                r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(REALM));
                r
            }
            Denied::Forbidden => text(StatusCode::FORBIDDEN, "not allowed for this user"),
            Denied::Throttled(wait) => {
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let mut r = text(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many failed logins from this address; try again later",
                );
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
                r
            }
            Denied::Unavailable(m) => {
                text(StatusCode::SERVICE_UNAVAILABLE, &format!("cannot check credentials now: {m}"))
            }
        }
    }
}

/// Checks a password (a token): the mode and user name it has, None when
/// unknown, Err when the check itself failed.
pub trait PasswordCheck: Send + Sync {
    fn check<'a>(
        &'a self,
        password: &'a str,
    ) -> BoxFuture<'a, Result<Option<(Mode, String)>, String>>;
}

/// Passwords are the coordinator's tokens (only their hashes are sent).
pub struct CoordinatorPasswords(pub Arc<crate::gateway::mesh::Mesh>);

impl PasswordCheck for CoordinatorPasswords {
    fn check<'a>(
        &'a self,
        password: &'a str,
    ) -> BoxFuture<'a, Result<Option<(Mode, String)>, String>> {
        Box::pin(async move {
            let req =
                crate::rpc::CheckTokenRequest { token_sha256: crate::auth::hash_token(password) };
            let r = self.0.control().check_token(req).await.map_err(|s| s.message().to_string())?;
            if !r.valid {
                return Ok(None);
            }
            Ok(Some((r.mode.parse::<Mode>()?, r.user)))
        })
    }
}

/// Basic-auth credentials from an `Authorization` header; None when there
/// is none or it is not basic auth in a usable form.
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Checks basic-auth credentials, with a short cache of successes and a
/// throttle on failures per source address.
pub struct Authenticator {
    pub policy: Policy,
    passwords: Arc<dyn PasswordCheck>,
    throttle: Arc<AuthThrottle>,
    /// SHA-256 of "user\0password" → mode, until when.
    cache: Mutex<HashMap<[u8; 32], (Mode, Instant)>>,
}

impl Authenticator {
    pub fn new(
        policy: Policy,
        passwords: Arc<dyn PasswordCheck>,
        throttle: Arc<AuthThrottle>,
    ) -> Authenticator {
        Authenticator { policy, passwords, throttle, cache: Mutex::new(HashMap::new()) }
    }

    /// Who sent a request with these headers from `ip`. Wrong credentials
    /// make an anonymous caller, as with git-annex's server, and count
    /// against the address.
    pub async fn caller(&self, headers: &HeaderMap, ip: IpAddr) -> Result<Caller, Denied> {
        if !self.policy.users {
            return Ok(Caller::Anonymous);
        }
        let Some((user, password)) = basic_credentials(headers) else {
            return Ok(Caller::Anonymous);
        };
        let id: [u8; 32] = Sha256::new()
            .chain_update(&user)
            .chain_update([0])
            .chain_update(&password)
            .finalize()
            .into();
        let now = Instant::now();
        if let Some((mode, until)) = self.lock_cache().get(&id)
            && *until > now
        {
            return Ok(Caller::User(*mode));
        }
        self.throttle.check(ip).map_err(Denied::Throttled)?;
        match self.passwords.check(&password).await.map_err(Denied::Unavailable)? {
            // A token without a user name is accepted with any user name.
            Some((mode, name)) if name.is_empty() || name == user => {
                let mut cache = self.lock_cache();
                if cache.len() >= CACHE_MAX {
                    cache.retain(|_, (_, until)| *until > now);
                    if cache.len() >= CACHE_MAX {
                        cache.clear();
                    }
                }
                cache.insert(id, (mode, now + CACHE_TTL));
                Ok(Caller::User(mode))
            }
            _ => {
                self.throttle.failed(ip);
                Ok(Caller::Anonymous)
            }
        }
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (Mode, Instant)>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_without_an_access_choice_is_refused() {
        assert!(Policy::new(false, Unauth::None, false).is_err());
        let msg = NoAccessChoice.to_string();
        for flag in ["--auth-users", "--unauth", "--wideopen"] {
            assert!(msg.contains(flag), "{msg}");
        }
        assert!(Policy::new(true, Unauth::None, false).is_ok());
        assert!(Policy::new(false, Unauth::Readonly, false).is_ok());
        assert!(Policy::new(false, Unauth::None, true).is_ok());
    }

    #[test]
    fn access_follows_git_annex_p2phttp() {
        use Action::*;
        use Denied::*;
        let users_only = Policy::new(true, Unauth::None, false).unwrap();
        for a in [Read, Write, Remove, Lock] {
            assert_eq!(users_only.check(&Caller::Anonymous, a), Err(NeedAuth), "{a:?}");
            assert_eq!(users_only.check(&Caller::User(Mode::ReadWrite), a), Ok(()));
        }
        let ro = Caller::User(Mode::ReadOnly);
        assert_eq!(users_only.check(&ro, Read), Ok(()));
        assert_eq!(users_only.check(&ro, Lock), Ok(()));
        assert_eq!(users_only.check(&ro, Write), Err(Forbidden));
        assert_eq!(users_only.check(&ro, Remove), Err(Forbidden));
        let ao = Caller::User(Mode::AppendOnly);
        assert_eq!(users_only.check(&ao, Write), Ok(()));
        assert_eq!(users_only.check(&ao, Remove), Err(Forbidden));

        // Anonymous readonly: writes ask for credentials when users exist.
        let mixed = Policy::new(true, Unauth::Readonly, false).unwrap();
        assert_eq!(mixed.check(&Caller::Anonymous, Read), Ok(()));
        assert_eq!(mixed.check(&Caller::Anonymous, Write), Err(NeedAuth));
        let anon_ro = Policy::new(false, Unauth::Readonly, false).unwrap();
        assert_eq!(anon_ro.check(&Caller::Anonymous, Lock), Ok(()));
        assert_eq!(anon_ro.check(&Caller::Anonymous, Write), Err(Forbidden));
        let anon_ao = Policy::new(false, Unauth::Appendonly, false).unwrap();
        assert_eq!(anon_ao.check(&Caller::Anonymous, Write), Ok(()));
        assert_eq!(anon_ao.check(&Caller::Anonymous, Remove), Err(Forbidden));
        let open = Policy::new(false, Unauth::None, true).unwrap();
        assert_eq!(open.check(&Caller::Anonymous, Remove), Ok(()));
    }

    #[test]
    fn denials_answer_as_git_annex_does() {
        let r = Denied::NeedAuth.into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], REALM);
        assert_eq!(Denied::Forbidden.into_response().status(), StatusCode::FORBIDDEN);
        let r = Denied::Throttled(Duration::from_millis(1500)).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
    }

    #[test]
    fn basic_credentials_are_parsed() {
        let mut h = HeaderMap::new();
        assert_eq!(basic_credentials(&h), None);
        // "alice:pa:ss" — the password may contain ':'.
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic YWxpY2U6cGE6c3M="));
        assert_eq!(basic_credentials(&h), Some(("alice".into(), "pa:ss".into())));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer xyz"));
        assert_eq!(basic_credentials(&h), None);
    }

    struct Fixed(std::sync::atomic::AtomicUsize);

    impl PasswordCheck for Fixed {
        fn check<'a>(
            &'a self,
            password: &'a str,
        ) -> BoxFuture<'a, Result<Option<(Mode, String)>, String>> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move {
                Ok(match password {
                    "alicepw" => Some((Mode::ReadOnly, "alice".to_string())),
                    "anypw" => Some((Mode::ReadWrite, String::new())),
                    _ => None,
                })
            })
        }
    }

    fn basic(user: &str, pw: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
        h.insert(header::AUTHORIZATION, format!("Basic {v}").parse().unwrap());
        h
    }

    #[tokio::test]
    async fn users_are_checked_cached_and_failures_throttled() {
        let checks = Arc::new(Fixed(Default::default()));
        let a = Authenticator::new(
            Policy::new(true, Unauth::None, false).unwrap(),
            checks.clone(),
            Arc::default(),
        );
        let ip = IpAddr::from([127, 0, 0, 1]);
        let count = || checks.0.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(a.caller(&HeaderMap::new(), ip).await, Ok(Caller::Anonymous));
        assert_eq!(
            a.caller(&basic("alice", "alicepw"), ip).await,
            Ok(Caller::User(Mode::ReadOnly))
        );
        assert_eq!(
            a.caller(&basic("alice", "alicepw"), ip).await,
            Ok(Caller::User(Mode::ReadOnly))
        );
        assert_eq!(count(), 1, "the second check came from the cache");
        // A named user's password does not work under another name; an
        // unnamed token works under any.
        assert_eq!(a.caller(&basic("bob", "alicepw"), ip).await, Ok(Caller::Anonymous));
        assert_eq!(a.caller(&basic("bob", "anypw"), ip).await, Ok(Caller::User(Mode::ReadWrite)));
        // Failures are never cached, and enough of them throttle the address.
        let mut throttled = false;
        for _ in 0..50 {
            match a.caller(&basic("eve", "guess"), ip).await {
                Ok(Caller::Anonymous) => {}
                Err(Denied::Throttled(_)) => {
                    throttled = true;
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(throttled, "wrong passwords were never throttled");
        // Cached good credentials still work from that address.
        assert_eq!(
            a.caller(&basic("alice", "alicepw"), ip).await,
            Ok(Caller::User(Mode::ReadOnly))
        );
    }
}
