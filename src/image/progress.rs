//! Pull progress: live bars on a terminal, plain lines otherwise.
//!
//! On a terminal (stderr is a tty, `TERM` set and not `dumb`) an indicatif `MultiProgress` on stderr
//! shows one bar per layer being fetched (bytes, speed) and a total bar.
//! Otherwise one plain line per event:
//!
//! ```text
//! resolving <ref>
//! fetching <digest12> <size>
//! done <digest12> <rate>/s
//! already present <digest12>
//! pulled <ref> <manifest digest>
//! ```
//!
//! `den pull` prints the lines on stdout; pulls that `den run`/`exec` do
//! by themselves print them on stderr, since stdout belongs to the
//! command. No steady-tick thread is ever started (den forks into user
//! namespaces after a pull and must be single-threaded by then): bars are
//! redrawn as bytes arrive, at most 20 times a second, and cleared when
//! the reporter finishes or is dropped.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::layer::{Event, LayerBlob};
use super::layout::Wanted;
use super::registry::Reference;
use super::store::{Pulled, Store};

/// Where plain lines go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

enum Mode {
    /// Nothing but the final line (`den pull --quiet`).
    Quiet,
    Lines(Stream),
    Bars(Bars),
}

struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    total_shown: std::sync::atomic::AtomicBool,
    layers: Mutex<HashMap<String, ProgressBar>>,
}

/// Reports one pull.
pub struct Reporter {
    mode: Mode,
    /// Where the final `pulled` line goes.
    result: Stream,
}

impl Reporter {
    /// For `den pull`: bars where `bars` (a capable terminal), else lines
    /// on stdout; `--quiet` keeps only the `pulled` line.
    pub fn for_pull(quiet: bool, bars: bool) -> Reporter {
        let mode = if quiet {
            Mode::Quiet
        } else if bars {
            Mode::Bars(Bars::new())
        } else {
            Mode::Lines(Stream::Stdout)
        };
        Reporter {
            mode,
            result: Stream::Stdout,
        }
    }

    /// For a pull `den run`/`exec` does by itself: everything on stderr.
    pub fn implicit(bars: bool) -> Reporter {
        let mode = if bars {
            Mode::Bars(Bars::new())
        } else {
            Mode::Lines(Stream::Stderr)
        };
        Reporter {
            mode,
            result: Stream::Stderr,
        }
    }

    /// A line that is not about one layer (`resolving …`).
    pub fn line(&self, text: &str) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Lines(stream) => print_line(*stream, text),
            Mode::Bars(bars) => bars.println(text),
        }
    }

    /// Handles a layer event.
    pub fn event(&self, event: Event<'_>) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Lines(stream) => {
                if let Some(text) = event_line(&event) {
                    print_line(*stream, &text);
                }
            }
            Mode::Bars(bars) => bars.event(event),
        }
    }

    /// Clears the bars and prints the `pulled` line.
    pub fn finish(self, reference: &Reference, pulled: &Pulled) {
        self.clear();
        print_line(
            self.result,
            &format!("pulled {reference} {}", pulled.manifest),
        );
    }

    /// Removes the bars (also done at drop, e.g. after an error).
    pub fn clear(&self) {
        if let Mode::Bars(bars) = &self.mode {
            bars.clear();
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.clear();
    }
}

fn print_line(stream: Stream, text: &str) {
    // A closed pipe must not make den panic in the middle of a pull.
    let _ = match stream {
        Stream::Stdout => writeln!(std::io::stdout().lock(), "{text}"),
        Stream::Stderr => writeln!(std::io::stderr().lock(), "{text}"),
    };
}

/// The plain line for an event (none for byte counts).
fn event_line(event: &Event<'_>) -> Option<String> {
    Some(match event {
        Event::Planned { .. } | Event::Bytes { .. } => return None,
        Event::Fetching { layer } => {
            format!("fetching {} {}", short(layer), human_size(layer.size))
        }
        Event::Done { layer, elapsed } => {
            let rate = layer.size as f64 / elapsed.as_secs_f64().max(1e-6);
            format!("done {} {}/s", short(layer), human_size(rate as u64))
        }
        Event::Present { layer } => format!("already present {}", short(layer)),
    })
}

impl Bars {
    fn new() -> Bars {
        // No steady tick: that would start a thread.
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        // Shown from `Planned` on: before, its length is unknown.
        let total = ProgressBar::hidden();
        total.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {decimal_bytes}/{decimal_total_bytes} {decimal_bytes_per_sec} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        total.set_prefix("total");
        Bars {
            multi,
            total,
            total_shown: std::sync::atomic::AtomicBool::new(false),
            layers: Mutex::new(HashMap::new()),
        }
    }

    fn println(&self, text: &str) {
        let _ = self.multi.println(text);
    }

    fn layers(&self) -> std::sync::MutexGuard<'_, HashMap<String, ProgressBar>> {
        self.layers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn event(&self, event: Event<'_>) {
        match event {
            Event::Planned { bytes, layers } => {
                self.total.set_length(bytes);
                if !self
                    .total_shown
                    .swap(true, std::sync::atomic::Ordering::SeqCst)
                {
                    self.multi.add(self.total.clone());
                }
                self.total.set_message(format!(
                    "{layers} layer{}",
                    if layers == 1 { "" } else { "s" }
                ));
            }
            Event::Fetching { layer } => {
                let bar = ProgressBar::new(layer.size);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>12} [{bar:30}] {decimal_bytes}/{decimal_total_bytes} {decimal_bytes_per_sec}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                bar.set_prefix(short(layer).to_string());
                // Above the total bar.
                let bar = if self.total_shown.load(std::sync::atomic::Ordering::SeqCst) {
                    self.multi.insert_before(&self.total, bar)
                } else {
                    self.multi.add(bar)
                };
                self.layers().insert(short(layer).to_string(), bar);
            }
            Event::Bytes { layer, bytes } => {
                if let Some(bar) = self.layers().get(short(layer)) {
                    bar.inc(bytes);
                }
                self.total.inc(bytes);
            }
            Event::Done { .. } | Event::Present { .. } => {
                if let Event::Done { layer, .. } = &event
                    && let Some(bar) = self.layers().remove(short(layer))
                {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                if let Some(text) = event_line(&event) {
                    self.println(&text);
                }
            }
        }
    }

    fn clear(&self) {
        for (_, bar) in self.layers().drain() {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        self.total.finish_and_clear();
        let _ = self.multi.clear();
    }
}

fn short(layer: &LayerBlob) -> &str {
    &layer.digest.hex()[..12]
}

/// Decimal units, as registries and Docker show sizes.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

impl Store {
    /// A pull `den run`/`exec` does because the image is not in the
    /// store: the same progress as `den pull`, all of it on stderr.
    pub(crate) fn pull_implicitly(
        &self,
        reference: &Reference,
        wanted: &Wanted,
    ) -> anyhow::Result<Pulled> {
        let reporter = Reporter::implicit(self.environment().bars);
        reporter.line(&format!("resolving {reference}"));
        let pulled = self
            .pull(reference, wanted, &|event| reporter.event(event))
            .map_err(|err| explain_disk_full(err, self))?;
        reporter.finish(reference, &pulled);
        Ok(pulled)
    }
}

/// A pull that ran out of space outside a layer (records, refs, blobs):
/// say so, naming the store, as a full disk during a layer does.
pub fn explain_disk_full(err: anyhow::Error, store: &Store) -> anyhow::Error {
    if super::layer::is_disk_full(&err) {
        err.context(format!(
            "the disk holding `{}` is full; free space or set DEN_DATA_DIR",
            store.root().display()
        ))
    } else {
        err
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::digest::Digest;
    use std::time::Duration;

    #[test]
    fn sizes() {
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1500), "1.5 kB");
        assert_eq!(human_size(63_000_000), "63.0 MB");
    }

    #[test]
    fn plain_lines_keep_their_format() {
        let layer = LayerBlob {
            digest: Digest::of(b"x"),
            size: 1_100_000,
            diff_id: Digest::of(b"y"),
        };
        let hex = &layer.digest.hex()[..12];
        assert_eq!(
            event_line(&Event::Fetching { layer: &layer }).unwrap(),
            format!("fetching {hex} 1.1 MB")
        );
        assert_eq!(
            event_line(&Event::Done {
                layer: &layer,
                elapsed: Duration::from_secs(1)
            })
            .unwrap(),
            format!("done {hex} 1.1 MB/s")
        );
        assert_eq!(
            event_line(&Event::Present { layer: &layer }).unwrap(),
            format!("already present {hex}")
        );
        assert!(
            event_line(&Event::Bytes {
                layer: &layer,
                bytes: 5
            })
            .is_none()
        );
    }

    #[test]
    fn bars_start_no_thread() {
        let before = crate::userns::threads::count();
        let bars = Bars::new();
        let layer = LayerBlob {
            digest: Digest::of(b"x"),
            size: 10,
            diff_id: Digest::of(b"y"),
        };
        bars.event(Event::Planned {
            bytes: 10,
            layers: 1,
        });
        bars.event(Event::Fetching { layer: &layer });
        bars.event(Event::Bytes {
            layer: &layer,
            bytes: 10,
        });
        // Other tests run concurrently: only check this thread added none
        // when the process was single-threaded to begin with.
        if before == Some(1) {
            assert_eq!(crate::userns::threads::count(), Some(1));
        }
        bars.clear();
    }
}
