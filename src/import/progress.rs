//! Progress of the import on stderr: a redrawn bar on a terminal (rows of the current table,
//! rate, ETA), plain log lines otherwise (one when a table starts, one every few seconds, one
//! when it ends). A single line of output does not justify a progress-bar crate.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const REDRAW_EVERY: Duration = Duration::from_millis(200);
const LOG_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    tty: bool,
    quiet: bool,
    table: String,
    total: u64,
    done: u64,
    started: Instant,
    last_output: Instant,
}

impl Progress {
    /// Progress on stderr; `quiet` prints nothing (library use, tests).
    pub fn new(quiet: bool) -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
            quiet,
            table: String::new(),
            total: 0,
            done: 0,
            started: Instant::now(),
            last_output: Instant::now(),
        }
    }

    pub fn start(&mut self, table: &str, total: u64) {
        self.table = table.to_string();
        self.total = total;
        self.done = 0;
        self.started = Instant::now();
        self.last_output = Instant::now();
        if !self.tty {
            self.line(&format!("import: {table}: started, {total} rows"));
        }
    }

    pub fn advance(&mut self, rows: u64) {
        self.done += rows;
        let every = if self.tty { REDRAW_EVERY } else { LOG_EVERY };
        if self.last_output.elapsed() >= every {
            self.last_output = Instant::now();
            let status = self.status();
            if self.tty {
                self.redraw(&status);
            } else {
                self.line(&format!("import: {}: {status}", self.table));
            }
        }
    }

    pub fn finish(&mut self) {
        let status = self.status();
        if self.tty {
            self.redraw(&status);
            self.line("");
        } else {
            self.line(&format!("import: {}: done, {status}", self.table));
        }
    }

    fn status(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = self.done as f64 / secs;
        let left = self.total.saturating_sub(self.done) as f64;
        let eta = if rate > 0.0 {
            format!("{:.0} s", left / rate)
        } else {
            "?".into()
        };
        format!("{}/{} rows, {:.0} rows/s, ETA {eta}", self.done, self.total, rate)
    }

    fn redraw(&self, status: &str) {
        let width = 30usize;
        let filled = (self.done.min(self.total) * width as u64)
            .checked_div(self.total)
            .unwrap_or(width as u64) as usize;
        let bar = format!("{}{}", "#".repeat(filled), "-".repeat(width - filled));
        if !self.quiet {
            // Progress output is best effort: a closed stderr must not stop the import.
            let _ = write!(std::io::stderr(), "\r\x1b[2K{:<26} [{bar}] {status}", self.table);
        }
    }

    fn line(&self, text: &str) {
        if !self.quiet {
            let _ = writeln!(std::io::stderr(), "{text}");
        }
    }
}
