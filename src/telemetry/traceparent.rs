//! The W3C Trace Context `traceparent` header
//! (`VERSION-TRACEID-PARENTID-FLAGS`, <https://www.w3.org/TR/trace-context/>):
//! pure parsing and formatting, so that one request's log lines share a
//! trace id across the roles it passes through.

use std::fmt;

/// The 16-byte id shared by every span of one request, in every role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

impl TraceId {
    /// A fresh random id, for a request that arrived without one.
    pub fn random() -> TraceId {
        loop {
            let id = TraceId(rand::random());
            if id.0 != [0; 16] {
                return id;
            }
        }
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// A parsed `traceparent` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    /// The caller's span.
    pub parent_id: [u8; 8],
    /// Bit 0: the caller records (samples) this trace.
    pub flags: u8,
}

/// Why a `traceparent` value was ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceParentError {
    #[error("traceparent {0:?} is not VERSION-TRACEID-PARENTID-FLAGS in lower-case hex")]
    Malformed(String),
    #[error("traceparent {0:?} has the invalid version ff")]
    BadVersion(String),
    #[error("traceparent {0:?} has an all-zero trace or parent id")]
    ZeroId(String),
}

impl TraceParent {
    /// A new call of `trace_id` from a fresh span of ours, sampled.
    pub fn child_of(trace_id: TraceId) -> TraceParent {
        let mut parent_id: [u8; 8] = rand::random();
        parent_id[0] |= 1; // never all zero
        TraceParent { trace_id, parent_id, flags: 1 }
    }

    /// Parses a header value. Versions after 00 may append fields, which
    /// are ignored as the specification asks.
    pub fn parse(s: &str) -> Result<TraceParent, TraceParentError> {
        let bad = || TraceParentError::Malformed(s.to_string());
        let s_trim = s.trim();
        let mut parts = s_trim.splitn(5, '-');
        let (Some(v), Some(t), Some(p), Some(f)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let rest = parts.next();
        let hex_of = |x: &str, n: usize| -> Option<Vec<u8>> {
            let lower = x.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            (x.len() == 2 * n && lower).then(|| hex::decode(x).ok()).flatten()
        };
        let version = hex_of(v, 1).ok_or_else(bad)?[0];
        if version == 0xff {
            return Err(TraceParentError::BadVersion(s.to_string()));
        }
        // Version 00 has exactly four fields; later ones may have more.
        if version == 0 && rest.is_some() {
            return Err(bad());
        }
        let trace: [u8; 16] = hex_of(t, 16).ok_or_else(bad)?.try_into().map_err(|_| bad())?;
        let parent: [u8; 8] = hex_of(p, 8).ok_or_else(bad)?.try_into().map_err(|_| bad())?;
        let flags = hex_of(f, 1).ok_or_else(bad)?[0];
        if trace == [0; 16] || parent == [0; 8] {
            return Err(TraceParentError::ZeroId(s.to_string()));
        }
        Ok(TraceParent { trace_id: TraceId(trace), parent_id: parent, flags })
    }
}

impl fmt::Display for TraceParent {
    /// Always version 00, the one this implementation speaks.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{}-{}-{:02x}", self.trace_id, hex::encode(self.parent_id), self.flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_specification_example() {
        let t = TraceParent::parse(EXAMPLE).unwrap();
        assert_eq!(t.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex::encode(t.parent_id), "00f067aa0ba902b7");
        assert_eq!(t.flags, 1);
        assert_eq!(t.to_string(), EXAMPLE);
    }

    #[test]
    fn round_trips_fresh_values() {
        for _ in 0..100 {
            let t = TraceParent::child_of(TraceId::random());
            assert_eq!(TraceParent::parse(&t.to_string()).unwrap(), t);
            assert_eq!(t.to_string().len(), 55);
        }
    }

    #[test]
    fn later_versions_may_add_fields() {
        let v = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever";
        let t = TraceParent::parse(v).unwrap();
        assert_eq!(t.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn refuses_bad_values() {
        let malformed = [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        ];
        for m in malformed {
            assert!(
                matches!(TraceParent::parse(m), Err(TraceParentError::Malformed(_))),
                "{m:?} accepted"
            );
        }
        assert!(matches!(
            TraceParent::parse("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Err(TraceParentError::BadVersion(_))
        ));
        for z in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        ] {
            assert!(matches!(TraceParent::parse(z), Err(TraceParentError::ZeroId(_))));
        }
    }
}
