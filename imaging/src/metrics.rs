//! Segmentation metrics with MONAI semantics: per-class Dice (`DiceMetric`) and percentile Hausdorff distance
//! (`compute_hausdorff_distance`), for label maps and for multi-label (sigmoid) channels.
//!
//! Undefined values are `NaN`, never silently 0 or 1:
//! - Dice of a class whose ground truth is empty is `NaN` with `ignore_empty` (MONAI's default), else 1 when the
//!   prediction is empty too and 0 when it is not.
//! - Hausdorff distance is `NaN` when prediction and ground truth are both empty. When exactly one is empty, every
//!   surface distance is infinite: the maximum (`percentile: None`) is `+inf`, and a percentile such as HD95 is `NaN`,
//!   as in MONAI, whose `torch.quantile` interpolates `inf − inf`.
//! - [`nan_mean`] (MONAI's "mean" reduction) averages the defined values and is `NaN` when none is defined.
//!
//! Surfaces are the voxels of a mask with a face neighbour outside the mask or outside the image (binary erosion with
//! a cross structuring element and a zero border, as MONAI's `get_mask_edges` with scipy); surface distances are
//! exact Euclidean distances in millimetres with the given spacing.

use ndarray::{ArrayD, ArrayViewD, Axis, Dimension, Slice, Zip};
use serde::{Deserialize, Serialize};

use crate::error::{ImagingError, Result};

fn yes() -> bool {
    true
}

/// Options of the Dice metric (MONAI `DiceMetric` arguments).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DiceOptions {
    /// Report class 0 too (label maps only; multi-label channels are all reported).
    #[serde(default)]
    pub include_background: bool,
    /// `NaN` for classes absent from the ground truth (else 1 or 0, see the module doc).
    #[serde(default = "yes")]
    pub ignore_empty: bool,
}

impl Default for DiceOptions {
    fn default() -> Self {
        Self {
            include_background: false,
            ignore_empty: true,
        }
    }
}

/// Options of the Hausdorff distance (MONAI `compute_hausdorff_distance` arguments).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HausdorffOptions {
    /// Report class 0 too (label maps only).
    #[serde(default)]
    pub include_background: bool,
    /// Percentile of the surface distances (95 for HD95); `None` is the maximum (classic Hausdorff).
    #[serde(default)]
    pub percentile: Option<f64>,
    /// Voxel spacing per spatial axis in mm; empty means 1 on every axis.
    #[serde(default)]
    pub spacing: Vec<f64>,
    /// Only prediction → ground truth distances (MONAI `directed=True`).
    #[serde(default)]
    pub directed: bool,
}

impl HausdorffOptions {
    /// HD95 (symmetric, background excluded) with the given spacing.
    pub fn hd95(spacing: Vec<f64>) -> Self {
        Self {
            include_background: false,
            percentile: Some(95.0),
            spacing,
            directed: false,
        }
    }
}

/// Mean of the non-`NaN` values (`NaN` if there are none), like MONAI's "mean" reduction.
pub fn nan_mean(values: &[f64]) -> f64 {
    let defined: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if defined.is_empty() {
        f64::NAN
    } else {
        defined.iter().sum::<f64>() / defined.len() as f64
    }
}

/// Dice of two binary masks of the same shape (MONAI `DiceHelper.compute_channel`).
pub fn dice_binary(
    pred: ArrayViewD<'_, bool>,
    target: ArrayViewD<'_, bool>,
    ignore_empty: bool,
) -> Result<f64> {
    check_same(pred.shape(), target.shape(), "pred", "target")?;
    let (mut inter, mut p, mut t) = (0u64, 0u64, 0u64);
    Zip::from(&pred).and(&target).for_each(|&a, &b| {
        inter += u64::from(a && b);
        p += u64::from(a);
        t += u64::from(b);
    });
    Ok(dice_from_counts(inter, p, t, ignore_empty))
}

/// Dice from voxel counts (see the module doc for the empty cases).
fn dice_from_counts(inter: u64, p: u64, t: u64, ignore_empty: bool) -> f64 {
    if t > 0 {
        2.0 * inter as f64 / (t + p) as f64
    } else if ignore_empty {
        f64::NAN
    } else if p == 0 {
        1.0
    } else {
        0.0
    }
}

/// Per-class Dice of two label maps (class ids stored as f32), classes `0..num_classes` (from 1 unless
/// `include_background`).
pub fn dice_labels(
    pred: ArrayViewD<'_, f32>,
    target: ArrayViewD<'_, f32>,
    num_classes: usize,
    opts: &DiceOptions,
) -> Result<Vec<f64>> {
    check_same(pred.shape(), target.shape(), "pred", "target")?;
    check_class_ids(&pred, num_classes, "pred")?;
    check_class_ids(&target, num_classes, "target")?;
    // One pass: per-class intersection, prediction and target counts.
    let (mut inter, mut p, mut t) = (
        vec![0u64; num_classes],
        vec![0u64; num_classes],
        vec![0u64; num_classes],
    );
    Zip::from(&pred).and(&target).for_each(|&a, &b| {
        let (a, b) = (a as usize, b as usize);
        p[a] += 1;
        t[b] += 1;
        inter[a] += u64::from(a == b);
    });
    let first = usize::from(!opts.include_background);
    Ok((first..num_classes)
        .map(|c| dice_from_counts(inter[c], p[c], t[c], opts.ignore_empty))
        .collect())
}

/// Per-channel Dice of multi-label maps `[C, spatial...]`: prediction voxels `>= threshold` (e.g. 0.5 on sigmoid
/// outputs) against nonzero target voxels.
pub fn dice_multilabel(
    pred: ArrayViewD<'_, f32>,
    target: ArrayViewD<'_, f32>,
    threshold: f32,
    opts: &DiceOptions,
) -> Result<Vec<f64>> {
    per_channel(pred, target, threshold, |p, t| {
        dice_binary(p, t, opts.ignore_empty)
    })
}

/// `metric` of each channel of multi-label maps `[C, spatial...]`: prediction voxels `>= threshold` against nonzero
/// target voxels.
fn per_channel(
    pred: ArrayViewD<'_, f32>,
    target: ArrayViewD<'_, f32>,
    threshold: f32,
    metric: impl Fn(ArrayViewD<'_, bool>, ArrayViewD<'_, bool>) -> Result<f64>,
) -> Result<Vec<f64>> {
    check_same(pred.shape(), target.shape(), "pred", "target")?;
    pred.outer_iter()
        .zip(target.outer_iter())
        .map(|(p, t)| {
            metric(
                p.mapv(|v| v >= threshold).view(),
                t.mapv(|v| v != 0.0).view(),
            )
        })
        .collect()
}

/// Percentile Hausdorff distance between two binary masks (one class of MONAI `compute_hausdorff_distance`).
pub fn hausdorff_binary(
    pred: ArrayViewD<'_, bool>,
    target: ArrayViewD<'_, bool>,
    opts: &HausdorffOptions,
) -> Result<f64> {
    check_same(pred.shape(), target.shape(), "pred", "target")?;
    let spacing = spacing_for(&opts.spacing, pred.ndim())?;
    if let Some(q) = opts.percentile {
        if !(0.0..=100.0).contains(&q) {
            return Err(ImagingError::config(
                "percentile",
                format!("must be in [0, 100], got {q}"),
            ));
        }
    }
    // Everything outside the union's bounding box is background in both masks, so cropping changes no surface
    // voxel and no distance (MONAI crops too), and keeps full-resolution volumes cheap.
    let Some(bbox) = union_bbox(&pred, &target) else {
        return Ok(f64::NAN);
    };
    let crop = |m: &ArrayViewD<'_, bool>| {
        m.slice_each_axis(|ax| Slice::from(bbox[ax.axis.index()].0..=bbox[ax.axis.index()].1))
            .to_owned()
    };
    let (ep, et) = (surface(crop(&pred).view()), surface(crop(&target).view()));
    let (any_p, any_t) = (ep.iter().any(|&v| v), et.iter().any(|&v| v));
    if !any_p && !any_t {
        return Ok(f64::NAN);
    }
    if !any_p || !any_t {
        return Ok(if opts.percentile.is_some() {
            f64::NAN
        } else {
            f64::INFINITY
        });
    }
    let forward = directed_percentile(&ep, &et, &spacing, opts.percentile);
    if opts.directed {
        return Ok(forward);
    }
    Ok(forward.max(directed_percentile(&et, &ep, &spacing, opts.percentile)))
}

/// Per-class Hausdorff distance of two label maps (classes from 1 unless `include_background`).
pub fn hausdorff_labels(
    pred: ArrayViewD<'_, f32>,
    target: ArrayViewD<'_, f32>,
    num_classes: usize,
    opts: &HausdorffOptions,
) -> Result<Vec<f64>> {
    check_class_ids(&pred, num_classes, "pred")?;
    check_class_ids(&target, num_classes, "target")?;
    let first = usize::from(!opts.include_background);
    (first..num_classes)
        .map(|c| {
            let c = c as f32;
            hausdorff_binary(
                pred.mapv(|v| v == c).view(),
                target.mapv(|v| v == c).view(),
                opts,
            )
        })
        .collect()
}

/// Per-channel Hausdorff distance of multi-label maps `[C, spatial...]` (prediction `>= threshold`, target nonzero).
pub fn hausdorff_multilabel(
    pred: ArrayViewD<'_, f32>,
    target: ArrayViewD<'_, f32>,
    threshold: f32,
    opts: &HausdorffOptions,
) -> Result<Vec<f64>> {
    per_channel(pred, target, threshold, |p, t| hausdorff_binary(p, t, opts))
}

fn check_same(a: &[usize], b: &[usize], na: &str, nb: &str) -> Result<()> {
    if a != b {
        return Err(ImagingError::Shape(format!(
            "{na} has shape {a:?} but {nb} has shape {b:?}"
        )));
    }
    Ok(())
}

/// Check that every label value is an integer class id in `0..num_classes`; the error names the value.
fn check_class_ids(labels: &ArrayViewD<'_, f32>, num_classes: usize, name: &str) -> Result<()> {
    match labels
        .iter()
        .find(|v| !(v.fract() == 0.0 && **v >= 0.0 && (**v as usize) < num_classes))
    {
        Some(bad) => Err(ImagingError::config(
            name,
            format!("label value {bad} is not a class id in 0..{num_classes}"),
        )),
        None => Ok(()),
    }
}

/// The bounding box (inclusive) of the voxels set in either mask, `None` when both are empty.
fn union_bbox(a: &ArrayViewD<'_, bool>, b: &ArrayViewD<'_, bool>) -> Option<Vec<(usize, usize)>> {
    let mut bbox: Option<Vec<(usize, usize)>> = None;
    for ((idx, &x), &y) in a.indexed_iter().zip(b.iter()) {
        if x || y {
            let idx = idx.slice();
            match bbox.as_mut() {
                None => bbox = Some(idx.iter().map(|&i| (i, i)).collect()),
                Some(bb) => bb
                    .iter_mut()
                    .zip(idx)
                    .for_each(|(r, &i)| *r = (r.0.min(i), r.1.max(i))),
            }
        }
    }
    bbox
}

fn spacing_for(spacing: &[f64], ndim: usize) -> Result<Vec<f64>> {
    if spacing.is_empty() {
        return Ok(vec![1.0; ndim]);
    }
    if spacing.len() != ndim || spacing.iter().any(|s| !(*s > 0.0 && s.is_finite())) {
        return Err(ImagingError::config(
            "spacing",
            format!("expected {ndim} positive values, got {spacing:?}"),
        ));
    }
    Ok(spacing.to_vec())
}

/// Mask voxels with a face neighbour outside the mask or outside the array.
fn surface(mask: ArrayViewD<'_, bool>) -> ArrayD<bool> {
    let mut eroded = mask.to_owned();
    for axis in 0..mask.ndim() {
        for (src, mut dst) in mask
            .lanes(Axis(axis))
            .into_iter()
            .zip(eroded.lanes_mut(Axis(axis)))
        {
            let n = src.len();
            for i in 0..n {
                let lo = i > 0 && src[i - 1];
                let hi = i + 1 < n && src[i + 1];
                dst[i] = dst[i] && lo && hi;
            }
        }
    }
    Zip::from(&mut eroded)
        .and(&mask)
        .for_each(|e, &m| *e = m && !*e);
    eroded
}

/// Percentile of the distances from each `from` voxel to the nearest `to` voxel (both non-empty).
fn directed_percentile(
    from: &ArrayD<bool>,
    to: &ArrayD<bool>,
    spacing: &[f64],
    percentile: Option<f64>,
) -> f64 {
    let dist2 = squared_edt(to, spacing);
    let mut d: Vec<f64> = Zip::from(from)
        .and(&dist2)
        .fold(Vec::new(), |mut acc, &f, &d2| {
            if f {
                acc.push(d2.sqrt());
            }
            acc
        });
    d.sort_by(f64::total_cmp);
    match percentile {
        None => d.last().copied().unwrap_or(f64::NAN),
        Some(q) => quantile_sorted(&d, q / 100.0),
    }
}

/// Linear-interpolation quantile of sorted values (numpy/torch default method).
pub(crate) fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let (a, b) = (
        sorted[lo.min(sorted.len() - 1)],
        sorted[hi.min(sorted.len() - 1)],
    );
    a + (b - a) * (pos - lo as f64)
}

/// Squared Euclidean distance (mm²) from every voxel to the nearest `true` voxel, exact, separable
/// (Felzenszwalb & Huttenlocher lower envelope of parabolas), `+inf` when there is none.
fn squared_edt(sites: &ArrayD<bool>, spacing: &[f64]) -> ArrayD<f64> {
    let mut d = sites.mapv(|s| if s { 0.0 } else { f64::INFINITY });
    let mut buf = Vec::new();
    for (axis, &sp) in spacing.iter().enumerate() {
        let w = sp * sp;
        for mut lane in d.lanes_mut(Axis(axis)) {
            buf.clear();
            buf.extend(lane.iter().copied());
            let out = envelope_1d(&buf, w);
            for (dst, v) in lane.iter_mut().zip(out) {
                *dst = v;
            }
        }
    }
    d
}

/// One pass: `out[p] = min_q f[q] + w·(p − q)²`, skipping infinite `f`.
fn envelope_1d(f: &[f64], w: f64) -> Vec<f64> {
    let n = f.len();
    let sites: Vec<usize> = (0..n).filter(|&q| f[q].is_finite()).collect();
    if sites.is_empty() {
        return vec![f64::INFINITY; n];
    }
    // Parabola q: w·(p−q)² + f[q]; intersection of q and r (q < r) is at s = ((f[r]+w r²) − (f[q]+w q²)) / (2w(r−q)).
    let inter = |q: usize, r: usize| {
        let (qf, rf) = (q as f64, r as f64);
        ((f[r] + w * rf * rf) - (f[q] + w * qf * qf)) / (2.0 * w * (rf - qf))
    };
    let mut v: Vec<usize> = Vec::with_capacity(sites.len());
    let mut z: Vec<f64> = Vec::with_capacity(sites.len() + 1);
    for &q in &sites {
        while let (Some(&last), Some(&zl)) = (v.last(), z.last()) {
            if inter(last, q) <= zl {
                v.pop();
                z.pop();
            } else {
                break;
            }
        }
        z.push(v.last().map_or(f64::NEG_INFINITY, |&last| inter(last, q)));
        v.push(q);
    }
    let mut out = vec![0.0; n];
    let mut k = 0;
    for (p, o) in out.iter_mut().enumerate() {
        while k + 1 < v.len() && z[k + 1] < p as f64 {
            k += 1;
        }
        let dq = p as f64 - v[k] as f64;
        *o = w * dq * dq + f[v[k]];
    }
    out
}

/// Voxel counts per class id of a label map (values rounded to the nearest integer, negatives rejected).
pub fn class_voxel_counts(
    labels: ArrayViewD<'_, f32>,
) -> Result<std::collections::BTreeMap<u32, u64>> {
    let mut counts = std::collections::BTreeMap::new();
    for &v in labels.iter() {
        if !(v >= 0.0 && v.is_finite() && v <= u32::MAX as f32) {
            return Err(ImagingError::config(
                "label",
                format!("value {v} is not a class id"),
            ));
        }
        *counts.entry(v.round() as u32).or_insert(0) += 1;
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array2, Dimension, IxDyn};

    #[test]
    fn dice_hand_computed_and_empty_rules() {
        let p = array![[true, true, false], [false, false, false]].into_dyn();
        let t = array![[true, false, false], [true, false, false]].into_dyn();
        assert_eq!(dice_binary(p.view(), t.view(), true).unwrap(), 0.5);
        let e = Array2::from_elem((2, 3), false).into_dyn();
        assert!(dice_binary(p.view(), e.view(), true).unwrap().is_nan());
        assert_eq!(dice_binary(p.view(), e.view(), false).unwrap(), 0.0);
        assert_eq!(dice_binary(e.view(), e.view(), false).unwrap(), 1.0);
        assert_eq!(dice_binary(e.view(), t.view(), true).unwrap(), 0.0);
    }

    #[test]
    fn dice_from_label_maps_and_channels() {
        let p = array![[0.0f32, 1.0, 2.0, 2.0]].into_dyn();
        let t = array![[0.0f32, 1.0, 1.0, 2.0]].into_dyn();
        let d = dice_labels(p.view(), t.view(), 3, &DiceOptions::default()).unwrap();
        assert_eq!(d, vec![2.0 / 3.0, 2.0 / 3.0]);
        let opts = DiceOptions {
            include_background: true,
            ..DiceOptions::default()
        };
        assert_eq!(dice_labels(p.view(), t.view(), 4, &opts).unwrap()[0], 1.0);
        assert!(dice_labels(p.view(), t.view(), 4, &DiceOptions::default()).unwrap()[2].is_nan());
        let err = dice_labels(p.view(), t.view(), 2, &opts)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("pred") && err.contains("label value 2"),
            "{err}"
        );
        let mp = array![[0.9f32, 0.2], [0.6, 0.7]].into_dyn();
        let mt = array![[1.0f32, 1.0], [0.0, 0.0]].into_dyn();
        let d = dice_multilabel(mp.view(), mt.view(), 0.5, &DiceOptions::default()).unwrap();
        assert!((d[0] - 2.0 / 3.0).abs() < 1e-12 && d[1].is_nan());
        assert_eq!(nan_mean(&[0.5, f64::NAN, 1.0]), 0.75);
        assert!(nan_mean(&[f64::NAN]).is_nan());
    }

    #[test]
    fn edt_matches_brute_force_with_anisotropic_spacing() {
        let sites = ArrayD::from_shape_fn(IxDyn(&[7, 5, 4]), |i| {
            (i[0] * 7 + i[1] * 3 + i[2] * 5) % 11 == 0
        });
        let sp = [0.7, 1.3, 2.0];
        let d = squared_edt(&sites, &sp);
        let pts: Vec<Vec<usize>> = sites
            .indexed_iter()
            .filter(|(_, &s)| s)
            .map(|(i, _)| i.slice().to_vec())
            .collect();
        for (idx, &v) in d.indexed_iter() {
            let best = pts
                .iter()
                .map(|q| {
                    (0..3)
                        .map(|a| ((idx[a] as f64 - q[a] as f64) * sp[a]).powi(2))
                        .sum::<f64>()
                })
                .fold(f64::INFINITY, f64::min);
            assert!((v - best).abs() < 1e-9, "{idx:?} {v} {best}");
        }
    }

    #[test]
    fn surface_and_hausdorff_of_shifted_squares() {
        let sq = |off: usize| {
            ArrayD::from_shape_fn(IxDyn(&[8, 8]), |i| {
                (off..off + 4).contains(&i[0]) && (2..6).contains(&i[1])
            })
        };
        let s = surface(sq(1).view());
        assert_eq!(
            s.iter().filter(|&&v| v).count(),
            12,
            "a 4x4 square has 12 border pixels"
        );
        let full = ArrayD::from_elem(IxDyn(&[3, 3]), true);
        assert_eq!(
            surface(full.view()).iter().filter(|&&v| v).count(),
            8,
            "image border counts as outside"
        );
        let mut o = HausdorffOptions::hd95(vec![]);
        o.percentile = None;
        assert_eq!(
            hausdorff_binary(sq(1).view(), sq(3).view(), &o).unwrap(),
            2.0
        );
        o.spacing = vec![1.5, 1.0];
        assert_eq!(
            hausdorff_binary(sq(1).view(), sq(3).view(), &o).unwrap(),
            3.0
        );
        let empty = ArrayD::from_elem(IxDyn(&[8, 8]), false);
        assert!(hausdorff_binary(empty.view(), empty.view(), &o)
            .unwrap()
            .is_nan());
        assert_eq!(
            hausdorff_binary(sq(1).view(), empty.view(), &o).unwrap(),
            f64::INFINITY
        );
        assert!(
            hausdorff_binary(empty.view(), sq(1).view(), &HausdorffOptions::hd95(vec![]))
                .unwrap()
                .is_nan()
        );
        assert_eq!(quantile_sorted(&[0.0, 1.0, 2.0, 10.0], 0.5), 1.5);
    }

    #[test]
    fn voxel_counts() {
        let l = array![[0.0f32, 1.0], [1.0, 4.0]].into_dyn();
        let c = class_voxel_counts(l.view()).unwrap();
        assert_eq!(
            c.into_iter().collect::<Vec<_>>(),
            vec![(0, 1), (1, 2), (4, 1)]
        );
    }
}
