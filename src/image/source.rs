//! Image sources as written in den.yaml `from:` or on the command line.

use std::fmt;
use std::path::{Path, PathBuf};

use super::registry::Reference;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `oci:<dir>[:<tag>]`: an OCI image layout directory.
    OciLayout { path: PathBuf, tag: Option<String> },
    /// `oci-archive:<file.tar>[:<tag>]`: a tar of an OCI image layout.
    OciArchive { path: PathBuf, tag: Option<String> },
    /// Anything else: a registry reference `[host[:port]/]name[:tag][@digest]`
    /// with Docker's defaults (see docs/registry.md).
    Registry(Reference),
}

impl Source {
    /// Parses a source; relative paths are taken from `base` (the
    /// directory of den.yaml, or the current directory on the CLI).
    /// The error says what was expected.
    pub fn parse(text: &str, base: &Path) -> Result<Source, String> {
        let local = ["oci:", "oci-archive:"].iter().any(|p| text.starts_with(p));
        if !local {
            return Reference::parse(text)
                .map(Source::Registry)
                .map_err(|reason| expected(text, &reason));
        }
        let (kind, rest) = text
            .split_once(':')
            .ok_or_else(|| expected(text, "no kind"))?;
        let (path, tag) = split_tag(rest);
        if path.is_empty() {
            return Err(format!("`{text}` names no path; expected `{kind}:<path>`"));
        }
        let path = base.join(path);
        match kind {
            "oci" => Ok(Source::OciLayout { path, tag }),
            "oci-archive" => Ok(Source::OciArchive { path, tag }),
            _ => Err(expected(text, "unknown kind")),
        }
    }
}

fn expected(text: &str, reason: &str) -> String {
    format!(
        "`{text}` is not an image source ({reason}); expected a registry reference \
         `[host[:port]/]name[:tag][@sha256:<hex>]` (e.g. `python:3.12`), \
         `oci:<dir>[:<tag>]` (an OCI image layout) or `oci-archive:<file.tar>[:<tag>]`"
    )
}

/// `path:tag` → (path, Some(tag)); a colon followed by something that
/// looks like a path (contains `/`) is part of the path.
fn split_tag(rest: &str) -> (&str, Option<String>) {
    match rest.rsplit_once(':') {
        Some((path, tag)) if !tag.is_empty() && !tag.contains('/') => (path, Some(tag.to_string())),
        _ => (rest, None),
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, path, tag) = match self {
            Source::OciLayout { path, tag } => ("oci", path, tag),
            Source::OciArchive { path, tag } => ("oci-archive", path, tag),
            Source::Registry(reference) => return write!(f, "{reference}"),
        };
        write!(f, "{kind}:{}", path.display())?;
        if let Some(tag) = tag {
            write!(f, ":{tag}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_layout_with_and_without_tag() {
        let base = Path::new("/p");
        assert_eq!(
            Source::parse("oci:img", base).unwrap(),
            Source::OciLayout {
                path: "/p/img".into(),
                tag: None
            }
        );
        assert_eq!(
            Source::parse("oci:./a/img:v1", base).unwrap(),
            Source::OciLayout {
                path: "/p/./a/img".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            Source::parse("oci-archive:/abs/x.tar", base).unwrap(),
            Source::OciArchive {
                path: "/abs/x.tar".into(),
                tag: None
            }
        );
    }

    #[test]
    fn rejects_unknown_kinds() {
        let err = Source::parse("docker://x", Path::new("/")).unwrap_err();
        assert!(err.contains("`oci:<dir>"), "{err}");
        assert!(err.contains("registry reference"), "{err}");
        assert!(Source::parse("oci:", Path::new("/")).is_err());
        assert!(Source::parse("Python", Path::new("/")).is_err());
    }

    #[test]
    fn everything_else_is_a_registry_reference() {
        let base = Path::new("/p");
        let Source::Registry(r) = Source::parse("python:3.12", base).unwrap() else {
            panic!("not a registry source");
        };
        assert_eq!(r.to_string(), "docker.io/library/python:3.12");
        let Source::Registry(r) = Source::parse("127.0.0.1:5555/bb:latest", base).unwrap() else {
            panic!("not a registry source");
        };
        assert_eq!(r.registry, "127.0.0.1:5555");
        assert_eq!(
            Source::parse("localhost:5000/a/b", base)
                .unwrap()
                .to_string(),
            "localhost:5000/a/b:latest"
        );
    }
}
