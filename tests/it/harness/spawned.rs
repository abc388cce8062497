//! den running in the background, and host-side checks on processes,
//! with every wait bounded: a test that fails must fail, never hang.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

/// How long any single step may take before the test gives up; generous,
/// as the whole suite runs in parallel on small machines.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `command` to the end (feeding it `stdin`) within `TIMEOUT`; kills
/// it and fails the test on timeout.
pub fn output_within(mut command: Command, stdin: &[u8]) -> Output {
    if !stdin.is_empty() {
        command.stdin(Stdio::piped());
    }
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn den");
    if let Some(mut pipe) = child.stdin.take() {
        let bytes = stdin.to_vec();
        // A command that stops reading makes this fail; that is its business.
        thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        });
    }
    let stdout = read_to_end(child.stdout.take().expect("stdout"));
    let stderr = read_to_end(child.stderr.take().expect("stderr"));
    let deadline = Instant::now() + TIMEOUT;
    let status = wait_until(&mut child, deadline);
    let collect = |pipe: Receiver<Vec<u8>>, name: &str| {
        pipe.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("den's {name} stayed open after it exited"))
    };
    Output {
        status,
        stdout: collect(stdout, "stdout"),
        stderr: collect(stderr, "stderr"),
    }
}

fn read_to_end(mut pipe: impl Read + Send + 'static) -> Receiver<Vec<u8>> {
    let (send, receive) = mpsc::channel();
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        let _ = send.send(bytes);
    });
    receive
}

/// Waits for `child` until `deadline`; kills it and fails the test after.
pub fn wait_until(child: &mut Child, deadline: Instant) -> ExitStatus {
    loop {
        if let Some(status) = child.try_wait().expect("wait for den") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("den (pid {}) did not exit in time; killed", child.id());
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// den started with piped stdio, read line by line as it runs. Killed
/// (with its container) if the test ends early.
pub struct Spawned {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Receiver<Vec<u8>>,
    /// Every stdout line seen so far, for failure messages.
    seen: Vec<String>,
}

impl Spawned {
    pub fn start(mut command: Command) -> Spawned {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn den");
        let stdout = child.stdout.take().expect("stdout");
        let (send, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = read_to_end(child.stderr.take().expect("stderr"));
        Spawned {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
            seen: Vec::new(),
        }
    }

    /// den's pid (setpriv execs den, so it is den's own).
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits until den prints exactly `line`.
    #[track_caller]
    pub fn expect_line(&mut self, line: &str) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(got) if got == line => {
                    self.seen.push(got);
                    return;
                }
                Ok(got) => self.seen.push(got),
                Err(_) => panic!(
                    "den never printed {line:?}; stdout so far: {:?}; stderr: {}",
                    self.seen,
                    self.stderr_now()
                ),
            }
        }
    }

    /// Sends `signal` to den itself.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory-safety preconditions.
        let ret = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(ret, 0, "kill({}, {signal})", self.pid());
    }

    /// Writes to den's stdin.
    pub fn write_stdin(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(bytes).expect("write den's stdin");
        stdin.flush().expect("flush den's stdin");
    }

    /// Waits for den to exit; returns its status and the rest of stdout.
    #[track_caller]
    pub fn finish(mut self) -> (ExitStatus, Vec<String>) {
        drop(self.stdin.take());
        let status = wait_until(&mut self.child, Instant::now() + TIMEOUT);
        let deadline = Instant::now() + TIMEOUT;
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line);
        }
        (status, std::mem::take(&mut self.seen))
    }

    /// Waits for den to exit, e.g. after a kill.
    pub fn wait(&mut self) -> ExitStatus {
        wait_until(&mut self.child, Instant::now() + TIMEOUT)
    }

    fn stderr_now(&self) -> String {
        match self.stderr.try_recv() {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(_) => "(still open)".into(),
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Host pids of processes whose command line is exactly `argv`.
pub fn processes_with_argv(argv: &[&str]) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // Processes come and go while we look: a vanished one is skipped.
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline
            .strip_suffix(b"\0")
            .unwrap_or(&cmdline)
            .split(|&b| b == 0)
            .collect();
        if args.len() == argv.len() && args.iter().zip(argv).all(|(a, b)| *a == b.as_bytes()) {
            found.push(pid);
        }
    }
    found
}

/// Polls until `condition` holds, up to `limit`; returns whether it did.
pub fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A number no other test (or test process) uses, to mark the processes
/// a test starts: `sleep <marker>`.
pub fn marker(salt: u32) -> String {
    (900_000_000 + std::process::id() * 10 + salt % 10).to_string()
}
