//! seccomp: installing a filter, and the user-notification protocol
//! (receive a trapped syscall, check its caller still waits, answer).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Installs a classic BPF `program` on the calling thread (den's
/// processes have one). With `new_listener`, returns the listener for
/// the notifications the program asks for.
pub fn set_filter(
    program: &[libc::sock_filter],
    new_listener: bool,
) -> io::Result<Option<OwnedFd>> {
    let prog = libc::sock_fprog {
        len: u16::try_from(program.len()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?,
        // The kernel copies the program and never writes through this.
        filter: program.as_ptr().cast_mut(),
    };
    let flags = match new_listener {
        true => libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
        false => 0,
    };
    // SAFETY: `prog` points at `program`, which outlives the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const libc::sock_fprog,
        )
    };
    match (ret, new_listener) {
        (-1, _) => Err(io::Error::last_os_error()),
        // SAFETY: the kernel returned a fresh descriptor (close-on-exec) we own.
        (fd, true) => Ok(Some(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })),
        (_, false) => Ok(None),
    }
}

/// Receives one notification; None when its caller was interrupted
/// before it could be read.
pub fn receive(listener: BorrowedFd<'_>) -> io::Result<Option<libc::seccomp_notif>> {
    // SAFETY: plain data; the kernel refuses a buffer that is not zeroed.
    let mut notification: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: the buffer has the size the ioctl number encodes.
    let ret = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV,
            &mut notification as *mut libc::seccomp_notif,
        )
    };
    if ret == 0 {
        return Ok(Some(notification));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENOENT | libc::EINTR) => Ok(None),
        _ => Err(err),
    }
}

/// Whether the notification's caller is still waiting: after it, the pid
/// and the memory read belong to that caller and not to a reused pid.
pub fn still_waiting(listener: BorrowedFd<'_>, id: u64) -> bool {
    // SAFETY: the ioctl reads one u64.
    let ret = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
            &id as *const u64,
        )
    };
    ret == 0
}

/// How a trapped syscall ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The kernel runs the call as made.
    Continue,
    /// The call returns 0.
    Success,
    /// The call fails with this errno.
    Fail(rustix::io::Errno),
}

/// Answers notification `id`; a caller gone meanwhile is no error.
pub fn send(listener: BorrowedFd<'_>, id: u64, answer: Answer) -> io::Result<()> {
    // SAFETY: plain data; all-zero is a valid response.
    let mut response: libc::seccomp_notif_resp = unsafe { std::mem::zeroed() };
    response.id = id;
    match answer {
        Answer::Continue => response.flags = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
        Answer::Success => {}
        Answer::Fail(errno) => response.error = -errno.raw_os_error(),
    }
    // SAFETY: the response has the size the ioctl number encodes.
    let ret = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            &mut response as *mut libc::seccomp_notif_resp,
        )
    };
    let err = io::Error::last_os_error();
    match ret {
        0 => Ok(()),
        // The caller was interrupted or died meanwhile: nobody to answer.
        _ if err.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        _ => Err(err),
    }
}
