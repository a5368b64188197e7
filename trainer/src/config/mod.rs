//! The YAML experiment config: typed sections with defaults, `--set a.b.c=value` overrides, and range checks that
//! name the offending key path.

mod overrides;

pub use overrides::{apply_override, parse_config_value};

use std::path::{Path, PathBuf};

use imaging::synthetic::{PhantomKind, SyntheticDatasetConfig};
use serde::{Deserialize, Serialize};
use spec::TransformSpec;
use spec::{ModelConfig, OutputActivation};

use crate::error::{Result, TrainError};

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

/// Where the volumes come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DatasetSource {
    /// A Medical Segmentation Decathlon dataset: its folder (with `dataset.json`) or a decathlon-style JSON datalist
    /// (training/validation/test lists; relative paths resolved against the JSON's folder).
    Decathlon {
        /// Folder or JSON file.
        path: PathBuf,
    },
    /// BTCV under `path` (`imagesTr/`+`labelsTr/` or `Training/img`+`Training/label`), TransUNet 18/12 split.
    Btcv {
        /// The dataset root.
        path: PathBuf,
    },
    /// MSD Task01_BrainTumour (4 MRI channels, labels 0–3): folder or dataset.json.
    Brats {
        /// Folder or JSON file.
        path: PathBuf,
    },
    /// Deterministic synthetic phantoms written as an MSD folder at `dir` (generated when `dir/dataset.json` is
    /// missing, reused afterwards).
    Synthetic {
        /// Folder that receives `imagesTr/`, `labelsTr/`, `imagesTs/`, `dataset.json`.
        dir: PathBuf,
        /// The phantom dataset (`imaging::synthetic::SyntheticDatasetConfig`).
        dataset: SyntheticDatasetConfig,
    },
}

fn one() -> usize {
    1
}

/// Dataset, transforms and loader settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// The dataset.
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
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        let mut value: serde_yaml::Value = serde_yaml::from_str(&text)
            .map_err(|e| TrainError::format(path, format!("invalid YAML: {e}")))?;
        for o in overrides {
            apply_override(&mut value, o)?;
        }
        Self::from_value(value)
    }

    /// Parse and validate a YAML value (unknown keys are errors naming the full key path).
    pub fn from_value(value: serde_yaml::Value) -> Result<Self> {
        let cfg: ExperimentConfig = parse_config_value(&value)?;
        cfg.validate()?;
        Ok(cfg)
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

    /// Check ranges and cross-field consistency; errors name the key path.
    pub fn validate(&self) -> Result<()> {
        self.model.validate().map_err(|e| {
            let field = e
                .field
                .strip_prefix("mae.")
                .or_else(|| e.field.strip_prefix("unetr."))
                .unwrap_or(&e.field);
            TrainError::config(format!("model.{field}"), e.msg)
        })?;
        let o = &self.optim;
        positive("optim.base_lr", o.base_lr)?;
        for (i, b) in o.betas.iter().enumerate() {
            if !(0.0..1.0).contains(b) {
                return Err(TrainError::config(
                    format!("optim.betas.{i}"),
                    format!("must be in [0, 1), got {b}"),
                ));
            }
        }
        positive("optim.eps", o.eps)?;
        if !(o.weight_decay >= 0.0 && o.weight_decay.is_finite()) {
            return Err(TrainError::config(
                "optim.weight_decay",
                format!("must be a non-negative number, got {}", o.weight_decay),
            ));
        }
        if let Some(d) = o.layer_decay {
            if !(d > 0.0 && d <= 1.0) {
                return Err(TrainError::config(
                    "optim.layer_decay",
                    format!("must be in (0, 1], got {d}"),
                ));
            }
        }
        if let Some(c) = o.grad_clip {
            positive("optim.grad_clip", c)?;
        }
        at_least_one("optim.accum_steps", o.accum_steps)?;
        // Bounds the lr scaling and the loader's buffers (an overflow here was found by fuzz/).
        const MAX_EFFECTIVE_BATCH: usize = 1 << 20;
        if self.effective_batch() > MAX_EFFECTIVE_BATCH {
            return Err(TrainError::config(
                "data.batch_size",
                format!(
                    "batch_size × samples per item × optim.accum_steps must be at most {MAX_EFFECTIVE_BATCH}"
                ),
            ));
        }
        let s = &self.schedule;
        at_least_one("schedule.epochs", s.epochs)?;
        if !(s.warmup_epochs >= 0.0 && s.warmup_epochs <= s.epochs as f64) {
            return Err(TrainError::config(
                "schedule.warmup_epochs",
                format!(
                    "must be in [0, epochs = {}], got {}",
                    s.epochs, s.warmup_epochs
                ),
            ));
        }
        if !(s.min_lr >= 0.0 && s.min_lr <= self.peak_lr()) {
            return Err(TrainError::config(
                "schedule.min_lr",
                format!(
                    "must be in [0, peak lr = {}], got {}",
                    self.peak_lr(),
                    s.min_lr
                ),
            ));
        }
        let d = &self.data;
        at_least_one("data.batch_size", d.batch_size)?;
        at_least_one("data.samples_per_volume", d.samples_per_volume)?;
        if d.num_folds < 2 || d.fold >= d.num_folds {
            return Err(TrainError::config(
                "data.fold",
                format!(
                    "need num_folds ≥ 2 and fold < num_folds, got fold {} of {}",
                    d.fold, d.num_folds
                ),
            ));
        }
        if let Some((i, t)) = d
            .val_transforms
            .iter()
            .enumerate()
            .find(|(_, t)| t.is_random())
        {
            return Err(TrainError::config(
                format!("data.val_transforms.{i}"),
                format!(
                    "{} is random; validation preprocessing must be deterministic",
                    t.name()
                ),
            ));
        }
        self.validate_crops()?;
        if let DatasetSource::Synthetic { dataset, .. } = &d.dataset {
            at_least_one("data.dataset.dataset.num_training", dataset.num_training)?;
            if let PhantomKind::Ellipsoids(p) = &dataset.phantom {
                if p.channels != self.model.encoder().in_channels {
                    let want = self.model.encoder().in_channels;
                    return Err(TrainError::config(
                        "data.dataset.dataset.phantom.channels",
                        format!(
                            "{} differs from model.encoder.in_channels = {want}",
                            p.channels
                        ),
                    ));
                }
            }
        }
        if let ModelConfig::Unetr(u) = &self.model {
            if !d.labels.is_empty() && d.labels.len() != u.out_channels {
                return Err(TrainError::config(
                    "data.labels",
                    format!(
                        "{} names for model.out_channels = {}",
                        d.labels.len(),
                        u.out_channels
                    ),
                ));
            }
            let v = &self.validation;
            at_least_one("validation.every_epochs", v.every_epochs)?;
            at_least_one("validation.sw_batch_size", v.sw_batch_size)?;
            if !(0.0..1.0).contains(&v.overlap) {
                return Err(TrainError::config(
                    "validation.overlap",
                    format!("must be in [0, 1), got {}", v.overlap),
                ));
            }
        }
        let l = &self.logging;
        at_least_one("logging.log_every_steps", l.log_every_steps)?;
        at_least_one("logging.png_every_epochs", l.png_every_epochs)?;
        if let Some(n) = l.save_every_steps {
            at_least_one("logging.save_every_steps", n)?;
        }
        crate::device::parse_device(&self.device)
            .map_err(|msg| TrainError::config("device", msg))?;
        Ok(())
    }

    /// Random crops must produce exactly the model's input size.
    fn validate_crops(&self) -> Result<()> {
        let want = self.crop_size();
        let mut found = false;
        for (i, t) in self.data.train_transforms.iter().enumerate() {
            let (field, size) = match t {
                TransformSpec::RandSpatialCrop { roi_size } => ("roi_size", roi_size),
                TransformSpec::RandCropByPosNegLabel { spatial_size, .. } => {
                    ("spatial_size", spatial_size)
                }
                _ => continue,
            };
            found = true;
            if *size != want {
                return Err(TrainError::config(
                    format!("data.train_transforms.{i}.{field}"),
                    format!("{size:?} must equal the model input size {want:?} (model.encoder.img_size, plus a trailing 1 for 2-D models)"),
                ));
            }
        }
        if !found {
            return Err(TrainError::config("data.train_transforms", format!("needs a RandSpatialCrop or RandCropByPosNegLabel producing the model input size {want:?}")));
        }
        Ok(())
    }
}

fn positive(key: &str, v: f64) -> Result<()> {
    if v > 0.0 && v.is_finite() {
        Ok(())
    } else {
        Err(TrainError::config(
            key,
            format!("must be a positive number, got {v}"),
        ))
    }
}

fn at_least_one(key: &str, v: usize) -> Result<()> {
    if v >= 1 {
        Ok(())
    } else {
        Err(TrainError::config(key, "must be at least 1"))
    }
}
