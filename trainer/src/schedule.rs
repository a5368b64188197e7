//! Learning-rate schedule per optimiser step: linear warmup from 0, then half-cosine down to `min_lr` (MAE/BEiT).

/// Warmup + cosine schedule over a fixed number of optimiser steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    /// Peak learning rate (reached at the end of warmup).
    pub peak: f64,
    /// Floor of the cosine.
    pub min: f64,
    /// Warmup steps.
    pub warmup_steps: u64,
    /// Total optimiser steps of the run.
    pub total_steps: u64,
}

impl LrSchedule {
    /// A schedule from epochs; warmup steps are `round(warmup_epochs × steps_per_epoch)`.
    pub fn from_epochs(
        peak: f64,
        min: f64,
        warmup_epochs: f64,
        epochs: usize,
        steps_per_epoch: usize,
    ) -> Self {
        let total_steps = (epochs * steps_per_epoch) as u64;
        let warmup_steps =
            ((warmup_epochs * steps_per_epoch as f64).round() as u64).min(total_steps);
        Self {
            peak,
            min,
            warmup_steps,
            total_steps,
        }
    }

    /// Learning rate used for optimiser step `step` (0-based).
    ///
    /// Warmup: `peak · step / warmup`; then `min + (peak − min) · ½ (1 + cos(π · (step − warmup) / (total − warmup)))`.
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.peak * step as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let t = ((step - self.warmup_steps) as f64 / span).min(1.0);
        self.min + (self.peak - self.min) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
    }
}
