//! Progress reporting: an indicatif bar (epoch/step, loss, it/s, ETA) when stderr is a terminal, plain `tracing`
//! lines otherwise (logs, CI, tests).

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

/// Progress over the optimiser steps of one run.
pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    first_step: u64,
    started: Instant,
}

impl Progress {
    /// Start reporting a run of `total` steps that begins (or resumes) at `first_step`.
    pub fn new(label: &str, total: u64, first_step: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total).with_prefix(label.to_string()).with_position(first_step);
            if let Ok(style) = ProgressStyle::with_template("{prefix} {bar:30.cyan/blue} {pos}/{len} [{elapsed_precise} < {eta_precise}, {per_sec}] {msg}") {
                bar.set_style(style);
            }
            bar
        });
        Self {
            bar,
            total,
            first_step,
            started: Instant::now(),
        }
    }

    /// Steps per second since this run (re)started.
    pub fn rate(&self, step: u64) -> f64 {
        let secs = self.started.elapsed().as_secs_f64();
        if secs > 0.0 {
            step.saturating_sub(self.first_step) as f64 / secs
        } else {
            0.0
        }
    }

    /// Report optimiser step `step` (1-based count of steps done); `emit` asks for a log line in non-TTY mode.
    pub fn update(&self, step: u64, epoch: usize, loss: f64, lr: f64, emit: bool) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(step);
                bar.set_message(format!("epoch {epoch} loss {loss:.4} lr {lr:.2e}"));
            }
            None if emit => {
                let rate = self.rate(step);
                let eta = if rate > 0.0 {
                    self.total.saturating_sub(step) as f64 / rate
                } else {
                    f64::NAN
                };
                tracing::info!("epoch {epoch} step {step}/{} loss {loss:.5} lr {lr:.3e} {rate:.2} it/s ETA {eta:.0}s", self.total);
            }
            None => {}
        }
    }

    /// Print a message without breaking the bar.
    pub fn println(&self, msg: &str) {
        match &self.bar {
            Some(bar) => bar.println(msg),
            None => tracing::info!("{msg}"),
        }
    }

    /// Close the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
