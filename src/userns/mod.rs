//! The container runtime: namespaces, id maps, the root filesystem, pid 1.
//!
//! Three processes take part:
//! - the supervisor: den itself, on the host. It forwards signals, relays
//!   a terminal if there is one, and returns the command's exit status;
//! - init: pid 1 of the new namespaces. It maps ids, builds the root
//!   filesystem, starts the command, reaps zombies, forwards signals and
//!   exits with the command's status. When it exits the kernel kills
//!   every process left in the container, and it dies with den;
//! - the command, forked by init into a clean environment.

mod channel;
mod diagnose;
mod init;
mod process;
mod rootfs;
mod supervise;
mod sys;
mod tty;

use std::path::PathBuf;

use anyhow::Result;
use rustix::termios::Winsize;

use crate::config::{Network, User};

/// Exit status for den's own failures, as Docker and Podman use.
pub const EXIT_DEN_FAILED: i32 = 125;

/// Everything needed to run one command in a fresh container.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Unpacked layer directories, bottom layer first.
    pub layers: Vec<PathBuf>,
    /// An existing directory that init covers with a private tmpfs for the
    /// overlay's upper and work dirs (each container sees its own).
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
    /// Give the command a terminal (den's own stdin and stdout are ttys).
    pub tty: bool,
}

/// Runs the command described by `spec` and returns its exit status
/// (128+N when it was killed by signal N).
///
/// Must be called while den is single-threaded.
pub fn run(spec: &Spec) -> Result<i32> {
    supervise::run(spec)
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
}
