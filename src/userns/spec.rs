//! What a container is made of, in the runtime's own terms: callers (den
//! run, builds, bootstraps) translate den.yaml into these once.
//!
//! A `Spec` is what every container has (the image's layers, the
//! command line, the network, binds, confinement) plus its `Mode`: a
//! `Command` in a project (with /work, the user's ids, maybe a terminal)
//! or a `BuildStep` (root with fake ownership, its upper layer on disk
//! becoming a layer, its output relayed).

use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;

use super::caps::{self, Capabilities};
use crate::net::PortSpec;

/// Everything needed to run one command in a fresh container.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Unpacked layer directories, bottom layer first.
    pub layers: Vec<PathBuf>,
    /// An existing directory that init covers with a private tmpfs (of
    /// `limits.root`) for the overlay's upper and work dirs (each
    /// container sees its own).
    pub scratch: PathBuf,
    /// Working directory inside the container.
    pub cwd: String,
    pub argv: Vec<String>,
    /// `NAME=value` entries; PATH and HOME are filled in when missing.
    pub env: Vec<String>,
    pub hostname: String,
    pub network: Network,
    /// Host files and directories bound into the container.
    pub binds: Vec<Bind>,
    /// How far the command is confined.
    pub confinement: Confinement,
    pub mode: Mode,
}

/// A command or a build step.
#[derive(Debug, Clone)]
pub enum Mode {
    Command(Command),
    BuildStep(BuildStep),
}

/// A command in a project's container.
#[derive(Debug, Clone)]
pub struct Command {
    /// The project, bound read-write at `/work`.
    pub work: PathBuf,
    /// The ids it runs as; the invoking host user is mapped to them.
    pub user: User,
    /// Give the command a terminal (den's own stdin and stdout are ttys).
    pub tty: bool,
    /// Descriptors 3 to 3+N-1 of den's are passed on to the command
    /// (`--preserve-fds N`); every other one stays outside.
    pub preserved_fds: u32,
}

/// A build step: root, with fake power over ids (chown to any id is
/// recorded in the `user.den.owner` xattr; set*id to unmapped ids and
/// setgroups succeed without effect), as package managers need.
#[derive(Debug, Clone)]
pub struct BuildStep {
    /// The overlay's upper layer lives on disk here (`fs` and `work`
    /// inside), and the container leaves the image's files alone (no
    /// /work; /etc files bound, not written), so the upper holds only
    /// what the step changed.
    pub layer_dir: PathBuf,
    /// Files written to a tmpfs at /run/den: (file name, contents).
    pub run_files: Vec<(String, Vec<u8>)>,
    /// Where the step's stdout and stderr go instead of den's; its stdin
    /// is then /dev/null. Held open by the caller.
    pub output: Option<RawFd>,
    pub action: Action,
}

impl Spec {
    /// The ids the command runs as: a build step's are root's.
    pub fn user(&self) -> User {
        match &self.mode {
            Mode::Command(command) => command.user,
            Mode::BuildStep(_) => User::ROOT,
        }
    }

    pub fn tty(&self) -> bool {
        matches!(&self.mode, Mode::Command(command) if command.tty)
    }

    pub fn work(&self) -> Option<&Path> {
        match &self.mode {
            Mode::Command(command) => Some(&command.work),
            Mode::BuildStep(_) => None,
        }
    }

    pub fn preserved_fds(&self) -> u32 {
        match &self.mode {
            Mode::Command(command) => command.preserved_fds,
            Mode::BuildStep(_) => 0,
        }
    }

    pub fn build_step(&self) -> Option<&BuildStep> {
        match &self.mode {
            Mode::Command(_) => None,
            Mode::BuildStep(step) => Some(step),
        }
    }

    pub fn output(&self) -> Option<RawFd> {
        self.build_step().and_then(|step| step.output)
    }
}

/// The ids a command runs as inside the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

impl User {
    pub const ROOT: User = User { uid: 0, gid: 0 };
}

/// The container's network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// A network namespace of its own, served by den's user-mode stack.
    Slirp {
        /// Host ports forwarded into the container.
        ports: Vec<PortSpec>,
        /// Whether 10.0.2.2 reaches the host's loopback.
        host_loopback: bool,
    },
    /// The host's network namespace, shared.
    Host,
    /// A network namespace with only a loopback interface.
    None,
}

impl Network {
    /// Whether the container has a network namespace of its own.
    pub fn is_own(&self) -> bool {
        !matches!(self, Network::Host)
    }
}

/// What the command may do inside (docs/runtime.md, "Security").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confinement {
    /// Its bounding, permitted and effective capabilities.
    pub caps: Capabilities,
    /// Whether den's default seccomp profile applies.
    pub seccomp: bool,
    pub limits: Limits,
}

impl Default for Confinement {
    fn default() -> Confinement {
        Confinement {
            caps: caps::DEFAULT,
            seccomp: true,
            limits: Limits::default(),
        }
    }
}

/// Sizes of the container's memory-backed filesystems and its process
/// count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The writable layer of `/`: what the command writes outside /work
    /// and the other mounts.
    pub root: Size,
    pub tmp: Size,
    pub shm: Size,
    pub run_den: Size,
    /// Processes and threads the command and its children may have
    /// (RLIMIT_NPROC, counted per user namespace).
    pub pids: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            root: Size::PercentOfMemory(25),
            tmp: Size::PercentOfMemory(25),
            shm: Size::Bytes(64 << 20),
            run_den: Size::Bytes(16 << 20),
            pids: 4096,
        }
    }
}

/// A tmpfs size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Bytes(u64),
    /// Of the machine's memory, as tmpfs's `size=N%`.
    PercentOfMemory(u8),
}

impl Size {
    /// The value of tmpfs's `size=` option.
    pub(in crate::userns) fn tmpfs_option(self) -> String {
        match self {
            Size::Bytes(bytes) => bytes.to_string(),
            Size::PercentOfMemory(percent) => format!("{percent}%"),
        }
    }
}

/// A host path bound at `target`, an absolute path under /run/den.
#[derive(Debug, Clone)]
pub struct Bind {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

/// What the command process does once the container is ready.
#[derive(Clone, Default)]
pub enum Action {
    /// Exec `argv`.
    #[default]
    Exec,
    /// Run den's own code inside the container (a build step that needs
    /// no program from the image, such as `copy`); its error is printed
    /// and the process exits 1.
    Call(Arc<dyn Fn() -> Result<()> + Send + Sync>),
}

impl std::fmt::Debug for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Exec => f.write_str("Exec"),
            Action::Call(_) => f.write_str("Call"),
        }
    }
}
