//! A progress display for long loops (training, pretraining, evaluation): a bar with ETA, loss
//! and throughput on a terminal, plain periodic lines otherwise (logs, CI, notebooks' output).
//!
//! ```no_run
//! use ssod::script::progress::Progress;
//! let mut p = Progress::new(100, "train");
//! for step in 0..100 {
//!     p.tick(1, Some(0.5), Some(32.0)); // one step, its loss, images/s
//! }
//! p.finish();
//! ```

use std::sync::atomic::AtomicBool;

/// Set by the Ctrl-C handler of `ssod run`/`ssod repl`: long loops poll it (through
/// [`Progress::interrupted`]) and stop cleanly.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    total: u64,
    done: u64,
    label: String,
    start: Instant,
    last_draw: Option<Instant>,
    terminal: bool,
    /// Plain mode: a line every this often (and at the end).
    interval: Duration,
    /// Plain mode: a line every this many units instead (and at the end); `Some(0)`: none.
    every_units: Option<u64>,
    /// `done` when the last plain line was drawn.
    drawn_at: u64,
    last_loss: Option<f64>,
    last_rate: Option<f64>,
}

fn fmt_duration(secs: f64) -> String {
    if !secs.is_finite() {
        return "?".into();
    }
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s / 60 % 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

impl Progress {
    /// A progress display for `total` units of work (0: unknown total, no ETA).
    pub fn new(total: u64, label: &str) -> Self {
        Progress {
            total,
            done: 0,
            label: label.to_string(),
            start: Instant::now(),
            last_draw: None,
            terminal: std::io::stderr().is_terminal(),
            interval: Duration::from_secs(10),
            every_units: None,
            drawn_at: 0,
            last_loss: None,
            last_rate: None,
        }
    }

    /// Plain lines at most this often (default 10 s); for tests and chatty logs.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Off a terminal, a plain line every `units` units (YOLOX's `print_interval`) instead of
    /// by time, or (None) no plain lines at all: the caller prints its own summary. A terminal
    /// still gets its live bar.
    pub fn with_line_every(mut self, units: Option<u64>) -> Self {
        self.every_units = Some(units.map_or(0, |u| u.max(1)));
        self
    }

    /// `n` more units done, with the latest loss and throughput (items/s) if known.
    pub fn tick(&mut self, n: u64, loss: Option<f64>, throughput: Option<f64>) {
        self.done = self.done.saturating_add(n);
        if loss.is_some() {
            self.last_loss = loss;
        }
        if throughput.is_some() {
            self.last_rate = throughput;
        }
        let now = Instant::now();
        let every = if self.terminal {
            Duration::from_millis(100)
        } else {
            self.interval
        };
        let due = match self.every_units {
            Some(0) if !self.terminal => false,
            Some(units) if !self.terminal => self.done - self.drawn_at >= units,
            _ => self.last_draw.is_none_or(|t| now - t >= every),
        };
        let complete = self.total > 0 && self.done >= self.total;
        // In plain mode the final state is drawn by `finish`, once.
        let draw = if self.terminal {
            due || complete
        } else {
            due && !complete
        };
        if draw {
            self.draw();
            self.last_draw = Some(now);
            self.drawn_at = self.done;
        }
    }

    /// The line (without bar) describing the current state.
    pub fn status(&self) -> String {
        let elapsed = self.start.elapsed().as_secs_f64();
        let mut s = if self.total > 0 {
            let frac = (self.done as f64 / self.total as f64).min(1.0);
            let eta = if self.done > 0 {
                elapsed / frac - elapsed
            } else {
                f64::NAN
            };
            format!(
                "{} {}/{} ({:.0}%) elapsed {} ETA {}",
                self.label,
                self.done,
                self.total,
                frac * 100.0,
                fmt_duration(elapsed),
                fmt_duration(eta)
            )
        } else {
            format!(
                "{} {} elapsed {}",
                self.label,
                self.done,
                fmt_duration(elapsed)
            )
        };
        if let Some(l) = self.last_loss {
            s.push_str(&format!(" loss {l:.4}"));
        }
        if let Some(r) = self.last_rate {
            s.push_str(&format!(" {r:.1}/s"));
        }
        s
    }

    fn draw(&self) {
        let mut err = std::io::stderr();
        if self.terminal {
            let width = 24usize;
            let filled = if self.total > 0 {
                ((self.done as f64 / self.total as f64).min(1.0) * width as f64) as usize
            } else {
                0
            };
            let bar = format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled));
            let _ = write!(err, "\r\x1b[2K{bar} {}", self.status());
            let _ = err.flush();
        } else {
            let _ = writeln!(err, "{}", self.status());
        }
    }

    /// Whether Ctrl-C was pressed during a notebook cell: long native loops should check this
    /// now and then and return an error (the notebook then reports the cell as interrupted).
    pub fn interrupted(&self) -> bool {
        INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Draw the final state (and end the terminal line).
    pub fn finish(&mut self) {
        if self.every_units == Some(0) && !self.terminal {
            return;
        }
        self.draw();
        if self.terminal {
            let _ = writeln!(std::io::stderr());
        }
    }
}
