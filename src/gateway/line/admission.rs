//! Admission of line-protocol connections before AUTH: a pool of its own,
//! capped in all and per source address, and failed AUTH attempts
//! throttled per address. Only an authenticated connection takes a slot of
//! the main pool.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use super::handshake::TokenCheck;
use crate::auth::Mode;
use crate::gateway::throttle::AuthThrottle;

/// Connections not yet authenticated, counted in all and per address.
#[derive(Debug, Default)]
pub(super) struct PreAuth {
    by_address: Mutex<HashMap<IpAddr, usize>>,
    total: Mutex<usize>,
}

/// Why a connection was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    Total(usize),
    Address(usize),
    /// The address failed AUTH too often; it may try again after this.
    Throttled(std::time::Duration),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Total(n) => {
                write!(f, "too many connections: {n} are waiting to authenticate")
            }
            Refused::Address(n) => {
                write!(f, "too many connections: {n} from this address are waiting to authenticate")
            }
            Refused::Throttled(wait) => write!(
                f,
                "too many failed AUTH attempts from this address; wait {} s",
                wait.as_secs() + 1
            ),
        }
    }
}

/// A connection's place in the pre-AUTH pool, given back on drop.
#[derive(Debug)]
pub(super) struct PreAuthSlot {
    pool: Arc<PreAuth>,
    ip: IpAddr,
}

impl PreAuth {
    /// A slot for a new connection from `ip`, unless either cap is reached.
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        max_total: usize,
        max_per_address: usize,
    ) -> Result<PreAuthSlot, Refused> {
        let mut total = self.total.lock().unwrap_or_else(|e| e.into_inner());
        let mut by_address = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        if *total >= max_total {
            return Err(Refused::Total(max_total));
        }
        let here = by_address.entry(ip).or_insert(0);
        if *here >= max_per_address {
            return Err(Refused::Address(max_per_address));
        }
        *here += 1;
        *total += 1;
        Ok(PreAuthSlot { pool: self.clone(), ip })
    }

    #[cfg(test)]
    fn count(&self) -> (usize, usize) {
        (*self.total.lock().unwrap(), self.by_address.lock().unwrap().len())
    }
}

impl Drop for PreAuthSlot {
    fn drop(&mut self) {
        let mut total = self.pool.total.lock().unwrap_or_else(|e| e.into_inner());
        let mut by_address = self.pool.by_address.lock().unwrap_or_else(|e| e.into_inner());
        *total = total.saturating_sub(1);
        if let Some(n) = by_address.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                // Keeps the map as small as the pool.
                by_address.remove(&self.ip);
            }
        }
    }
}

/// Token checks from one address, throttled after failures.
pub(super) struct Throttled<'a> {
    pub inner: &'a dyn TokenCheck,
    pub throttle: &'a AuthThrottle,
    pub ip: IpAddr,
}

impl TokenCheck for Throttled<'_> {
    fn check<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<Mode>, String>> {
        Box::pin(async move {
            if let Err(wait) = self.throttle.check(self.ip) {
                return Err(format!(
                    "too many failed AUTH attempts from {}; try again in {} s",
                    self.ip,
                    wait.as_secs() + 1
                ));
            }
            let r = self.inner.check(token).await;
            if matches!(r, Ok(None)) {
                self.throttle.failed(self.ip);
            }
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_in_all_and_per_address_and_slots_come_back() {
        let pool = Arc::new(PreAuth::default());
        let a = IpAddr::from([10, 0, 0, 1]);
        let b = IpAddr::from([10, 0, 0, 2]);
        let held: Vec<_> = (0..2).map(|_| pool.admit(a, 3, 2).unwrap()).collect();
        assert_eq!(pool.admit(a, 3, 2).unwrap_err(), Refused::Address(2));
        let other = pool.admit(b, 3, 2).unwrap();
        assert_eq!(pool.admit(b, 3, 2).unwrap_err(), Refused::Total(3));
        drop(held);
        assert_eq!(pool.count(), (1, 1));
        drop(other);
        assert_eq!(pool.count(), (0, 0));
        assert!(pool.admit(a, 3, 2).is_ok());
    }

    struct Only;
    impl TokenCheck for Only {
        fn check<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<Mode>, String>> {
            Box::pin(async move { Ok((token == "good").then_some(Mode::ReadWrite)) })
        }
    }

    #[tokio::test]
    async fn failed_attempts_are_throttled_per_address() {
        let throttle = AuthThrottle::new(2, std::time::Duration::from_secs(60));
        let ip = IpAddr::from([10, 0, 0, 1]);
        let t = Throttled { inner: &Only, throttle: &throttle, ip };
        for _ in 0..3 {
            assert_eq!(t.check("bad").await, Ok(None));
        }
        let e = t.check("good").await.unwrap_err();
        assert!(e.contains("too many failed AUTH attempts"), "{e}");
        let other =
            Throttled { inner: &Only, throttle: &throttle, ip: IpAddr::from([10, 0, 0, 2]) };
        assert_eq!(other.check("good").await, Ok(Some(Mode::ReadWrite)));
    }
}
