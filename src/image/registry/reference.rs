//! Registry references, `[host[:port]/]name[:tag][@digest]`, with
//! Docker's defaults: no host means Docker Hub, and a one-component name
//! there gets `library/` (`python` → `docker.io/library/python:latest`).

use std::fmt;

use crate::image::digest::Digest;

/// Docker Hub as references name it.
pub const DOCKER_HUB: &str = "docker.io";
/// The host Docker Hub's registry API is served from.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The key Docker Hub credentials are stored under in docker's config.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// A parsed, normalised registry reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]` as written (`docker.io` for Docker Hub).
    pub registry: String,
    /// The repository path, e.g. `library/python`.
    pub repository: String,
    /// The tag; `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    pub fn parse(text: &str) -> Result<Reference, String> {
        if text.is_empty() {
            return Err("the reference is empty".into());
        }
        if text.contains("://") {
            return Err("a registry reference has no scheme: write `host/name:tag`".into());
        }
        let (rest, digest) = match text.rsplit_once('@') {
            Some((rest, digest)) => (
                rest,
                Some(Digest::parse(digest).map_err(|e| e.to_string())?),
            ),
            None => (text, None),
        };
        let (name, tag) = match rest.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
            _ => (rest, None),
        };
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(format!(
                "`{tag}` is not a valid tag (letters, digits, `_`, `.` and `-`, at most 128, \
                 not starting with `.` or `-`)"
            ));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), path.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
            _ => registry,
        };
        if !valid_host(&registry) {
            return Err(format!("`{registry}` is not a valid registry host[:port]"));
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.is_empty() {
            return Err("it names no repository".into());
        }
        if repository.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "repository names must be lowercase (`{repository}`)"
            ));
        }
        if !repository.split('/').all(valid_component) {
            return Err(format!(
                "`{repository}` is not a valid repository name (lowercase letters and digits, \
                 separated by `.`, `_`, `-` or `/`)"
            ));
        }
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_string()),
            (tag, _) => tag.map(str::to_string),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `host/repository`, the reference without tag and digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The host to connect to (Docker Hub's API host for `docker.io`).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// What to ask the registry for: the digest if pinned, else the tag.
    pub fn object(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.clone(),
            (None, None) => "latest".to_string(),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `[a-z0-9]+([._-]+[a-z0-9]+)*` (`__` and runs of separators included).
fn valid_component(part: &str) -> bool {
    let bytes = part.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
        && bytes
            .iter()
            .all(|b| alnum(b) || matches!(b, b'.' | b'_' | b'-'))
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn valid_host(registry: &str) -> bool {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else {
            return false;
        };
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match after.strip_prefix(':') {
            Some(port) => ("x", Some(port)),
            None if after.is_empty() => ("x", None),
            None => return false,
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        }
    };
    let host_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(text: &str) -> String {
        Reference::parse(text).unwrap().to_string()
    }

    #[test]
    fn docker_defaults() {
        let hex = "a".repeat(64);
        let table = [
            ("python", "docker.io/library/python:latest"),
            ("python:3.12", "docker.io/library/python:3.12"),
            ("library/python", "docker.io/library/python:latest"),
            ("docker.io/python", "docker.io/library/python:latest"),
            ("index.docker.io/python", "docker.io/library/python:latest"),
            ("user/app:v1", "docker.io/user/app:v1"),
            ("localhost/app", "localhost/app:latest"),
            ("localhost:5000/app:1.0", "localhost:5000/app:1.0"),
            ("127.0.0.1:5555/bb:latest", "127.0.0.1:5555/bb:latest"),
            ("ghcr.io/o/r/deep:t", "ghcr.io/o/r/deep:t"),
            ("quay.io/a/b-c_d.e", "quay.io/a/b-c_d.e:latest"),
            ("[::1]:5000/x", "[::1]:5000/x:latest"),
            ("foo_bar/baz", "docker.io/foo_bar/baz:latest"),
        ];
        for (input, want) in table {
            assert_eq!(full(input), want, "{input}");
        }
        let pinned = Reference::parse(&format!("busybox@sha256:{hex}")).unwrap();
        assert_eq!(pinned.tag, None);
        assert_eq!(pinned.object(), format!("sha256:{hex}"));
        assert_eq!(
            pinned.to_string(),
            format!("docker.io/library/busybox@sha256:{hex}")
        );
        let both = Reference::parse(&format!("h.io/x:1@sha256:{hex}")).unwrap();
        assert_eq!(both.tag.as_deref(), Some("1"));
        assert_eq!(both.object(), format!("sha256:{hex}"));
        assert_eq!(
            Reference::parse("python").unwrap().api_host(),
            DOCKER_HUB_API
        );
        assert_eq!(Reference::parse("h.io:1/x").unwrap().api_host(), "h.io:1");
    }

    #[test]
    fn malformed_references() {
        for bad in [
            "",
            "Python",
            "docker.io/Library/x",
            "x:",
            "x:-bad",
            "x@sha256:abc",
            "x@md5:00",
            "host:port/x",
            "a//b",
            "-a/b",
            "a/b-",
            "docker://x",
            "x:tag:tag",
            &format!("x:{}", "t".repeat(129)),
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
        let err = Reference::parse("Python").unwrap_err();
        assert!(err.contains("lowercase"), "{err}");
    }
}
