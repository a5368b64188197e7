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

use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use spec::ModelCard;
use tch::{nn::VarStore, Device, Tensor};

use crate::checkpoint::{
    self, CheckpointData, RngState, TrainState, TORCH_RNG_POLICY, TRAIN_STATE_VERSION,
};
use crate::config::ExperimentConfig;
use crate::data::{to_tensors, InputSpec, TensorBatch};
use crate::dist::Dist;
use crate::error::{Result, TrainError};
use crate::optim::{AdamW, LossScaler};
use crate::schedule::LrSchedule;
use crate::tracking::images::encode_png;
use crate::tracking::jsonl::MetricsLog;
use crate::tracking::progress::Progress;
use crate::tracking::tfevents::EventWriter;
use imaging::loader::Shard;

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
    mut task: T,
    cases: Vec<imaging::datasets::Case>,
    dist: &Dist,
) -> Result<RunSummary> {
    let out = cfg.output_dir.clone();
    let main = dist.is_main();
    if main {
        cfg.save(&out)?;
    }
    let device = vs.device();
    let spec = task.input_spec();
    let depth = cfg.model.encoder().depth;
    let mut opt = AdamW::new(&vs, &cfg.optim, depth);
    let world = dist.world_size();
    let shard = Shard {
        rank: dist.rank(),
        world_size: world,
        drop_last: true,
    };
    let (loader, source) = crate::data::train_loader(cfg, cases, shard)?;
    let accum = cfg.optim.accum_steps;
    let batches = loader.epoch_batches(0).len();
    let steps_per_epoch = batches / accum;
    if steps_per_epoch == 0 {
        return Err(TrainError::config(
            "data.batch_size",
            format!("an epoch has {batches} full batch(es) of {} per process ({world} process(es)), fewer than optim.accum_steps = {accum}: use a smaller batch, fewer processes or more data", cfg.data.batch_size),
        ));
    }
    let global_batch = world * cfg.data.batch_size;
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

    let mut state = TrainState {
        format_version: TRAIN_STATE_VERSION,
        command: task.command().into(),
        step: 0,
        epoch: 0,
        batch_in_epoch: 0,
        seed: cfg.seed,
        rng: RngState::capture(&ChaCha8Rng::seed_from_u64(cfg.seed)),
        torch_rng: TORCH_RNG_POLICY.into(),
        best: None,
        loss_scale: amp.then_some(crate::optim::scaler::INIT_SCALE),
        loss_scale_growth_tracker: amp.then_some(0),
        global_batch: Some(global_batch),
    };
    if let Some(dir) = &opts.resume {
        let (s, tensors) = checkpoint::read_train_state(dir)?;
        if s.command != task.command() {
            return Err(TrainError::format(
                dir.join("train_state.json"),
                format!(
                    "a `{}` checkpoint cannot resume `{}`",
                    s.command,
                    task.command()
                ),
            ));
        }
        if s.seed != cfg.seed {
            return Err(TrainError::config(
                "seed",
                format!("{} differs from the checkpoint's seed {}", cfg.seed, s.seed),
            ));
        }
        if let Some(g) = s.global_batch.filter(|&g| g != global_batch) {
            return Err(TrainError::config(
                "data.batch_size",
                format!("{world} process(es) × batch {} = {global_batch} items per micro-batch, but the checkpoint was written with {g}: resume with the same global batch (e.g. the same --nproc-per-node)", cfg.data.batch_size),
            ));
        }
        checkpoint::load_weights(&mut vs, dir)?;
        opt.load_state(&tensors, s.step)?;
        if main {
            tracing::info!(
                "resuming from {} at step {} (epoch {}, batch {})",
                dir.display(),
                s.step,
                s.epoch,
                s.batch_in_epoch
            );
        }
        state = TrainState {
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
        dist.broadcast_state(&vs, &moments)?;
    } else {
        dist.broadcast_state(&vs, &[])?;
    }
    let mut rng = state
        .rng
        .restore()
        .map_err(|m| TrainError::format(opts.resume.clone().unwrap_or_default(), m))?;
    let mut scaler = LossScaler::from_state(&state);

    let mut metrics = if main {
        Some(MetricsLog::open(
            &out.join("metrics.jsonl"),
            opts.resume.is_some().then_some(state.step),
        )?)
    } else {
        None
    };
    let mut events = if cfg.logging.tensorboard && main {
        Some(EventWriter::create(&out.join("tb"))?)
    } else {
        None
    };
    let total = sched.total_steps;
    let progress = main.then(|| Progress::new(task.command(), total, state.step));
    let say = |msg: &str| {
        if let Some(p) = &progress {
            p.println(msg);
        }
    };
    let started = Instant::now();
    let ckpt_root = out.join("checkpoints");
    let mut window = (0.0f64, 0usize);
    let mut last_loss = f64::NAN;
    let stop_at = opts.max_steps.unwrap_or(u64::MAX);
    let torch_base_seed = crate::dist::rank_seed(cfg.seed, dist.rank());

    if let Some(m) = metrics.as_mut() {
        m.append(&json!({"event": if opts.resume.is_some() { "resume" } else { "start" }, "step": state.step, "steps_per_epoch": steps_per_epoch, "total_steps": total, "peak_lr": sched.peak, "world_size": world, "global_batch": global_batch}))?;
    }
    'epochs: while state.epoch < cfg.schedule.epochs {
        let epoch = state.epoch;
        let mut batches = loader.epoch(epoch as u64)?.skip(state.batch_in_epoch);
        let mut sample: Option<TensorBatch> = None;
        while state.batch_in_epoch + accum <= steps_per_epoch * accum {
            if state.step >= stop_at {
                break 'epochs;
            }
            tch::manual_seed(checkpoint::torch_seed(torch_base_seed, state.step));
            opt.zero_grad();
            let mut loss_sum = 0.0;
            for _ in 0..accum {
                let batch = batches.next().ok_or_else(|| {
                    TrainError::Data(format!("epoch {epoch}: the loader ended early"))
                })??;
                let per_item = batch.samples.len() / batch.items.len().max(1);
                let mut tb = to_tensors(&batch, &source, &spec, device)?;
                (tb.rows, tb.global_len) = dist.global_rows(tb.rows.len(), per_item);
                let loss = tch::autocast(amp, || task.loss(&tb, &mut rng))?;
                let value = loss.f_double_value(&[])?;
                if !value.is_finite() {
                    return Err(TrainError::Data(format!("the loss is {value} at step {} (epoch {epoch}, rank {}); lower optim.base_lr or check the data", state.step, dist.rank())));
                }
                loss_sum += value;
                let scaled = if amp {
                    loss * (scaler.scale / accum as f64)
                } else {
                    loss / accum as f64
                };
                scaled.f_backward()?;
                if sample.is_none() {
                    sample = Some(tb);
                }
            }
            state.batch_in_epoch += accum;
            dist.average_gradients(&vs, state.step)?;
            let finite = if amp {
                opt.scale_grads(1.0 / scaler.scale);
                let f = opt.grads_finite();
                scaler.update(f);
                scaler.store(&mut state);
                f
            } else {
                true
            };
            let grad_norm = match cfg.optim.grad_clip {
                Some(c) => opt.clip_grad_norm(c),
                None => opt.grad_norm(),
            };
            let lr = sched.lr_at(state.step);
            if finite {
                opt.step(lr);
            }
            state.step += 1;
            let loss = dist.mean(loss_sum / accum as f64, "the training loss")?;
            last_loss = loss;
            window = (window.0 + loss, window.1 + 1);
            let emit = state.step % cfg.logging.log_every_steps as u64 == 0;
            if emit {
                let mean = window.0 / window.1 as f64;
                window = (0.0, 0);
                let t = started.elapsed().as_secs_f64();
                let rate = progress.as_ref().map_or(0.0, |p| p.rate(state.step));
                if let Some(m) = metrics.as_mut() {
                    m.append(&json!({"step": state.step, "epoch": epoch, "loss": loss, "loss_avg": mean, "lr": lr, "grad_norm": grad_norm, "time": t, "it_per_s": rate}))?;
                }
                if let Some(ev) = events.as_mut() {
                    ev.scalars(
                        state.step as i64,
                        &[
                            ("train/loss", loss),
                            ("train/lr", lr),
                            ("train/grad_norm", grad_norm),
                        ],
                    )?;
                }
            }
            if let Some(p) = &progress {
                p.update(state.step, epoch, loss, lr, emit);
            }
            let at_epoch_end = state.batch_in_epoch + accum > steps_per_epoch * accum;
            let periodic = cfg
                .logging
                .save_every_steps
                .is_some_and(|n| state.step % n as u64 == 0);
            if (periodic || state.step >= stop_at) && !at_epoch_end {
                state.rng = RngState::capture(&rng);
                if main {
                    save(&ckpt_root, "last", &vs, &task, &opt, &state)?;
                }
            }
        }
        drop(batches);
        state.epoch += 1;
        state.batch_in_epoch = 0;
        state.rng = RngState::capture(&rng);
        let last_epoch = state.epoch == cfg.schedule.epochs;
        let validate = state.epoch % cfg.validation.every_epochs == 0 || last_epoch;
        let pictures = state.epoch % cfg.logging.png_every_epochs == 0 || last_epoch;
        let report = task.end_epoch(epoch, sample.as_ref(), validate, pictures, dist)?;
        let mut record =
            json!({"step": state.step, "epoch": epoch, "time": started.elapsed().as_secs_f64()});
        for (k, v) in &report.scalars {
            record[k] = json!(v);
        }
        if let (Some(m), false) = (metrics.as_mut(), report.scalars.is_empty()) {
            m.append(&record)?;
            let pairs: Vec<(&str, f64)> = report
                .scalars
                .iter()
                .map(|(k, v)| (k.as_str(), *v))
                .collect();
            if let Some(ev) = events.as_mut() {
                ev.scalars(state.step as i64, &pairs)?;
            }
            say(&format!(
                "epoch {epoch}: {}",
                pairs
                    .iter()
                    .map(|(k, v)| format!("{k} {v:.4}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if main {
            for (name, img) in &report.images {
                let png = encode_png(img)?;
                crate::tracking::images::save_png(
                    &png,
                    &out.join("images")
                        .join(format!("{name}_epoch{epoch:03}.png")),
                )?;
                if let Some(ev) = events.as_mut() {
                    ev.image(state.step as i64, name, &png, img.height(), img.width(), 3)?;
                }
            }
        }
        if let Some(score) = report.score.filter(|s| s.is_finite()) {
            if is_new_best(score, state.best) {
                state.best = Some((score, state.step));
                if main {
                    save(&ckpt_root, "best", &vs, &task, &opt, &state)?;
                }
                say(&format!("new best {score:.4} at step {}", state.step));
            }
        }
        if main {
            save(&ckpt_root, "last", &vs, &task, &opt, &state)?;
        }
    }
    if let Some(p) = &progress {
        p.finish();
    }
    if let Some(m) = metrics.as_mut() {
        m.append(
            &json!({"event": "end", "step": state.step, "time": started.elapsed().as_secs_f64()}),
        )?;
    }
    if let Some(dir) = &opts.rank_weights_dir {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        vs.save(dir.join(format!("rank{}.safetensors", dist.rank())))?;
    }
    // A rank that reports success knows that rank 0 has written the final checkpoint.
    dist.barrier("end of training")?;
    if opts.wandb && main {
        write_wandb(cfg, &out, task.command());
    }
    Ok(RunSummary {
        steps: state.step,
        last_loss,
        best: state.best,
        last_checkpoint: ckpt_root.join("last"),
    })
}

/// Whether a finite validation score replaces the best so far: a higher score wins, and a tie goes to the later
/// evaluation (same score after more training), so `best` does not stay at the first evaluation when all tie.
pub fn is_new_best(score: f64, best: Option<(f64, u64)>) -> bool {
    best.is_none_or(|(b, _)| score >= b)
}

fn save<T: Task>(
    root: &Path,
    name: &str,
    vs: &VarStore,
    task: &T,
    opt: &AdamW,
    state: &TrainState,
) -> Result<()> {
    let card = task.card();
    checkpoint::write_checkpoint(
        root,
        name,
        &CheckpointData {
            vs,
            card: &card,
            optim_state: opt.state_tensors(),
            state,
        },
    )?;
    Ok(())
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
