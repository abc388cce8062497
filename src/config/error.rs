//! What can go wrong loading den.yaml, worded for the person editing it.

use std::fmt::{self, Display};
use std::io;
use std::path::{Path, PathBuf};

use super::FILE_NAME;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No den.yaml in the start directory or above it.
    #[error(
        "no {FILE_NAME} found in {} or any parent directory; expected one at the project \
         root: create {FILE_NAME} there with a `containers:` map (see den's docs/config.md)",
        start.display()
    )]
    NotFound { start: PathBuf },
    /// den.yaml exists but could not be read.
    #[error("cannot read {}: {err}", path.display())]
    Io { path: PathBuf, err: io::Error },
    /// den.yaml is not valid YAML or does not follow the schema.
    #[error("{}{}: {message}", file.display(), Position(*line, *column))]
    Invalid {
        file: PathBuf,
        /// 1-based; 0 when the YAML parser could not say where.
        line: u64,
        /// 1-based, in characters.
        column: u64,
        message: String,
    },
}

/// `:line:column`, or nothing when the place is unknown.
struct Position(u64, u64);

impl Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position(0, _) => Ok(()),
            Position(line, column) => write!(f, ":{line}:{column}"),
        }
    }
}

/// A 1-based line and column in den.yaml.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pos {
    pub line: u64,
    pub column: u64,
}

impl Pos {
    pub const START: Pos = Pos { line: 1, column: 1 };
}

impl From<serde_saphyr::Location> for Pos {
    fn from(location: serde_saphyr::Location) -> Self {
        Pos {
            line: location.line(),
            column: location.column(),
        }
    }
}

/// One mistake at one place; becomes a `ConfigError` once the file is known.
#[derive(Debug)]
pub(super) struct Issue {
    at: Pos,
    message: String,
}

impl Issue {
    /// The house style: `<what is wrong>; expected <what is allowed>`.
    pub fn new(at: impl Into<Pos>, what: impl Display, expected: impl Display) -> Self {
        Issue::text(at, format!("{what}; expected {expected}"))
    }

    /// For messages already in the house style, such as `Source::parse`'s.
    pub fn text(at: impl Into<Pos>, message: String) -> Self {
        Issue {
            at: at.into(),
            message,
        }
    }

    pub fn into_error(self, file: &Path) -> ConfigError {
        ConfigError::Invalid {
            file: file.to_path_buf(),
            line: self.at.line,
            column: self.at.column,
            message: self.message,
        }
    }
}

/// `what` followed by a did-you-mean, when there is one.
pub(super) fn with_hint(what: String, hint: Option<&str>) -> String {
    match hint {
        Some(hint) => format!("{what} (did you mean `{hint}`?)"),
        None => what,
    }
}
