//! A build step's output. On a terminal: a live tail of its last lines,
//! redrawn in place, with the whole output kept to print if the step
//! fails. Otherwise (CI): the output as it comes, nothing redrawn.
//! Everything goes to stderr: stdout is the command's.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::thread::JoinHandle;

use anyhow::Context;

use crate::userns::{self, Mode, Spec};

/// Lines of the live tail.
const TAIL_LINES: usize = 6;
/// The most of a failing step's output kept for printing (its end).
const KEPT_BYTES: usize = 4 << 20;

/// Runs `spec` (its `output` is set here) with its output relayed to
/// stderr, as a live tail when `live` (a terminal); returns the exit code
/// and what it wrote, kept for printing should it have failed.
pub fn run_relayed(mut spec: Spec, live: bool) -> anyhow::Result<(i32, Vec<u8>)> {
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .context("creating the output pipe")?;
    if let Mode::BuildStep(step) = &mut spec.mode {
        step.output = Some(write.as_raw_fd());
    }
    let mut relay = None;
    let code = userns::run_with(&spec, || {
        drop(write);
        relay = Some(self::relay(read, live));
    });
    let captured = relay
        .map(|relay| relay.join().unwrap_or_default())
        .unwrap_or_default();
    Ok((code?, captured))
}

/// Prints what a failed container wrote: on a terminal only its tail was
/// shown.
pub fn print_captured(captured: &[u8]) {
    let mut stderr = io::stderr().lock();
    let _ = stderr.write_all(captured);
    let _ = stderr.flush();
}

/// Reads the step's output until every writer has closed it. Call only
/// once the container runs: it starts a thread.
fn relay(read: OwnedFd, live: bool) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut source = std::fs::File::from(read);
        match live {
            true => tail(&mut source),
            false => {
                let _ = io::copy(&mut source, &mut io::stderr().lock());
                Vec::new()
            }
        }
    })
}

/// The live tail; returns the output (its last `KEPT_BYTES`).
fn tail(source: &mut impl Read) -> Vec<u8> {
    let width = terminal_width();
    let mut kept = Vec::new();
    let mut drawn = 0;
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        let count = match source.read(&mut buffer) {
            Ok(0) => break,
            Ok(count) => count,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        kept.extend_from_slice(&buffer[..count]);
        if kept.len() > 2 * KEPT_BYTES {
            kept.drain(..kept.len() - KEPT_BYTES);
        }
        drawn = redraw(&kept, drawn, width);
    }
    clear(drawn);
    if kept.len() > KEPT_BYTES {
        kept.drain(..kept.len() - KEPT_BYTES);
    }
    kept
}

/// Replaces the `drawn` lines of the previous tail with the last lines
/// of `output`, dimmed and cut to the terminal's width; returns how many
/// it drew.
fn redraw(output: &[u8], drawn: usize, width: usize) -> usize {
    let lines = last_lines(output, TAIL_LINES);
    let mut frame = String::new();
    if drawn > 0 {
        frame.push_str(&format!("\x1b[{drawn}A"));
    }
    frame.push_str("\x1b[J");
    for line in &lines {
        let shown: String = line.chars().take(width.saturating_sub(4)).collect();
        frame.push_str(&format!("  \x1b[2m{shown}\x1b[0m\n"));
    }
    let _ = io::stderr().lock().write_all(frame.as_bytes());
    lines.len()
}

fn clear(drawn: usize) {
    if drawn > 0 {
        let _ = write!(io::stderr().lock(), "\x1b[{drawn}A\x1b[J");
    }
}

/// The last `count` non-blank lines, a carriage return starting a line
/// over (progress bars), control characters dropped.
pub fn last_lines(output: &[u8], count: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(&output[output.len().saturating_sub(64 << 10)..]);
    let mut lines: Vec<String> = text
        .split('\n')
        .map(|line| {
            line.rsplit('\r')
                .find(|part| !part.trim().is_empty())
                .unwrap_or("")
        })
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            line.chars()
                .filter(|c| !c.is_control() || *c == '\t')
                .collect()
        })
        .collect();
    let start = lines.len().saturating_sub(count);
    lines.drain(..start);
    lines
}

fn terminal_width() -> usize {
    rustix::termios::tcgetwinsize(rustix::stdio::stderr())
        .map(|size| usize::from(size.ws_col))
        .ok()
        .filter(|&width| width >= 20)
        .unwrap_or(80)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_skip_blanks_and_follow_carriage_returns() {
        let output = b"one\n\ntwo\nprogress 10%\rprogress 100%\nthree\x1b[0m\n";
        assert_eq!(last_lines(output, 3), ["two", "progress 100%", "three[0m"]);
        assert_eq!(last_lines(b"", 3), Vec::<String>::new());
    }
}
