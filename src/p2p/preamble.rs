//! The optional first line of a line-protocol connection to a gateway,
//! `ANNEXMESH repo=NAME[ mode=readonly|appendonly|readwrite]`: annexmesh's
//! own addition in front of git-annex's protocol, naming the cluster or node
//! to serve and optionally narrowing what the token grants. Pure: the client
//! builds it with `Display`, the gateway reads it with `FromStr`.

use std::fmt;
use std::str::FromStr;

use crate::auth::Mode;
use crate::names::BadName;

/// The word that starts the line.
pub const ANNEXMESH: &str = "ANNEXMESH";

/// Longest preamble line a gateway reads, without its newline.
pub const MAX_PREAMBLE: usize = 1024;

/// What a client asks for before AUTH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preamble {
    /// A cluster or node name (see `names::validate`).
    pub repo: String,
    /// A restriction of the token's access; it can only narrow it.
    pub mode: Option<Mode>,
}

/// Why a line is not an acceptable preamble.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreambleError {
    #[error("not an {ANNEXMESH} line")]
    NotPreamble,
    #[error("unknown {ANNEXMESH} setting {0:?}")]
    UnknownSetting(String),
    /// The text is `Mode`'s own, naming the accepted modes.
    #[error("{0}")]
    BadMode(String),
    #[error("the {ANNEXMESH} line names no repository: send repo=NAME")]
    NoRepo,
    #[error(transparent)]
    BadName(#[from] BadName),
}

impl Preamble {
    /// Whether `line` (or the start of it) is meant as a preamble: it begins
    /// with the keyword and a space.
    pub fn starts(line: &[u8]) -> bool {
        line.strip_prefix(ANNEXMESH.as_bytes()).is_some_and(|rest| rest.first() == Some(&b' '))
    }
}

/// The line as the client sends it, without the newline.
impl fmt::Display for Preamble {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ANNEXMESH} repo={}", self.repo)?;
        if let Some(m) = self.mode {
            write!(f, " mode={m}")?;
        }
        Ok(())
    }
}

/// Parses the line without its newline. Settings are separated by spaces,
/// extra spaces are ignored, and a repeated setting counts the last time.
impl FromStr for Preamble {
    type Err = PreambleError;

    fn from_str(line: &str) -> Result<Preamble, PreambleError> {
        let settings = line
            .strip_prefix(ANNEXMESH)
            .and_then(|rest| rest.strip_prefix(' '))
            .ok_or(PreambleError::NotPreamble)?;
        let mut repo = None;
        let mut mode = None;
        for word in settings.split(' ').filter(|w| !w.is_empty()) {
            match word.split_once('=') {
                Some(("repo", name)) => {
                    crate::names::validate(name)?;
                    repo = Some(name.to_string());
                }
                Some(("mode", m)) => mode = Some(m.parse().map_err(PreambleError::BadMode)?),
                _ => return Err(PreambleError::UnknownSetting(word.to_string())),
            }
        }
        Ok(Preamble { repo: repo.ok_or(PreambleError::NoRepo)?, mode })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(repo: &str, mode: Option<Mode>) -> Preamble {
        Preamble { repo: repo.to_string(), mode }
    }

    #[test]
    fn the_client_line() {
        assert_eq!(p("mesh", None).to_string(), "ANNEXMESH repo=mesh");
        assert_eq!(p("n1", Some(Mode::ReadOnly)).to_string(), "ANNEXMESH repo=n1 mode=readonly");
        assert_eq!(
            p("n1", Some(Mode::AppendOnly)).to_string(),
            "ANNEXMESH repo=n1 mode=appendonly"
        );
    }

    #[test]
    fn round_trips() {
        for mode in [None, Some(Mode::ReadOnly), Some(Mode::AppendOnly), Some(Mode::ReadWrite)] {
            for repo in ["mesh", "node-1", "a_b.c"] {
                let want = p(repo, mode);
                assert_eq!(want.to_string().parse::<Preamble>(), Ok(want));
            }
        }
    }

    #[test]
    fn lenient_spacing_and_last_setting_wins() {
        assert_eq!(
            "ANNEXMESH  repo=a   mode=readonly repo=b ".parse(),
            Ok(p("b", Some(Mode::ReadOnly)))
        );
        assert_eq!("ANNEXMESH mode=appendonly repo=x".parse(), Ok(p("x", Some(Mode::AppendOnly))));
    }

    #[test]
    fn bad_lines() {
        use PreambleError::*;
        let err = |s: &str| s.parse::<Preamble>().unwrap_err();
        assert_eq!(err("ANNEXMESHrepo=x"), NotPreamble);
        assert_eq!(err("AUTH u t"), NotPreamble);
        assert_eq!(err("ANNEXMESH repo=mesh admin=yes"), UnknownSetting("admin=yes".into()));
        assert_eq!(err("ANNEXMESH repo"), UnknownSetting("repo".into()));
        assert_eq!(err("ANNEXMESH "), NoRepo);
        assert_eq!(err("ANNEXMESH mode=readonly"), NoRepo);
        assert!(matches!(err("ANNEXMESH repo=mesh mode=admin"), BadMode(m) if m.contains("admin")));
        for bad in ["", "a/b", ".x", "git-annex", "a\tb"] {
            let e = err(&format!("ANNEXMESH repo={bad}"));
            assert!(matches!(e, BadName(_)), "{bad:?}: {e:?}");
        }
        assert!(err("ANNEXMESH repo=a\u{1}").to_string().contains("bad name"));
    }

    #[test]
    fn what_starts_a_preamble() {
        assert!(Preamble::starts(b"ANNEXMESH repo=x"));
        assert!(Preamble::starts(b"ANNEXMESH "));
        assert!(!Preamble::starts(b"ANNEXMESH"));
        assert!(!Preamble::starts(b"ANNEXMESHX"));
        assert!(!Preamble::starts(b"AUTH"));
    }
}
