//! Frame counting for `watch` and `demo`: frames, bytes and latency over an interval.

use serde::Serialize;

use crate::common::{mb_per_s, now_unix_ns};

/// Accumulates frames between two samples.
#[derive(Debug, Default, Clone)]
pub struct Meter {
    frames: u64,
    bytes: u64,
    latency_sum_ns: u128,
    latency_max_ns: u64,
    /// Frames whose timestamp was later than the reader's clock (not counted in latency).
    latency_count: u64,
}

/// Rates and latency over one interval (or a whole run).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Rates {
    /// Frames received.
    pub frames: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Frames per second.
    pub frames_per_s: f64,
    /// Throughput in MB/s (10^6 bytes).
    pub mb_per_s: f64,
    /// Mean latency (frame timestamp → read), µs; null with no frame.
    pub latency_us_mean: Option<f64>,
    /// Largest latency, µs; null with no frame.
    pub latency_us_max: Option<f64>,
}

impl Meter {
    /// Counts a frame of `len` bytes stamped `timestamp_ns` (Unix ns; 0: unknown).
    pub fn record(&mut self, len: usize, timestamp_ns: u64) {
        self.frames += 1;
        self.bytes += len as u64;
        let now = now_unix_ns();
        if timestamp_ns != 0 && now >= timestamp_ns {
            let latency = now - timestamp_ns;
            self.latency_sum_ns += u128::from(latency);
            self.latency_max_ns = self.latency_max_ns.max(latency);
            self.latency_count += 1;
        }
    }

    /// Adds another meter's counts.
    pub fn merge(&mut self, other: &Meter) {
        self.frames += other.frames;
        self.bytes += other.bytes;
        self.latency_sum_ns += other.latency_sum_ns;
        self.latency_max_ns = self.latency_max_ns.max(other.latency_max_ns);
        self.latency_count += other.latency_count;
    }

    /// The rates over `seconds`.
    pub fn rates(&self, seconds: f64) -> Rates {
        let has = self.latency_count > 0;
        Rates {
            frames: self.frames,
            bytes: self.bytes,
            frames_per_s: if seconds > 0.0 {
                self.frames as f64 / seconds
            } else {
                0.0
            },
            mb_per_s: mb_per_s(self.bytes, seconds),
            latency_us_mean: has
                .then(|| self.latency_sum_ns as f64 / self.latency_count as f64 / 1e3),
            latency_us_max: has.then(|| self.latency_max_ns as f64 / 1e3),
        }
    }
}

/// `12.3 µs` / `4.5 ms`, or `-`.
pub fn micros(value: Option<f64>) -> String {
    match value {
        None => "-".into(),
        Some(us) if us >= 10_000.0 => format!("{:.1} ms", us / 1e3),
        Some(us) => format!("{us:.1} µs"),
    }
}

/// Prints a line that replaces the previous one on a terminal, or a new line otherwise.
#[derive(Debug)]
pub struct LiveLine {
    terminal: bool,
    open: bool,
}

impl LiveLine {
    /// Refreshes in place when stdout is a terminal.
    pub fn new() -> Self {
        use std::io::IsTerminal as _;
        Self {
            terminal: std::io::stdout().is_terminal(),
            open: false,
        }
    }

    /// Whether stdout is a terminal (the line refreshes in place).
    pub fn is_terminal(&self) -> bool {
        self.terminal
    }

    /// Shows `text`.
    pub fn show(&mut self, text: &str) -> std::io::Result<()> {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        if self.terminal {
            write!(stdout, "\r\x1b[2K{text}")?;
            self.open = true;
        } else {
            writeln!(stdout, "{text}")?;
        }
        stdout.flush()
    }

    /// Ends the refreshed line so later output starts on a line of its own.
    pub fn finish(&mut self) -> std::io::Result<()> {
        if self.open {
            self.open = false;
            crate::common::out("")?;
        }
        Ok(())
    }
}
