//! The container runtime: namespaces, id maps, the root filesystem, pid 1.
//! It knows nothing of den.yaml.
//!
//! Callers describe a container as a `Spec` (see `spec`: common fields
//! plus a `Mode`, a project `Command` or a `BuildStep`) and call `run`
//! (or `run_with`, to start threads once the container exists), which
//! returns the command's exit status. den must be single-threaded when
//! it forks the container; `run` checks it (`threads`, the one place
//! that rule lives). The rest of the API is small: `stdio_is_terminal` and
//! `is_open_fd` for callers deciding a spec, the capability names
//! (`caps`), and the paths and markers build capture shares with the
//! runtime (`RUN_DEN`, `MOUNT_POINTS`, `OWNER_XATTR`).
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
mod failure;
mod init;
mod process;
mod rootfs;
mod seccomp;
mod slirp;
mod spec;
mod supervise;
pub mod threads;
mod tty;

use std::os::fd::RawFd;

use anyhow::Result;
use rustix::termios::Winsize;

pub use caps::Capabilities;
pub use process::DEFAULT_PATH;
pub use rootfs::{MOUNT_POINTS, RUN_DEN};
pub use seccomp::OWNER_XATTR;
pub use spec::{
    Action, Bind, BuildStep, Command, Confinement, Limits, Mode, Network, Size, Spec, User,
};

/// Exit status for den's own failures, as Docker and Podman use.
pub const EXIT_DEN_FAILED: i32 = 125;

/// Runs the command described by `spec` and returns its exit status
/// (128+N when it was killed by signal N).
///
/// Fails if den runs other threads (see `threads`).
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
    crate::sys::process::is_open(fd)
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
