//! The command's process: forked by init, given a session (and the
//! terminal, if any), confined, given a clean environment and only the
//! descriptors it should have, and exec'd.

use std::ffi::{CStr, CString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context, Result};
use rustix::process::Pid;

use super::{Action, Launch, Spec, User, confine};
use crate::sys::process::{Forked, close_on_exec_from, execve, fork, keep_across_exec};
use crate::sys::signal::{SignalSet, reset_signal_disposition};

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Exit statuses of a shell for a command it cannot run.
const EXIT_NOT_EXECUTABLE: i32 = 126;
const EXIT_NOT_FOUND: i32 = 127;

/// Starts the command; returns its pid (in the container's namespace).
pub(super) fn spawn(launch: &Launch<'_>, terminal: Option<&CStr>) -> Result<Pid> {
    let spec = launch.spec;
    let env = environment(spec);
    let argv = to_cstrings(&spec.argv).context("the command line contains a NUL byte")?;
    let envp = to_cstrings(&env).context("the environment contains a NUL byte")?;
    let path = env
        .iter()
        .find_map(|entry| entry.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();
    if !Path::new(&spec.cwd).is_dir() {
        fs::create_dir_all(&spec.cwd)
            .with_context(|| format!("creating the working directory {}", spec.cwd))?;
    }
    match fork().context("forking the command")? {
        Forked::Parent(pid) => Pid::from_raw(pid).context("fork returned pid 0"),
        Forked::Child => {
            let (code, message) = exec(launch, terminal, &argv, &envp, &path);
            eprintln!("den: {message}");
            std::process::exit(code)
        }
    }
}

/// Prepares the process and execs; returns only on failure, with the
/// exit status and message.
fn exec(
    launch: &Launch<'_>,
    terminal: Option<&CStr>,
    argv: &[CString],
    envp: &[CString],
    path: &str,
) -> (i32, String) {
    let spec = launch.spec;
    if let Err(err) = prepare(launch, terminal) {
        return (super::EXIT_DEN_FAILED, format!("{err:#}"));
    }
    if let Some(Action::Call(work)) = spec.build_step().map(|step| &step.action) {
        return match work() {
            Ok(()) => std::process::exit(0),
            Err(err) => (1, format!("{err:#}")),
        };
    }
    let program = &spec.argv[0];
    let candidates: Vec<String> = if program.contains('/') {
        vec![program.clone()]
    } else {
        path.split(':')
            .filter(|dir| !dir.is_empty())
            .map(|dir| format!("{dir}/{program}"))
            .collect()
    };
    let mut denied = None;
    for candidate in candidates {
        let Ok(candidate) = CString::new(candidate) else {
            continue;
        };
        let err = execve(&candidate, argv, envp);
        if err.raw_os_error() != Some(libc::ENOENT) && err.raw_os_error() != Some(libc::ENOTDIR) {
            denied = Some(err);
        }
    }
    match denied {
        Some(err) => (
            EXIT_NOT_EXECUTABLE,
            format!("{program}: cannot execute: {err}"),
        ),
        None if program.contains('/') => (EXIT_NOT_FOUND, format!("{program}: no such file")),
        None => (
            EXIT_NOT_FOUND,
            format!("{program}: command not found in PATH {path}"),
        ),
    }
}

fn prepare(launch: &Launch<'_>, terminal: Option<&CStr>) -> Result<()> {
    let spec = launch.spec;
    SignalSet::of(&[])
        .set_as_mask()
        .context("unblocking signals")?;
    reset_signal_disposition(libc::SIGPIPE);
    // A session of its own: without a terminal, the command cannot push
    // input into den's terminal (TIOCSTI); with one, it gets job control.
    rustix::process::setsid().context("starting a session")?;
    if let Some(output) = spec.output() {
        redirect_output(output).context("attaching the step's output")?;
    }
    if let Some(slave) = terminal {
        let fd = rustix::fs::open(slave, rustix::fs::OFlags::RDWR, rustix::fs::Mode::empty())
            .context("opening the terminal")?;
        rustix::process::ioctl_tiocsctty(&fd).context("taking the terminal")?;
        rustix::stdio::dup2_stdin(&fd).context("attaching the terminal")?;
        rustix::stdio::dup2_stdout(&fd).context("attaching the terminal")?;
        rustix::stdio::dup2_stderr(&fd).context("attaching the terminal")?;
    }
    confine::confine(&spec.confinement, spec.user(), launch.profile.as_deref())?;
    std::env::set_current_dir(&spec.cwd).with_context(|| format!("entering {}", spec.cwd))?;
    pass_only_own_descriptors(spec.preserved_fds())
}

/// 0, 1 and 2, and the descriptors passed on purpose, go with the exec;
/// whatever else init's memory copy holds stays behind.
fn pass_only_own_descriptors(preserved: u32) -> Result<()> {
    let first_closed = 3 + preserved as i32;
    for fd in 3..first_closed {
        keep_across_exec(fd).with_context(|| format!("passing on descriptor {fd}"))?;
    }
    close_on_exec_from(first_closed).context("closing den's descriptors")
}

/// stdout and stderr to `output`, stdin from /dev/null.
fn redirect_output(output: std::os::fd::RawFd) -> Result<()> {
    // SAFETY: the caller keeps `output` open until the container ends.
    let output = unsafe { std::os::fd::BorrowedFd::borrow_raw(output) };
    let null = rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::RDONLY,
        rustix::fs::Mode::empty(),
    )?;
    rustix::stdio::dup2_stdin(&null)?;
    rustix::stdio::dup2_stdout(output)?;
    rustix::stdio::dup2_stderr(output)?;
    Ok(())
}

fn to_cstrings(items: &[String]) -> Result<Vec<CString>, std::ffi::NulError> {
    items
        .iter()
        .map(|item| CString::new(item.as_bytes()))
        .collect()
}

/// The spec's environment, plus PATH and HOME when it sets neither.
/// HOME comes from the container's own /etc/passwd, as login would do.
fn environment(spec: &Spec) -> Vec<String> {
    let mut env = spec.env.clone();
    let has = |env: &[String], name: &str| {
        env.iter()
            .any(|entry| entry.split('=').next() == Some(name))
    };
    if !has(&env, "PATH") {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !has(&env, "HOME") {
        env.push(format!("HOME={}", home_of(spec.user())));
    }
    env
}

fn home_of(user: User) -> String {
    home_in(&fs::read("/etc/passwd").unwrap_or_default(), user)
}

/// `user`'s home in a passwd file's text, else `/`.
fn home_in(passwd: &[u8], user: User) -> String {
    passwd
        .split(|&byte| byte == b'\n')
        .map(|line| line.split(|&byte| byte == b':').collect::<Vec<_>>())
        .find(|fields| fields.len() >= 6 && fields[2] == user.uid.to_string().as_bytes())
        .map(|fields| {
            std::ffi::OsStr::from_bytes(fields[5])
                .to_string_lossy()
                .into_owned()
        })
        .filter(|home| !home.is_empty())
        .unwrap_or_else(|| "/".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_comes_from_passwd_and_falls_back_to_root() {
        let passwd =
            b"root:x:0:0:root:/root:/bin/sh\nada:x:1000:1000::/home/ada:/bin/sh\nnohome:x:7:7:::\n";
        let user = |uid| User { uid, gid: uid };
        assert_eq!(home_in(passwd, user(0)), "/root");
        assert_eq!(home_in(passwd, user(1000)), "/home/ada");
        assert_eq!(home_in(passwd, user(7)), "/", "an empty home");
        assert_eq!(home_in(passwd, user(1001)), "/", "no entry");
    }
}
