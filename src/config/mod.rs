//! den.yaml: finding it, parsing it, and checking it.
//!
//! `load()` is the one entry point. Everything it returns has been
//! validated: every command names an existing container and every image
//! source parses, so later stages never need to re-check.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;

use crate::image::Source;

/// The file name den looks for, walking up from the current directory.
pub const FILE_NAME: &str = "den.yaml";

/// A loaded project: where its den.yaml is and what it says.
#[derive(Debug, Clone)]
pub struct Project {
    /// The directory holding den.yaml; mounted at /work in containers.
    pub root: PathBuf,
    /// The den.yaml file itself.
    pub file: PathBuf,
    pub config: Config,
}

#[derive(Debug, Clone, Default)]
pub struct Config {
    /// In file order, so listings follow the author's order.
    pub containers: IndexMap<String, Container>,
    pub commands: IndexMap<String, Command>,
}

#[derive(Debug, Clone)]
pub struct Container {
    pub from: Source,
    pub environ: IndexMap<String, String>,
    /// Working directory inside; default: /work plus the caller's subdirectory.
    pub workdir: Option<String>,
    pub user: User,
}

/// The ids the command runs as inside the container; the invoking host
/// user is mapped to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone)]
pub struct Command {
    pub container: String,
    pub run: Run,
    pub description: Option<String>,
    pub environ: IndexMap<String, String>,
    pub network: Network,
    /// Whether extra CLI arguments are appended to `run`.
    pub accepts_arguments: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    /// Run under `/bin/sh -c`.
    Shell(String),
    /// Exec'd as is.
    Argv(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// Share the host's network namespace.
    #[default]
    Host,
    /// A fresh network namespace with only loopback.
    None,
}
