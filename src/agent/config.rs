//! The agent's data-safety settings: scrubbing at rest and the expiry of
//! partial uploads.

use std::time::Duration;

/// How the agent looks after the content at rest.
#[derive(Debug, Clone, clap::Args)]
pub struct SafetyConfig {
    /// Re-verify stored objects in the background at up to this many MB/s
    /// (0 disables scrubbing).
    #[arg(long, env = "ANNEXMESH_SCRUB_RATE", default_value_t = 8.0)]
    pub scrub_rate: f64,
    /// A full scrub pass starts at most once per this interval (e.g. 24h, 30m, 5s).
    #[arg(long, env = "ANNEXMESH_SCRUB_INTERVAL", default_value = "24h", value_parser = parse_duration)]
    pub scrub_interval: Duration,
    /// Partial uploads untouched for longer than this are removed (e.g. 24h).
    #[arg(long, env = "ANNEXMESH_PARTIAL_MAX_AGE", default_value = "24h", value_parser = parse_duration)]
    pub partial_max_age: Duration,
    /// Below this much free space (bytes) the oldest partial uploads are removed
    /// first (default: the larger of 1% of the filesystem and 64 MiB).
    #[arg(long, env = "ANNEXMESH_MIN_FREE")]
    pub min_free: Option<u64>,
}

impl Default for SafetyConfig {
    fn default() -> SafetyConfig {
        SafetyConfig {
            scrub_rate: 8.0,
            scrub_interval: Duration::from_secs(24 * 3600),
            partial_max_age: Duration::from_secs(24 * 3600),
            min_free: None,
        }
    }
}

/// Parses a duration such as `24h`, `30m`, `5s`, `250ms` or a bare number of
/// seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration; write e.g. 24h, 30m, 5s or 250ms"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}; use ms, s, m, h or d")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("5 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("h").unwrap_err().contains("not a duration"));
    }
}
