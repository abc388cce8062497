//! A suite's `Release` fields: what the archive signed, including the
//! SHA256 of every index file under `dists/<suite>/`.

use anyhow::{Context, Result, bail};

use super::deb822;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub origin: String,
    pub suite: String,
    pub codename: String,
    pub date: String,
    pub architectures: Vec<String>,
    pub components: Vec<String>,
    pub acquire_by_hash: bool,
    pub sha256: Vec<FileHash>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHash {
    /// Relative to `dists/<suite>/`, e.g. `main/binary-amd64/Packages.xz`.
    pub path: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// Parses the signed body of an InRelease (its first paragraph). Fields
/// other than SHA256 are empty when missing; a body without SHA256 is an
/// error, since nothing it names could be checked.
pub fn parse(body: &str) -> Result<Release> {
    let paragraph = deb822::paragraphs(body)
        .next()
        .context("Release file is empty")?;
    let text = |field| paragraph.get(field).unwrap_or_default().to_owned();
    let words = |field| {
        paragraph
            .get(field)
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let Some(sha256) = paragraph.get("SHA256") else {
        bail!("Release file has no SHA256 section");
    };
    Ok(Release {
        origin: text("Origin"),
        suite: text("Suite"),
        codename: text("Codename"),
        date: text("Date"),
        architectures: words("Architectures"),
        components: words("Components"),
        acquire_by_hash: paragraph
            .get("Acquire-By-Hash")
            .is_some_and(|v| v.eq_ignore_ascii_case("yes")),
        sha256: sha256
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(file_hash)
            .collect::<Result<_>>()?,
    })
}

/// One `<hex> <size> <path>` line.
fn file_hash(line: &str) -> Result<FileHash> {
    let mut words = line.split_whitespace();
    let (Some(hash), Some(size), Some(path), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        bail!("Release SHA256 line is not `<hash> <size> <path>`: {line:?}");
    };
    if hash.len() != 64 || !hash.bytes().all(|c| c.is_ascii_hexdigit()) {
        bail!("Release SHA256 line has a bad hash: {line:?}");
    }
    let size = size
        .parse()
        .with_context(|| format!("Release SHA256 line has a bad size: {line:?}"))?;
    Ok(FileHash {
        path: path.to_owned(),
        size,
        sha256: hash.to_ascii_lowercase(),
    })
}

impl Release {
    /// The entry for `path` (relative to `dists/<suite>/`).
    pub fn file(&self, path: &str) -> Option<&FileHash> {
        self.sha256.iter().find(|file| file.path == path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH_A: &str = "3f0c9ea8a9b5fe0ea6a6b9b84f0b37e3b5b6c1a2d4e5f60718293a4b5c6d7e8f";
    const HASH_B: &str = "00000000000000000000000000000000000000000000000000000000000000ab";

    fn body() -> String {
        format!(
            "Origin: Debian\nLabel: Debian\nSuite: stable\nVersion: 12.13\nCodename: bookworm\n\
             Date: Sat, 11 Jul 2026 10:16:37 UTC\nAcquire-By-Hash: yes\nNo-Support-for-Architecture-all: Packages\n\
             Architectures: all amd64 arm64\nComponents: main contrib non-free-firmware\n\
             Description: Debian 12.13 Released 11 July 2026\n\
             MD5Sum:\n 0123456789abcdef0123456789abcdef 1 main/binary-amd64/Packages.xz\n\
             SHA256:\n {} 8790396 main/binary-amd64/Packages.xz\n {}    50060337 main/binary-amd64/Packages\n",
            HASH_A.to_uppercase(),
            HASH_B
        )
    }

    #[test]
    fn parses_fields_and_hashes() {
        let release = parse(&body()).unwrap();
        assert_eq!(release.origin, "Debian");
        assert_eq!(release.suite, "stable");
        assert_eq!(release.codename, "bookworm");
        assert_eq!(release.date, "Sat, 11 Jul 2026 10:16:37 UTC");
        assert_eq!(release.architectures, ["all", "amd64", "arm64"]);
        assert_eq!(release.components, ["main", "contrib", "non-free-firmware"]);
        assert!(release.acquire_by_hash);
        assert_eq!(release.sha256.len(), 2);
        let xz = release.file("main/binary-amd64/Packages.xz").unwrap();
        assert_eq!(xz.size, 8790396);
        assert_eq!(xz.sha256, HASH_A);
        let plain = release.file("main/binary-amd64/Packages").unwrap();
        assert_eq!((plain.size, plain.sha256.as_str()), (50060337, HASH_B));
        assert!(release.file("main/binary-arm64/Packages.xz").is_none());
    }

    #[test]
    fn missing_sha256_is_an_error() {
        let err = parse("Origin: Debian\nMD5Sum:\n 00 1 a\n").unwrap_err();
        assert!(err.to_string().contains("no SHA256"), "{err}");
    }

    #[test]
    fn bad_lines_are_errors() {
        let err = parse(&format!("SHA256:\n {HASH_A} big x\n")).unwrap_err();
        assert!(err.to_string().contains("bad size"), "{err}");
        let err = parse("SHA256:\n abc 1 x\n").unwrap_err();
        assert!(err.to_string().contains("bad hash"), "{err}");
        let err = parse(&format!("SHA256:\n {HASH_A} 1\n")).unwrap_err();
        assert!(err.to_string().contains("<hash> <size> <path>"), "{err}");
    }

    #[test]
    fn optional_fields_default_to_empty() {
        let release = parse(&format!("SHA256:\n {HASH_B} 1 x\n")).unwrap();
        assert_eq!(release.codename, "");
        assert!(release.architectures.is_empty());
        assert!(!release.acquire_by_hash);
    }
}
