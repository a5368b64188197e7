//! The step arithmetic of a run (micro-batches per step, steps per epoch, learning-rate schedule, AMP) and the
//! training state it starts from: fresh, or restored from a checkpoint and checked against this run.

use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{nn::VarStore, Device, Tensor};

use crate::checkpoint::{self, RngState, TrainState, TORCH_RNG_POLICY, TRAIN_STATE_VERSION};
use crate::config::ExperimentConfig;
use crate::dist::Dist;
use crate::error::{Result, TrainError};
use crate::optim::AdamW;
use crate::schedule::LrSchedule;

/// How the batches of an epoch become optimiser steps.
pub(super) struct StepPlan {
    /// Micro-batches per optimiser step (`optim.accum_steps`).
    pub accum: usize,
    /// Optimiser steps per epoch on every rank.
    pub steps_per_epoch: usize,
    /// Data-parallel processes.
    pub world: usize,
    /// Items per micro-batch over all ranks.
    pub global_batch: usize,
    /// Learning rate per step.
    pub sched: LrSchedule,
    /// fp16 autocast with loss scaling (CUDA only).
    pub amp: bool,
}

impl StepPlan {
    /// The plan for `batches` full batches per epoch on this rank.
    pub fn new(
        cfg: &ExperimentConfig,
        dist: &Dist,
        batches: usize,
        device: Device,
    ) -> Result<Self> {
        let world = dist.world_size();
        let accum = cfg.optim.accum_steps;
        let steps_per_epoch = batches / accum;
        if steps_per_epoch == 0 {
            return Err(TrainError::config(
                "data.batch_size",
                format!("an epoch has {batches} full batch(es) of {} per process ({world} process(es)), fewer than optim.accum_steps = {accum}: use a smaller batch, fewer processes or more data", cfg.data.batch_size),
            ));
        }
        let sched = LrSchedule::from_epochs(
            cfg.peak_lr() * world as f64,
            cfg.schedule.min_lr,
            cfg.schedule.warmup_epochs,
            cfg.schedule.epochs,
            steps_per_epoch,
        );
        let amp = cfg.optim.amp && device.is_cuda();
        if cfg.optim.amp && !amp {
            tracing::warn!("optim.amp is only used on CUDA; training in f32 on {device:?}");
        }
        Ok(Self {
            accum,
            steps_per_epoch,
            world,
            global_batch: world * cfg.data.batch_size,
            sched,
            amp,
        })
    }
}

/// The state of a run that starts at step 0.
pub(super) fn fresh(cfg: &ExperimentConfig, command: &str, plan: &StepPlan) -> TrainState {
    TrainState {
        format_version: TRAIN_STATE_VERSION,
        command: command.into(),
        step: 0,
        epoch: 0,
        batch_in_epoch: 0,
        seed: cfg.seed,
        rng: RngState::capture(&ChaCha8Rng::seed_from_u64(cfg.seed)),
        torch_rng: TORCH_RNG_POLICY.into(),
        best: None,
        loss_scale: plan.amp.then_some(crate::optim::scaler::INIT_SCALE),
        loss_scale_growth_tracker: plan.amp.then_some(0),
        global_batch: Some(plan.global_batch),
    }
}

/// Restore weights, optimiser moments and position from the checkpoint `dir` after checking that it belongs to
/// this command, seed and global batch; every rank then holds rank 0's weights and moments.
pub(super) fn resume(
    dir: &Path,
    cfg: &ExperimentConfig,
    command: &str,
    plan: &StepPlan,
    vs: &mut VarStore,
    opt: &mut AdamW,
    dist: &Dist,
) -> Result<TrainState> {
    let (s, tensors) = checkpoint::read_train_state(dir)?;
    if s.command != command {
        return Err(TrainError::format(
            dir.join("train_state.json"),
            format!("a `{}` checkpoint cannot resume `{command}`", s.command),
        ));
    }
    if s.seed != cfg.seed {
        return Err(TrainError::config(
            "seed",
            format!("{} differs from the checkpoint's seed {}", cfg.seed, s.seed),
        ));
    }
    let global_batch = plan.global_batch;
    if let Some(g) = s.global_batch.filter(|&g| g != global_batch) {
        return Err(TrainError::config(
            "data.batch_size",
            format!("{} process(es) × batch {} = {global_batch} items per micro-batch, but the checkpoint was written with {g}: resume with the same global batch (e.g. the same --nproc-per-node)", dist.world_size(), cfg.data.batch_size),
        ));
    }
    checkpoint::load_weights(vs, dir)?;
    opt.load_state(&tensors, s.step)?;
    if dist.is_main() {
        tracing::info!(
            "resuming from {} at step {} (epoch {}, batch {})",
            dir.display(),
            s.step,
            s.epoch,
            s.batch_in_epoch
        );
    }
    let state = TrainState {
        global_batch: Some(global_batch),
        ..s
    };
    dist.check_agree(
        &[
            state.step as f64,
            state.epoch as f64,
            state.batch_in_epoch as f64,
        ],
        "the resumed step, epoch and batch",
    )?;
    let moments: Vec<Tensor> = opt.state_tensors().into_iter().map(|(_, t)| t).collect();
    dist.broadcast_state(vs, &moments)?;
    Ok(state)
}
