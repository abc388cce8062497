//! The one rule about den's threads, enforced here and only here: den
//! is single-threaded when it forks a container. The kernel refuses a
//! new user namespace to a multi-threaded process, and a fork of one may
//! inherit locks no thread will ever release. Threads come and go
//! (pulls, unpacking, a build's output relay, the network stack) and a
//! joined thread leaves `/proc/self/task` a moment after, so the check
//! first gives finished threads that moment.

use std::time::{Duration, Instant};

use anyhow::Result;

/// How long finished threads get to be gone.
const SETTLE: Duration = Duration::from_millis(100);

/// Fails when den still runs other threads: a thread left over from an
/// earlier step is a bug to report, not to run with.
pub(super) fn ensure_single() -> Result<()> {
    let deadline = Instant::now() + SETTLE;
    loop {
        match count() {
            None | Some(1) => return Ok(()),
            Some(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            Some(threads) => anyhow::bail!(
                "den has {threads} threads where it must have one to start a container \
                 (a bug in den; please report it)"
            ),
        }
    }
}

/// den's threads, as `/proc/self/task` lists them.
pub fn count() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/task").ok()?.count())
}
