//! Terminals: the container's pty (made from its own devpts so the
//! command sees a real /dev/pts/N) and den's relay between it and the
//! user's terminal.

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use anyhow::{Context, Result};
use rustix::event::{PollFd, PollFlags, poll};
use rustix::process::{Pid, WaitOptions, waitpid};
use rustix::pty::{OpenptFlags, openpt, ptsname, unlockpt};
use rustix::termios::{
    OptionalActions, Termios, Winsize, tcgetattr, tcgetwinsize, tcsetattr, tcsetwinsize,
};

use super::init::exit_code;
use crate::sys::signal::read_signal;

/// A pty pair inside the container: init keeps the master until it hands
/// it to den; the command opens the slave by name.
pub(super) struct Terminal {
    pub master: OwnedFd,
    pub slave: CString,
}

/// Opens a pty from the container's /dev/ptmx, sized like den's terminal.
pub(super) fn open_in_container(winsize: Option<Winsize>) -> Result<Terminal> {
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let master = openpt(flags).context("opening /dev/ptmx in the container")?;
    unlockpt(&master).context("unlocking the pty")?;
    let slave = ptsname(&master, Vec::new()).context("naming the pty")?;
    if let Some(winsize) = winsize {
        tcsetwinsize(&master, winsize).context("sizing the pty")?;
    }
    Ok(Terminal { master, slave })
}

/// The size of den's own terminal, to copy onto the container's.
pub(super) fn host_winsize() -> Option<Winsize> {
    tcgetwinsize(rustix::stdio::stdin()).ok()
}

/// Puts den's terminal in raw mode so every key (Ctrl-C, Ctrl-Z too)
/// reaches the container's pty, whose line discipline does the rest;
/// the previous mode comes back on drop.
struct RawMode(Termios);

impl RawMode {
    fn enter() -> io::Result<RawMode> {
        let saved = tcgetattr(rustix::stdio::stdin())?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(rustix::stdio::stdin(), OptionalActions::Now, &raw)?;
        Ok(RawMode(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(rustix::stdio::stdin(), OptionalActions::Now, &self.0);
    }
}

/// Copies between den's terminal and the container's until init exits;
/// returns the command's exit status.
pub(super) fn relay(master: OwnedFd, init: Pid, signals: &OwnedFd) -> Result<i32> {
    let _raw = RawMode::enter().context("putting the terminal in raw mode")?;
    let mut master = std::fs::File::from(master);
    let (mut stdin_open, mut master_open) = (true, true);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let stdin = rustix::stdio::stdin();
        // A closed end keeps reporting a hang-up, so it leaves the poll set.
        let mut fds = vec![PollFd::new(signals, PollFlags::IN)];
        if master_open {
            fds.push(PollFd::new(&master, PollFlags::IN));
        }
        if stdin_open {
            fds.push(PollFd::new(&stdin, PollFlags::IN));
        }
        match poll(&mut fds, None) {
            Err(rustix::io::Errno::INTR) => continue,
            result => result.context("waiting on the terminal")?,
        };
        let ready: Vec<bool> = fds.iter().map(|fd| !fd.revents().is_empty()).collect();
        drop(fds);
        let signal_ready = ready[0];
        let master_ready = master_open && ready[1];
        let stdin_ready = stdin_open && ready[if master_open { 2 } else { 1 }];
        // 0 (EIO): every slave is closed; init's exit follows.
        if master_ready && copy_once(&master, &mut io::stdout())? == 0 {
            master_open = false;
        }
        if stdin_ready && copy_once(rustix::stdio::stdin(), &mut master)? == 0 {
            stdin_open = false;
        }
        if signal_ready && let Some(code) = handle_signals(signals, init, &master)? {
            drain(&mut master, &mut buf);
            return Ok(code);
        }
    }
}

/// One read and a full write; 0 at end of input.
fn copy_once(from: impl AsFd, to: &mut impl Write) -> Result<usize> {
    let mut buf = [0u8; 16 * 1024];
    let n = match rustix::io::read(&from, &mut buf) {
        Ok(n) => n,
        Err(rustix::io::Errno::IO) => 0,
        Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => return Ok(1),
        Err(err) => return Err(err).context("reading the terminal"),
    };
    to.write_all(&buf[..n]).context("writing the terminal")?;
    to.flush().context("writing the terminal")?;
    Ok(n)
}

/// Output the command wrote just before it ended.
fn drain(master: &mut std::fs::File, buf: &mut [u8]) {
    let _ = rustix::fs::fcntl_setfl(&*master, rustix::fs::OFlags::NONBLOCK);
    while let Ok(n @ 1..) = master.read(buf) {
        let _ = io::stdout().write_all(&buf[..n]);
    }
    let _ = io::stdout().flush();
}

/// Window changes go to the pty (its kernel side signals the foreground
/// job); other signals go to init; init's exit ends the relay.
fn handle_signals(signals: &OwnedFd, init: Pid, master: &impl AsFd) -> Result<Option<i32>> {
    while let Some(signal) = read_signal(signals).context("reading a signal")? {
        match signal {
            libc::SIGCHLD => {
                if let Some((_, status)) =
                    waitpid(Some(init), WaitOptions::NOHANG).context("waiting for init")?
                {
                    return Ok(Some(exit_code(status)));
                }
            }
            libc::SIGWINCH => {
                if let Some(size) = host_winsize() {
                    let _ = tcsetwinsize(master, size);
                }
            }
            other => super::supervise::forward(init, other),
        }
    }
    Ok(None)
}
