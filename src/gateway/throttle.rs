//! Throttling of failed authentication per source address, shared by the
//! HTTP front-end (basic auth) and the line protocol (AUTH): a guesser gets a
//! few free failures, then must wait before each next try, while clients
//! that authenticate are never slowed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Default failures allowed per address before it must wait.
pub const DEFAULT_BURST: u32 = 10;
/// Default time one failure costs once the burst is spent.
pub const DEFAULT_PENALTY: Duration = Duration::from_secs(1);
/// Most addresses remembered; past this the oldest entries go first.
const MAX_TRACKED: usize = 65_536;

/// Failed attempts per source address, as a leaky bucket: each failure adds
/// `penalty` to the address's debt, which drains in real time; an address
/// whose debt exceeds `burst × penalty` is refused until it drains.
#[derive(Debug)]
pub struct AuthThrottle {
    burst: u32,
    penalty: Duration,
    debts: Mutex<HashMap<IpAddr, Instant>>,
}

impl Default for AuthThrottle {
    fn default() -> Self {
        AuthThrottle::new(DEFAULT_BURST, DEFAULT_PENALTY)
    }
}

impl AuthThrottle {
    /// `burst` failures are free; each one after costs `penalty` of waiting.
    pub fn new(burst: u32, penalty: Duration) -> AuthThrottle {
        AuthThrottle { burst: burst.max(1), penalty, debts: Mutex::new(HashMap::new()) }
    }

    /// Ok when `ip` may try to authenticate now; otherwise how long it
    /// must wait. Call before checking credentials.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.check_at(ip, Instant::now())
    }

    /// Records a failed attempt from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        self.failed_at(ip, Instant::now())
    }

    fn allowance(&self) -> Duration {
        self.penalty * self.burst
    }

    fn check_at(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let debts = self.debts.lock().unwrap_or_else(|e| e.into_inner());
        match debts.get(&ip) {
            // `until` is when the debt is paid off; over the allowance, wait.
            Some(&until) if until > now + self.allowance() => Err(until - (now + self.allowance())),
            _ => Ok(()),
        }
    }

    fn failed_at(&self, ip: IpAddr, now: Instant) {
        let mut debts = self.debts.lock().unwrap_or_else(|e| e.into_inner());
        if debts.len() >= MAX_TRACKED && !debts.contains_key(&ip) {
            // Paid-off entries first; if none, the one closest to paid off.
            debts.retain(|_, until| *until > now);
            if debts.len() >= MAX_TRACKED
                && let Some(ip) = debts.iter().min_by_key(|(_, u)| **u).map(|(ip, _)| *ip)
            {
                debts.remove(&ip);
            }
        }
        let until = debts.entry(ip).or_insert(now);
        *until = (*until).max(now) + self.penalty;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn burst_is_free_then_each_failure_waits() {
        let t = AuthThrottle::new(3, Duration::from_secs(1));
        let now = Instant::now();
        for _ in 0..3 {
            assert!(t.check_at(ip(1), now).is_ok());
            t.failed_at(ip(1), now);
        }
        assert!(t.check_at(ip(1), now).is_ok(), "exactly the burst is free");
        t.failed_at(ip(1), now);
        let wait = t.check_at(ip(1), now).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        // Other addresses are not affected.
        assert!(t.check_at(ip(2), now).is_ok());
        // The debt drains with time.
        assert!(t.check_at(ip(1), now + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn tracking_is_bounded() {
        let t = AuthThrottle::new(1, Duration::from_secs(60));
        let now = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 10) {
            t.failed_at(IpAddr::from(i.to_be_bytes()), now);
        }
        assert!(t.debts.lock().unwrap().len() <= MAX_TRACKED);
    }
}
