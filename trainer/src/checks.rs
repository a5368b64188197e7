//! Checks at the start of `pretrain` / `finetune`, on a sample of the cases (at most [`MAX_CHECKED_CASES`], spread
//! over the training and validation lists), before any time is spent training: label maps on their image's grid
//! and holding class ids; labels found vs `model.out_channels`, `dataset.json`'s labels and `data.labels`; image
//! channels vs `model.encoder.in_channels`; the intensity window of `ScaleIntensityRange` vs the data's intensities;
//! and the roi vs the image size after resampling. Problems that would make training fail or learn the wrong task
//! are errors; the rest are warnings. Every message names the config key and the evidence.

use std::collections::{BTreeMap, BTreeSet};

use imaging::datasets::audit::{audit, Severity};
use imaging::datasets::Case;
use imaging::fingerprint::{percentile_sorted, CaseScan, FingerprintOptions, CT_GUESS_BELOW};
use spec::{ModelConfig, OutputActivation, TransformSpec};

use crate::config::ExperimentConfig;
use crate::data::Split;
use crate::error::{Result, TrainError};

/// Most cases read by the start-of-training checks.
pub const MAX_CHECKED_CASES: usize = 8;
/// Share of foreground voxels outside the intensity window above which a warning is given.
pub const MAX_CLIPPED_FOREGROUND: f64 = 0.2;

/// A warning (or, from [`preflight`], the error) with the config key it concerns.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// True when training must not start.
    pub error: bool,
    /// The config key (dotted path).
    pub key: String,
    /// What is wrong and the evidence.
    pub message: String,
}

impl Finding {
    fn error(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: true,
            key: key.into(),
            message: message.into(),
        }
    }
    fn warning(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: false,
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Up to `max` cases spread evenly over `cases` (all of them when there are fewer).
pub fn spread(cases: &[Case], max: usize) -> Vec<Case> {
    let n = cases.len();
    if n <= max {
        return cases.to_vec();
    }
    (0..max)
        .filter_map(|i| cases.get(i * n / max).cloned())
        .collect()
}

/// Run the checks on a sample of `split`'s cases. Returns the warnings (also logged by the caller); the first error
/// is returned as a config error naming its key.
pub fn preflight(cfg: &ExperimentConfig, split: &Split) -> Result<Vec<Finding>> {
    let all: Vec<Case> = split.train.iter().chain(&split.val).cloned().collect();
    let cases = spread(&all, MAX_CHECKED_CASES);
    let opts = FingerprintOptions {
        max_samples_per_case: 20_000,
    };
    let a = audit(&cases, &[], &split.labels, 0, &opts);
    let checked = format!("{} of {} case(s) checked", a.scans.len(), all.len());
    let mut findings = Vec::new();
    let orientation = cfg
        .data
        .val_transforms
        .iter()
        .any(|t| matches!(t, TransformSpec::Orientation { .. }));
    for p in &a.problems {
        let case = p
            .case
            .as_deref()
            .map_or_else(String::new, |c| format!("case {c}: "));
        match p.severity {
            Severity::Error => findings.push(Finding::error(
                "data.dataset",
                format!(
                    "{case}{} (`medmae dataset check` lists every problem of the dataset)",
                    p.message
                ),
            )),
            Severity::Warning if p.message.starts_with("mixed orientations") && orientation => {}
            Severity::Warning => findings.push(Finding::warning(
                "data.dataset",
                format!("{case}{}", p.message),
            )),
        }
    }
    let scans = &a.scans;
    if !scans.is_empty() {
        findings.extend(channel_findings(cfg, scans));
        findings.extend(label_findings(cfg, scans, &cases, &split.labels, &checked));
        findings.extend(intensity_findings(cfg, scans));
        findings.extend(roi_findings(cfg, scans));
    }
    if let Some(e) = findings.iter().find(|f| f.error) {
        return Err(TrainError::config(
            e.key.clone(),
            format!("{} ({checked})", e.message),
        ));
    }
    Ok(findings)
}

/// [`preflight`] at the start of a training command: warnings are logged by rank 0, errors end the run (every rank
/// reads the same cases and reaches the same verdict).
pub fn at_start(cfg: &ExperimentConfig, split: &Split, main: bool) -> Result<()> {
    let warnings = preflight(cfg, split)?;
    if main {
        for w in &warnings {
            tracing::warn!("{}: {}", w.key, w.message);
        }
    }
    Ok(())
}

fn channel_findings(cfg: &ExperimentConfig, scans: &[CaseScan]) -> Vec<Finding> {
    let want = cfg.model.encoder().in_channels;
    let brats = cfg.data.train_transforms.iter().any(|t| {
        matches!(
            t,
            TransformSpec::ConvertToMultiChannelBasedOnBratsClasses { .. }
        )
    });
    scans
        .iter()
        .find(|s| s.fingerprint.channels != want && !brats)
        .map(|s| {
            Finding::error(
                "model.encoder.in_channels",
                format!(
                    "{want}, but case {} has {} image channel(s)",
                    s.fingerprint.id, s.fingerprint.channels
                ),
            )
        })
        .into_iter()
        .collect()
}

/// Labels found in the checked cases vs the model's classes, `dataset.json`'s labels and `data.labels`.
pub fn label_findings(
    cfg: &ExperimentConfig,
    scans: &[CaseScan],
    cases: &[Case],
    declared: &BTreeMap<u32, String>,
    checked: &str,
) -> Vec<Finding> {
    let ModelConfig::Unetr(u) = &cfg.model else {
        return Vec::new();
    };
    let remaps = cfg.data.train_transforms.iter().any(|t| {
        matches!(
            t,
            TransformSpec::ConvertToMultiChannelBasedOnBratsClasses { .. }
        )
    });
    if cfg.data.activation != OutputActivation::Softmax || remaps {
        return Vec::new();
    }
    let k = u.out_channels;
    let mut out = Vec::new();
    let found: BTreeSet<u32> = scans
        .iter()
        .flat_map(|s| s.fingerprint.labels.keys().copied())
        .collect();
    if let Some(s) = scans
        .iter()
        .find(|s| s.fingerprint.labels.keys().any(|&v| v as usize >= k))
    {
        let big: Vec<u32> = s
            .fingerprint
            .labels
            .keys()
            .filter(|&&v| v as usize >= k)
            .copied()
            .collect();
        let id = &s.fingerprint.id;
        let file = cases
            .iter()
            .find(|c| &c.id == id)
            .and_then(|c| c.label.as_ref())
            .map_or_else(String::new, |p| format!(" ({})", p.display()));
        let values: Vec<String> = big.iter().map(u32::to_string).collect();
        out.push(Finding::error(
            "model.out_channels",
            format!(
                "{k} allows class ids 0..{}, but the label map of case {id}{file} has label value{} {}",
                k - 1,
                if big.len() == 1 { "" } else { "s" },
                values.join(", ")
            ),
        ));
    }
    if let Some(&max) = declared.keys().next_back() {
        let declared_k = max as usize + 1;
        if declared_k != k {
            out.push(Finding::error(
                "model.out_channels",
                format!(
                    "{k}, but dataset.json declares {declared_k} labels {:?}; label values found: {found:?}",
                    declared.values().collect::<Vec<_>>()
                ),
            ));
        }
        for (i, name) in cfg.data.labels.iter().enumerate() {
            // Placeholder names (`class1`, `label1`) in dataset.json name nothing to compare with.
            let placeholder = |d: &str| {
                let d = d.to_ascii_lowercase();
                d == format!("class{i}") || d == format!("label{i}")
            };
            if let Some(d) = declared
                .get(&(i as u32))
                .filter(|d| !d.eq_ignore_ascii_case(name) && !placeholder(d))
            {
                out.push(Finding::warning(
                    format!("data.labels.{i}"),
                    format!("`{name}`, but dataset.json names class {i} `{d}`"),
                ));
            }
        }
    } else {
        let never: Vec<usize> = (0..k).filter(|c| !found.contains(&(*c as u32))).collect();
        if !never.is_empty() {
            out.push(Finding::warning(
                "model.out_channels",
                format!("{k}, but class(es) {never:?} occur in none of the checked cases (label values found: {found:?}; {checked})"),
            ));
        }
    }
    out
}

fn sorted_pool(scans: &[CaseScan], pick: impl Fn(&CaseScan) -> &Vec<Vec<f32>>) -> Vec<f32> {
    let mut v: Vec<f32> = scans
        .iter()
        .flat_map(|s| pick(s).iter().flatten().copied())
        .filter(|x| x.is_finite())
        .collect();
    v.sort_unstable_by(f32::total_cmp);
    v
}

fn intensity_findings(cfg: &ExperimentConfig, scans: &[CaseScan]) -> Vec<Finding> {
    let Some((i, a_min, a_max)) = cfg
        .data
        .val_transforms
        .iter()
        .enumerate()
        .find_map(|(i, t)| match t {
            TransformSpec::ScaleIntensityRange { a_min, a_max, .. } => Some((i, *a_min, *a_max)),
            _ => None,
        })
    else {
        return Vec::new();
    };
    let all = sorted_pool(scans, |s| &s.all);
    let fg = sorted_pool(scans, |s| &s.foreground);
    window_findings(
        &format!("data.val_transforms.{i}"),
        f64::from(a_min),
        f64::from(a_max),
        &all,
        &fg,
    )
}

/// The intensity window `[a_min, a_max]` of the transform at `key` against sorted intensity samples of all voxels
/// and of the foreground: an error when the data lie entirely on one side of the window; warnings when more than
/// [`MAX_CLIPPED_FOREGROUND`] of the foreground is clipped, when CT-like data (values below −500) meet a window that
/// starts at 0 or above, and when the data occupy less than 5 % of the window.
pub fn window_findings(key: &str, a_min: f64, a_max: f64, all: &[f32], fg: &[f32]) -> Vec<Finding> {
    let mut out = Vec::new();
    if all.is_empty() {
        return out;
    }
    let (lo, hi) = (percentile_sorted(all, 0.5), percentile_sorted(all, 99.5));
    let window = format!("window [{a_min}, {a_max}]");
    if hi < a_min || lo > a_max {
        out.push(Finding::error(
            key,
            format!("{window} lies outside the data: 99 % of the voxels are in [{lo:.2}, {hi:.2}], so every voxel maps to one value"),
        ));
        return out;
    }
    if !fg.is_empty() {
        let outside = fg
            .iter()
            .filter(|&&v| f64::from(v) < a_min || f64::from(v) > a_max)
            .count();
        let share = outside as f64 / fg.len() as f64;
        if share > MAX_CLIPPED_FOREGROUND {
            out.push(Finding::warning(
                key,
                format!(
                    "{window} clips {:.0} % of the foreground voxels (foreground 0.5–99.5 % range [{:.2}, {:.2}]; `medmae-train plan` derives a window from the data)",
                    100.0 * share,
                    percentile_sorted(fg, 0.5),
                    percentile_sorted(fg, 99.5)
                ),
            ));
        }
    }
    let min = f64::from(all[0]);
    if min < CT_GUESS_BELOW && a_min >= 0.0 {
        out.push(Finding::warning(
            key,
            format!("{window} starts at {a_min}, but the data reach {min:.0} (CT Hounsfield units?): air, fat and lung all map to the same value"),
        ));
    }
    if a_max > a_min && (hi - lo) < 0.05 * (a_max - a_min) {
        out.push(Finding::warning(
            key,
            format!("{window}: 99 % of the voxels lie in [{lo:.3}, {hi:.3}], {:.1} % of the window, so the contrast is lost", 100.0 * (hi - lo) / (a_max - a_min)),
        ));
    }
    out
}

/// The roi of the crop transforms vs each checked case's size after the config's reorientation and resampling.
fn roi_findings(cfg: &ExperimentConfig, scans: &[CaseScan]) -> Vec<Finding> {
    let ts = &cfg.data.train_transforms;
    if ts
        .iter()
        .any(|t| matches!(t, TransformSpec::CropForeground { .. }))
    {
        return Vec::new();
    }
    let ras = ts
        .iter()
        .any(|t| matches!(t, TransformSpec::Orientation { .. }));
    let pixdim = ts.iter().find_map(|t| match t {
        TransformSpec::Spacing { pixdim } if pixdim.len() == 3 => {
            Some([pixdim[0], pixdim[1], pixdim[2]])
        }
        _ => None,
    });
    let mut pad = [0usize; 3];
    let mut out = Vec::new();
    for (i, t) in ts.iter().enumerate() {
        let roi = match t {
            TransformSpec::SpatialPad { spatial_size } => {
                for (p, s) in pad.iter_mut().zip(spatial_size) {
                    *p = (*p).max(*s);
                }
                continue;
            }
            TransformSpec::RandSpatialCrop { roi_size } => roi_size,
            TransformSpec::RandCropByPosNegLabel { spatial_size, .. } => spatial_size,
            _ => continue,
        };
        let key = format!("data.train_transforms.{i}");
        for s in scans {
            let f = &s.fingerprint;
            let (shape, spacing) = if ras {
                (f.ras_shape, f.ras_spacing)
            } else {
                (f.shape, f.spacing)
            };
            let size: Vec<f64> = (0..3)
                .map(|a| {
                    pixdim.map_or(shape[a] as f64, |p| {
                        (shape[a] as f64 * spacing[a] / p[a]).round()
                    })
                })
                .collect();
            let small = (0..3.min(roi.len()))
                .find(|&a| roi[a] > 1 && size[a] < roi[a] as f64 && pad[a] < roi[a]);
            if let Some(a) = small {
                out.push(Finding::error(
                    key.clone(),
                    format!(
                        "roi {roi:?} is larger than case {} ({size:?} voxels after resampling) along axis {a}; add a SpatialPad to {roi:?} before the crop or use a smaller roi (model.encoder.img_size)",
                        f.id
                    ),
                ));
                return out;
            }
        }
        let mut sizes: Vec<Vec<f64>> = scans
            .iter()
            .map(|s| {
                let f = &s.fingerprint;
                let (shape, spacing) = if ras {
                    (f.ras_shape, f.ras_spacing)
                } else {
                    (f.shape, f.spacing)
                };
                (0..3)
                    .map(|a| {
                        pixdim.map_or(shape[a] as f64, |p| shape[a] as f64 * spacing[a] / p[a])
                    })
                    .collect()
            })
            .collect();
        sizes.sort_by(|a, b| {
            a.iter()
                .product::<f64>()
                .total_cmp(&b.iter().product::<f64>())
        });
        if let Some(median) = sizes.get(sizes.len() / 2) {
            if let Some(a) =
                (0..3.min(roi.len())).find(|&a| roi[a] > 1 && median[a] * 2.0 < roi[a] as f64)
            {
                out.push(Finding::warning(
                    key.clone(),
                    format!(
                        "roi {roi:?} is more than twice the median image ({:.0?} voxels after resampling) along axis {a}: most of every crop is padding",
                        median
                    ),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(mut v: Vec<f32>) -> Vec<f32> {
        v.sort_unstable_by(f32::total_cmp);
        v
    }

    #[test]
    fn mri_window_on_ct_is_flagged_with_evidence() {
        // CT: air at -1000, soft tissue -100..100, a tumour around 40 HU with some at -60.
        let all = sorted(
            (0..1000)
                .map(|i| {
                    if i < 500 {
                        -1000.0
                    } else {
                        -100.0 + (i - 500) as f32 * 0.4
                    }
                })
                .collect(),
        );
        let fg = sorted((0..100).map(|i| -60.0 + i as f32).collect());
        let f = window_findings("data.val_transforms.2", 0.0, 255.0, &all, &fg);
        assert!(f.iter().all(|f| !f.error), "{f:?}");
        let text: Vec<&str> = f.iter().map(|f| f.message.as_str()).collect();
        assert!(
            text.iter()
                .any(|m| m.contains("clips 60 % of the foreground")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|m| m.contains("reach -1000 (CT Hounsfield units?)")),
            "{text:?}"
        );
        assert!(f.iter().all(|f| f.key == "data.val_transforms.2"));
        // The planned window from the same data: no findings.
        assert!(window_findings("k", -59.5, 39.5, &all, &fg).is_empty());
    }

    #[test]
    fn window_outside_the_data_is_an_error_and_tiny_range_a_warning() {
        let unit = sorted((0..100).map(|i| i as f32 / 100.0).collect());
        let f = window_findings("k", 100.0, 400.0, &unit, &[]);
        assert!(
            f[0].error && f[0].message.contains("lies outside the data"),
            "{f:?}"
        );
        let f = window_findings("k", -175.0, 250.0, &unit, &[]);
        assert!(
            !f[0].error && f[0].message.contains("contrast is lost"),
            "{f:?}"
        );
    }

    #[test]
    fn spread_picks_evenly() {
        let cases: Vec<Case> = (0..20)
            .map(|i| Case::new(vec![format!("c{i:02}.nii").into()], None))
            .collect();
        let ids: Vec<String> = spread(&cases, 4).into_iter().map(|c| c.id).collect();
        assert_eq!(ids, ["c00", "c05", "c10", "c15"]);
        assert_eq!(spread(&cases[..3], 8).len(), 3);
    }
}
