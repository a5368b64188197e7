//! The training loop shared by `pretrain` and `finetune`: seeded data order, gradient accumulation, AdamW with the
//! warmup+cosine schedule, clipping, optional AMP on CUDA, per-step tracking, step/epoch checkpoints and exact
//! resumption, and PyTorch-DDP-style data parallelism over [`Dist`].
//!
//! Determinism contract (CPU): the data order and augmentation are functions of (seed, epoch, item); MAE masking
//! noise comes from our ChaCha RNG whose position is checkpointed; torch's generator is re-seeded before every
//! optimiser step from (seed, step); the optimiser moments and weights are saved exactly. A run stopped after any
//! optimiser step and resumed therefore produces the same per-step losses and final weights as an uninterrupted one.
//!
//! Data parallelism: with `W` processes and `data.batch_size = b`, rank `r` loads the `DistributedSampler` shard
//! `r, r+W, …` of each epoch's shuffled order (tail dropped), so step `k` of the ranks together consumes exactly
//! the `W·b` items of step `k` of one process with batch `W·b`. Augmentation RNGs are keyed by (seed, epoch, item)
//! and MAE masks are drawn for the global micro-batch from the shared ChaCha RNG (each rank keeps its own rows), so
//! the averaged gradients, and hence the weights, equal that single-process run up to float summation order (exact
//! for models without dropout / stochastic depth, whose torch draws are per rank). The peak learning rate uses the
//! global batch (`base_lr · W·b·samples·accum / 256`). Parameters (and, on resume, optimiser moments) are
//! broadcast from rank 0; gradients are averaged before AMP unscaling, clipping and the step; the logged loss is the
//! mean over ranks; validation is sharded by case and reduced (see the tasks). Only rank 0 writes metrics,
//! TensorBoard events, pictures and checkpoints; every rank waits at a final barrier so that a successful exit
//! means the last checkpoint is complete.

mod state;
mod step;
mod tracker;

use std::path::{Path, PathBuf};

use rand_chacha::ChaCha8Rng;
use spec::ModelCard;
use tch::{nn::VarStore, Device, Tensor};

use crate::checkpoint::RngState;
use crate::config::ExperimentConfig;
use crate::data::{InputSpec, TensorBatch};
use crate::dist::Dist;
use crate::error::{Result, TrainError};
use crate::optim::{AdamW, LossScaler};
use imaging::loader::Shard;
use state::StepPlan;
use step::Run;
use tracker::Tracker;

/// What an epoch-end hook reports.
#[derive(Default)]
pub struct EpochReport {
    /// Scalars for metrics.jsonl and TensorBoard (`val/dice_mean`, …).
    pub scalars: Vec<(String, f64)>,
    /// Score for the `best` checkpoint (higher is better); `None` when not evaluated this epoch.
    pub score: Option<f64>,
    /// Pictures `(name, image)` written as `<out>/images/<name>_epochNNN.png` and TensorBoard images.
    pub images: Vec<(String, image::RgbImage)>,
}

/// A model being trained: its loss on a batch and its epoch-end hook.
pub trait Task {
    /// `pretrain` or `finetune` (checked on resume).
    fn command(&self) -> &'static str;
    /// What batches must look like.
    fn input_spec(&self) -> InputSpec;
    /// Scalar training loss of a micro-batch (graph attached). `rng` is the run's checkpointed ChaCha RNG.
    fn loss(&self, batch: &TensorBatch, rng: &mut ChaCha8Rng) -> Result<Tensor>;
    /// Validation and pictures after an epoch, on every rank (the same `validate`/`pictures` everywhere). `sample`
    /// is this rank's first training batch of the epoch (for MAE pictures). Scalars and the score must be reduced
    /// over `dist` so that every rank returns the same ones; pictures matter on rank 0 only.
    fn end_epoch(
        &mut self,
        epoch: usize,
        sample: Option<&TensorBatch>,
        validate: bool,
        pictures: bool,
        dist: &Dist,
    ) -> Result<EpochReport>;
    /// The `model.json` of checkpoints.
    fn card(&self) -> ModelCard;
}

/// Run options from the command line.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Resume from this checkpoint directory.
    pub resume: Option<PathBuf>,
    /// Stop (with a checkpoint) after this many optimiser steps in total, as if interrupted.
    pub max_steps: Option<u64>,
    /// Also write an offline wandb run when the client is importable.
    pub wandb: bool,
    /// Debugging/testing: every rank writes its final weights to `<dir>/rank<r>.safetensors` (checks that the
    /// ranks of a data-parallel run end identical).
    pub rank_weights_dir: Option<PathBuf>,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Optimiser steps done.
    pub steps: u64,
    /// Mean training loss of the last logged window.
    pub last_loss: f64,
    /// Best validation score and its step.
    pub best: Option<(f64, u64)>,
    /// `<out>/checkpoints/last`.
    pub last_checkpoint: PathBuf,
}

/// The run's device and libtorch threading, from the config (and `--device`); with several processes a CUDA
/// device becomes this rank's GPU (see [`Dist::device`]).
pub fn setup_device(cfg: &ExperimentConfig, dist: &Dist) -> Result<Device> {
    crate::threads::configure(cfg.threads, dist.rank(), dist.world_size())?;
    let configured =
        crate::device::parse_device(&cfg.device).map_err(|m| TrainError::config("device", m))?;
    let device = dist.device(configured)?;
    crate::device::available(device).map_err(|m| TrainError::config("device", m))
}

/// Train `task` (whose parameters live in `vs`) on `cases` as configured, as rank `dist.rank()` of
/// `dist.world_size()` data-parallel processes (see the module docs; [`Dist::single`] for one process).
pub fn train<T: Task>(
    cfg: &ExperimentConfig,
    opts: &RunOptions,
    mut vs: VarStore,
    task: T,
    cases: Vec<imaging::datasets::Case>,
    dist: &Dist,
) -> Result<RunSummary> {
    let out = cfg.output_dir.clone();
    let main = dist.is_main();
    if main {
        cfg.save(&out)?;
    }
    let device = vs.device();
    let mut opt = AdamW::new(&vs, &cfg.optim, cfg.model.encoder().depth);
    let shard = Shard {
        rank: dist.rank(),
        world_size: dist.world_size(),
        drop_last: true,
    };
    let (loader, source) = crate::data::train_loader(cfg, cases, shard)?;
    let plan = StepPlan::new(cfg, dist, loader.epoch_batches(0).len(), device)?;
    let state = match &opts.resume {
        Some(dir) => state::resume(dir, cfg, task.command(), &plan, &mut vs, &mut opt, dist)?,
        None => {
            dist.broadcast_state(&vs, &[])?;
            state::fresh(cfg, task.command(), &plan)
        }
    };
    let rng = state
        .rng
        .restore()
        .map_err(|m| TrainError::format(opts.resume.clone().unwrap_or_default(), m))?;
    let mut tracker = Tracker::open(cfg, &out, main, task.command(), &plan, &state, opts)?;
    let mut run = Run {
        cfg,
        dist,
        spec: task.input_spec(),
        scaler: LossScaler::from_state(&state),
        vs,
        task,
        opt,
        plan,
        state,
        rng,
        source,
        device,
        ckpt_root: out.join("checkpoints"),
    };
    let stop_at = opts.max_steps.unwrap_or(u64::MAX);
    let mut last_loss = f64::NAN;
    'epochs: while run.state.epoch < cfg.schedule.epochs {
        let epoch = run.state.epoch;
        let mut batches = loader.epoch(epoch as u64)?.skip(run.state.batch_in_epoch);
        let mut sample: Option<TensorBatch> = None;
        while run.batches_left_in_epoch() {
            if run.state.step >= stop_at {
                break 'epochs;
            }
            let step = run.optimizer_step(&mut batches, epoch, &mut sample)?;
            last_loss = step.loss;
            tracker.step(run.state.step, epoch, &step, cfg.logging.log_every_steps)?;
            let periodic = cfg
                .logging
                .save_every_steps
                .is_some_and(|n| run.state.step % n as u64 == 0);
            if (periodic || run.state.step >= stop_at) && run.batches_left_in_epoch() {
                run.state.rng = RngState::capture(&run.rng);
                if main {
                    run.save("last")?;
                }
            }
        }
        drop(batches);
        run.end_epoch(epoch, sample.as_ref(), &mut tracker, &out)?;
    }
    tracker.finish(run.state.step)?;
    if let Some(dir) = &opts.rank_weights_dir {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        run.vs
            .save(dir.join(format!("rank{}.safetensors", dist.rank())))?;
    }
    // A rank that reports success knows that rank 0 has written the final checkpoint.
    dist.barrier("end of training")?;
    if opts.wandb && main {
        write_wandb(cfg, &out, run.task.command());
    }
    Ok(RunSummary {
        steps: run.state.step,
        last_loss,
        best: run.state.best,
        last_checkpoint: run.ckpt_root.join("last"),
    })
}

/// Whether a finite validation score replaces the best so far: a higher score wins, and a tie goes to the later
/// evaluation (same score after more training), so `best` does not stay at the first evaluation when all tie.
pub fn is_new_best(score: f64, best: Option<(f64, u64)>) -> bool {
    best.is_none_or(|(b, _)| score >= b)
}

fn write_wandb(cfg: &ExperimentConfig, out: &Path, name: &str) {
    let py = crate::tracking::wandb::python();
    if !crate::tracking::wandb::available(&py) {
        tracing::warn!(
            "--wandb: the Python wandb client is not importable with {}; skipping the offline run",
            py.display()
        );
        return;
    }
    let cfg_json = out.join("config.json");
    let written = serde_json::to_string_pretty(cfg)
        .map_err(|e| e.to_string())
        .and_then(|t| std::fs::write(&cfg_json, t).map_err(|e| e.to_string()));
    let result = written.map_err(|e| e.to_string()).and_then(|_| {
        crate::tracking::wandb::write_offline_run(
            &py,
            out,
            &out.join("metrics.jsonl"),
            &cfg_json,
            name,
        )
        .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => tracing::info!(
            "offline wandb run written under {}",
            out.join("wandb").display()
        ),
        Err(e) => tracing::warn!("--wandb: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::is_new_best;

    #[test]
    fn ties_prefer_the_later_checkpoint() {
        assert!(is_new_best(0.5, None));
        assert!(is_new_best(0.6, Some((0.5, 10))));
        assert!(
            is_new_best(0.5, Some((0.5, 10))),
            "a tie moves `best` to the later step"
        );
        assert!(!is_new_best(0.4, Some((0.5, 10))));
    }
}
