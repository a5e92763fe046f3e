//! Showing a transfer's progress: an `indicatif` bar on standard error when that is a terminal,
//! otherwise a plain line on standard output every few seconds (for logs and pipes).

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often a plain progress line is printed.
const LINE_INTERVAL: Duration = Duration::from_secs(1);

pub struct Progress {
    label: String,
    bar: Option<ProgressBar>,
    /// The bar shows a spinner until the total is known, then bytes, rate and ETA.
    sized: bool,
    quiet: bool,
    last_line: Option<(Instant, u64)>,
}

impl Progress {
    /// `quiet` shows nothing at all.
    pub fn new(label: &str, quiet: bool) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new_spinner();
            let style = ProgressStyle::with_template("{prefix} {spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.set_prefix(label.to_string());
            bar.set_message("waiting for the sender");
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            label: label.to_string(),
            bar,
            sized: false,
            quiet,
            last_line: None,
        }
    }

    /// `done` of `total` bytes (unknown until the sender says); `extra` ends the line
    /// (repairs, NACKs...).
    pub fn update(&mut self, done: u64, total: Option<u64>, extra: &str) {
        if self.quiet {
            return;
        }
        if let Some(bar) = &self.bar {
            match total {
                Some(t) if !self.sized => {
                    // Rate and ETA count from the first data, not from the wait before it.
                    let style = ProgressStyle::with_template(
                        "{prefix} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
                    bar.set_style(style);
                    bar.set_length(t);
                    bar.reset_elapsed();
                    bar.reset_eta();
                    self.sized = true;
                }
                _ if !self.sized => return,
                _ => {}
            }
            bar.set_position(done);
            bar.set_message(extra.to_string());
            return;
        }
        let now = Instant::now();
        let (since, before) = match self.last_line {
            Some((at, _)) if now - at < LINE_INTERVAL => return,
            Some(last) => last,
            None => {
                self.last_line = Some((now, done));
                return;
            }
        };
        if done == 0 && total.is_none() {
            println!("{}: waiting for data", self.label);
            self.last_line = Some((now, done));
            return;
        }
        let rate = (done.saturating_sub(before)) as f64 / (now - since).as_secs_f64().max(1e-9);
        let of = match total {
            Some(t) => format!(
                " of {} ({:.0}%)",
                mib(t),
                done as f64 * 100.0 / t.max(1) as f64
            ),
            None => String::new(),
        };
        let eta = match total {
            Some(t) if rate > 0.0 && t > done => {
                format!(", ETA {:.0}s", (t - done) as f64 / rate)
            }
            _ => String::new(),
        };
        println!(
            "{}: {}{of}, {:.1} MB/s{eta}, {extra}",
            self.label,
            mib(done),
            rate / 1e6
        );
        self.last_line = Some((now, done));
    }

    /// Removes the bar (the caller prints a summary next).
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `12.3 MiB`.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Decimal megabytes per second, as network rates are usually given.
pub fn rate(bytes: u64, took: Duration) -> String {
    format!(
        "{:.1} MB/s",
        bytes as f64 / took.as_secs_f64().max(1e-9) / 1e6
    )
}
