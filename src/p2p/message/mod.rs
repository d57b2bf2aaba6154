//! Messages of the git-annex P2P protocol (versions 0–4) and their line form.
//!
//! A line is the command word followed by its arguments, separated by single
//! spaces. Parsing mirrors git-annex: a message with N arguments splits the
//! rest of the line at the first N-1 whitespace characters, so the last
//! argument takes the rest of the line (ERROR text, keys), and list messages
//! split the rest on any run of whitespace. "Whitespace" is Haskell's
//! `isSpace`, which is what git-annex splits on.
//!
//! Numbers are stricter than git-annex (which accepts anything Haskell's
//! `reads` does, such as `-1`, `0x10` or trailing junk): only the plain
//! decimal form git-annex itself writes is accepted, and values must fit
//! in a `u64` (`i32` for exit codes).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use crate::p2p::key::{Key, KeyError};

/// The highest protocol version this model speaks.
pub const MAX_PROTOCOL_VERSION: u64 = 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    #[error("{cmd} takes {expected} argument(s)")]
    ArgCount { cmd: String, expected: usize },
    #[error("{cmd}: {value:?} is not a decimal number in range")]
    BadNumber { cmd: String, value: String },
    #[error("{cmd}: bad key {value:?}: {source}")]
    BadKey { cmd: String, value: String, source: KeyError },
    #[error(
        "{cmd}: bad uuid {value:?} (must be non-empty, without whitespace or control characters)"
    )]
    BadUuid { cmd: String, value: String },
    #[error("{cmd}: auth token may only contain letters and digits")]
    BadAuthToken { cmd: String },
    #[error("{cmd}: unknown service {value:?}")]
    BadService { cmd: String, value: String },
    #[error("{cmd}: associated file {value:?} is an absolute path")]
    AbsoluteFile { cmd: String, value: String },
    #[error("message is not valid UTF-8")]
    NotUtf8,
}

impl ParseError {
    /// The command word of the line that failed, when it was recognised.
    pub fn command(&self) -> Option<&str> {
        use ParseError::*;
        match self {
            ArgCount { cmd, .. }
            | BadNumber { cmd, .. }
            | BadKey { cmd, .. }
            | BadUuid { cmd, .. } => Some(cmd),
            BadAuthToken { cmd } | BadService { cmd, .. } | AbsoluteFile { cmd, .. } => Some(cmd),
            UnknownCommand(_) | NotUtf8 => None,
        }
    }
}

/// Haskell's `isSpace` on a `Char`: Latin-1 spaces plus Unicode category Zs.
/// Unlike `char::is_whitespace` it excludes U+0085, U+2028 and U+2029.
pub(crate) fn is_space(c: char) -> bool {
    match c {
        ' ' | '\t'..='\r' | '\u{a0}' => true,
        c if (c as u32) <= 0x377 => false,
        c => {
            matches!(c, '\u{1680}' | '\u{2000}'..='\u{200a}' | '\u{202f}' | '\u{205f}' | '\u{3000}')
        }
    }
}

/// Split at the first whitespace character, dropping it (git-annex's `splitWord`).
fn split_word(s: &str) -> (&str, &str) {
    match s.char_indices().find(|&(_, c)| is_space(c)) {
        Some((i, c)) => (&s[..i], &s[i + c.len_utf8()..]),
        None => (s, ""),
    }
}

fn words(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_space).filter(|w| !w.is_empty())
}

/// A repository UUID. git-annex does not require the canonical UUID form, so
/// neither do we; it must only be usable as one protocol word.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid(String);

impl Uuid {
    pub fn new(s: impl Into<String>) -> Option<Uuid> {
        let s = s.into();
        let ok =
            !s.is_empty() && !s.chars().any(|c| is_space(c) || c.is_whitespace() || c.is_control());
        ok.then_some(Uuid(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An AUTH token: ASCII letters and digits, possibly empty. Like git-annex we
/// lower-case it, so tokens compare case-insensitively.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AuthToken(String);

impl AuthToken {
    pub fn new(s: &str) -> Option<AuthToken> {
        s.bytes().all(|b| b.is_ascii_alphanumeric()).then(|| AuthToken(s.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Comparison whose time does not depend on where the tokens differ, for
    /// checking credentials (git-annex compares tokens in constant time too).
    pub fn ct_eq(&self, other: &AuthToken) -> bool {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

// Keep tokens out of logs, as git-annex does in its protocol dumps.
impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthToken(<AUTHTOKEN>)")
    }
}

/// The git services CONNECT can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    UploadPack,
    ReceivePack,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Service::UploadPack => "git-upload-pack",
            Service::ReceivePack => "git-receive-pack",
        }
    }
}

/// The file name a GET or PUT is for, used only for display and preferred
/// content checks. On the wire it is one word, possibly empty (no file):
/// `%` is written as `%%` and every whitespace character as a lone `%`.
///
/// Decoding follows git-annex's code (not its comment, which claims the
/// escaping is reversed): `%%` becomes `%`, any other `%` becomes `_`, and
/// control characters become `_`. So the encoding is lossy:
/// - whitespace comes back as `_` (`"a b"` → `"a_b"`), and since `"% "` and
///   `" %"` both encode as `%%%` (decoded `"%_"`), that is not char-wise;
/// - control characters other than whitespace are sent as they are and come
///   back as `_`;
/// - `Some("")` is sent as the empty word and comes back as `None`;
/// - an absolute path (leading `/`) is sent, but the receiver rejects the
///   whole message, as git-annex does.
///
/// git-annex itself escapes per byte, so a name containing byte 0xA0 (as in
/// UTF-8 "à") reaches us as invalid UTF-8 with `%` for that byte; see
/// [`Message::parse_bytes`]. We escape per character, which git-annex (reading
/// lines as UTF-8) splits and unescapes identically.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AssociatedFile(pub Option<String>);

impl AssociatedFile {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for c in self.0.iter().flat_map(|f| f.chars()) {
            match c {
                '%' => out.push_str("%%"),
                c if is_space(c) => out.push('%'),
                c => out.push(c),
            }
        }
        out
    }

    /// Decode one word; `None` for an absolute path.
    pub fn decode(word: &str) -> Option<AssociatedFile> {
        let mut out = String::with_capacity(word.len());
        let mut chars = word.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '%' if chars.next_if_eq(&'%').is_some() => out.push('%'),
                '%' => out.push('_'),
                c if c.is_control() => out.push('_'),
                c => out.push(c),
            }
        }
        if out.is_empty() {
            Some(AssociatedFile(None))
        } else if out.starts_with('/') {
            None
        } else {
            Some(AssociatedFile(Some(out)))
        }
    }
}

impl From<Option<String>> for AssociatedFile {
    fn from(f: Option<String>) -> Self {
        AssociatedFile(f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Client's UUID and token.
    Auth {
        uuid: Uuid,
        token: AuthToken,
    },
    /// Server's UUID.
    AuthSuccess(Uuid),
    AuthFailure,
    Version(u64),
    Connect(Service),
    ConnectDone(i32),
    NotifyChange,
    /// Changed git refs; refs are git ref names, which cannot contain whitespace.
    Changed(Vec<String>),
    CheckPresent(Key),
    LockContent(Key),
    /// Carries no key, whatever the design document says: git-annex's parser
    /// rejects `UNLOCKCONTENT <key>`.
    UnlockContent,
    Remove(Key),
    RemoveBefore {
        timestamp: u64,
        key: Key,
    },
    GetTimestamp,
    Get {
        offset: u64,
        file: AssociatedFile,
        key: Key,
    },
    Put {
        file: AssociatedFile,
        key: Key,
    },
    PutFrom(u64),
    AlreadyHave,
    AlreadyHavePlus(Vec<Uuid>),
    Success,
    SuccessPlus(Vec<Uuid>),
    Failure,
    FailurePlus(Vec<Uuid>),
    /// git-annex keeps these as a set, and so sends them sorted and deduplicated.
    Bypass(BTreeSet<Uuid>),
    /// Followed by exactly this many raw bytes.
    Data(u64),
    DataPresent,
    Valid,
    Invalid,
    Timestamp(u64),
    Error(String),
}

fn number<T: FromStr>(cmd: &str, expected: usize, s: &str) -> Result<T, ParseError> {
    // Empty: an argument is missing; whitespace: there are too many.
    if s.is_empty() || s.contains(is_space) {
        return Err(ParseError::ArgCount { cmd: cmd.into(), expected });
    }
    let digits = s.strip_prefix('-').unwrap_or(s);
    let bad = || ParseError::BadNumber { cmd: cmd.into(), value: s.to_owned() };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    s.parse().map_err(|_| bad())
}

fn key(cmd: &str, expected: usize, s: &str) -> Result<Key, ParseError> {
    if s.is_empty() {
        return Err(ParseError::ArgCount { cmd: cmd.into(), expected });
    }
    s.parse().map_err(|source| ParseError::BadKey { cmd: cmd.into(), value: s.to_owned(), source })
}

fn uuid(cmd: &str, expected: usize, s: &str) -> Result<Uuid, ParseError> {
    if s.is_empty() {
        return Err(ParseError::ArgCount { cmd: cmd.into(), expected });
    }
    Uuid::new(s).ok_or_else(|| ParseError::BadUuid { cmd: cmd.into(), value: s.to_owned() })
}

fn uuids<C: FromIterator<Uuid>>(cmd: &str, rest: &str) -> Result<C, ParseError> {
    words(rest).map(|w| uuid(cmd, 1, w)).collect()
}

fn file(cmd: &str, s: &str) -> Result<AssociatedFile, ParseError> {
    AssociatedFile::decode(s)
        .ok_or_else(|| ParseError::AbsoluteFile { cmd: cmd.into(), value: s.to_owned() })
}

impl Message {
    /// The command word.
    pub fn command(&self) -> &'static str {
        use Message::*;
        match self {
            Auth { .. } => "AUTH",
            AuthSuccess(_) => "AUTH-SUCCESS",
            AuthFailure => "AUTH-FAILURE",
            Version(_) => "VERSION",
            Connect(_) => "CONNECT",
            ConnectDone(_) => "CONNECTDONE",
            NotifyChange => "NOTIFYCHANGE",
            Changed(_) => "CHANGED",
            CheckPresent(_) => "CHECKPRESENT",
            LockContent(_) => "LOCKCONTENT",
            UnlockContent => "UNLOCKCONTENT",
            Remove(_) => "REMOVE",
            RemoveBefore { .. } => "REMOVE-BEFORE",
            GetTimestamp => "GETTIMESTAMP",
            Get { .. } => "GET",
            Put { .. } => "PUT",
            PutFrom(_) => "PUT-FROM",
            AlreadyHave => "ALREADY-HAVE",
            AlreadyHavePlus(_) => "ALREADY-HAVE-PLUS",
            Success => "SUCCESS",
            SuccessPlus(_) => "SUCCESS-PLUS",
            Failure => "FAILURE",
            FailurePlus(_) => "FAILURE-PLUS",
            Bypass(_) => "BYPASS",
            Data(_) => "DATA",
            DataPresent => "DATA-PRESENT",
            Valid => "VALID",
            Invalid => "INVALID",
            Timestamp(_) => "TIMESTAMP",
            Error(_) => "ERROR",
        }
    }

    /// The lowest negotiated protocol version in which this message may be sent.
    pub fn min_version(&self) -> u8 {
        use Message::*;
        match self {
            Valid | Invalid => 1,
            AlreadyHavePlus(_) | SuccessPlus(_) | FailurePlus(_) | Bypass(_) => 2,
            RemoveBefore { .. } | GetTimestamp | Timestamp(_) => 3,
            DataPresent => 4,
            _ => 0,
        }
    }

    /// The line without its terminating newline. Words are joined by single
    /// spaces exactly as git-annex does, so `ERROR` with empty text and
    /// `CHANGED` with no refs end in a space. Any `\n` or `\r` (possible only
    /// in ERROR text or refs) becomes a space, so the result is always one line.
    pub fn serialize(&self) -> String {
        use Message::*;
        let mut out = String::from(self.command());
        let mut word = |w: &str| {
            out.push(' ');
            out.push_str(w);
        };
        match self {
            Auth { uuid, token } => {
                word(uuid.as_str());
                word(token.as_str());
            }
            AuthSuccess(u) => word(u.as_str()),
            Version(n) | PutFrom(n) | Data(n) | Timestamp(n) => word(&n.to_string()),
            Connect(s) => word(s.as_str()),
            ConnectDone(code) => word(&code.to_string()),
            Changed(refs) => word(&refs.join(" ")),
            CheckPresent(k) | LockContent(k) | Remove(k) => word(&k.to_string()),
            RemoveBefore { timestamp, key } => {
                word(&timestamp.to_string());
                word(&key.to_string());
            }
            Get { offset, file, key } => {
                word(&offset.to_string());
                word(&file.encode());
                word(&key.to_string());
            }
            Put { file, key } => {
                word(&file.encode());
                word(&key.to_string());
            }
            AlreadyHavePlus(us) | SuccessPlus(us) | FailurePlus(us) => {
                us.iter().for_each(|u| word(u.as_str()))
            }
            Bypass(us) => us.iter().for_each(|u| word(u.as_str())),
            Error(text) => word(text),
            AuthFailure | NotifyChange | UnlockContent | GetTimestamp | AlreadyHave | Success
            | Failure | DataPresent | Valid | Invalid => {}
        }
        if out.contains(['\n', '\r']) {
            out = out.replace(['\n', '\r'], " ");
        }
        out
    }

    /// Parse one line (without its newline).
    pub fn parse(line: &str) -> Result<Message, ParseError> {
        use Message::*;
        let (cmd, rest) = split_word(line);
        let none = |m: Message| {
            if rest.is_empty() {
                Ok(m)
            } else {
                Err(ParseError::ArgCount { cmd: cmd.into(), expected: 0 })
            }
        };
        Ok(match cmd {
            "AUTH" => {
                let (u, t) = split_word(rest);
                let token = AuthToken::new(t)
                    .ok_or_else(|| ParseError::BadAuthToken { cmd: cmd.into() })?;
                Auth { uuid: uuid(cmd, 2, u)?, token }
            }
            "AUTH-SUCCESS" => AuthSuccess(uuid(cmd, 1, rest)?),
            "AUTH-FAILURE" => none(AuthFailure)?,
            "VERSION" => Version(number(cmd, 1, rest)?),
            "CONNECT" => Connect(match rest {
                "git-upload-pack" => Service::UploadPack,
                "git-receive-pack" => Service::ReceivePack,
                "" => {
                    return Err(ParseError::ArgCount { cmd: cmd.into(), expected: 1 });
                }
                _ => {
                    return Err(ParseError::BadService { cmd: cmd.into(), value: rest.to_owned() });
                }
            }),
            "CONNECTDONE" => ConnectDone(number(cmd, 1, rest)?),
            "NOTIFYCHANGE" => none(NotifyChange)?,
            "CHANGED" => Changed(words(rest).map(str::to_owned).collect()),
            "CHECKPRESENT" => CheckPresent(key(cmd, 1, rest)?),
            "LOCKCONTENT" => LockContent(key(cmd, 1, rest)?),
            "UNLOCKCONTENT" => none(UnlockContent)?,
            "REMOVE" => Remove(key(cmd, 1, rest)?),
            "REMOVE-BEFORE" => {
                let (ts, k) = split_word(rest);
                RemoveBefore { timestamp: number(cmd, 2, ts)?, key: key(cmd, 2, k)? }
            }
            "GETTIMESTAMP" => none(GetTimestamp)?,
            "GET" => {
                let (off, rest) = split_word(rest);
                let (f, k) = split_word(rest);
                Get { offset: number(cmd, 3, off)?, file: file(cmd, f)?, key: key(cmd, 3, k)? }
            }
            "PUT" => {
                let (f, k) = split_word(rest);
                Put { file: file(cmd, f)?, key: key(cmd, 2, k)? }
            }
            "PUT-FROM" => PutFrom(number(cmd, 1, rest)?),
            "ALREADY-HAVE" => none(AlreadyHave)?,
            "ALREADY-HAVE-PLUS" => AlreadyHavePlus(uuids(cmd, rest)?),
            "SUCCESS" => none(Success)?,
            "SUCCESS-PLUS" => SuccessPlus(uuids(cmd, rest)?),
            "FAILURE" => none(Failure)?,
            "FAILURE-PLUS" => FailurePlus(uuids(cmd, rest)?),
            "BYPASS" => Bypass(uuids(cmd, rest)?),
            "DATA" => Data(number(cmd, 1, rest)?),
            "DATA-PRESENT" => none(DataPresent)?,
            "VALID" => none(Valid)?,
            "INVALID" => none(Invalid)?,
            "TIMESTAMP" => Timestamp(number(cmd, 1, rest)?),
            "ERROR" => Error(rest.to_owned()),
            _ => return Err(ParseError::UnknownCommand(cmd.to_owned())),
        })
    }

    /// Parse a raw line that may not be UTF-8. git-annex sends associated
    /// file names byte-wise, so GET and PUT lines can carry invalid UTF-8 in
    /// the file word; that is replaced with U+FFFD (the name is only shown to
    /// users). ERROR text is treated the same way. Anywhere else — and in
    /// particular in a key, which names stored content — invalid UTF-8 is
    /// refused rather than silently turned into a different name.
    pub fn parse_bytes(line: &[u8]) -> Result<Message, ParseError> {
        if let Ok(s) = std::str::from_utf8(line) {
            return Message::parse(s);
        }
        let msg = Message::parse(&String::from_utf8_lossy(line))?;
        let ok = match &msg {
            Message::Error(_) => true,
            // The key is the line's suffix: if the raw bytes end with its
            // text, no replacement happened inside it.
            Message::Get { key, .. } | Message::Put { key, .. } => {
                line.ends_with(key.to_string().as_bytes())
            }
            _ => false,
        };
        if ok { Ok(msg) } else { Err(ParseError::NotUtf8) }
    }
}

impl FromStr for Message {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Message, ParseError> {
        Message::parse(s)
    }
}

#[cfg(test)]
pub(crate) mod tests;
