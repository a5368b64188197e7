//! The planning rules of `medmae-train plan`, each a pure function of the dataset fingerprint and the chosen device,
//! preset and memory budget (nnU-Net's planning heuristics, adapted to ViT/UNETR models):
//!
//! - [`target_spacing`]: the median spacing per axis; for strongly anisotropic data (coarsest axis > 3× the others
//!   and < 1/3 of their voxel count) the coarse axis uses its 10th percentile instead (nnU-Net).
//! - [`coarsen_for_preset`]: small presets cap the median image size by coarsening the spacing isotropically
//!   (nnU-Net's low-resolution idea), so a CPU run does not slide its window over hundreds of millions of voxels.
//! - [`normalization`]: CT clips to the foreground's 0.5–99.5 percentiles and scales to 0..1; anything else is
//!   z-scored per channel over nonzero voxels.
//! - [`fit_roi`]: the largest roi (multiple of the 16-voxel patch, at most the median image size rounded up and the
//!   preset's cap) and number of crops per step whose estimated training memory ([`memory_bytes`]) fits the budget.
//! - [`split`]: 5 folds (fold 0 validates) with ≥ 5 labelled cases, one held-out case with 2–4, and the single case
//!   for both with 1.
//! - [`classes`]: `out_channels` = largest label value + 1, names from `dataset.json` or `class k`.
//! - [`schedule`]: epochs from a per-preset number of optimiser steps.

use std::collections::BTreeMap;

use imaging::fingerprint::{IntensityStats, LabelStat, Modality};
use serde::{Deserialize, Serialize};
use spec::TransformSpec;

use crate::error::{Result, TrainError};

/// UNETR's patch edge (its decoder upsamples four times by 2).
pub const PATCH: usize = 16;
/// Smallest roi edge: two patches.
pub const MIN_ROI: usize = 2 * PATCH;

/// How big a model to plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// A quick check on a CPU: ViT 96/4/4, roi 32³, a few hundred steps.
    Tiny,
    /// A CPU or small-GPU model: ViT 384/8/6, roi up to 96³.
    Small,
    /// SelfMedMAE's ViT-B (768/12/12), roi up to 128³: a GPU model.
    Base,
}

impl std::str::FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "tiny" => Ok(Preset::Tiny),
            "small" => Ok(Preset::Small),
            "base" => Ok(Preset::Base),
            other => Err(format!("expected tiny, small or base, got `{other}`")),
        }
    }
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Preset::Tiny => "tiny",
            Preset::Small => "small",
            Preset::Base => "base",
        })
    }
}

/// The architecture and training sizes of a preset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arch {
    /// ViT width.
    pub embed_dim: usize,
    /// ViT blocks.
    pub depth: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// MAE decoder width, depth, heads.
    pub decoder: [usize; 3],
    /// UNETR decoder base width.
    pub feature_size: usize,
    /// Blocks feeding UNETR's skip connections.
    pub skip_layers: [usize; 3],
    /// Largest roi edge.
    pub max_roi: usize,
    /// Crops per fine-tuning step (before the budget reduces them).
    pub crops: usize,
    /// MAE volumes per step (before the budget and the case count reduce them).
    pub mae_batch: usize,
    /// Optimiser steps of pretraining and of fine-tuning.
    pub steps: [usize; 2],
    /// Peak learning rates of pretraining and fine-tuning.
    pub peak_lr: [f64; 2],
    /// Largest median image (voxels) before [`coarsen_for_preset`] coarsens the spacing; `None` = no cap.
    pub max_image_voxels: Option<f64>,
}

impl Preset {
    /// The preset's sizes.
    pub fn arch(self) -> Arch {
        match self {
            Preset::Tiny => Arch {
                embed_dim: 96,
                depth: 4,
                num_heads: 4,
                decoder: [48, 2, 4],
                feature_size: 8,
                skip_layers: [0, 1, 2],
                max_roi: 32,
                crops: 2,
                mae_batch: 4,
                steps: [120, 300],
                peak_lr: [1.5e-3, 3e-3],
                max_image_voxels: Some(64.0 * 64.0 * 64.0),
            },
            Preset::Small => Arch {
                embed_dim: 384,
                depth: 8,
                num_heads: 6,
                decoder: [192, 4, 6],
                feature_size: 16,
                skip_layers: [1, 3, 5],
                max_roi: 96,
                crops: 2,
                mae_batch: 4,
                steps: [4000, 8000],
                peak_lr: [5e-4, 5e-4],
                max_image_voxels: Some(160.0 * 160.0 * 160.0),
            },
            Preset::Base => Arch {
                embed_dim: 768,
                depth: 12,
                num_heads: 12,
                decoder: [384, 8, 12],
                feature_size: 16,
                skip_layers: [3, 6, 9],
                max_roi: 128,
                crops: 4,
                mae_batch: 6,
                steps: [20000, 30000],
                peak_lr: [1.5e-4 * 6.0 / 256.0, 1e-4],
                max_image_voxels: None,
            },
        }
    }
}

/// Rule 1: nnU-Net's full-resolution target spacing from the cases' RAS spacings and shapes.
pub fn target_spacing(spacings: &[[f64; 3]], shapes: &[[usize; 3]]) -> [f64; 3] {
    let axis = |a: usize| -> Vec<f64> { spacings.iter().map(|s| s[a]).collect() };
    let mut target = [0, 1, 2].map(|a| imaging::fingerprint::median(&axis(a)));
    let size = [0, 1, 2].map(|a| {
        imaging::fingerprint::median(&shapes.iter().map(|s| s[a] as f64).collect::<Vec<_>>())
    });
    let worst = (0..3)
        .max_by(|&a, &b| target[a].total_cmp(&target[b]))
        .unwrap_or(2);
    let others: Vec<usize> = (0..3).filter(|&a| a != worst).collect();
    let max_other_spacing = others.iter().map(|&a| target[a]).fold(0.0, f64::max);
    let min_other_size = others
        .iter()
        .map(|&a| size[a])
        .fold(f64::INFINITY, f64::min);
    let aniso_spacing = target[worst] > 3.0 * max_other_spacing;
    let aniso_voxels = size[worst] * 3.0 < min_other_size;
    if aniso_spacing && aniso_voxels {
        let mut v: Vec<f32> = axis(worst).iter().map(|&s| s as f32).collect();
        v.sort_unstable_by(f32::total_cmp);
        let p10 = imaging::fingerprint::percentile_sorted(&v, 10.0);
        target[worst] = if p10 < max_other_spacing {
            max_other_spacing.max(p10) + 1e-5
        } else {
            p10
        };
    }
    target
}

/// Median image shape (voxels per RAS axis) after resampling from `spacing` to `target`.
pub fn resampled_shape(
    median_shape: [f64; 3],
    median_spacing: [f64; 3],
    target: [f64; 3],
) -> [f64; 3] {
    [0, 1, 2].map(|a| median_shape[a] * median_spacing[a] / target[a])
}

/// Rule 2: when the preset caps the image size and the median resampled image is larger, multiply the spacing by
/// one factor f > 1 (rounded up to 2 decimals) so that it is not; returns the spacing and f (1 when unchanged).
pub fn coarsen_for_preset(arch: &Arch, target: [f64; 3], resampled: [f64; 3]) -> ([f64; 3], f64) {
    let voxels: f64 = resampled.iter().product();
    match arch.max_image_voxels {
        Some(cap) if voxels > cap => {
            let f = ((voxels / cap).cbrt() * 100.0).ceil() / 100.0;
            (target.map(|s| s * f), f)
        }
        _ => (target, 1.0),
    }
}

/// Rule 3: the intensity normalisation and a sentence saying why.
pub fn normalization(
    modality: &[Modality],
    foreground: &[Option<IntensityStats>],
    all: &[Option<IntensityStats>],
) -> (TransformSpec, String) {
    if let ([Modality::Ct], [fg]) = (modality, foreground) {
        let (stats, pool) = match (fg, all.first().and_then(Option::as_ref)) {
            (Some(s), _) => (s, "foreground"),
            (None, Some(s)) => (s, "all-voxel (no labelled foreground)"),
            (None, None) => {
                return (
                    nonzero_zscore(),
                    "CT without intensity statistics: z-score".into(),
                )
            }
        };
        if stats.p99_5 > stats.p00_5 {
            return (
                TransformSpec::ScaleIntensityRange {
                    a_min: stats.p00_5 as f32,
                    a_max: stats.p99_5 as f32,
                    b_min: 0.0,
                    b_max: 1.0,
                    clip: true,
                },
                format!(
                    "CT: clip to the {pool} 0.5–99.5 percentiles [{:.2}, {:.2}] HU, scale to 0..1 (mean {:.2}, std {:.2})",
                    stats.p00_5, stats.p99_5, stats.mean, stats.std
                ),
            );
        }
    }
    let names: Vec<&str> = modality.iter().map(Modality::name).collect();
    (
        nonzero_zscore(),
        format!(
            "{}: z-score per channel over nonzero voxels (uncalibrated intensities)",
            names.join("/")
        ),
    )
}

fn nonzero_zscore() -> TransformSpec {
    TransformSpec::NormalizeIntensity {
        nonzero: true,
        channel_wise: true,
    }
}

/// Estimated peak training memory in bytes of a UNETR with `arch` on `crops` crops of `roi` (f32 activations kept
/// for the backward pass, with a 1.5× allowance for autograd temporaries; weights, gradients and AdamW moments).
/// An estimate for planning only: it errs on the large side.
pub fn memory_bytes(
    arch: &Arch,
    roi: [usize; 3],
    crops: usize,
    in_ch: usize,
    out_ch: usize,
) -> f64 {
    let voxels = roi.iter().product::<usize>() as f64;
    let tokens = voxels / (PATCH * PATCH * PATCH) as f64;
    let (e, d, h) = (
        arch.embed_dim as f64,
        arch.depth as f64,
        arch.num_heads as f64,
    );
    let encoder = d * (20.0 * tokens * e + 2.0 * h * tokens * tokens);
    let decoder = voxels * (24.0 * arch.feature_size as f64 + 3.0 * out_ch as f64 + in_ch as f64);
    let params = d * 12.0 * e * e + 2e6 * (arch.feature_size as f64 / 16.0).powi(2) * 16.0;
    4.0 * (1.5 * crops as f64 * (encoder + decoder)) + 16.0 * params
}

/// The chosen roi and crops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoiPlan {
    /// Model input size per RAS axis.
    pub roi: [usize; 3],
    /// Crops per fine-tuning step.
    pub crops: usize,
    /// [`memory_bytes`] of that choice.
    pub bytes: f64,
}

/// Rule 4: start from the median resampled shape rounded up to the patch (at least [`MIN_ROI`], at most the
/// preset's cap); while the estimate exceeds the budget, shrink by one patch the axis whose roi is largest relative
/// to the image, and once every axis is at [`MIN_ROI`], halve the crops. Errors when even that does not fit.
pub fn fit_roi(
    arch: &Arch,
    image: [f64; 3],
    budget: f64,
    in_ch: usize,
    out_ch: usize,
) -> Result<RoiPlan> {
    let mut roi = image.map(|s| {
        let up = ((s.max(1.0) / PATCH as f64).ceil() as usize) * PATCH;
        up.clamp(MIN_ROI, arch.max_roi.max(MIN_ROI))
    });
    let mut crops = arch.crops.max(1);
    loop {
        let bytes = memory_bytes(arch, roi, crops, in_ch, out_ch);
        if bytes <= budget {
            return Ok(RoiPlan { roi, crops, bytes });
        }
        let shrinkable = (0..3)
            .filter(|&a| roi[a] > MIN_ROI)
            .max_by(|&a, &b| (roi[a] as f64 / image[a]).total_cmp(&(roi[b] as f64 / image[b])));
        match shrinkable {
            Some(a) => roi[a] -= PATCH,
            None if crops > 1 => crops /= 2,
            None => {
                return Err(TrainError::config(
                    "--budget-gib",
                    format!(
                        "{:.2} GiB is too small: even a {MIN_ROI}³ roi with one crop needs about {:.2} GiB with this preset",
                        budget / GIB,
                        bytes / GIB
                    ),
                ))
            }
        }
    }
}

/// Bytes per GiB.
pub const GIB: f64 = (1u64 << 30) as f64;

/// The MAE batch: the preset's, reduced to fit the budget (the encoder sees a quarter of the tokens and the decoder
/// all of them; estimated like [`memory_bytes`] without UNETR's convolutional decoder) and to the number of samples
/// an epoch has (`train_cases × samples_per_volume`).
pub fn mae_batch(arch: &Arch, roi: [usize; 3], budget: f64, samples_per_epoch: usize) -> usize {
    let voxels = roi.iter().product::<usize>() as f64;
    let tokens = voxels / (PATCH * PATCH * PATCH) as f64;
    let [de, dd, dh] = arch.decoder.map(|v| v as f64);
    let (e, d, h) = (
        arch.embed_dim as f64,
        arch.depth as f64,
        arch.num_heads as f64,
    );
    let t4 = tokens / 4.0;
    let per_sample = 4.0
        * 1.5
        * (d * (20.0 * t4 * e + 2.0 * h * t4 * t4)
            + dd * (20.0 * tokens * de + 2.0 * dh * tokens * tokens)
            + 4.0 * voxels);
    let params = 16.0 * (d * 12.0 * e * e + dd * 12.0 * de * de);
    let fit = ((budget - params) / per_sample).floor().max(1.0) as usize;
    arch.mae_batch.min(fit).min(samples_per_epoch.max(1)).max(1)
}

/// How the labelled cases are split into training and validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitPlan {
    /// `data.num_folds` folds of the training list, fold `data.fold` validates.
    Folds {
        /// Folds.
        num_folds: usize,
        /// The validating fold.
        fold: usize,
    },
    /// An explicit validation list with this case index (the others train).
    HeldOut(usize),
    /// A single case trains and validates (the Dice then measures fit, not generalisation).
    SameCase,
    /// The dataset's own validation list.
    Given,
}

/// Rule 5: the split for `n` labelled cases (sorted by id): 5 folds from 5 cases on, otherwise the last case held
/// out, and for a single case that case for both.
pub fn split(n: usize) -> Result<SplitPlan> {
    match n {
        0 => Err(TrainError::config(
            "dataset",
            "no labelled cases: fine-tuning needs at least one image with a label map",
        )),
        1 => Ok(SplitPlan::SameCase),
        2..=4 => Ok(SplitPlan::HeldOut(n - 1)),
        _ => Ok(SplitPlan::Folds {
            num_folds: 5,
            fold: 0,
        }),
    }
}

/// Rule 6: `out_channels` (largest label value found or declared, + 1) and a name per class (`dataset.json`'s, else
/// `background` for 0 and `class k`).
pub fn classes(
    found: &BTreeMap<u32, LabelStat>,
    declared: &BTreeMap<u32, String>,
) -> Result<(usize, Vec<String>)> {
    let max = found
        .keys()
        .chain(declared.keys())
        .copied()
        .max()
        .unwrap_or(0);
    if max == 0 {
        return Err(TrainError::config(
            "labels",
            "the label maps hold no foreground (only the value 0)",
        ));
    }
    if max > 255 {
        return Err(TrainError::config(
            "labels",
            format!("label value {max}: at most 255 classes are supported"),
        ));
    }
    let names = (0..=max)
        .map(|k| match declared.get(&k) {
            Some(n) if !n.trim().is_empty() => n.trim().to_string(),
            _ if k == 0 => "background".to_string(),
            _ => format!("class{k}"),
        })
        .collect();
    Ok((max as usize + 1, names))
}

/// Visits per volume and epoch (`data.samples_per_volume`) so that an epoch of `cases` volumes in batches of
/// `batch` has about a tenth of `steps` optimiser steps (at least one visit; at most 250 steps per epoch, nnU-Net's
/// epoch length).
pub fn visits_per_epoch(steps: usize, cases: usize, batch: usize) -> usize {
    let per_epoch = (steps / 10).clamp(1, 250);
    (per_epoch * batch.max(1)).div_ceil(cases.max(1)).max(1)
}

/// Epochs and the epoch cadences derived from a step target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Training epochs.
    pub epochs: usize,
    /// Warmup epochs (5 % of the run, at least 1 when the run has more than one epoch).
    pub warmup_epochs: usize,
    /// Validation (and picture) cadence: about 5 validations per run.
    pub every_epochs: usize,
    /// Log cadence in steps: about 20 lines per run.
    pub log_every_steps: usize,
}

/// Rule 7: epochs so that the run makes about `steps` optimiser steps when an epoch has `steps_per_epoch`.
pub fn schedule(steps: usize, steps_per_epoch: usize) -> Schedule {
    let spe = steps_per_epoch.max(1);
    let epochs = steps.div_ceil(spe).max(1);
    Schedule {
        epochs,
        warmup_epochs: if epochs > 1 { (epochs / 20).max(1) } else { 0 },
        every_epochs: (epochs / 5).max(1),
        log_every_steps: (epochs * spe / 20).max(1),
    }
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
