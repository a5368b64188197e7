//! Range and cross-field checks of an [`ExperimentConfig`], one function per section; every error names the
//! dotted key it is about.

use spec::{ModelConfig, TransformSpec};

use crate::device::DeviceSpec;
use crate::error::{ConfigError, Result};
use crate::experiment::ExperimentConfig;

/// Bounds the lr scaling and the loader's buffers (an overflow here was found by fuzz/).
pub const MAX_EFFECTIVE_BATCH: usize = 1 << 20;

impl ExperimentConfig {
    /// Check ranges and cross-field consistency; errors name the key path.
    pub fn validate(&self) -> Result<()> {
        self.validate_model()?;
        self.validate_optim()?;
        self.validate_schedule()?;
        self.validate_data()?;
        self.validate_crops()?;
        self.validate_segmentation()?;
        self.validate_logging()?;
        self.device
            .parse::<DeviceSpec>()
            .map_err(|msg| ConfigError::key("device", msg))?;
        Ok(())
    }

    /// The architecture, with spec's field names mapped below `model.`.
    fn validate_model(&self) -> Result<()> {
        self.model.validate().map_err(|e| {
            let field = e
                .field
                .strip_prefix("mae.")
                .or_else(|| e.field.strip_prefix("unetr."))
                .unwrap_or(&e.field);
            ConfigError::key(format!("model.{field}"), e.msg)
        })
    }

    /// Optimiser hyper-parameters and the effective batch.
    fn validate_optim(&self) -> Result<()> {
        let o = &self.optim;
        positive("optim.base_lr", o.base_lr)?;
        for (i, b) in o.betas.iter().enumerate() {
            if !(0.0..1.0).contains(b) {
                return Err(ConfigError::key(
                    format!("optim.betas.{i}"),
                    format!("must be in [0, 1), got {b}"),
                ));
            }
        }
        positive("optim.eps", o.eps)?;
        if !(o.weight_decay >= 0.0 && o.weight_decay.is_finite()) {
            return Err(ConfigError::key(
                "optim.weight_decay",
                format!("must be a non-negative number, got {}", o.weight_decay),
            ));
        }
        if let Some(d) = o.layer_decay {
            if !(d > 0.0 && d <= 1.0) {
                return Err(ConfigError::key(
                    "optim.layer_decay",
                    format!("must be in (0, 1], got {d}"),
                ));
            }
        }
        if let Some(c) = o.grad_clip {
            positive("optim.grad_clip", c)?;
        }
        at_least_one("optim.accum_steps", o.accum_steps)?;
        if self.effective_batch() > MAX_EFFECTIVE_BATCH {
            return Err(ConfigError::key(
                "data.batch_size",
                format!(
                    "batch_size × samples per item × optim.accum_steps must be at most {MAX_EFFECTIVE_BATCH}"
                ),
            ));
        }
        Ok(())
    }

    /// Epochs, warmup and the cosine floor (which must stay below the peak lr).
    fn validate_schedule(&self) -> Result<()> {
        let s = &self.schedule;
        at_least_one("schedule.epochs", s.epochs)?;
        if !(s.warmup_epochs >= 0.0 && s.warmup_epochs <= s.epochs as f64) {
            return Err(ConfigError::key(
                "schedule.warmup_epochs",
                format!(
                    "must be in [0, epochs = {}], got {}",
                    s.epochs, s.warmup_epochs
                ),
            ));
        }
        if !(s.min_lr >= 0.0 && s.min_lr <= self.peak_lr()) {
            return Err(ConfigError::key(
                "schedule.min_lr",
                format!(
                    "must be in [0, peak lr = {}], got {}",
                    self.peak_lr(),
                    s.min_lr
                ),
            ));
        }
        Ok(())
    }

    /// The dataset selection, loader sizes, the fold, and deterministic validation preprocessing.
    fn validate_data(&self) -> Result<()> {
        let d = &self.data;
        d.dataset.validate("data.dataset")?;
        if let Some(syn) = &d.dataset.synthetic {
            let (have, want) = (syn.phantom.channels(), self.model.encoder().in_channels);
            if have != want {
                let key = match syn.phantom {
                    spec::dataset::PhantomKind::Ellipsoids(_) => {
                        "data.dataset.synthetic.phantom.channels"
                    }
                    spec::dataset::PhantomKind::Brats { .. } => "data.dataset.synthetic.phantom",
                };
                return Err(ConfigError::key(
                    key,
                    format!("{have} image channels differ from model.encoder.in_channels = {want}"),
                ));
            }
        }
        at_least_one("data.batch_size", d.batch_size)?;
        at_least_one("data.samples_per_volume", d.samples_per_volume)?;
        if d.num_folds < 2 || d.fold >= d.num_folds {
            return Err(ConfigError::key(
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
            return Err(ConfigError::key(
                format!("data.val_transforms.{i}"),
                format!(
                    "{} is random; validation preprocessing must be deterministic",
                    t.name()
                ),
            ));
        }
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
                return Err(ConfigError::key(
                    format!("data.train_transforms.{i}.{field}"),
                    format!("{size:?} must equal the model input size {want:?} (model.encoder.img_size, plus a trailing 1 for 2-D models)"),
                ));
            }
        }
        if !found {
            return Err(ConfigError::key("data.train_transforms", format!("needs a RandSpatialCrop or RandCropByPosNegLabel producing the model input size {want:?}")));
        }
        Ok(())
    }

    /// Segmentation (UNETR) only: label names per output channel and the sliding-window validation settings.
    fn validate_segmentation(&self) -> Result<()> {
        let ModelConfig::Unetr(u) = &self.model else {
            return Ok(());
        };
        let labels = &self.data.labels;
        if !labels.is_empty() && labels.len() != u.out_channels {
            return Err(ConfigError::key(
                "data.labels",
                format!(
                    "{} names for model.out_channels = {}",
                    labels.len(),
                    u.out_channels
                ),
            ));
        }
        let v = &self.validation;
        at_least_one("validation.every_epochs", v.every_epochs)?;
        at_least_one("validation.sw_batch_size", v.sw_batch_size)?;
        if !(0.0..1.0).contains(&v.overlap) {
            return Err(ConfigError::key(
                "validation.overlap",
                format!("must be in [0, 1), got {}", v.overlap),
            ));
        }
        Ok(())
    }

    /// Logging and checkpoint cadences.
    fn validate_logging(&self) -> Result<()> {
        let l = &self.logging;
        at_least_one("logging.log_every_steps", l.log_every_steps)?;
        at_least_one("logging.png_every_epochs", l.png_every_epochs)?;
        if let Some(n) = l.save_every_steps {
            at_least_one("logging.save_every_steps", n)?;
        }
        Ok(())
    }
}

fn positive(key: &str, v: f64) -> Result<()> {
    if v > 0.0 && v.is_finite() {
        Ok(())
    } else {
        Err(ConfigError::key(
            key,
            format!("must be a positive number, got {v}"),
        ))
    }
}

fn at_least_one(key: &str, v: usize) -> Result<()> {
    if v >= 1 {
        Ok(())
    } else {
        Err(ConfigError::key(key, "must be at least 1"))
    }
}
