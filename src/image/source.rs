//! Image sources as written in den.yaml `from:` or on the command line.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `oci:<dir>[:<tag>]`: an OCI image layout directory.
    OciLayout { path: PathBuf, tag: Option<String> },
    /// `oci-archive:<file.tar>[:<tag>]`: a tar of an OCI image layout.
    OciArchive { path: PathBuf, tag: Option<String> },
}

impl Source {
    /// Parses a source; relative paths are taken from `base` (the
    /// directory of den.yaml, or the current directory on the CLI).
    /// The error says what was expected.
    pub fn parse(text: &str, base: &Path) -> Result<Source, String> {
        let (kind, rest) = text.split_once(':').ok_or_else(|| expected(text))?;
        let (path, tag) = split_tag(rest);
        if path.is_empty() {
            return Err(format!("`{text}` names no path; expected `{kind}:<path>`"));
        }
        let path = base.join(path);
        match kind {
            "oci" => Ok(Source::OciLayout { path, tag }),
            "oci-archive" => Ok(Source::OciArchive { path, tag }),
            _ => Err(expected(text)),
        }
    }
}

fn expected(text: &str) -> String {
    format!(
        "`{text}` is not an image source; expected `oci:<dir>[:<tag>]` (an OCI image layout) \
         or `oci-archive:<file.tar>[:<tag>]`"
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
        assert!(err.contains("expected `oci:"), "{err}");
        assert!(Source::parse("oci:", Path::new("/")).is_err());
    }
}
