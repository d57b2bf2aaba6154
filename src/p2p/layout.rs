//! Where git-annex keeps an object: `annex/objects/<h1>/<h2>/<KEY>/<KEY>`.
//!
//! Both directory hashes come from the md5 of the key without chunk fields.
//! Bare repositories (and so our stores) use the lower-case form; non-bare
//! repositories use the older mixed-case form under `.git/annex/objects/`.

use std::path::PathBuf;

use md5::{Digest, Md5};

use super::key::Key;

fn key_md5(key: &Key) -> [u8; 16] {
    Md5::digest(key.without_chunk().to_string().as_bytes()).into()
}

/// `abc/def`: the first six lower-case hex digits of the md5, in two levels.
pub fn hash_dir_lower(key: &Key) -> String {
    let hex = hex::encode(key_md5(key));
    format!("{}/{}", &hex[0..3], &hex[3..6])
}

/// `Xy/Zw`: the mixed-case hash of non-bare repositories. Each little-endian
/// 32-bit word of the md5 is spelled as base-32 digits, pairs swapped; only
/// the first four characters are used.
pub fn hash_dir_mixed(key: &Key) -> String {
    const CHARS: &[u8; 32] = b"0123456789zqjxkmvwgpfZQJXKMVWGPF";
    let digest = key_md5(key);
    let word = u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]]);
    let c = |i: u32| CHARS[((word >> (6 * i)) & 31) as usize] as char;
    // Characters 0..4 after swapping pairs: c1 c0 c3 c2.
    format!("{}{}/{}{}", c(1), c(0), c(3), c(2))
}

/// The object's path relative to a bare repository.
pub fn object_path_bare(key: &Key) -> PathBuf {
    let k = key.to_string();
    PathBuf::from(format!("annex/objects/{}/{k}/{k}", hash_dir_lower(key)))
}

/// The object's path relative to a non-bare repository's top.
pub fn object_path_nonbare(key: &Key) -> PathBuf {
    let k = key.to_string();
    PathBuf::from(format!(".git/annex/objects/{}/{k}/{k}", hash_dir_mixed(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str =
        "SHA256E-s6--5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";

    #[test]
    fn reference_example_lower() {
        let key: Key = HELLO.parse().unwrap();
        assert_eq!(hash_dir_lower(&key), "992/280");
        assert_eq!(
            object_path_bare(&key),
            PathBuf::from(format!("annex/objects/992/280/{HELLO}/{HELLO}"))
        );
    }

    #[test]
    fn chunk_fields_do_not_move_an_object() {
        let whole: Key = "SHA256-s100--abc".parse().unwrap();
        let chunk: Key = "SHA256-s100-S10-C2--abc".parse().unwrap();
        assert_eq!(hash_dir_lower(&whole), hash_dir_lower(&chunk));
        assert_eq!(hash_dir_mixed(&whole), hash_dir_mixed(&chunk));
    }

    /// Values printed by `git annex examinekey --format='${hashdirlower} ${hashdirmixed}'`.
    #[test]
    fn matches_git_annex_examinekey() {
        for (key, lower, mixed) in [
            (HELLO, "992/280", "zK/02"),
            ("WORM-s100-m1700000000--foo", "469/20f", "96/3K"),
            ("SHA1-s0--da39a3ee5e6b4b0d3255bfef95601890afd80709", "cd1/d84", "Jx/11"),
            ("MD5E-s3-S1-C2--abc.txt", "bcd/078", "2W/Px"),
        ] {
            let key: Key = key.parse().unwrap();
            assert_eq!(
                (hash_dir_lower(&key).as_str(), hash_dir_mixed(&key).as_str()),
                (lower, mixed),
                "{key}"
            );
        }
    }

    #[test]
    fn mixed_hash_uses_its_alphabet() {
        let key: Key = HELLO.parse().unwrap();
        let h = hash_dir_mixed(&key);
        assert_eq!(h.len(), 5);
        assert!(
            h.chars().filter(|c| *c != '/').all(|c| "0123456789zqjxkmvwgpfZQJXKMVWGPF".contains(c))
        );
    }
}
