//! Timestamped progress lines, so a run shows where its time goes.

use std::time::{Duration, Instant};

/// Prints `[  1.23s] message` lines relative to its creation.
#[derive(Debug)]
pub struct Progress {
    start: Instant,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    /// Starts the clock.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    /// Time since start.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Prints one step.
    pub fn step(&self, message: impl AsRef<str>) {
        println!(
            "[{:>6.2}s] {}",
            self.elapsed().as_secs_f64(),
            message.as_ref()
        );
    }
}
