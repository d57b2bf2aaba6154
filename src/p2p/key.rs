//! git-annex keys: `BACKEND[-sSIZE][-mMTIME][-SCHUNKSIZE-CCHUNKNUM]--NAME`.
//!
//! Keys arrive from clients and become file and directory names in a store,
//! so parsing is strict: besides git-annex's own grammar (numeric fields only,
//! non-empty backend), anything that could name another path is refused.

use std::fmt;
use std::str::FromStr;

/// The longest key we accept: a key is used as a single file name, and common
/// filesystems refuse names longer than this many bytes.
pub const MAX_KEY_LEN: usize = 255;

/// git-annex limits the extension of `*E` keys to this many bytes.
const MAX_EXTENSION_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub backend: String,
    pub size: Option<u64>,
    pub mtime: Option<u64>,
    pub chunk_size: Option<u64>,
    pub chunk_num: Option<u64>,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key is empty")]
    Empty,
    #[error("key is {0} bytes long; at most {MAX_KEY_LEN} are allowed")]
    TooLong(usize),
    #[error("key has no \"--\" before its name")]
    NoName,
    #[error("key has an empty backend")]
    EmptyBackend,
    #[error("key has an empty name")]
    EmptyName,
    #[error(
        "key field {0:?} is not one of -sSIZE, -mMTIME, -SCHUNKSIZE, -CCHUNKNUM with a decimal number"
    )]
    BadField(String),
    #[error("key contains {0}, which could escape the object store")]
    Unsafe(&'static str),
    #[error("key's extension is longer than {MAX_EXTENSION_LEN} bytes")]
    LongExtension,
}

impl Key {
    /// Backends whose name ends in `E` keep the file's extension after the
    /// checksum; that part is not hashed.
    pub fn has_extension(&self) -> bool {
        self.backend.ends_with('E') && self.backend != "E"
    }

    /// The part of the name a checksum backend compares with the digest.
    pub fn hash_part(&self) -> &str {
        if self.has_extension() { self.name.split('.').next().unwrap_or("") } else { &self.name }
    }

    /// The key without its chunk fields, as used for object hashing.
    pub fn without_chunk(&self) -> Key {
        Key { chunk_size: None, chunk_num: None, ..self.clone() }
    }

    /// Whether the key names its content by a checksum, so that every copy
    /// of it holds the same bytes. WORM, URL and VURL keys, git-annex's
    /// internal GIT* keys and external backends' X* keys promise no such
    /// thing: two nodes may hold different content under one of them.
    pub fn is_checksum(&self) -> bool {
        let b = self.backend.strip_suffix('E').unwrap_or(&self.backend);
        matches!(b, "MD5" | "SHA1" | "SHA224" | "SHA256" | "SHA384" | "SHA512")
            || ["SHA3_", "SKEIN", "BLAKE"].iter().any(|family| {
                b.strip_prefix(family)
                    .is_some_and(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_alphanumeric()))
            })
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.backend)?;
        for (tag, v) in
            [('s', self.size), ('m', self.mtime), ('S', self.chunk_size), ('C', self.chunk_num)]
        {
            if let Some(v) = v {
                write!(f, "-{tag}{v}")?;
            }
        }
        write!(f, "--{}", self.name)
    }
}

fn check_safe(s: &str) -> Result<(), KeyError> {
    if s.contains('/') {
        return Err(KeyError::Unsafe("'/'"));
    }
    if s.contains('\\') && cfg!(windows) {
        return Err(KeyError::Unsafe("'\\'"));
    }
    if s.contains('\0') {
        return Err(KeyError::Unsafe("a NUL byte"));
    }
    if s.chars().any(char::is_control) {
        return Err(KeyError::Unsafe("a control character"));
    }
    Ok(())
}

impl FromStr for Key {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Key, KeyError> {
        if s.is_empty() {
            return Err(KeyError::Empty);
        }
        if s.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong(s.len()));
        }
        check_safe(s)?;
        // A key is also a directory name: "." and ".." must never come out of
        // a parse, whatever the grammar would say.
        if s == "." || s == ".." {
            return Err(KeyError::Unsafe("a path component \".\" or \"..\""));
        }
        let (fields, name) = s.split_once("--").ok_or(KeyError::NoName)?;
        if name.is_empty() {
            return Err(KeyError::EmptyName);
        }
        let mut parts = fields.split('-');
        let backend = parts.next().unwrap_or("");
        if backend.is_empty() {
            return Err(KeyError::EmptyBackend);
        }
        let mut key = Key {
            backend: backend.to_owned(),
            size: None,
            mtime: None,
            chunk_size: None,
            chunk_num: None,
            name: name.to_owned(),
        };
        // Fields must appear in git-annex's order, each at most once.
        let mut order = 0;
        for part in parts {
            let bad = || KeyError::BadField(part.to_owned());
            let (tag, digits) = part.split_at_checked(1).ok_or_else(bad)?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let value: u64 = digits.parse().map_err(|_| bad())?;
            let (pos, slot) = match tag {
                "s" => (1, &mut key.size),
                "m" => (2, &mut key.mtime),
                "S" => (3, &mut key.chunk_size),
                "C" => (4, &mut key.chunk_num),
                _ => return Err(bad()),
            };
            if pos <= order {
                return Err(bad());
            }
            order = pos;
            *slot = Some(value);
        }
        if key.has_extension() {
            let ext_len = key.name.len() - key.hash_part().len();
            if ext_len > MAX_EXTENSION_LEN {
                return Err(KeyError::LongExtension);
            }
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HELLO: &str =
        "SHA256E-s6--5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";

    #[test]
    fn parses_reference_example() {
        let k: Key = HELLO.parse().unwrap();
        assert_eq!(k.backend, "SHA256E");
        assert_eq!(k.size, Some(6));
        assert_eq!(k.mtime, None);
        assert_eq!(
            k.hash_part(),
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
        assert_eq!(k.to_string(), HELLO);
    }

    #[test]
    fn extension_is_not_part_of_the_hash() {
        let k: Key = "SHA256E-s6--abc.tar.gz".parse().unwrap();
        assert_eq!(k.hash_part(), "abc");
        let k: Key = "SHA256-s6--abc.tar.gz".parse().unwrap();
        assert_eq!(k.hash_part(), "abc.tar.gz");
    }

    #[test]
    fn checksum_keys_are_told_from_others() {
        for k in [
            HELLO,
            "SHA1-s0--da39a3ee5e6b4b0d3255bfef95601890afd80709",
            "MD5E-s3--abc.txt",
            "SHA3_256-s1--ab",
            "BLAKE2B256E-s1--ab",
            "SKEIN512-s1--ab",
        ] {
            assert!(k.parse::<Key>().unwrap().is_checksum(), "{k}");
        }
        for k in [
            "WORM-s100-m1700000000--foo",
            "URL--http&c%%example.com%x",
            "VURL-s5--http&c%%example.com%x",
            "GITBUNDLE--x",
            "XFOO-s1--ab",
            "MD5X-s1--ab",
        ] {
            assert!(!k.parse::<Key>().unwrap().is_checksum(), "{k}");
        }
    }

    #[test]
    fn all_fields_round_trip() {
        let s = "WORM-s100-m1700000000-S1048576-C3--some-file name.txt";
        let k: Key = s.parse().unwrap();
        assert_eq!(
            (k.size, k.mtime, k.chunk_size, k.chunk_num),
            (Some(100), Some(1700000000), Some(1048576), Some(3))
        );
        assert_eq!(k.name, "some-file name.txt");
        assert_eq!(k.to_string(), s);
        assert_eq!(k.without_chunk().to_string(), "WORM-s100-m1700000000--some-file name.txt");
    }

    #[test]
    fn refuses_keys_that_escape_the_store() {
        for bad in [
            "SHA256E-s6--../../etc/passwd",
            "SHA256E-s6--a/b",
            "../x--y",
            ".",
            "..",
            "SHA256-s1--a\0b",
            "SHA256-s1--a\nb",
            "SHA256-s1--\x7f",
        ] {
            let err = bad.parse::<Key>().unwrap_err();
            assert!(matches!(err, KeyError::Unsafe(_)), "{bad:?} gave {err}");
        }
    }

    #[test]
    fn refuses_malformed_keys() {
        assert_eq!("".parse::<Key>(), Err(KeyError::Empty));
        assert_eq!("SHA256".parse::<Key>(), Err(KeyError::NoName));
        assert_eq!("--abc".parse::<Key>(), Err(KeyError::EmptyBackend));
        assert_eq!("SHA256-s6--".parse::<Key>(), Err(KeyError::EmptyName));
        for bad in [
            "SHA256-x6--a",
            "SHA256-s--a",
            "SHA256-s-1--a",
            "SHA256-s6-s6--a",
            "SHA256-m1-s6--a",
            "SHA256-s99999999999999999999999--a",
            "SHA256-s+1--a",
        ] {
            assert!(matches!(bad.parse::<Key>(), Err(KeyError::BadField(_))), "{bad}");
        }
        let long = format!("WORM--{}", "a".repeat(300));
        assert_eq!(long.parse::<Key>(), Err(KeyError::TooLong(306)));
        let ext = format!("SHA256E--abc.{}", "x".repeat(64));
        assert_eq!(ext.parse::<Key>(), Err(KeyError::LongExtension));
    }

    fn arb_key() -> impl Strategy<Value = Key> {
        (
            "[A-Z][A-Z0-9_]{0,12}",
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>()),
            proptest::option::of((any::<u64>(), any::<u64>())),
            "[a-zA-Z0-9_.,+ -]{1,60}",
        )
            .prop_filter_map(
                "names that are not keys",
                |(backend, size, mtime, chunk, name)| {
                    let k = Key {
                        backend,
                        size,
                        mtime,
                        chunk_size: chunk.map(|c| c.0),
                        chunk_num: chunk.map(|c| c.1),
                        name,
                    };
                    (k.name != "." && k.name != ".." && k.hash_part().len() + 64 >= k.name.len())
                        .then_some(k)
                },
            )
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(k in arb_key()) {
            let s = k.to_string();
            prop_assert_eq!(s.parse::<Key>(), Ok(k));
        }

        #[test]
        fn parse_never_yields_a_path(s in "\\PC{0,80}") {
            if let Ok(k) = s.parse::<Key>() {
                let text = k.to_string();
                prop_assert!(!text.contains('/') && !text.contains('\0'));
                prop_assert!(text != "." && text != "..");
                prop_assert_eq!(text.parse::<Key>(), Ok(k));
            }
        }
    }
}
