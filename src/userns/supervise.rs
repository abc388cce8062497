//! den's side: start init in new namespaces, then forward signals (or
//! relay the terminal) until it exits.

use std::io::Write;
use std::os::fd::OwnedFd;

use anyhow::{Context, Result};
use rustix::event::{PollFd, PollFlags, poll};
use rustix::process::{Pid, Signal, WaitOptions, kill_process, waitpid};

use super::channel::{self, Channel, Message};
use super::init::{self, exit_code};
use super::{
    EXIT_DEN_FAILED, HostIds, Launch, Network, Spec, diagnose, seccomp, slirp, threads, tty,
};
use crate::sys::process::{Forked, clone_into_namespaces};
use crate::sys::signal::read_signal;

pub(super) fn run(spec: &Spec, started: impl FnOnce()) -> Result<i32> {
    let host = HostIds {
        uid: rustix::process::geteuid().as_raw(),
        gid: rustix::process::getegid().as_raw(),
    };
    let launch = Launch {
        spec,
        host,
        winsize: if spec.tty() {
            tty::host_winsize()
        } else {
            None
        },
        profile: match spec.confinement.seccomp {
            true => seccomp::default_profile(spec.confinement.caps)?,
            false => None,
        },
    };
    let handled = init::handled_signals();
    handled.block().context("blocking signals")?;
    let signals = handled.signalfd().context("creating a signalfd")?;
    let (den_end, init_end) = channel::pair().context("creating the init channel")?;
    let (network, network_init_end) = match &spec.network {
        Network::Slirp {
            ports,
            host_loopback,
        } => {
            let (den_side, init_side) = slirp::prepare(ports, *host_loopback)?;
            (Some(den_side), Some(init_side))
        }
        _ => (None, None),
    };
    // A buffered line would otherwise be printed twice, once per process.
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    threads::ensure_single()?;
    let init =
        match clone_into_namespaces(namespace_flags(spec)).map_err(diagnose::namespaces_refused)? {
            Forked::Child => {
                // The lifeline works only if init holds no copy of den's end.
                drop(den_end);
                drop(signals);
                drop(network);
                init::main(&launch, init_end, network_init_end)
            }
            Forked::Parent(pid) => Pid::from_raw(pid).context("clone returned pid 0")?,
        };
    drop(init_end);
    drop(network_init_end);
    // From here den may run threads: the network's, the caller's.
    let network = match network {
        Some(den_side) => slirp::start(den_side)?,
        None => None,
    };
    started();
    let code = if spec.tty() {
        attend_terminal(init, &den_end, &signals)
    } else {
        wait_forwarding(init, &signals).and_then(|code| check_setup(code, &den_end))
    };
    if let Some(network) = network {
        network.stop()?;
    }
    code
}

fn namespace_flags(spec: &Spec) -> libc::c_int {
    let mut flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC;
    if spec.network.is_own() {
        flags |= libc::CLONE_NEWNET;
    }
    flags
}

/// With a terminal: wait for init to hand over the pty, then relay.
fn attend_terminal(init: Pid, channel: &Channel, signals: &OwnedFd) -> Result<i32> {
    match channel.receive(true).context("waiting for the container")? {
        Message::Terminal(master) => tty::relay(master, init, signals),
        Message::Failed(failure) => {
            let _ = waitpid(Some(init), WaitOptions::empty());
            Err(diagnose::setup_failed(&failure))
        }
        Message::Closed => wait_forwarding(init, signals),
    }
}

/// If init failed before starting the command, its message becomes den's error.
fn check_setup(code: i32, channel: &Channel) -> Result<i32> {
    if code == EXIT_DEN_FAILED
        && let Message::Failed(failure) = channel.receive(false).context("reading init's report")?
    {
        return Err(diagnose::setup_failed(&failure));
    }
    Ok(code)
}

/// Waits for init, passing on every forwarded signal den receives.
fn wait_forwarding(init: Pid, signals: &OwnedFd) -> Result<i32> {
    loop {
        let mut fds = [PollFd::new(signals, PollFlags::IN)];
        match poll(&mut fds, None) {
            Err(rustix::io::Errno::INTR) => continue,
            result => result.context("waiting for the container")?,
        };
        while let Some(signal) = read_signal(signals).context("reading a signal")? {
            if signal != libc::SIGCHLD {
                forward(init, signal);
            } else if let Some((_, status)) =
                waitpid(Some(init), WaitOptions::NOHANG).context("waiting for init")?
            {
                return Ok(exit_code(status));
            }
        }
    }
}

pub(super) fn forward(init: Pid, signal: libc::c_int) {
    // SAFETY: the number came from the kernel via signalfd.
    let _ = kill_process(init, unsafe { Signal::from_raw_unchecked(signal) });
}
