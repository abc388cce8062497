//! A pseudo-terminal the test owns, handed to den as its terminal: den
//! gets the slave as stdin, stdout, stderr and controlling terminal (as
//! in an interactive shell); the test types into and reads the master.

use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, poll};
use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
use rustix::termios::{Termios, Winsize, tcgetattr, tcsetwinsize};

pub struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
    /// Everything read from the master.
    transcript: Vec<u8>,
    /// How much of the transcript `expect` has consumed.
    consumed: usize,
}

impl Pty {
    /// A pty pair sized `rows` x `cols`.
    pub fn open(rows: u16, cols: u16) -> Pty {
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
            .expect("open /dev/ptmx");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let name = ptsname(&master, Vec::new()).expect("ptsname");
        let slave = rustix::fs::open(
            name.as_c_str(),
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .expect("open the pty slave");
        let pty = Pty {
            master,
            slave,
            transcript: Vec::new(),
            consumed: 0,
        };
        pty.resize(rows, cols);
        pty
    }

    /// Makes the slave `command`'s stdio and controlling terminal, in a
    /// session of its own.
    pub fn attach(&self, command: &mut Command) {
        let stdio = || Stdio::from(self.slave.try_clone().expect("dup the pty slave"));
        command.stdin(stdio()).stdout(stdio()).stderr(stdio());
        // SAFETY: setsid and ioctl are async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() == -1 || libc::ioctl(0, libc::TIOCSCTTY, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// Closes the master, as a terminal emulator does when its window
    /// closes: den sees a hang-up.
    pub fn hang_up(self) {
        drop(self);
    }

    /// Sets the window size, as a terminal emulator does when resized.
    pub fn resize(&self, rows: u16, cols: u16) {
        let size = Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        tcsetwinsize(&self.slave, size).expect("TIOCSWINSZ");
    }

    /// The slave's current mode (den puts it in raw mode while it runs).
    pub fn mode(&self) -> Termios {
        tcgetattr(&self.slave).expect("tcgetattr")
    }

    /// Types `bytes`.
    pub fn type_in(&self, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = rustix::io::write(&self.master, rest).expect("write the pty master");
            rest = &rest[n..];
        }
    }

    /// Reads until the output since the last match contains `needle`;
    /// fails the test, showing the transcript, if it does not within
    /// `limit`.
    #[track_caller]
    pub fn expect(&mut self, needle: &str, limit: Duration) {
        if !self.wait_for(needle, limit) {
            panic!(
                "the terminal never showed {needle:?}; it showed:\n{}",
                self.transcript_text()
            );
        }
    }

    /// Like `expect`, but says whether `needle` came instead of failing.
    pub fn wait_for(&mut self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let unread = &self.transcript[self.consumed..];
            if let Some(at) = find(unread, needle.as_bytes()) {
                self.consumed += at + needle.len();
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.read_some(left) {
                return false;
            }
        }
    }

    /// Everything read so far, for assertions and messages.
    pub fn transcript_text(&self) -> String {
        String::from_utf8_lossy(&self.transcript).into_owned()
    }

    /// One read within `limit`; false on timeout.
    fn read_some(&mut self, limit: Duration) -> bool {
        let timeout = rustix::event::Timespec::try_from(limit).expect("timeout");
        let mut fds = [PollFd::new(&self.master, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return true,
            Err(err) => panic!("poll the pty master: {err}"),
        }
        let mut buf = [0u8; 4096];
        match rustix::io::read(&self.master, &mut buf) {
            Ok(n) => {
                self.transcript.extend_from_slice(&buf[..n]);
                true
            }
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => true,
            Err(err) => panic!("read the pty master: {err}"),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
