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

/// A duration as operators write one in flags: a number (fractions allowed)
/// with `ms`, `s`, `m`, `h` or `d`, seconds when bare: `250ms`, `90s`,
/// `1.5m`, `24h`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration; write e.g. 30s, 10m, 24h or 250ms"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        other => return Err(format!("unknown unit {other:?} in {text:?}; use ms, s, m, h or d")),
    };
    std::time::Duration::try_from_secs_f64(secs).map_err(|e| format!("{text:?}: {e}"))
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
    fn durations_parse_with_units_and_refuse_nonsense() {
        use std::time::Duration;
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("5 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("ten").unwrap_err().contains("e.g. 30s"));
        assert!(parse_duration("h").unwrap_err().contains("not a duration"));
        assert!(parse_duration("-5s").is_err());
    }

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
