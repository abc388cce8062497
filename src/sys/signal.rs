//! Waiting: signal masks, signalfd, dispositions, and poll over raw
//! descriptors.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

/// A set of signal numbers.
pub struct SignalSet(libc::sigset_t);

impl SignalSet {
    pub fn of(signals: &[libc::c_int]) -> SignalSet {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set; sigaddset only reads valid numbers.
        unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            for &signal in signals {
                libc::sigaddset(set.as_mut_ptr(), signal);
            }
            SignalSet(set.assume_init())
        }
    }

    /// Blocks these signals so they queue for a signalfd instead of
    /// running default actions. Children inherit the mask.
    pub fn block(&self) -> io::Result<()> {
        self.set_mask(libc::SIG_BLOCK)
    }

    /// Replaces the mask: used with an empty set before exec.
    pub fn set_as_mask(&self) -> io::Result<()> {
        self.set_mask(libc::SIG_SETMASK)
    }

    fn set_mask(&self, how: libc::c_int) -> io::Result<()> {
        // SAFETY: valid set pointer, null old-set pointer.
        let ret = unsafe { libc::sigprocmask(how, &self.0, std::ptr::null_mut()) };
        if ret == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// A signalfd that reads these (blocked) signals.
    pub fn signalfd(&self) -> io::Result<OwnedFd> {
        // SAFETY: valid set pointer; the returned fd is owned by us.
        let fd = unsafe { libc::signalfd(-1, &self.0, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
        if fd == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// Reads one pending signal from a non-blocking signalfd.
pub fn read_signal(signalfd: impl AsFd) -> io::Result<Option<libc::c_int>> {
    let mut info = MaybeUninit::<libc::signalfd_siginfo>::uninit();
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: the buffer is exactly one siginfo long.
    let n = unsafe { libc::read(signalfd.as_fd().as_raw_fd(), info.as_mut_ptr().cast(), size) };
    if n == -1 {
        let err = io::Error::last_os_error();
        return if err.kind() == io::ErrorKind::WouldBlock {
            Ok(None)
        } else {
            Err(err)
        };
    }
    // SAFETY: the kernel filled a whole siginfo.
    Ok(Some(unsafe { info.assume_init() }.ssi_signo as libc::c_int))
}

/// Puts a signal's disposition back to the default. Needed before exec
/// because Rust ignores SIGPIPE and an ignored signal stays ignored
/// across exec (`yes | head` would then never end).
pub fn reset_signal_disposition(signal: libc::c_int) {
    // SAFETY: SIG_DFL is always a valid disposition.
    unsafe { libc::signal(signal, libc::SIG_DFL) };
}

/// Waits up to `timeout` for events on `fds` (raw pollfds, as the network
/// stack keeps them); sets their `revents`.
pub fn poll(fds: &mut [libc::pollfd], timeout: std::time::Duration) -> io::Result<usize> {
    let millis = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `fds` is a valid, exclusively borrowed pollfd array.
    let ret = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, millis) };
    match ret {
        -1 => Err(io::Error::last_os_error()),
        ready => Ok(ready as usize),
    }
}
