//! One case's scan: geometry (stored and RAS), label values, intensity samples, and what is wrong with it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::FingerprintOptions;
use crate::datasets::Case;
use crate::error::{ImagingError, Result};
use crate::orient;
use crate::volume::Volume;

/// Largest origin difference (mm), relative spacing difference and direction-cosine difference under which a label
/// map counts as being on its image's grid.
pub const GRID_TOLERANCE: f64 = 1e-3;

/// What one case looks like.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseFingerprint {
    /// Case id.
    pub id: String,
    /// Image channels.
    pub channels: usize,
    /// Spatial shape as stored.
    pub shape: [usize; 3],
    /// Voxel spacing as stored (mm).
    pub spacing: [f64; 3],
    /// Orientation codes of the stored voxel axes (e.g. `LSA`).
    pub axcodes: String,
    /// Spatial shape after reorientation to RAS.
    pub ras_shape: [usize; 3],
    /// Spacing along the RAS axes (mm).
    pub ras_spacing: [f64; 3],
    /// Voxels per label value (empty without a label map).
    pub labels: BTreeMap<u32, u64>,
    /// Per channel: smallest and largest intensity.
    pub range: Vec<[f64; 2]>,
    /// What is wrong with the case (label off the image grid, non-integer or multi-channel labels); empty when fine.
    pub problems: Vec<String>,
}

/// A scanned case: its fingerprint and its intensity samples per channel.
#[derive(Debug, Clone)]
pub struct CaseScan {
    /// The fingerprint.
    pub fingerprint: CaseFingerprint,
    /// Per channel, sampled foreground (label > 0) intensities.
    pub foreground: Vec<Vec<f32>>,
    /// Per channel, sampled intensities of all voxels.
    pub all: Vec<Vec<f32>>,
}

/// Why a label map is not on its image's grid, or `None` when it is (shape equal; origin within
/// [`GRID_TOLERANCE`] mm; spacing within a relative [`GRID_TOLERANCE`]; direction cosines within
/// [`GRID_TOLERANCE`]).
pub fn grid_mismatch(image: &Volume, label: &Volume) -> Option<String> {
    grid_mismatch_parts(
        (image.spatial_shape(), &image.affine),
        (label.spatial_shape(), &label.affine),
    )
}

/// [`grid_mismatch`] from spatial shapes and affines (e.g. from file headers).
pub fn grid_mismatch_parts(
    (shape_a, affine_a): ([usize; 3], &[[f64; 4]; 4]),
    (shape_b, affine_b): ([usize; 3], &[[f64; 4]; 4]),
) -> Option<String> {
    if shape_a != shape_b {
        return Some(format!(
            "shape {shape_b:?} differs from the image's {shape_a:?}"
        ));
    }
    let a = Volume::new(ndarray::Array4::zeros((0, 0, 0, 0)), *affine_a);
    let b = Volume::new(ndarray::Array4::zeros((0, 0, 0, 0)), *affine_b);
    let (sa, sb) = (a.spacing(), b.spacing());
    if sa
        .iter()
        .zip(&sb)
        .any(|(x, y)| !within(x - y, GRID_TOLERANCE * x.abs().max(y.abs())))
    {
        return Some(format!(
            "spacing {} differs from the image's {}",
            fmt3(sb),
            fmt3(sa)
        ));
    }
    let (oa, ob) = (a.origin(), b.origin());
    if oa
        .iter()
        .zip(&ob)
        .any(|(x, y)| !within(x - y, GRID_TOLERANCE))
    {
        return Some(format!(
            "origin {} mm differs from the image's {} mm",
            fmt3(ob),
            fmt3(oa)
        ));
    }
    let (da, db) = (a.direction(), b.direction());
    let worst = da
        .iter()
        .flatten()
        .zip(db.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(
            0.0,
            |m: f64, d| if d.is_nan() { f64::INFINITY } else { m.max(d) },
        );
    if worst > GRID_TOLERANCE {
        return Some(format!(
            "orientation {} differs from the image's {} (direction cosines differ by {worst:.2e})",
            codes(affine_b),
            codes(affine_a)
        ));
    }
    None
}

/// `|d| <= tol`, false for NaN (so a NaN difference counts as a mismatch).
fn within(d: f64, tol: f64) -> bool {
    d.abs() <= tol
}

fn fmt3(v: [f64; 3]) -> String {
    format!("[{:.4}, {:.4}, {:.4}]", v[0], v[1], v[2])
}

fn codes(affine: &[[f64; 4]; 4]) -> String {
    orient::axcodes(affine).iter().collect()
}

fn is_class_id(v: f32) -> bool {
    v >= 0.0 && v.fract() == 0.0 && v <= u32::MAX as f32
}

/// Load a case (image channels and label) and fingerprint it; I/O and format errors are errors, data problems are
/// listed in [`CaseFingerprint::problems`].
pub fn scan_case(case: &Case, opts: &FingerprintOptions) -> Result<CaseScan> {
    let image = match case.images.as_slice() {
        [] => {
            return Err(ImagingError::config(
                "image",
                format!("case {} lists no image file", case.id),
            ))
        }
        [one] => crate::io::load(one)?,
        many => crate::io::load_channels(many)?,
    };
    let label = case
        .label
        .as_ref()
        .map(|p| crate::io::load(p))
        .transpose()?;
    Ok(scan_volumes(&case.id, &image, label.as_ref(), opts))
}

/// Fingerprint an image and its optional label map already in memory.
pub fn scan_volumes(
    id: &str,
    image: &Volume,
    label: Option<&Volume>,
    opts: &FingerprintOptions,
) -> CaseScan {
    let mut problems = Vec::new();
    let shape = image.spatial_shape();
    let (ras_shape, ras_spacing) = ras_geometry(image);
    let mut labels = BTreeMap::new();
    // The label values in C order, when the label map is usable (on the grid, one channel).
    let mut usable: Option<&Volume> = None;
    if let Some(l) = label {
        if let Some(why) = grid_mismatch(image, l) {
            problems.push(format!("label map is not on the image grid: {why}"));
        } else if l.channels() != 1 {
            problems.push(format!(
                "label map has {} channels, expected 1 (class ids)",
                l.channels()
            ));
        } else {
            let mut bad = None;
            for &v in l.data.iter() {
                if is_class_id(v) {
                    *labels.entry(v as u32).or_insert(0u64) += 1;
                } else {
                    bad.get_or_insert(v);
                }
            }
            if let Some(v) = bad {
                problems.push(format!(
                    "label value {v} is not a non-negative integer class id"
                ));
            }
            usable = Some(l);
        }
    }
    let fg_count: usize = labels
        .iter()
        .filter(|(&k, _)| k > 0)
        .map(|(_, &n)| n as usize)
        .sum();
    let max = opts.max_samples_per_case;
    let stride = |n: usize| {
        if n > max && max > 0 {
            n.div_ceil(max)
        } else {
            1
        }
    };
    let mut foreground = Vec::new();
    let mut all = Vec::new();
    let mut range = Vec::new();
    for ch in image.data.outer_iter() {
        let (lo, hi) = ch
            .iter()
            .filter(|v| v.is_finite())
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        range.push([f64::from(lo), f64::from(hi)]);
        // Every k-th value, as `strided_sample` of the full list, without materialising the list.
        all.push(ch.iter().step_by(stride(ch.len())).copied().collect());
        let fg: Vec<f32> = match usable {
            Some(l) => ch
                .iter()
                .zip(l.data.iter())
                .filter(|(_, &v)| v > 0.0 && is_class_id(v))
                .step_by(stride(fg_count))
                .map(|(&v, _)| v)
                .collect(),
            None => Vec::new(),
        };
        foreground.push(fg);
    }
    CaseScan {
        fingerprint: CaseFingerprint {
            id: id.to_string(),
            channels: image.channels(),
            shape,
            spacing: image.spacing(),
            axcodes: codes(&image.affine),
            ras_shape,
            ras_spacing,
            labels,
            range,
            problems,
        },
        foreground,
        all,
    }
}

/// Shape and spacing along the RAS axes (the stored ones when the affine has no clear orientation).
fn ras_geometry(image: &Volume) -> ([usize; 3], [f64; 3]) {
    let shape = image.spatial_shape();
    let spacing = image.spacing();
    match orient::plan(&image.affine, shape, "RAS") {
        Ok(op) => (op.perm.map(|i| shape[i]), op.perm.map(|i| spacing[i])),
        Err(_) => (shape, spacing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    #[test]
    fn grid_mismatch_names_what_differs() {
        let shape = (1, 4, 5, 6);
        let a = Volume::new(Array4::zeros(shape), Volume::diag_affine([1.0, 1.0, 2.0]));
        assert_eq!(grid_mismatch(&a, &a.clone()), None);
        let b = Volume::new(Array4::zeros((1, 4, 5, 7)), a.affine);
        assert!(grid_mismatch(&a, &b).unwrap().contains("shape"));
        let c = Volume::new(Array4::zeros(shape), Volume::diag_affine([1.0, 1.0, 2.5]));
        assert!(grid_mismatch(&a, &c).unwrap().contains("spacing"));
        let mut d = a.clone();
        d.affine[0][3] = 0.5;
        assert!(grid_mismatch(&a, &d).unwrap().contains("origin"));
        let mut e = a.clone();
        e.affine[0][0] = -1.0;
        assert!(grid_mismatch(&a, &e).unwrap().contains("orientation LAS"));
    }

    #[test]
    fn scan_reports_labels_ras_geometry_and_problems() {
        // Voxel axes (i, j, k) run along (L, S, A): RAS shape is (X, Z, Y) and spacing likewise.
        let aff = [
            [-2.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 3.0, 0.0],
            [0.0, 2.5, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let img = Volume::new(
            Array4::from_shape_fn((1, 2, 3, 4), |(_, i, j, k)| (i * 12 + j * 4 + k) as f32),
            aff,
        );
        let mut lab = Volume::new(Array4::zeros((1, 2, 3, 4)), aff);
        lab.data[[0, 1, 2, 3]] = 2.0;
        lab.data[[0, 0, 0, 1]] = 1.0;
        let s = scan_volumes("c", &img, Some(&lab), &FingerprintOptions::default());
        let f = &s.fingerprint;
        assert_eq!(f.axcodes, "LSA");
        assert_eq!(f.ras_shape, [2, 4, 3]);
        assert_eq!(f.ras_spacing, [2.0, 3.0, 2.5]);
        assert_eq!(f.labels, BTreeMap::from([(0, 22), (1, 1), (2, 1)]));
        assert_eq!(s.foreground[0], vec![1.0, 23.0]);
        assert_eq!(f.range, vec![[0.0, 23.0]]);
        assert!(f.problems.is_empty());
        lab.data[[0, 0, 0, 0]] = 0.5;
        let s = scan_volumes("c", &img, Some(&lab), &FingerprintOptions::default());
        assert!(s.fingerprint.problems[0].contains("0.5"));
        lab.affine[2][3] = 9.0;
        let s = scan_volumes("c", &img, Some(&lab), &FingerprintOptions::default());
        assert!(s.fingerprint.problems[0].contains("not on the image grid"));
    }
}
