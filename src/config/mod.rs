//! den.yaml: finding it, parsing it, and checking it.
//!
//! `load()` is the entry point; `find()` and `parse()` are its two halves,
//! public for callers that already have a path or the text. A `Config`
//! has been validated: every command names an existing container and every
//! image source parses, so later stages never need to re-check.
//!
//! `settings` reads den's own per-user settings file in the same YAML
//! dialect; `yaml` is the parser both share, keeping every position.

mod error;
mod schema;
pub mod settings;
mod size;
pub mod step;
mod suggest;
#[cfg(test)]
mod tests;
mod yaml;

use std::fs;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;

pub use self::error::ConfigError;
pub use self::size::parse_bytes;

/// The name among `candidates` that `word` most likely meant, if any.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    suggest::did_you_mean(word, candidates, &[])
}
use crate::image::Source;

pub use self::step::{Step, StepKind};

/// The file name den looks for, walking up from the current directory.
pub const FILE_NAME: &str = "den.yaml";

/// Finds den.yaml in `start` or the nearest parent directory, then reads
/// and checks it. Reads nothing but den.yaml: this runs on every `den run`.
pub fn load(start: &Path) -> Result<Project, ConfigError> {
    let file = find(start).ok_or_else(|| ConfigError::NotFound {
        start: start.to_path_buf(),
    })?;
    let bytes = fs::read(&file).map_err(|err| ConfigError::Io {
        path: file.clone(),
        err,
    })?;
    let text = yaml::utf8(&bytes).map_err(|issue| issue.into_error(&file))?;
    let config = parse(text, &file)?;
    let root = file
        .parent()
        .expect("a found den.yaml has a directory")
        .to_path_buf();
    Ok(Project { root, file, config })
}

/// The den.yaml in `start` or its nearest ancestor. Symbolic links in
/// `start` are resolved first, so the result's directory is canonical.
pub fn find(start: &Path) -> Option<PathBuf> {
    let start = start.canonicalize().ok()?;
    start
        .ancestors()
        .map(|dir| dir.join(FILE_NAME))
        .find(|file| file.is_file())
}

/// Checks den.yaml's `text`; `file` is where it came from, for messages
/// and as the base of relative image paths.
pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let base = file.parent().unwrap_or(Path::new(""));
    // Dropped before parsing, so span byte offsets index the text we keep.
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    let root = yaml::parse(text).map_err(|issue| issue.into_error(file))?;
    schema::config(root.as_ref(), text, base).map_err(|issue| issue.into_error(file))
}

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
    pub from: Base,
    /// Where `from` is written (line, column), for messages.
    pub from_at: (u64, u64),
    /// Build steps on top of `from`, in order.
    pub setup: Vec<Step>,
    /// Whether builds and commands get the host's CA bundle.
    pub host_ca: bool,
    /// For builds and commands that don't set their own.
    pub network: Network,
    /// With `network: slirp`, whether 10.0.2.2 reaches the host's loopback.
    pub host_loopback: bool,
    pub environ: IndexMap<String, String>,
    /// Working directory inside; default: /work plus the caller's subdirectory.
    pub workdir: Option<String>,
    pub user: User,
    /// Capabilities, seccomp and limits of its commands and builds.
    pub confinement: crate::userns::Confinement,
}

/// What a container starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    Image(Source),
    /// Another container of the same den.yaml, with its setup steps.
    Container(String),
    /// A Debian or Ubuntu system made from the package archive.
    Bootstrap(Bootstrap),
}

/// `bootstrap:`: which distribution release to make, from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    pub distro: Distro,
    /// `bookworm`, `noble`, `stable`…
    pub suite: String,
    /// The archive's root URL without a trailing slash; `None`: the
    /// distribution's default for the host's architecture.
    pub mirror: Option<String>,
    pub components: Vec<String>,
    pub variant: Variant,
    /// Public keys that replace den's shipped archive keys (absolute).
    pub keyring: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distro {
    Debian,
    Ubuntu,
}

impl Distro {
    pub fn name(self) -> &'static str {
        match self {
            Distro::Debian => "debian",
            Distro::Ubuntu => "ubuntu",
        }
    }
}

/// Which packages a bootstrap installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Variant {
    /// Essential and required packages, and apt.
    #[default]
    Minbase,
    /// Minbase plus build-essential.
    Buildd,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Minbase => "minbase",
            Variant::Buildd => "buildd",
        }
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Network::Slirp => "slirp",
            Network::Host => "host",
            Network::None => "none",
        })
    }
}

impl std::fmt::Display for Base {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Base::Image(source) => write!(f, "{source}"),
            Base::Container(name) => write!(f, "container:{name}"),
            Base::Bootstrap(bootstrap) => {
                write!(
                    f,
                    "bootstrap:{}/{}",
                    bootstrap.distro.name(),
                    bootstrap.suite
                )
            }
        }
    }
}

/// The ids the command runs as inside the container; the invoking host
/// user is mapped to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

impl From<User> for crate::userns::User {
    fn from(user: User) -> crate::userns::User {
        crate::userns::User {
            uid: user.uid,
            gid: user.gid,
        }
    }
}

impl Network {
    /// This network in the runtime's terms; `ports` and `host_loopback`
    /// matter to `slirp` only.
    pub fn runtime(
        self,
        ports: Vec<crate::net::PortSpec>,
        host_loopback: bool,
    ) -> crate::userns::Network {
        match self {
            Network::Slirp => crate::userns::Network::Slirp {
                ports,
                host_loopback,
            },
            Network::Host => crate::userns::Network::Host,
            Network::None => crate::userns::Network::None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Command {
    pub container: String,
    pub run: Run,
    pub description: Option<String>,
    pub environ: IndexMap<String, String>,
    /// `None`: the container's.
    pub network: Option<Network>,
    /// Host ports forwarded into the container (with `network: slirp`).
    pub ports: Vec<crate::net::PortSpec>,
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
    /// A network namespace of its own, reaching out through den's
    /// user-mode stack (`net`).
    #[default]
    Slirp,
    /// Share the host's network namespace.
    Host,
    /// A fresh network namespace with only loopback.
    None,
}
