//! Progress of long operations (replay, redrive, bench, chaos): a bar on a terminal, plain
//! lines otherwise (a log file or a pipe gets one line per step, never control characters).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// A progress report on stderr.
pub(super) struct Progress {
    bar: Option<indicatif::ProgressBar>,
    what: &'static str,
    total: u64,
    done: u64,
    last_line: Option<Instant>,
    /// No plain lines (see [`Progress::bar_only`]).
    quiet: bool,
}

impl Progress {
    /// Progress of `total` steps (0 when unknown) of `what` ("replayed", "kills").
    pub(super) fn new(what: &'static str, total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = if total > 0 {
                indicatif::ProgressBar::new(total)
            } else {
                indicatif::ProgressBar::new_spinner()
            };
            let template = if total > 0 {
                "{msg} [{bar:40}] {pos}/{len} ({elapsed}, eta {eta})"
            } else {
                "{msg} {spinner} {pos} ({elapsed})"
            };
            if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(what);
            bar
        });
        Progress {
            bar,
            what,
            total,
            done: 0,
            last_line: None,
            quiet: false,
        }
    }

    /// A bar on a terminal, and nothing otherwise (for callers that print their own lines).
    pub(super) fn bar_only(what: &'static str, total: u64) -> Progress {
        let mut p = Progress::new(what, total);
        if p.bar.is_none() {
            p.quiet = true;
        }
        p
    }

    /// Whether a bar is drawn (so the caller's own progress lines are not wanted).
    pub(super) fn is_bar(&self) -> bool {
        self.bar.is_some()
    }

    /// Sets how many steps are done.
    pub(super) fn set(&mut self, done: u64) {
        let changed = done != self.done;
        self.done = done;
        match &self.bar {
            Some(bar) => bar.set_position(done),
            // An unchanged count is not printed again.
            None if !changed && self.last_line.is_some() => {}
            None => {
                // Plain lines at most every 500 ms, and always the last one.
                let due = self
                    .last_line
                    .is_none_or(|t| t.elapsed() >= Duration::from_millis(500));
                if due || (self.total > 0 && done >= self.total) {
                    self.line();
                }
            }
        }
    }

    /// Ends the report (clears a bar; prints the last plain line if not printed).
    pub(super) fn finish(mut self) {
        match self.bar.take() {
            Some(bar) => bar.finish_and_clear(),
            None => {
                if self.last_line.is_none() || (self.total > 0 && self.done < self.total) {
                    self.line();
                }
            }
        }
    }

    fn line(&mut self) {
        self.last_line = Some(Instant::now());
        if self.quiet {
            return;
        }
        if self.total > 0 {
            eprintln!("{} {}/{}", self.what, self.done, self.total);
        } else {
            eprintln!("{} {}", self.what, self.done);
        }
    }
}

/// Reports `done()` of `total` steps of `what` five times a second until `finished` is set,
/// then once more: for a thread beside measured work, which it stays out of the way of.
pub(super) fn follow(
    what: &'static str,
    total: u64,
    finished: &AtomicBool,
    done: impl Fn() -> u64,
) {
    let mut progress = Progress::new(what, total);
    loop {
        let last = finished.load(Relaxed);
        if !last {
            std::thread::sleep(Duration::from_millis(200));
        }
        progress.set(done().min(total));
        if last {
            break;
        }
    }
    progress.finish();
}
