//! The experiment config's sections and their defaults, loading (YAML + overrides + validation), the derived
//! quantities the trainer uses (effective batch, peak lr, crop size), and the run's saved copy.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use spec::{DatasetSource, ModelConfig, OutputActivation, TransformSpec};

use crate::error::{ConfigError, Result};
use crate::yaml::{parse_config_value, read_tree, save, Value};

/// File name of the config a training run saves in its output directory.
pub const SAVED_CONFIG: &str = "config.yaml";

/// One training experiment: model, data, optimisation, schedule, validation, logging, output and seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Seed of torch and of the data RNG.
    #[serde(default)]
    pub seed: u64,
    /// Run directory: checkpoints, metrics.jsonl, TensorBoard events, PNGs.
    pub output_dir: PathBuf,
    /// Architecture (`kind: mae` or `kind: unetr`).
    pub model: ModelConfig,
    /// Dataset, transforms and loader settings.
    pub data: DataConfig,
    /// Optimiser settings.
    #[serde(default)]
    pub optim: OptimConfig,
    /// Epochs, warmup and the cosine floor.
    pub schedule: ScheduleConfig,
    /// Sliding-window validation during fine-tuning (and the inference defaults written to model.json).
    #[serde(default)]
    pub validation: ValidationConfig,
    /// Logging, checkpoint cadence and visualisations.
    #[serde(default)]
    pub logging: LoggingConfig,
    /// Fine-tuning only: MAE (or UNETR) checkpoint directory or `.safetensors` file to initialise the encoder from.
    #[serde(default)]
    pub init: Option<PathBuf>,
    /// `cpu` or `cuda:N` (the CLI's `--device` wins).
    #[serde(default = "default_device")]
    pub device: String,
    /// libtorch intra-op threads (0 = one per allowed CPU); `OMP_NUM_THREADS` wins when set (`trainer::threads`).
    #[serde(default)]
    pub threads: usize,
}

fn default_device() -> String {
    "cpu".into()
}

fn one() -> usize {
    1
}

/// Dataset, transforms and loader settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Which dataset (`kind`, `path`, optional `synthetic`; the same schema as `prepare` configs).
    pub dataset: DatasetSource,
    /// Label names, index = output channel (segmentation).
    #[serde(default)]
    pub labels: Vec<String>,
    /// How logits become labels: softmax (exclusive classes) or sigmoid (overlapping channels, e.g. BraTS).
    #[serde(default)]
    pub activation: OutputActivation,
    /// Training pipeline: deterministic preprocessing, then random crops and augmentation.
    pub train_transforms: Vec<TransformSpec>,
    /// Validation / inference preprocessing (deterministic; written to model.json).
    pub val_transforms: Vec<TransformSpec>,
    /// Cache of deterministically preprocessed volumes (default `<output_dir>/cache`).
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// Loader worker threads.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Samples per optimiser micro-batch.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Times each training volume is visited per epoch (each visit draws fresh random crops).
    #[serde(default = "one")]
    pub samples_per_volume: usize,
    /// Validation fold (used when the dataset has no explicit validation list).
    #[serde(default)]
    pub fold: usize,
    /// Number of folds for the split above.
    #[serde(default = "default_folds")]
    pub num_folds: usize,
}

fn default_workers() -> usize {
    2
}
fn default_batch() -> usize {
    2
}
fn default_folds() -> usize {
    5
}

/// AdamW with parameter groups, linear lr scaling, layer-wise decay, clipping, accumulation and AMP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Learning rate per 256 samples: lr = base_lr × effective batch / 256.
    #[serde(default = "default_base_lr")]
    pub base_lr: f64,
    /// Adam betas.
    #[serde(default = "default_betas")]
    pub betas: [f64; 2],
    /// Adam epsilon.
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Decoupled weight decay (not applied to norms, biases, position embeddings, cls and mask tokens).
    #[serde(default = "default_wd")]
    pub weight_decay: f64,
    /// Layer-wise lr decay for fine-tuning (block i gets decay^(depth+1−(i+1))); absent = off.
    #[serde(default)]
    pub layer_decay: Option<f64>,
    /// Clip gradients to this global L2 norm; absent = off.
    #[serde(default)]
    pub grad_clip: Option<f64>,
    /// Micro-batches accumulated per optimiser step.
    #[serde(default = "one")]
    pub accum_steps: usize,
    /// Mixed precision (autocast) on CUDA; ignored with a warning on CPU.
    #[serde(default)]
    pub amp: bool,
}

fn default_base_lr() -> f64 {
    1.5e-4
}
fn default_betas() -> [f64; 2] {
    [0.9, 0.95]
}
fn default_eps() -> f64 {
    1e-8
}
fn default_wd() -> f64 {
    0.05
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            base_lr: default_base_lr(),
            betas: default_betas(),
            eps: default_eps(),
            weight_decay: default_wd(),
            layer_decay: None,
            grad_clip: None,
            accum_steps: 1,
            amp: false,
        }
    }
}

/// Linear warmup then cosine decay, evaluated per optimiser step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Training epochs.
    pub epochs: usize,
    /// Warmup length in epochs (may be fractional).
    #[serde(default)]
    pub warmup_epochs: f64,
    /// Floor of the cosine.
    #[serde(default)]
    pub min_lr: f64,
}

/// Sliding-window validation settings (also the inference defaults of model.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationConfig {
    /// Validate every this many epochs (and after the last one).
    #[serde(default = "one")]
    pub every_epochs: usize,
    /// Fractional window overlap.
    #[serde(default = "default_overlap")]
    pub overlap: f64,
    /// Window blending.
    #[serde(default = "default_blend")]
    pub blend: spec::BlendMode,
    /// Windows per forward pass.
    #[serde(default = "default_sw_batch")]
    pub sw_batch_size: usize,
    /// Validate on at most this many volumes (all when absent).
    #[serde(default)]
    pub max_volumes: Option<usize>,
}

fn default_overlap() -> f64 {
    0.5
}
fn default_blend() -> spec::BlendMode {
    spec::BlendMode::Gaussian
}
fn default_sw_batch() -> usize {
    4
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self {
            every_epochs: 1,
            overlap: default_overlap(),
            blend: default_blend(),
            sw_batch_size: default_sw_batch(),
            max_volumes: None,
        }
    }
}

/// Logging cadence, checkpoints and visualisations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// Log a metrics line every this many optimiser steps.
    #[serde(default = "default_log_every")]
    pub log_every_steps: usize,
    /// Also checkpoint (`last`) every this many optimiser steps; absent = only at epoch ends.
    #[serde(default)]
    pub save_every_steps: Option<usize>,
    /// Write PNG grids (MAE reconstructions / segmentation overlays) every this many epochs.
    #[serde(default = "one")]
    pub png_every_epochs: usize,
    /// Write TensorBoard event files.
    #[serde(default = "yes")]
    pub tensorboard: bool,
}

fn default_log_every() -> usize {
    10
}
fn yes() -> bool {
    true
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            log_every_steps: default_log_every(),
            save_every_steps: None,
            png_every_epochs: 1,
            tensorboard: true,
        }
    }
}

impl ExperimentConfig {
    /// Read a YAML config, apply `--set key=value` overrides in order, then parse and validate.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        Self::from_value(read_tree(path, overrides)?)
    }

    /// Parse and validate a YAML value (unknown keys are errors naming the full key path).
    pub fn from_value(value: Value) -> Result<Self> {
        let cfg: ExperimentConfig = parse_config_value(&value)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Write this config as `<dir>/config.yaml` (atomically), the run's record that `evaluate` and `predict` read
    /// back when no `--config` is given.
    pub fn save(&self, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).map_err(|e| ConfigError::io(dir, e))?;
        let path = dir.join(SAVED_CONFIG);
        save(self, &path)?;
        Ok(path)
    }

    /// The cache directory for preprocessed volumes.
    pub fn cache_dir(&self) -> PathBuf {
        self.data
            .cache_dir
            .clone()
            .unwrap_or_else(|| self.output_dir.join("cache"))
    }

    /// Samples each loader item yields (the product of the crops' `num_samples`).
    pub fn samples_per_item(&self) -> usize {
        self.data
            .train_transforms
            .iter()
            .map(|t| match t {
                TransformSpec::RandCropByPosNegLabel { num_samples, .. } => (*num_samples).max(1),
                _ => 1,
            })
            .fold(1usize, usize::saturating_mul)
    }

    /// Samples per optimiser step: items per batch × samples per item × accumulation steps.
    pub fn effective_batch(&self) -> usize {
        self.data
            .batch_size
            .saturating_mul(self.samples_per_item())
            .saturating_mul(self.optim.accum_steps)
    }

    /// Peak learning rate: base_lr × effective batch / 256.
    pub fn peak_lr(&self) -> f64 {
        self.optim.base_lr * self.effective_batch() as f64 / 256.0
    }

    /// The spatial size that training crops must have: the model input, plus a trailing 1 for 2-D models
    /// (2-D samples are single-slice crops of 3-D volumes).
    pub fn crop_size(&self) -> Vec<usize> {
        let enc = self.model.encoder();
        let mut s = enc.img_size.clone();
        if enc.spatial_dims == 2 {
            s.push(1);
        }
        s
    }
}

/// The saved config of the run a checkpoint belongs to: `config.yaml` in the checkpoint's parent or grandparent
/// folder (checkpoints are written to `<output_dir>/checkpoints/<name>/`).
pub fn saved_config_for_checkpoint(checkpoint: &Path) -> Result<PathBuf> {
    let full = std::fs::canonicalize(checkpoint).map_err(|e| ConfigError::io(checkpoint, e))?;
    let looked: Vec<PathBuf> = full
        .ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join(SAVED_CONFIG))
        .collect();
    looked.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        let list: Vec<String> = looked.iter().map(|p| p.display().to_string()).collect();
        ConfigError::format(
            checkpoint,
            format!(
                "no saved run config next to this checkpoint (looked for {}); give the experiment config with --config",
                list.join(" and ")
            ),
        )
    })
}
