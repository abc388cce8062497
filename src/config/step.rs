//! A container's `setup:` steps, as checked from den.yaml.
//!
//! The serialized form of a `StepKind` is part of the step's cache key
//! (see `build::key`): it holds what the step does, never where it was
//! written, so comments and formatting never cause a rebuild.

use std::path::PathBuf;

use indexmap::IndexMap;
use serde::Serialize;

/// One step with its place in den.yaml, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub kind: StepKind,
    pub line: u64,
    pub column: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepKind {
    /// A script for `/bin/sh -ec`.
    Run(String),
    /// Packages for the image's package manager.
    Install(Vec<String>),
    Copy(Copy),
    /// Variables for later steps and for the container's commands.
    Env(IndexMap<String, String>),
    Download(Download),
    Text(Text),
    Pip(Pip),
    Npm(Npm),
}

impl StepKind {
    /// The step's name as written in den.yaml.
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Run(_) => "run",
            StepKind::Install(_) => "install",
            StepKind::Copy(_) => "copy",
            StepKind::Env(_) => "env",
            StepKind::Download(_) => "download",
            StepKind::Text(_) => "text",
            StepKind::Pip(_) => "pip",
            StepKind::Npm(_) => "npm",
        }
    }
}

/// `copy: {from, to, exclude}`: project files into the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Copy {
    /// Relative to the project root.
    pub from: PathBuf,
    /// Absolute, inside the container; a trailing `/` means "into".
    pub to: String,
    /// gitignore-style patterns, relative to `from`.
    pub exclude: Vec<String>,
}

/// `download: {url, sha256, to, mode}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Download {
    /// Not part of the key: the same bytes make the same layer.
    #[serde(skip)]
    pub url: String,
    /// Lower-case hex.
    pub sha256: String,
    pub to: String,
    pub mode: u32,
}

/// `text: {to, content, mode}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Text {
    pub to: String,
    pub content: String,
    pub mode: u32,
}

/// `pip: [packages]` or `pip: {packages, requirements, venv}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pip {
    pub packages: Vec<String>,
    /// A requirements file, relative to the project root; its content is
    /// part of the key.
    pub requirements: Option<PathBuf>,
    /// A virtual environment to create (if missing) and install into;
    /// its `bin` goes first in PATH.
    pub venv: Option<String>,
}

/// `npm: {from, dir}`: `npm ci` with the project's package.json and
/// package-lock.json, installed in `dir` inside the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Npm {
    /// The project directory holding package.json, relative to the root.
    pub from: PathBuf,
    pub dir: String,
}
