//! Incremental checksum verification of content against its key.

use sha2::digest::DynDigest;

use super::key::Key;

/// Hashes content as it streams and compares the result with the key's name.
pub struct Verifier {
    hasher: Hasher,
    expected: String,
}

enum Hasher {
    Digest(Box<dyn DynDigest + Send + Sync>),
    Blake3(Box<blake3::Hasher>),
}

fn digest_for(backend: &str) -> Option<Hasher> {
    use blake2::digest::consts::{U20, U28, U32, U48, U64};
    let d = |h: Box<dyn DynDigest + Send + Sync>| Some(Hasher::Digest(h));
    match backend.strip_suffix('E').unwrap_or(backend) {
        "SHA1" => d(Box::<sha1::Sha1>::default()),
        "MD5" => d(Box::<md5::Md5>::default()),
        "SHA224" => d(Box::<sha2::Sha224>::default()),
        "SHA256" => d(Box::<sha2::Sha256>::default()),
        "SHA384" => d(Box::<sha2::Sha384>::default()),
        "SHA512" => d(Box::<sha2::Sha512>::default()),
        "SHA3_224" => d(Box::<sha3::Sha3_224>::default()),
        "SHA3_256" => d(Box::<sha3::Sha3_256>::default()),
        "SHA3_384" => d(Box::<sha3::Sha3_384>::default()),
        "SHA3_512" => d(Box::<sha3::Sha3_512>::default()),
        "BLAKE2B160" => d(Box::<blake2::Blake2b<U20>>::default()),
        "BLAKE2B224" => d(Box::<blake2::Blake2b<U28>>::default()),
        "BLAKE2B256" => d(Box::<blake2::Blake2b<U32>>::default()),
        "BLAKE2B384" => d(Box::<blake2::Blake2b<U48>>::default()),
        "BLAKE2B512" => d(Box::<blake2::Blake2b<U64>>::default()),
        "BLAKE2S160" => d(Box::<blake2::Blake2s<U20>>::default()),
        "BLAKE2S224" => d(Box::<blake2::Blake2s<U28>>::default()),
        "BLAKE2S256" => d(Box::<blake2::Blake2s<U32>>::default()),
        "BLAKE3_256" => Some(Hasher::Blake3(Box::default())),
        _ => None,
    }
}

impl Verifier {
    /// A verifier for checksum keys; `None` for keys that carry no checksum we
    /// can check (WORM, URL, and backends such as SKEIN or XXH3), whose content
    /// is accepted as git-annex accepts it, unverified.
    pub fn for_key(key: &Key) -> Option<Verifier> {
        let hasher = digest_for(&key.backend)?;
        // E backends keep an extension after the digest; plain ones must not.
        if !key.has_extension() && key.backend.ends_with('E') {
            return None;
        }
        Some(Verifier { hasher, expected: key.hash_part().to_owned() })
    }

    pub fn update(&mut self, data: &[u8]) {
        match &mut self.hasher {
            Hasher::Digest(h) => h.update(data),
            Hasher::Blake3(h) => {
                h.update(data);
            }
        }
    }

    /// True when the content matches the key.
    pub fn finish(self) -> bool {
        let digest = match self.hasher {
            Hasher::Digest(h) => hex::encode(h.finalize()),
            Hasher::Blake3(h) => h.finalize().to_hex().to_string(),
        };
        // Some old git-annex versions wrote the digest with a leading '\'.
        let expected = self.expected.strip_prefix('\\').unwrap_or(&self.expected);
        digest == expected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(key: &str, content: &[u8]) -> Option<bool> {
        let mut v = Verifier::for_key(&key.parse().unwrap())?;
        // Feed in uneven pieces, as a network stream would.
        for piece in content.chunks(3) {
            v.update(piece);
        }
        Some(v.finish())
    }

    /// Keys of "hello\n" as git-annex 10.20261026 computes them
    /// (`git annex calckey --backend=B hello.txt`).
    const HELLO_KEYS: &[&str] = &[
        "SHA256E-s6--5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03.txt",
        "SHA256-s6--5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03",
        "SHA1-s6--f572d396fae9206628714fb2ce00f72e94f2258f",
        "SHA1E-s6--f572d396fae9206628714fb2ce00f72e94f2258f.txt",
        "MD5-s6--b1946ac92492d2347c6235b4d2611184",
        "MD5E-s6--b1946ac92492d2347c6235b4d2611184.txt",
        "SHA224-s6--2d6d67d91d0badcdd06cbbba1fe11538a68a37ec9c2e26457ceff12b",
        "SHA384-s6--1d0f284efe3edea4b9ca3bd514fa134b17eae361ccc7a1eefeff801b9bd6604e01f21f6bf249ef030599f0c218f2ba8c",
        "SHA512-s6--e7c22b994c59d9cf2b48e549b1e24666636045930d3da7c1acb299d1c3b7f931f94aae41edda2c2b207a36e10f8bcb8d45223e54878f5b316e7ce3b6bc019629",
        "SHA512E-s6--e7c22b994c59d9cf2b48e549b1e24666636045930d3da7c1acb299d1c3b7f931f94aae41edda2c2b207a36e10f8bcb8d45223e54878f5b316e7ce3b6bc019629.txt",
        "SHA3_256E-s6--b314e28493eae9dab57ac4f0c6d887bddbbeb810e900d818395ace558e96516d.txt",
        "SHA3_512-s6--ac766ba623301e0ad63c48cb2fc469d10145f65c9f1f28fe761c78c386ed295a1fda1b05e280354e620757d8a83e05a45f66438dd734278668c1c27ac6f27150",
        "BLAKE2B160-s6--d2f799bb9610968a2efa8f7682d5f2f1d45163d7",
        "BLAKE2B256E-s6--93becc6e9882211c3ec3708c95bcd69baab7bb59c7f4bc84ce637b88a534b783.txt",
        "BLAKE2B512-s6--f60ce482e5cc1229f39d71313171a8d9f4ca3a87d066bf4b205effb528192a75f14f3271e2c1a90e1de53f275b4d4793eef2f5e31ea90d2ce29d2e481c36435f",
        "BLAKE2S256-s6--3969b3926654065966b6f8d9a65789b0f76d56e1e2ab67dd94faa770959187ca",
        "BLAKE3_256E-s6--8e4c7c1b99dbfd50e7a95185fead5ee1448fa904a2fdd778eaf5f2dbfd629a99.txt",
    ];

    #[test]
    fn accepts_matching_content_and_refuses_other() {
        for key in HELLO_KEYS {
            assert_eq!(check(key, b"hello\n"), Some(true), "{key}");
            assert_eq!(check(key, b"hellO\n"), Some(false), "{key}");
            assert_eq!(check(key, b"hello"), Some(false), "{key}");
        }
    }

    #[test]
    fn keys_without_checksums_are_not_verified() {
        assert!(check("WORM-s6-m1--hello", b"anything").is_none());
        assert!(check("URL--http&c%%example.com", b"anything").is_none());
        assert!(check("XXH3-s6--99fc819aaba2462a", b"anything").is_none());
    }
}
