//! `finetune`: UNETR segmentation training (optionally initialised from an MAE checkpoint) with sliding-window
//! validation Dice, best-by-Dice checkpoints and overlay pictures.
//!
//! Data-parallel validation is sharded: rank `r` of `W` evaluates the contiguous block `r·n/W .. (r+1)·n/W` of the
//! `n` validation cases, the per-case Dice rows are summed over the ranks into the full `n × classes` table (each row
//! comes from exactly one rank, so the sum is exact, NaN included), and every rank aggregates the same table as a
//! single process would. The overlay picture shows the first (up to 3) cases of rank 0's block, which are the
//! first cases of the list whenever each rank has at least 3.

use std::path::{Path, PathBuf};

use imaging::datasets::Case;
use imaging::inference::Segmenter;
use imaging::Sample;
use models::{init_unetr_from_mae, DiceCeOptions, Unetr};
use ndarray::{Array4, Axis};
use rand_chacha::ChaCha8Rng;
use spec::{InferenceSpec, ModelCard, ModelConfig, OutputActivation, UnetrConfig};
use tch::{nn::VarStore, Device, Tensor};

use crate::config::ExperimentConfig;
use crate::data::{check_labels, label_name, load_val_case, InputSpec, TensorBatch};
use crate::dist::Dist;
use crate::engine::{train, EpochReport, RunOptions, RunSummary, Task};
use crate::error::{Result, TrainError};
use crate::infer::{dice, display_labels, inference_error, TchPredictor};

/// The label names of a config (defaults: `background`, `class1`… for softmax, `channel0`… for sigmoid).
pub fn label_names(cfg: &ExperimentConfig, k: usize) -> Vec<String> {
    if !cfg.data.labels.is_empty() {
        return cfg.data.labels.clone();
    }
    match cfg.data.activation {
        OutputActivation::Softmax => (0..k)
            .map(|c| {
                if c == 0 {
                    "background".into()
                } else {
                    format!("class{c}")
                }
            })
            .collect(),
        OutputActivation::Sigmoid => (0..k).map(|c| format!("channel{c}")).collect(),
    }
}

/// The sliding-window defaults written to `model.json`.
pub fn inference_spec(cfg: &ExperimentConfig, u: &UnetrConfig) -> InferenceSpec {
    let v = &cfg.validation;
    InferenceSpec {
        roi_size: u.encoder.img_size.clone(),
        overlap: v.overlap,
        blend: v.blend,
        sw_batch_size: v.sw_batch_size,
        activation: cfg.data.activation,
    }
}

/// Names of the reported Dice entries: foreground classes for softmax, every channel for sigmoid.
pub fn dice_names(labels: &[String], activation: OutputActivation) -> Vec<String> {
    match activation {
        OutputActivation::Softmax => labels.iter().skip(1).cloned().collect(),
        OutputActivation::Sigmoid => labels.to_vec(),
    }
}

/// Sliding-window Dice of one (preprocessed) case through the shared inference path; returns per-class Dice and
/// the predicted label map.
pub fn evaluate_case(
    net: &Unetr,
    segmenter: &Segmenter,
    id: &str,
    sample: &Sample,
    device: Device,
) -> Result<(Vec<f64>, Array4<f32>)> {
    let pred = segmenter
        .label_preprocessed(
            sample.image.data.view(),
            &mut TchPredictor::new(net, device),
        )
        .map_err(|e| inference_error(e, id))?;
    let target = sample
        .label
        .as_ref()
        .ok_or_else(|| TrainError::Data(format!("validation case {id} has no label map")))?;
    let activation = segmenter.inference().activation;
    Ok((
        dice(&pred, &target.data, activation, segmenter.out_channels())?,
        pred,
    ))
}

/// One row of an overlay picture: a validation image (channel 0), its reference and the predicted class ids, on the
/// grid (and affine) of the preprocessed sample.
pub struct OverlayRow {
    /// Case id (the row's title).
    pub id: String,
    /// The preprocessed image, channel 0.
    pub image: imaging::Volume,
    /// Reference class ids (sigmoid channels c become class c + 1).
    pub reference: imaging::Volume,
    /// Predicted class ids.
    pub prediction: imaging::Volume,
}

/// The overlay row of a case, or `None` when it has no label map.
pub fn overlay_row(id: &str, sample: &Sample, pred: &Array4<f32>) -> Option<OverlayRow> {
    let affine = sample.image.affine;
    let ids = |a: &Array4<f32>| {
        imaging::Volume::new(
            display_labels(a).mapv(f32::from).insert_axis(Axis(0)),
            affine,
        )
    };
    Some(OverlayRow {
        id: id.to_string(),
        image: imaging::Volume::new(
            sample
                .image
                .data
                .index_axis(Axis(0), 0)
                .to_owned()
                .insert_axis(Axis(0)),
            affine,
        ),
        reference: ids(&sample.label.as_ref()?.data),
        prediction: ids(pred),
    })
}

/// The overlay picture of some rows (`imaging::draw::overlay_figure`: radiological axial slices with the most
/// reference foreground, image | reference | prediction, legend with the output names `labels`).
pub fn overlay_picture(
    rows: &[OverlayRow],
    labels: &[String],
    activation: OutputActivation,
) -> Result<image::RgbImage> {
    let labels: Vec<String> = match activation {
        OutputActivation::Softmax => labels.to_vec(),
        // Sigmoid channel c is drawn as class c + 1.
        OutputActivation::Sigmoid => std::iter::once(String::new())
            .chain(labels.iter().cloned())
            .collect(),
    };
    let cases: Vec<imaging::draw::OverlayCase<'_>> = rows
        .iter()
        .map(|r| imaging::draw::OverlayCase {
            title: &r.id,
            image: &r.image,
            reference: Some(&r.reference),
            prediction: Some(&r.prediction),
        })
        .collect();
    let (img, _) =
        imaging::draw::overlay_figure(&cases, &labels, &imaging::draw::OverlayView::default())?;
    Ok(img)
}

/// Mean over cases of per-class Dice (NaN entries skipped), and the mean over classes.
pub fn aggregate(per_case: &[Vec<f64>]) -> (Vec<f64>, f64) {
    let k = per_case.first().map_or(0, Vec::len);
    let per_class: Vec<f64> = (0..k)
        .map(|c| {
            imaging::metrics::nan_mean(
                &per_case
                    .iter()
                    .filter_map(|d| d.get(c).copied())
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    let mean = imaging::metrics::nan_mean(&per_class);
    (per_class, mean)
}

/// The UNETR being fine-tuned, with its validation set.
pub struct UnetrTask {
    net: Unetr,
    cfg: UnetrConfig,
    labels: Vec<String>,
    /// Validation inference (cases arrive preprocessed, so it has no preprocessing of its own).
    segmenter: Segmenter,
    preprocessing: Vec<spec::TransformSpec>,
    /// This rank's validation cases.
    val: Vec<(Case, Sample)>,
    /// Index of `val[0]` among all validation cases.
    val_start: usize,
    /// Validation cases over all ranks.
    val_total: usize,
    device: Device,
    loss_opts: DiceCeOptions,
}

impl UnetrTask {
    /// Build the UNETR on `vs` and load this rank's block of the validation cases (all of them in a single
    /// process) through the validation transforms.
    pub fn new(
        vs: &VarStore,
        cfg: &ExperimentConfig,
        val_cases: &[Case],
        dist: &Dist,
    ) -> Result<Self> {
        let ModelConfig::Unetr(u) = &cfg.model else {
            return Err(TrainError::config(
                "model.kind",
                "finetune needs `kind: unetr`",
            ));
        };
        let net = Unetr::new(&vs.root(), u)?;
        let labels = label_names(cfg, u.out_channels);
        let limit = cfg.validation.max_volumes.unwrap_or(usize::MAX);
        let val_total = val_cases.len().min(limit);
        let (val_start, val_end) = dist.block(val_total);
        let mut val = Vec::new();
        for case in val_cases.get(val_start..val_end).unwrap_or_default() {
            let s = load_val_case(case, &cfg.data.val_transforms)?;
            let label = s.label.as_ref().ok_or_else(|| {
                TrainError::Data(format!("validation case {} has no label map", case.id))
            })?;
            check_labels(label, cfg.data.activation, u.out_channels, &|| {
                label_name(case)
            })?;
            val.push((case.clone(), s));
        }
        let segmenter = Segmenter::new(
            u.encoder.spatial_dims,
            u.encoder.in_channels,
            u.out_channels,
            labels.clone(),
            &[],
            inference_spec(cfg, u),
        )?;
        Ok(Self {
            net,
            cfg: u.clone(),
            labels,
            segmenter,
            preprocessing: cfg.data.val_transforms.clone(),
            val,
            val_start,
            val_total,
            device: vs.device(),
            loss_opts: DiceCeOptions::default(),
        })
    }
}

impl UnetrTask {
    fn activation(&self) -> OutputActivation {
        self.segmenter.inference().activation
    }
}

impl Task for UnetrTask {
    fn command(&self) -> &'static str {
        "finetune"
    }

    fn input_spec(&self) -> InputSpec {
        InputSpec::for_encoder(
            &self.cfg.encoder,
            Some((self.activation(), self.cfg.out_channels)),
        )
    }

    fn loss(&self, batch: &TensorBatch, _rng: &mut ChaCha8Rng) -> Result<Tensor> {
        let labels = batch
            .labels
            .as_ref()
            .ok_or_else(|| TrainError::Data("fine-tuning batch without labels".into()))?;
        let logits = self.net.forward(&batch.images, true)?;
        Ok(models::dice_ce_loss(
            &logits,
            labels,
            self.activation(),
            &self.loss_opts,
        )?)
    }

    fn end_epoch(
        &mut self,
        _epoch: usize,
        _sample: Option<&TensorBatch>,
        validate: bool,
        pictures: bool,
        dist: &Dist,
    ) -> Result<EpochReport> {
        let mut report = EpochReport::default();
        if !validate || self.val_total == 0 {
            return Ok(report);
        }
        let names = dice_names(&self.labels, self.activation());
        let k = names.len();
        // The full cases × classes table; this rank fills its block, the others' rows stay 0 until the sum.
        let mut table = vec![0.0f64; self.val_total * k];
        let mut rows = Vec::new();
        for (i, (case, sample)) in self.val.iter().enumerate() {
            let (d, pred) =
                evaluate_case(&self.net, &self.segmenter, &case.id, sample, self.device)?;
            if d.len() != k {
                return Err(TrainError::Data(format!(
                    "case {}: {} Dice values for {k} reported classes",
                    case.id,
                    d.len()
                )));
            }
            if pictures && rows.len() < 3 && dist.is_main() {
                rows.extend(overlay_row(&case.id, sample, &pred));
            }
            let at = (self.val_start + i) * k;
            if let Some(dst) = table.get_mut(at..at + k) {
                dst.copy_from_slice(&d);
            }
        }
        let table = dist.sum(&table, "the validation Dice")?;
        let per_case: Vec<Vec<f64>> = table.chunks(k.max(1)).map(<[f64]>::to_vec).collect();
        let (per_class, mean) = aggregate(&per_case);
        report.scalars.push(("val/dice_mean".into(), mean));
        for (name, d) in names.iter().zip(&per_class) {
            report.scalars.push((format!("val/dice/{name}"), *d));
        }
        report.score = Some(mean);
        if !rows.is_empty() {
            let pic = overlay_picture(&rows, &self.labels, self.segmenter.inference().activation)?;
            report.images.push(("overlay".into(), pic));
        }
        Ok(report)
    }

    fn card(&self) -> ModelCard {
        ModelCard::new(
            ModelConfig::Unetr(self.cfg.clone()),
            self.preprocessing.clone(),
            self.labels.clone(),
            Some(self.segmenter.inference().clone()),
        )
    }
}

/// The weights file of an `--init` path: a checkpoint directory's `model.safetensors`, or the file itself.
pub fn init_weights_path(p: &Path) -> PathBuf {
    if p.is_dir() {
        p.join("model.safetensors")
    } else {
        p.to_path_buf()
    }
}

/// Run UNETR fine-tuning as configured (`cfg.init`: MAE/UNETR checkpoint for the encoder), as one rank of `dist`
/// (every rank loads `--init`; rank 0's weights are then broadcast).
pub fn run(cfg: &ExperimentConfig, opts: &RunOptions, dist: &Dist) -> Result<RunSummary> {
    let ModelConfig::Unetr(u) = &cfg.model else {
        return Err(TrainError::config(
            "model.kind",
            "finetune needs `kind: unetr`",
        ));
    };
    let device = crate::engine::setup_device(cfg, dist)?;
    let split = crate::data::split_ranked(cfg, dist)?;
    crate::checks::at_start(cfg, &split, dist.is_main())?;
    if split.val.is_empty() {
        return Err(TrainError::config(
            "data.dataset",
            "fine-tuning needs validation cases (a validation list or data.num_folds)",
        ));
    }
    let main = dist.is_main();
    tracing::info!(
        "fine-tuning on {} volumes of `{}`, validating on {}",
        split.train.len(),
        split.name,
        split
            .val
            .len()
            .min(cfg.validation.max_volumes.unwrap_or(usize::MAX))
    );
    tch::manual_seed(cfg.seed as i64);
    let vs = VarStore::new(device);
    let task = UnetrTask::new(&vs, cfg, &split.val, dist)?;
    if let (Some(init), None) = (&cfg.init, &opts.resume) {
        let path = init_weights_path(init);
        if !path.is_file() {
            return Err(TrainError::config(
                "init",
                format!(
                    "{} does not exist (expected a checkpoint directory or .safetensors file)",
                    path.display()
                ),
            ));
        }
        let report = init_unetr_from_mae(&vs, &path, u)?;
        let loaded = vs.variables().len() - report.missing.len();
        if main {
            tracing::info!(
            "initialised {loaded} tensors from {} ({} trained from scratch, {} ignored, {} interpolated, {} mismatched)",
            path.display(),
            report.missing.len(),
            report.ignored.len(),
            report.interpolated.len(),
            report.mismatched.len()
            );
        }
        for (name, from, to) in report.interpolated.iter().filter(|_| main) {
            tracing::info!("interpolated {name} from grid {from:?} to {to:?}");
        }
        if main && (!report.unexpected.is_empty() || !report.mismatched.is_empty()) {
            tracing::warn!(
                "init: unexpected {:?}, mismatched {:?}",
                report.unexpected,
                report.mismatched
            );
        }
    }
    train(cfg, opts, vs, task, split.train, dist)
}
