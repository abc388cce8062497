//! Processes: forking (into new namespaces), descriptors, the session
//! keyring, and the environment strings in memory.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::RawFd;

/// Which side of a fork we are on.
pub enum Forked {
    Parent(libc::pid_t),
    Child,
}

/// `clone(2)` used like `fork(2)` but into new namespaces: the child runs
/// on a copy of the caller's stack and returns `Forked::Child`.
///
/// The caller must be single-threaded: the kernel refuses `CLONE_NEWUSER`
/// otherwise, and a forked copy of a multi-threaded process may hold
/// locks no thread will ever release.
pub fn clone_into_namespaces(flags: libc::c_int) -> io::Result<Forked> {
    let flags = (flags | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: a null stack makes clone behave like fork; no pointers are passed.
    let ret = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    forked(ret as libc::pid_t)
}

/// Plain `fork(2)`; same single-threaded rule as above.
pub fn fork() -> io::Result<Forked> {
    // SAFETY: den is single-threaded whenever it forks.
    forked(unsafe { libc::fork() })
}

fn forked(ret: libc::pid_t) -> io::Result<Forked> {
    match ret {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// Closes every descriptor of the process but `keep` (in any order).
pub fn close_all_except(keep: &[RawFd]) -> io::Result<()> {
    for (first, last) in ranges_between(keep) {
        close_range(first, last, 0)?;
    }
    Ok(())
}

/// The descriptor ranges (first, last) that hold none of `keep`.
fn ranges_between(keep: &[RawFd]) -> Vec<(RawFd, RawFd)> {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|&fd| fd >= 0).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut ranges = Vec::new();
    let mut first = 0;
    for fd in keep {
        if fd > first {
            ranges.push((first, fd - 1));
        }
        first = fd + 1;
    }
    ranges.push((first, RawFd::MAX));
    ranges
}

/// Closes one descriptor that no Rust object owns in this process (one
/// den's memory copy names but init never uses).
pub fn close_fd(fd: RawFd) -> io::Result<()> {
    close_range(fd, fd, 0)
}

/// Marks every descriptor from `first` on close-on-exec.
pub fn close_on_exec_from(first: RawFd) -> io::Result<()> {
    close_range(first, RawFd::MAX, libc::CLOSE_RANGE_CLOEXEC)
}

fn close_range(first: RawFd, last: RawFd, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: close_range takes plain numbers; closing descriptors that
    // Rust objects still own is the caller's business (init and the
    // command close only what den's memory copy holds but never uses).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            last as libc::c_uint,
            flags,
        )
    };
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Clears close-on-exec on `fd`, so the next exec passes it on.
pub fn keep_across_exec(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_SETFD with 0 only changes the descriptor's flags.
    match unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } {
        -1 => Err(io::Error::last_os_error()),
        _ => Ok(()),
    }
}

/// Whether `fd` is an open descriptor.
pub fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// A new, empty session keyring for the process and its children, so
/// that no key of the user's login session is reachable. A kernel
/// without keyrings, or a seccomp filter above den that already refuses
/// them (EPERM), leaves nothing to hide.
pub fn join_new_session_keyring() -> io::Result<()> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: a null name asks for a new anonymous keyring.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    let err = io::Error::last_os_error();
    match (ret, err.raw_os_error()) {
        (-1, Some(libc::ENOSYS | libc::EPERM)) => Ok(()),
        (-1, _) => Err(err),
        _ => Ok(()),
    }
}

/// Overwrites the environment den was started with: its strings sit in
/// the process's memory, where `/proc/<pid>/environ` reads them.
pub fn wipe_environment() -> io::Result<()> {
    let (start, end) = environment_strings()?;
    // SAFETY: after clearenv, libc holds no pointer into the strings, and
    // Rust's std reads the environment only through libc; the range is
    // where the kernel put them on the initial stack, which is mapped and
    // writable.
    unsafe {
        libc::clearenv();
        std::ptr::write_bytes(start as *mut u8, 0, end - start);
    }
    Ok(())
}

unsafe extern "C" {
    static environ: *const *const libc::c_char;
}

/// The address range of the environment strings. den never sets a
/// variable, so `environ` still lists the kernel's strings, which lie
/// end to end; that is checked, and `/proc/self/stat` (a slower read)
/// tells otherwise.
fn environment_strings() -> io::Result<(usize, usize)> {
    let mut range: Option<(usize, usize)> = None;
    // SAFETY: `environ` is the NUL-terminated array libc keeps; nothing
    // changes it while den is single-threaded.
    let mut entry = unsafe { environ };
    while !entry.is_null() {
        // SAFETY: as above; each entry is a NUL-terminated string.
        let string = unsafe { *entry };
        if string.is_null() {
            return Ok(range.unwrap_or((0, 0)));
        }
        // SAFETY: a NUL-terminated string of libc's.
        let len = unsafe { libc::strlen(string) } + 1;
        let (at, next) = (string as usize, string as usize + len);
        range = match range {
            None => Some((at, next)),
            Some((start, end)) if at == end => Some((start, next)),
            Some(_) => return environment_strings_from_proc(),
        };
        // SAFETY: the array is NUL-terminated, checked above.
        entry = unsafe { entry.add(1) };
    }
    Ok((0, 0))
}

fn environment_strings_from_proc() -> io::Result<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name, which may hold spaces; env_start
    // and env_end are fields 50 and 51 of proc(5), the first here is 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let field = |number: usize| -> io::Result<usize> {
        fields
            .get(number - 3)
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| io::Error::other("unexpected /proc/self/stat"))
    };
    Ok((field(50)?, field(51)?))
}

/// Execs `program`; returns only on failure, with the error.
pub fn execve(program: &CStr, argv: &[CString], envp: &[CString]) -> io::Error {
    let mut argv: Vec<*const libc::c_char> = argv.iter().map(|arg| arg.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = envp.iter().map(|var| var.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: both arrays are NUL-terminated and their strings outlive the call.
    unsafe { libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    io::Error::last_os_error()
}

/// Drops capability number `cap` from the bounding set; false when the
/// kernel has no such capability (past its last one).
pub fn drop_bounding_capability(cap: u32) -> io::Result<bool> {
    // SAFETY: PR_CAPBSET_DROP takes a capability number and nothing else.
    let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
    if ret == -1 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::EINVAL) => Ok(false),
            _ => Err(err),
        };
    }
    Ok(true)
}

/// Fills `buf` from the kernel's random source.
pub fn random(buf: &mut [u8]) -> io::Result<()> {
    // SAFETY: writes at most `buf.len()` bytes into `buf`.
    let filled = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    match filled {
        -1 => Err(io::Error::last_os_error()),
        n if n as usize == buf.len() => Ok(()),
        _ => Err(io::Error::other("getrandom returned fewer bytes")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_everything_around_what_is_kept() {
        assert_eq!(
            ranges_between(&[0, 1, 2, 7, 5, 5]),
            [(3, 4), (6, 6), (8, RawFd::MAX)]
        );
        assert_eq!(ranges_between(&[]), [(0, RawFd::MAX)]);
        assert_eq!(ranges_between(&[0, 1, 2]), [(3, RawFd::MAX)]);
    }
}
