//! The monotonic clock behind GETTIMESTAMP and REMOVE-BEFORE.
//!
//! CLOCK_BOOTTIME rather than `Instant` (CLOCK_MONOTONIC): the latter stops
//! while a host is suspended, and a clock that lagged real time would let a
//! REMOVE-BEFORE deadline pass unnoticed.

use nix::time::{ClockId, clock_gettime};

/// Milliseconds since the host booted.
pub fn boottime_ms() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_BOOTTIME).expect("CLOCK_BOOTTIME is available on Linux");
    t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000
}

/// Milliseconds since the Unix epoch by the wall clock, which may step back:
/// for showing times to people and stamping records, never for deadlines.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A clock that starts at zero when created.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch {
    start_ms: u64,
}

impl Stopwatch {
    pub fn start() -> Stopwatch {
        Stopwatch { start_ms: boottime_ms() }
    }

    pub fn elapsed_ms(&self) -> u64 {
        boottime_ms().saturating_sub(self.start_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_runs_backwards() {
        let w = Stopwatch::start();
        let mut last = 0;
        for _ in 0..1000 {
            let now = w.elapsed_ms();
            assert!(now >= last);
            last = now;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(w.elapsed_ms() >= 20);
    }
}
