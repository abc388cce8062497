//! sha256 digests: parsing `sha256:<hex>` strictly (a digest becomes a
//! file name in the store, so nothing but 64 hex digits may pass) and
//! hashing streams as they are read.

use std::fmt;
use std::io::{self, Read};

use anyhow::bail;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A validated sha256 digest.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest {
    hex: String,
}

impl Digest {
    pub fn parse(text: &str) -> anyhow::Result<Digest> {
        let Some(hex) = text.strip_prefix("sha256:") else {
            bail!("unsupported digest `{text}`: den only handles sha256 digests");
        };
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            bail!("malformed digest `{text}`: expected `sha256:` and 64 lowercase hex digits");
        }
        Ok(Digest {
            hex: hex.to_string(),
        })
    }

    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    fn from_hasher(hasher: Sha256) -> Digest {
        Digest {
            hex: to_hex(&hasher.finalize()),
        }
    }

    /// The 64 hex digits, used as a file name.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl TryFrom<String> for Digest {
    type Error = anyhow::Error;
    fn try_from(text: String) -> anyhow::Result<Digest> {
        Digest::parse(&text)
    }
}

impl From<Digest> for String {
    fn from(digest: Digest) -> String {
        digest.to_string()
    }
}

/// The digest and length of a stream fed to it in pieces.
#[derive(Default)]
pub struct Hasher {
    hasher: Sha256,
    len: u64,
}

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
    }

    pub fn finish(self) -> (Digest, u64) {
        (Digest::from_hasher(self.hasher), self.len)
    }
}

/// Passes reads through while hashing and counting every byte.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::default(),
        }
    }

    /// Reads what is left (so the digest covers the whole stream), then
    /// returns the digest, the total length and the inner reader.
    pub fn finish(mut self) -> io::Result<(Digest, u64, R)> {
        io::copy(&mut self, &mut io::sink())?;
        let (digest, len) = self.hasher.finish();
        Ok((digest, len, self.inner))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_sha256_hex() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert_eq!(Digest::parse(&good).unwrap().to_string(), good);
        for bad in [
            "sha512:00".to_string(),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:../../{}", "a".repeat(58)),
            "sha256:abc".to_string(),
        ] {
            assert!(Digest::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hashing_reader_matches_one_shot() {
        let data = b"hello world".repeat(1000);
        let mut reader = HashingReader::new(&data[..]);
        let mut first = [0u8; 10];
        reader.read_exact(&mut first).unwrap();
        let (digest, len, _) = reader.finish().unwrap();
        assert_eq!(digest, Digest::of(&data));
        assert_eq!(len, data.len() as u64);
    }
}
