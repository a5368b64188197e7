//! Rank 0's record of a run: `metrics.jsonl`, TensorBoard events, epoch pictures and the progress bar. On other
//! ranks every method is a no-op.

use std::path::Path;
use std::time::Instant;

use serde_json::json;

use super::state::StepPlan;
use super::step::StepFigures;
use super::{EpochReport, RunOptions};
use crate::checkpoint::TrainState;
use crate::config::ExperimentConfig;
use crate::error::Result;
use crate::tracking::images::encode_png;
use crate::tracking::jsonl::MetricsLog;
use crate::tracking::progress::Progress;
use crate::tracking::tfevents::EventWriter;

/// What rank 0 writes while training.
pub(super) struct Tracker {
    metrics: Option<MetricsLog>,
    events: Option<EventWriter>,
    progress: Option<Progress>,
    started: Instant,
    /// Sum and count of the losses since the last logged step.
    window: (f64, usize),
    /// Write pictures (rank 0).
    main: bool,
}

impl Tracker {
    /// Open the run's logs (appending after `state.step` when resuming) and record the start.
    pub fn open(
        cfg: &ExperimentConfig,
        out: &Path,
        main: bool,
        command: &'static str,
        plan: &StepPlan,
        state: &TrainState,
        opts: &RunOptions,
    ) -> Result<Self> {
        let resumed = opts.resume.is_some();
        let metrics = if main {
            Some(MetricsLog::open(
                &out.join("metrics.jsonl"),
                resumed.then_some(state.step),
            )?)
        } else {
            None
        };
        let events = if cfg.logging.tensorboard && main {
            Some(EventWriter::create(&out.join("tb"))?)
        } else {
            None
        };
        let total = plan.sched.total_steps;
        let mut t = Self {
            metrics,
            events,
            progress: main.then(|| Progress::new(command, total, state.step)),
            started: Instant::now(),
            window: (0.0, 0),
            main,
        };
        t.append(&json!({"event": if resumed { "resume" } else { "start" }, "step": state.step, "steps_per_epoch": plan.steps_per_epoch, "total_steps": total, "peak_lr": plan.sched.peak, "world_size": plan.world, "global_batch": plan.global_batch}))?;
        Ok(t)
    }

    fn append(&mut self, record: &serde_json::Value) -> Result<()> {
        match self.metrics.as_mut() {
            Some(m) => m.append(record),
            None => Ok(()),
        }
    }

    /// A line above the progress bar.
    pub fn say(&self, msg: &str) {
        if let Some(p) = &self.progress {
            p.println(msg);
        }
    }

    /// Record optimiser step `step`; every `log_every` steps also the mean loss since the last record.
    pub fn step(
        &mut self,
        step: u64,
        epoch: usize,
        f: &StepFigures,
        log_every: usize,
    ) -> Result<()> {
        self.window = (self.window.0 + f.loss, self.window.1 + 1);
        let emit = step % log_every as u64 == 0;
        if emit {
            let mean = self.window.0 / self.window.1 as f64;
            self.window = (0.0, 0);
            let t = self.started.elapsed().as_secs_f64();
            let rate = self.progress.as_ref().map_or(0.0, |p| p.rate(step));
            self.append(&json!({"step": step, "epoch": epoch, "loss": f.loss, "loss_avg": mean, "lr": f.lr, "grad_norm": f.grad_norm, "time": t, "it_per_s": rate}))?;
            if let Some(ev) = self.events.as_mut() {
                ev.scalars(
                    step as i64,
                    &[
                        ("train/loss", f.loss),
                        ("train/lr", f.lr),
                        ("train/grad_norm", f.grad_norm),
                    ],
                )?;
            }
        }
        if let Some(p) = &self.progress {
            p.update(step, epoch, f.loss, f.lr, emit);
        }
        Ok(())
    }

    /// Record the end of `epoch`: its scalars (metrics, TensorBoard, a printed line) and its pictures
    /// (`<out>/images/<name>_epochNNN.png` and TensorBoard images).
    pub fn epoch(
        &mut self,
        step: u64,
        epoch: usize,
        report: &EpochReport,
        out: &Path,
    ) -> Result<()> {
        if !report.scalars.is_empty() && self.metrics.is_some() {
            let mut record =
                json!({"step": step, "epoch": epoch, "time": self.started.elapsed().as_secs_f64()});
            for (k, v) in &report.scalars {
                record[k] = json!(v);
            }
            self.append(&record)?;
            let pairs: Vec<(&str, f64)> = report
                .scalars
                .iter()
                .map(|(k, v)| (k.as_str(), *v))
                .collect();
            if let Some(ev) = self.events.as_mut() {
                ev.scalars(step as i64, &pairs)?;
            }
            self.say(&format!(
                "epoch {epoch}: {}",
                pairs
                    .iter()
                    .map(|(k, v)| format!("{k} {v:.4}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if self.main {
            for (name, img) in &report.images {
                let png = encode_png(img)?;
                crate::tracking::images::save_png(
                    &png,
                    &out.join("images")
                        .join(format!("{name}_epoch{epoch:03}.png")),
                )?;
                if let Some(ev) = self.events.as_mut() {
                    ev.image(step as i64, name, &png, img.height(), img.width(), 3)?;
                }
            }
        }
        Ok(())
    }

    /// Close the progress bar and record the end.
    pub fn finish(&mut self, step: u64) -> Result<()> {
        if let Some(p) = &self.progress {
            p.finish();
        }
        let time = self.started.elapsed().as_secs_f64();
        self.append(&json!({"event": "end", "step": step, "time": time}))
    }
}
