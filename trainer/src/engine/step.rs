//! One run in progress: the optimiser step (gradient accumulation, data-parallel averaging, AMP unscaling,
//! clipping, AdamW), the end of an epoch (validation, pictures, `best`/`last` checkpoints) and checkpoint writing.

use std::path::{Path, PathBuf};

use rand_chacha::ChaCha8Rng;
use tch::{nn::VarStore, Device};

use super::state::StepPlan;
use super::tracker::Tracker;
use super::{is_new_best, Task};
use crate::checkpoint::{self, CheckpointData, RngState, TrainState};
use crate::config::ExperimentConfig;
use crate::data::{to_tensors, InputSpec, RepeatSource, TensorBatch};
use crate::dist::Dist;
use crate::error::{Result, TrainError};
use crate::optim::{AdamW, LossScaler};
use imaging::loader::Batch;

/// The figures of one optimiser step.
pub(super) struct StepFigures {
    /// Training loss, mean over micro-batches and ranks.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
}

/// Everything a run changes as it trains.
pub(super) struct Run<'a, T: Task> {
    pub cfg: &'a ExperimentConfig,
    pub dist: &'a Dist,
    pub spec: InputSpec,
    pub scaler: LossScaler,
    pub vs: VarStore,
    pub task: T,
    pub opt: AdamW,
    pub plan: StepPlan,
    pub state: TrainState,
    /// The run's checkpointed ChaCha RNG (MAE masks).
    pub rng: ChaCha8Rng,
    pub source: RepeatSource,
    pub device: Device,
    /// `<output_dir>/checkpoints`.
    pub ckpt_root: PathBuf,
}

impl<T: Task> Run<'_, T> {
    /// Whether the current epoch still holds the micro-batches of a whole optimiser step.
    pub fn batches_left_in_epoch(&self) -> bool {
        self.state.batch_in_epoch + self.plan.accum <= self.plan.steps_per_epoch * self.plan.accum
    }

    /// One optimiser step over the next `accum` micro-batches of `batches`; the first batch of the epoch is kept in
    /// `sample` (for pictures).
    pub fn optimizer_step(
        &mut self,
        batches: &mut impl Iterator<Item = imaging::Result<Batch>>,
        epoch: usize,
        sample: &mut Option<TensorBatch>,
    ) -> Result<StepFigures> {
        let (accum, amp) = (self.plan.accum, self.plan.amp);
        let torch_base_seed = crate::dist::rank_seed(self.cfg.seed, self.dist.rank());
        tch::manual_seed(checkpoint::torch_seed(torch_base_seed, self.state.step));
        let mut loss_sum = 0.0;
        for micro in 0..accum {
            let batch = batches.next().ok_or_else(|| {
                TrainError::Data(format!("epoch {epoch}: the loader ended early"))
            })??;
            let per_item = batch.samples.len() / batch.items.len().max(1);
            let mut tb = to_tensors(&batch, &self.source, &self.spec, self.device)?;
            (tb.rows, tb.global_len) = self.dist.global_rows(tb.rows.len(), per_item);
            let (task, rng) = (&self.task, &mut self.rng);
            let loss = tch::autocast(amp, || task.loss(&tb, rng))?;
            let value = loss.f_double_value(&[])?;
            if !value.is_finite() {
                return Err(TrainError::Data(format!("the loss is {value} at step {} (epoch {epoch}, rank {}); lower optim.base_lr or check the data", self.state.step, self.dist.rank())));
            }
            loss_sum += value;
            let scaled = if amp {
                loss * (self.scaler.scale / accum as f64)
            } else {
                loss / accum as f64
            };
            // The first micro-batch's gradients replace the last step's (no zeroing pass); later ones add up.
            self.opt.backward(&scaled, micro > 0)?;
            if sample.is_none() {
                *sample = Some(tb);
            }
        }
        self.state.batch_in_epoch += accum;
        self.dist.average_gradients(&self.vs, self.state.step)?;
        let finite = if amp {
            self.opt.scale_grads(1.0 / self.scaler.scale);
            let f = self.opt.grads_finite();
            self.scaler.update(f);
            self.scaler.store(&mut self.state);
            f
        } else {
            true
        };
        let grad_norm = match self.cfg.optim.grad_clip {
            Some(c) => self.opt.clip_grad_norm(c),
            None => self.opt.grad_norm(),
        };
        let lr = self.plan.sched.lr_at(self.state.step);
        if finite {
            self.opt.step(lr);
        }
        self.state.step += 1;
        let loss = self
            .dist
            .mean(loss_sum / accum as f64, "the training loss")?;
        Ok(StepFigures {
            loss,
            lr,
            grad_norm,
        })
    }

    /// Close epoch `epoch`: advance the position, validate and draw as scheduled, keep `best`, save `last`.
    pub fn end_epoch(
        &mut self,
        epoch: usize,
        sample: Option<&TensorBatch>,
        tracker: &mut Tracker,
        out: &Path,
    ) -> Result<()> {
        let epochs = self.cfg.schedule.epochs;
        self.state.epoch += 1;
        self.state.batch_in_epoch = 0;
        self.state.rng = RngState::capture(&self.rng);
        let last_epoch = self.state.epoch == epochs;
        let validate = self.state.epoch % self.cfg.validation.every_epochs == 0 || last_epoch;
        let pictures = self.state.epoch % self.cfg.logging.png_every_epochs == 0 || last_epoch;
        let report = self
            .task
            .end_epoch(epoch, sample, validate, pictures, self.dist)?;
        tracker.epoch(self.state.step, epoch, &report, out)?;
        let main = self.dist.is_main();
        if let Some(score) = report.score.filter(|s| s.is_finite()) {
            if is_new_best(score, self.state.best) {
                self.state.best = Some((score, self.state.step));
                if main {
                    self.save("best")?;
                }
                tracker.say(&format!("new best {score:.4} at step {}", self.state.step));
            }
        }
        if main {
            self.save("last")?;
        }
        Ok(())
    }

    /// Write checkpoint `<checkpoints>/<name>` (weights, model.json, optimiser moments, training state).
    pub fn save(&self, name: &str) -> Result<()> {
        let card = self.task.card();
        checkpoint::write_checkpoint(
            &self.ckpt_root,
            name,
            &CheckpointData {
                vs: &self.vs,
                card: &card,
                optim_state: self.opt.state_tensors(),
                state: &self.state,
            },
        )
        .map(|_| ())
    }
}
