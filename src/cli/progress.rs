//! Progress of a long command (`kes migrate`) on stderr: a bar redrawn in place on a
//! terminal, plain lines when stderr is a file or a pipe (a log, a CI job), nothing with
//! `--quiet`. Both show the count, the total, the rate and the time left.

use std::io::Write;
use std::time::{Duration, Instant};

/// How often the bar is redrawn.
const BAR_EVERY: Duration = Duration::from_millis(200);
/// Plain lines: at least this often while work is done, and at every tenth of the total.
const LINE_EVERY: Duration = Duration::from_secs(10);
const BAR_WIDTH: usize = 30;

/// Where progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A bar redrawn in place (stderr is a terminal).
    Bar,
    /// A line now and then (stderr is a file or a pipe).
    Lines,
    Off,
}

impl Mode {
    /// The mode for stderr as it is, or `Off` when `quiet`.
    pub fn for_stderr(quiet: bool) -> Mode {
        if quiet {
            Mode::Off
        } else if super::output::stderr_is_terminal() {
            Mode::Bar
        } else {
            Mode::Lines
        }
    }
}

pub struct Progress {
    mode: Mode,
    total: usize,
    /// What is counted, plural ("keys").
    unit: &'static str,
    started: Instant,
    last_shown: Instant,
    /// Tenths of the total already reported by a plain line.
    tenths_shown: usize,
    done: usize,
}

impl Progress {
    pub fn new(mode: Mode, total: usize, unit: &'static str) -> Progress {
        let now = Instant::now();
        Progress {
            mode,
            total,
            unit,
            started: now,
            last_shown: now,
            tenths_shown: 0,
            done: 0,
        }
    }

    /// Records that `done` of the total are done, and shows it when due.
    pub fn update(&mut self, done: usize) {
        self.done = done;
        let now = Instant::now();
        let elapsed = now.duration_since(self.started);
        match self.mode {
            Mode::Off => {}
            Mode::Bar => {
                if now.duration_since(self.last_shown) >= BAR_EVERY || done == self.total {
                    self.last_shown = now;
                    let bar = bar_text(done, self.total, elapsed, self.unit);
                    eprint!("\r\x1b[K{bar}");
                    let _ = std::io::stderr().flush();
                }
            }
            Mode::Lines => {
                let tenths = (done * 10).checked_div(self.total).unwrap_or(10);
                if tenths > self.tenths_shown || now.duration_since(self.last_shown) >= LINE_EVERY {
                    self.tenths_shown = tenths;
                    self.last_shown = now;
                    eprintln!(
                        "progress: {}",
                        status_text(done, self.total, elapsed, self.unit)
                    );
                }
            }
        }
    }

    /// Time since the progress started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Clears the bar, so that what follows starts on a clean line.
    pub fn finish(&mut self) {
        if self.mode == Mode::Bar {
            eprint!("\r\x1b[K");
            let _ = std::io::stderr().flush();
        }
    }
}

/// `1200/10000 keys (12%), 410 keys/s, 21s left`
pub fn status_text(done: usize, total: usize, elapsed: Duration, unit: &str) -> String {
    format!(
        "{done}/{total} {unit} ({}%), {}, {}",
        percent(done, total),
        rate_text(done, elapsed, unit),
        left_text(done, total, elapsed)
    )
}

/// `[#######...........] 1200/10000 keys (12%), 410 keys/s, 21s left`
fn bar_text(done: usize, total: usize, elapsed: Duration, unit: &str) -> String {
    let filled = (done * BAR_WIDTH).checked_div(total).unwrap_or(BAR_WIDTH);
    format!(
        "[{}{}] {}",
        "#".repeat(filled),
        ".".repeat(BAR_WIDTH - filled.min(BAR_WIDTH)),
        status_text(done, total, elapsed, unit)
    )
}

fn percent(done: usize, total: usize) -> usize {
    (done * 100).checked_div(total).unwrap_or(100)
}

/// Per second since the start: `410 keys/s`, `2.5 keys/s`.
pub fn rate_text(done: usize, elapsed: Duration, unit: &str) -> String {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return format!("- {unit}/s");
    }
    let rate = done as f64 / secs;
    if rate >= 10.0 {
        format!("{rate:.0} {unit}/s")
    } else {
        format!("{rate:.1} {unit}/s")
    }
}

/// The time left at the rate so far: `21s left`, `3m05s left`, `1h02m left`.
fn left_text(done: usize, total: usize, elapsed: Duration) -> String {
    if done >= total {
        return "0s left".into();
    }
    if done == 0 {
        return "time left unknown".into();
    }
    let left = elapsed.as_secs_f64() * (total - done) as f64 / done as f64;
    let secs = left.ceil() as u64;
    let text = match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs / 60 % 60),
    };
    format!("{text} left")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_has_count_total_rate_and_time_left() {
        assert_eq!(
            status_text(1200, 10_000, Duration::from_secs(3), "keys"),
            "1200/10000 keys (12%), 400 keys/s, 22s left"
        );
        assert_eq!(
            status_text(5, 100, Duration::from_secs(2), "keys"),
            "5/100 keys (5%), 2.5 keys/s, 38s left"
        );
        assert_eq!(
            status_text(0, 100, Duration::from_secs(1), "keys"),
            "0/100 keys (0%), 0.0 keys/s, time left unknown"
        );
        assert_eq!(
            status_text(100, 100, Duration::from_secs(4), "keys"),
            "100/100 keys (100%), 25 keys/s, 0s left"
        );
        assert_eq!(
            status_text(0, 0, Duration::ZERO, "keys"),
            "0/0 keys (100%), - keys/s, 0s left"
        );
    }

    #[test]
    fn time_left_grows_units() {
        assert_eq!(left_text(1, 100, Duration::from_secs(2)), "3m18s left");
        assert_eq!(left_text(1, 10_000, Duration::from_secs(2)), "5h33m left");
    }

    #[test]
    fn bar_fills_with_the_count() {
        let bar = bar_text(15, 30, Duration::from_secs(1), "keys");
        assert!(
            bar.starts_with(&format!("[{}{}] 15/30", "#".repeat(15), ".".repeat(15))),
            "{bar}"
        );
        let full = bar_text(30, 30, Duration::from_secs(1), "keys");
        assert!(full.starts_with(&format!("[{}]", "#".repeat(30))), "{full}");
    }
}
