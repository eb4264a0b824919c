//! A one-line progress bar on stderr for big imports, only when stderr is a terminal: the line
//! is redrawn with `\r` at most ten times a second and cleared at the end.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Below this many bytes an import is quick enough to need no bar.
const BIG: u64 = 16 << 20;

pub struct Progress {
    on: bool,
    total: u64,
    base: u64,
    last: Option<Instant>,
    label: String,
}

impl Progress {
    pub fn new(total: u64) -> Progress {
        Progress {
            on: total >= BIG && std::io::stderr().is_terminal(),
            total,
            base: 0,
            last: None,
            label: String::new(),
        }
    }

    /// Start the next blob: `label` names it, `base` is the bytes done before it.
    pub fn stage(&mut self, label: String, base: u64) {
        self.label = label;
        self.base = base;
        self.last = None;
    }

    /// `done` bytes of the current blob read.
    pub fn update(&mut self, done: u64) {
        if !self.on {
            return;
        }
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_millis(100))
        {
            return;
        }
        self.last = Some(now);
        let cur = (self.base + done).min(self.total);
        let frac = cur as f64 / self.total.max(1) as f64;
        let width = 30;
        let filled = (frac * width as f64) as usize;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[K[{}{}] {:>3.0}% {} / {}  {}",
            "#".repeat(filled),
            ".".repeat(width - filled),
            frac * 100.0,
            super::store::human(cur),
            super::store::human(self.total),
            self.label
        );
        let _ = err.flush();
    }

    pub fn done(&mut self) {
        if self.on {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
            self.on = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.done();
    }
}
