//! The container runtime: namespaces, id maps, the root filesystem, pid 1.
//!
//! Three processes take part:
//! - the supervisor: den itself, on the host. It forwards signals, relays
//!   a terminal if there is one, and returns the command's exit status;
//! - init: pid 1 of the new namespaces. It maps ids, builds the root
//!   filesystem, starts the command, reaps zombies, forwards signals and
//!   exits with the command's status. When it exits the kernel kills
//!   every process left in the container, and it dies with den;
//! - the command, forked by init into a clean environment, then confined
//!   (`confine`): a user and mount namespace nested in init's, so the
//!   kernel locks every mount init made; podman's capabilities; den's
//!   seccomp profile; a process limit. It holds only descriptors 0-2
//!   (and those passed on purpose).
//!
//! Init is a fork of den and so holds a copy of den's memory: it keeps no
//! descriptor it does not need, wipes den's environment, joins a session
//! keyring of its own and is not dumpable, so the command can neither
//! read nor trace it.

pub mod caps;
mod channel;
mod confine;
mod diagnose;
mod init;
mod process;
mod rootfs;
mod seccomp;
mod slirp;
mod supervise;
mod sys;
mod tty;

use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use rustix::termios::Winsize;

use crate::config::{Network, User};

pub use caps::Capabilities;
pub use process::DEFAULT_PATH;
pub use rootfs::{MOUNT_POINTS, RUN_DEN};
pub use seccomp::OWNER_XATTR;

/// Exit status for den's own failures, as Docker and Podman use.
pub const EXIT_DEN_FAILED: i32 = 125;

/// Everything needed to run one command in a fresh container.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Unpacked layer directories, bottom layer first.
    pub layers: Vec<PathBuf>,
    /// An existing directory that init covers with a private tmpfs (of
    /// `limits.root`) for the overlay's upper and work dirs (each
    /// container sees its own).
    pub scratch: PathBuf,
    /// Host directory bind-mounted read-write at `/work`, if any.
    pub work: Option<PathBuf>,
    /// Working directory inside the container.
    pub cwd: String,
    pub argv: Vec<String>,
    /// `NAME=value` entries; PATH and HOME are filled in when missing.
    pub env: Vec<String>,
    pub user: User,
    pub hostname: String,
    pub network: Network,
    /// Host ports forwarded into the container (`network: slirp`).
    pub ports: Vec<crate::net::PortSpec>,
    /// With `network: slirp`: whether 10.0.2.2 reaches the host's loopback.
    pub host_loopback: bool,
    /// Give the command a terminal (den's own stdin and stdout are ttys).
    pub tty: bool,
    /// Build steps only: fake root's power over ids (chown to any id is
    /// recorded in the `user.den.owner` xattr; set*id to unmapped ids and
    /// setgroups succeed without effect), as package managers need.
    pub fake_ownership: bool,
    /// For a build step: the overlay's upper layer lives on disk here
    /// (`fs` and `work` inside), and the container leaves the image's
    /// files alone (no /work; /etc files bound, not written), so the
    /// upper holds only what the step changed.
    pub layer_dir: Option<PathBuf>,
    /// Host files and directories bound into the container.
    pub binds: Vec<Bind>,
    /// Files written to a tmpfs at /run/den: (file name, contents).
    pub run_files: Vec<(String, Vec<u8>)>,
    /// Where the command's stdout and stderr go instead of den's; its
    /// stdin is then /dev/null. Held open by the caller.
    pub output: Option<RawFd>,
    pub action: Action,
    /// How far the command is confined.
    pub confinement: Confinement,
    /// Descriptors 3 to 3+N-1 of den's are passed on to the command
    /// (`--preserve-fds N`); every other one stays outside.
    pub preserved_fds: u32,
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
    pub(super) fn tmpfs_option(self) -> String {
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

/// Runs the command described by `spec` and returns its exit status
/// (128+N when it was killed by signal N).
///
/// Must be called while den is single-threaded.
pub fn run(spec: &Spec) -> Result<i32> {
    supervise::run(spec, || {})
}

/// `run`, calling `started` in den once the container's init exists:
/// the first point where den may start threads again.
pub fn run_with(spec: &Spec, started: impl FnOnce()) -> Result<i32> {
    supervise::run(spec, started)
}

/// Whether `fd` is open in den (for `--preserve-fds`).
pub fn is_open_fd(fd: RawFd) -> bool {
    sys::is_open(fd)
}

/// Whether den's stdin and stdout are both terminals, the condition for
/// giving the command a terminal of its own.
pub fn stdio_is_terminal() -> bool {
    rustix::termios::isatty(rustix::stdio::stdin())
        && rustix::termios::isatty(rustix::stdio::stdout())
}

/// The host ids den runs as, captured before entering the user namespace
/// (inside it, they read as the overflow id until the maps are written).
#[derive(Debug, Clone, Copy)]
struct HostIds {
    uid: u32,
    gid: u32,
}

/// What init needs besides the spec.
struct Launch<'a> {
    spec: &'a Spec,
    host: HostIds,
    winsize: Option<Winsize>,
    /// The seccomp profile for the command, assembled before the clone.
    profile: Option<Vec<seccomp::Instruction>>,
}
