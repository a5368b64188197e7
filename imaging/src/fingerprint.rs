//! Dataset fingerprint (nnU-Net's "dataset fingerprint" in medmae's terms): per case the stored and RAS shape,
//! spacing and orientation, label values and voxel counts, whether the label map lies on the image's grid; over the
//! dataset the label frequencies, median spacing/shape, orientations, and per channel the intensity statistics
//! (0.5 / 50 / 99.5 percentiles, mean, std) of the foreground (label > 0) and of all voxels.
//!
//! Percentiles follow numpy's default (`np.percentile(x, q)`, linear interpolation between the two closest ranks);
//! mean and standard deviation are numpy's `mean` / `std` (population, ddof 0), computed in f64. To bound memory on
//! large datasets each case contributes at most [`FingerprintOptions::max_samples_per_case`] values per channel to
//! each pool: when it has more, every k-th value in C order (X slowest, Z fastest) with
//! `k = ceil(count / max)`, starting at the first — numpy's `x[mask][::k]` on the same array.
//!
//! One scan ([`scan_case`]) serves `medmae-train plan` (the fingerprint), `medmae dataset check` and the checks at
//! the start of training.

use std::collections::BTreeMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::datasets::Case;
use crate::error::{ImagingError, Result};
use crate::orient;
use crate::volume::Volume;

/// Largest origin difference (mm), relative spacing difference and direction-cosine difference under which a label
/// map counts as being on its image's grid.
pub const GRID_TOLERANCE: f64 = 1e-3;

/// Imaging modality of a channel, as far as planning cares: CT intensities are calibrated (Hounsfield units), the
/// others are not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "name")]
pub enum Modality {
    /// Computed tomography (Hounsfield units).
    Ct,
    /// Magnetic resonance (any sequence: T1, T2, FLAIR, ...).
    Mr,
    /// Anything else, with the name it was given (normalised like MR).
    Other(String),
}

impl Modality {
    /// Classify a modality name from `dataset.json` or the command line (case-insensitive): `CT` is CT; `MR`,
    /// `MRI` and the usual sequence names (T1, T1w, T1Gd, T1ce, T2, T2w, FLAIR, ADC, DWI, PD, SWI) are MR.
    pub fn parse(name: &str) -> Self {
        let n = name.trim().to_ascii_uppercase();
        const MR: [&str; 14] = [
            "MR", "MRI", "T1", "T1W", "T1GD", "T1CE", "T1C", "T2", "T2W", "FLAIR", "ADC", "DWI",
            "PD", "SWI",
        ];
        if n == "CT" {
            Modality::Ct
        } else if MR.contains(&n.as_str()) {
            Modality::Mr
        } else {
            Modality::Other(name.trim().to_string())
        }
    }

    /// Short display name.
    pub fn name(&self) -> &str {
        match self {
            Modality::Ct => "CT",
            Modality::Mr => "MR",
            Modality::Other(s) => s,
        }
    }
}

/// Limits of a fingerprint scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FingerprintOptions {
    /// Most values per channel each case adds to the foreground pool and to the all-voxel pool.
    pub max_samples_per_case: usize,
}

impl Default for FingerprintOptions {
    fn default() -> Self {
        Self {
            max_samples_per_case: 100_000,
        }
    }
}

/// Intensity statistics of a pool of values (numpy conventions, see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntensityStats {
    /// Values in the pool.
    pub count: u64,
    /// Smallest value.
    pub min: f64,
    /// 0.5th percentile.
    pub p00_5: f64,
    /// Median.
    pub p50: f64,
    /// 99.5th percentile.
    pub p99_5: f64,
    /// Largest value.
    pub max: f64,
    /// Mean.
    pub mean: f64,
    /// Standard deviation (ddof 0).
    pub std: f64,
}

impl IntensityStats {
    /// Statistics of `values` (sorted in place; NaNs are dropped first); `None` for an empty pool.
    pub fn from_values(values: &mut Vec<f32>) -> Option<Self> {
        values.retain(|v| !v.is_nan());
        if values.is_empty() {
            return None;
        }
        values.sort_unstable_by(f32::total_cmp);
        let n = values.len() as f64;
        let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = values
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        Some(Self {
            count: values.len() as u64,
            min: f64::from(values[0]),
            p00_5: percentile_sorted(values, 0.5),
            p50: percentile_sorted(values, 50.0),
            p99_5: percentile_sorted(values, 99.5),
            max: f64::from(values[values.len() - 1]),
            mean,
            std: var.sqrt(),
        })
    }
}

/// numpy's `percentile(x, q)` (method `linear`) of an ascending, non-empty slice.
pub fn percentile_sorted(sorted: &[f32], q: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return f64::NAN;
    };
    let pos = (q / 100.0).clamp(0.0, 1.0) * last as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(last);
    let t = pos - lo as f64;
    let (a, b) = (f64::from(sorted[lo]), f64::from(sorted[hi]));
    // numpy's `_lerp`: a + (b - a) t, evaluated from the upper end when t ≥ 0.5.
    if t >= 0.5 {
        b - (b - a) * (1.0 - t)
    } else {
        a + (b - a) * t
    }
}

/// Every k-th element (k = ceil(n / max)) of `values`, so that at most `max` remain.
pub fn strided_sample(values: Vec<f32>, max: usize) -> Vec<f32> {
    if values.len() <= max || max == 0 {
        return values;
    }
    let k = values.len().div_ceil(max);
    values.into_iter().step_by(k).collect()
}

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
        .any(|(x, y)| !((x - y).abs() <= GRID_TOLERANCE * x.abs().max(y.abs())))
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
        .any(|(x, y)| !((x - y).abs() <= GRID_TOLERANCE))
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

/// How often a label value occurs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelStat {
    /// Name from `dataset.json` (empty when it names none).
    pub name: String,
    /// Voxels with this value over all cases.
    pub voxels: u64,
    /// Cases that contain it.
    pub cases: usize,
    /// Share of all labelled voxels.
    pub fraction: f64,
}

/// The fingerprint of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetFingerprint {
    /// Dataset name.
    pub name: String,
    /// Modality per image channel.
    pub modality: Vec<Modality>,
    /// Where the modality came from (`dataset.json`, `--modality`, or a guess and its reason).
    pub modality_source: String,
    /// Every case.
    pub cases: Vec<CaseFingerprint>,
    /// Label values found (with `dataset.json`'s names).
    pub labels: BTreeMap<u32, LabelStat>,
    /// Label values `dataset.json` declares that no case contains.
    pub missing_labels: Vec<u32>,
    /// Median spacing per RAS axis (mm).
    pub median_spacing: [f64; 3],
    /// Median shape per RAS axis (voxels).
    pub median_shape: [f64; 3],
    /// Cases per orientation code (`RAS`, `LPS`, ...).
    pub orientations: BTreeMap<String, usize>,
    /// Per channel, statistics of the foreground (label > 0) intensities; `None` without labelled foreground.
    pub foreground: Vec<Option<IntensityStats>>,
    /// Per channel, statistics of all voxels' intensities.
    pub intensity: Vec<Option<IntensityStats>>,
}

/// Median of a non-empty list (the mean of the two middle values for an even count, as numpy).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Fingerprint a list of cases (read in parallel). `declared` are `dataset.json`'s label names, `modality` its
/// modality names per channel (an empty list: guessed from the intensities, see [`guess_modality`]). Errors when a
/// case cannot be read, has problems ([`CaseFingerprint::problems`]), has a label value `declared` does not list, or
/// when the cases have different channel counts.
pub fn fingerprint(
    name: &str,
    cases: &[Case],
    declared: &BTreeMap<u32, String>,
    modality: &[String],
    opts: &FingerprintOptions,
) -> Result<DatasetFingerprint> {
    if cases.is_empty() {
        return Err(ImagingError::config("cases", "the dataset has no cases"));
    }
    let scans: Vec<CaseScan> = cases
        .par_iter()
        .map(|c| scan_case(c, opts))
        .collect::<Result<_>>()?;
    summarize(name, scans, declared, modality)
}

/// [`fingerprint`] of cases already scanned.
pub fn summarize(
    name: &str,
    scans: Vec<CaseScan>,
    declared: &BTreeMap<u32, String>,
    modality: &[String],
) -> Result<DatasetFingerprint> {
    let channels = scans.first().map_or(1, |s| s.fingerprint.channels);
    for s in &scans {
        let f = &s.fingerprint;
        if let Some(p) = f.problems.first() {
            return Err(ImagingError::config(
                format!("case {}", f.id),
                format!("{p} (`medmae dataset check` lists every problem)"),
            ));
        }
        if f.channels != channels {
            return Err(ImagingError::config(
                format!("case {}", f.id),
                format!(
                    "{} image channels, but case {} has {channels}",
                    f.channels, scans[0].fingerprint.id
                ),
            ));
        }
        if !declared.is_empty() {
            if let Some(v) = f.labels.keys().find(|v| !declared.contains_key(v)) {
                return Err(ImagingError::config(
                    format!("case {}", f.id),
                    format!(
                        "label value {v} is not declared in dataset.json's `labels` ({:?})",
                        declared.keys().collect::<Vec<_>>()
                    ),
                ));
            }
        }
    }
    let mut labels: BTreeMap<u32, LabelStat> = BTreeMap::new();
    for s in &scans {
        for (&v, &n) in &s.fingerprint.labels {
            let e = labels.entry(v).or_insert_with(|| LabelStat {
                name: declared.get(&v).cloned().unwrap_or_default(),
                voxels: 0,
                cases: 0,
                fraction: 0.0,
            });
            e.voxels += n;
            e.cases += 1;
        }
    }
    let total: u64 = labels.values().map(|l| l.voxels).sum();
    for l in labels.values_mut() {
        l.fraction = if total > 0 {
            l.voxels as f64 / total as f64
        } else {
            0.0
        };
    }
    let missing_labels = declared
        .keys()
        .filter(|k| !labels.contains_key(k))
        .copied()
        .collect();
    let per_axis = |f: &dyn Fn(&CaseFingerprint) -> f64| {
        median(&scans.iter().map(|s| f(&s.fingerprint)).collect::<Vec<_>>())
    };
    let median_spacing = [0, 1, 2].map(|a| per_axis(&|c| c.ras_spacing[a]));
    let median_shape = [0, 1, 2].map(|a| per_axis(&|c| c.ras_shape[a] as f64));
    let mut orientations = BTreeMap::new();
    for s in &scans {
        *orientations
            .entry(s.fingerprint.axcodes.clone())
            .or_insert(0) += 1;
    }
    let pool = |pick: &dyn Fn(&CaseScan) -> &Vec<Vec<f32>>| -> Vec<Option<IntensityStats>> {
        (0..channels)
            .map(|c| {
                let mut v: Vec<f32> = scans
                    .iter()
                    .flat_map(|s| pick(s).get(c).into_iter().flatten().copied())
                    .collect();
                IntensityStats::from_values(&mut v)
            })
            .collect()
    };
    let foreground = pool(&|s| &s.foreground);
    let intensity = pool(&|s| &s.all);
    let (modality, modality_source) = if modality.is_empty() {
        let m = guess_modality(intensity.first().and_then(Option::as_ref));
        (vec![m.0; channels], format!("guessed: {}", m.1))
    } else {
        if modality.len() != channels {
            return Err(ImagingError::config(
                "modality",
                format!(
                    "{} modality names for {channels} image channel(s)",
                    modality.len()
                ),
            ));
        }
        (
            modality.iter().map(|m| Modality::parse(m)).collect(),
            "dataset.json".to_string(),
        )
    };
    Ok(DatasetFingerprint {
        name: name.to_string(),
        modality,
        modality_source,
        cases: scans.into_iter().map(|s| s.fingerprint).collect(),
        labels,
        missing_labels,
        median_spacing,
        median_shape,
        orientations,
        foreground,
        intensity,
    })
}

/// Intensity below which a volume is taken for CT (Hounsfield units: air is −1000).
pub const CT_GUESS_BELOW: f64 = -500.0;

/// A modality for data whose `dataset.json` names none: CT when the 0.5th percentile of all intensities is below
/// [`CT_GUESS_BELOW`] (air in Hounsfield units), otherwise "unknown" (normalised like MR). Returns the reason too.
pub fn guess_modality(all: Option<&IntensityStats>) -> (Modality, String) {
    match all {
        Some(s) if s.p00_5 < CT_GUESS_BELOW => (
            Modality::Ct,
            format!(
                "CT, because the 0.5th intensity percentile {:.1} is below {CT_GUESS_BELOW} (air in HU)",
                s.p00_5
            ),
        ),
        _ => (
            Modality::Other("unknown".into()),
            "not CT (no intensities below -500); normalised like MR".into(),
        ),
    }
}

impl DatasetFingerprint {
    /// Number of image channels.
    pub fn channels(&self) -> usize {
        self.modality.len().max(1)
    }

    /// A plain-text report: one line per case, then the dataset summary.
    pub fn table(&self) -> String {
        let mut s = format!(
            "dataset `{}`: {} case(s), {} channel(s), modality {} ({})\n",
            self.name,
            self.cases.len(),
            self.channels(),
            self.modality
                .iter()
                .map(Modality::name)
                .collect::<Vec<_>>()
                .join("/"),
            self.modality_source
        );
        s += &format!(
            "{:<24} {:>5} {:>16} {:>22} {:>16} {:>22}  labels (voxels)\n",
            "case", "axes", "shape", "spacing (mm)", "RAS shape", "RAS spacing (mm)"
        );
        let dims = |v: [usize; 3]| format!("{}x{}x{}", v[0], v[1], v[2]);
        let mm = |v: [f64; 3]| format!("{:.3}x{:.3}x{:.3}", v[0], v[1], v[2]);
        for c in &self.cases {
            let labels = c
                .labels
                .iter()
                .map(|(k, n)| format!("{k}:{n}"))
                .collect::<Vec<_>>()
                .join(" ");
            s += &format!(
                "{:<24} {:>5} {:>16} {:>22} {:>16} {:>22}  {labels}\n",
                c.id,
                c.axcodes,
                dims(c.shape),
                mm(c.spacing),
                dims(c.ras_shape),
                mm(c.ras_spacing)
            );
        }
        s += &format!(
            "median RAS spacing {} mm, median RAS shape {:.0}x{:.0}x{:.0}; orientations {}\n",
            mm(self.median_spacing),
            self.median_shape[0],
            self.median_shape[1],
            self.median_shape[2],
            self.orientations
                .iter()
                .map(|(k, n)| format!("{k}×{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        s += "label  name                      voxels      share  cases\n";
        for (v, l) in &self.labels {
            s += &format!(
                "{v:>5}  {:<22} {:>10} {:>9.4}% {:>6}\n",
                l.name,
                l.voxels,
                100.0 * l.fraction,
                l.cases
            );
        }
        if !self.missing_labels.is_empty() {
            s += &format!("declared but never found: {:?}\n", self.missing_labels);
        }
        s += "channel  pool         p0.5       p50     p99.5      mean       std        min       max\n";
        for c in 0..self.channels() {
            for (pool, st) in [
                ("foreground", self.foreground.get(c)),
                ("all voxels", self.intensity.get(c)),
            ] {
                if let Some(Some(t)) = st {
                    s += &format!(
                        "{c:>7}  {pool:<10} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>10.2} {:>9.2}\n",
                        t.p00_5, t.p50, t.p99_5, t.mean, t.std, t.min, t.max
                    );
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    #[test]
    fn percentiles_match_numpy_linear_by_hand() {
        // np.percentile([1, 2, 3, 4], [0, 0.5, 50, 99.5, 100]) = [1, 1.015, 2.5, 3.985, 4]
        let v = [1.0f32, 2.0, 3.0, 4.0];
        let got: Vec<f64> = [0.0, 0.5, 50.0, 99.5, 100.0]
            .iter()
            .map(|&q| percentile_sorted(&v, q))
            .collect();
        for (g, w) in got.iter().zip([1.0, 1.015, 2.5, 3.985, 4.0]) {
            assert!((g - w).abs() < 1e-12, "{got:?}");
        }
        assert_eq!(percentile_sorted(&[7.0], 99.5), 7.0);
        assert!(percentile_sorted(&[], 50.0).is_nan());
    }

    #[test]
    fn stats_mean_std_and_nan() {
        let mut v = vec![2.0f32, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0, f32::NAN];
        let s = IntensityStats::from_values(&mut v).unwrap();
        assert_eq!((s.count, s.mean, s.std), (8, 5.0, 2.0));
        assert_eq!((s.min, s.max, s.p50), (2.0, 9.0, 4.5));
        assert!(IntensityStats::from_values(&mut Vec::new()).is_none());
    }

    #[test]
    fn strided_sampling_keeps_every_kth() {
        let v: Vec<f32> = (0..10).map(|i| i as f32).collect();
        assert_eq!(strided_sample(v.clone(), 4), vec![0.0, 3.0, 6.0, 9.0]);
        assert_eq!(strided_sample(v.clone(), 10), v);
        assert_eq!(strided_sample(v, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0]);
    }

    #[test]
    fn modality_names_and_guess() {
        assert_eq!(Modality::parse(" ct "), Modality::Ct);
        assert_eq!(Modality::parse("FLAIR"), Modality::Mr);
        assert_eq!(Modality::parse("T1Gd"), Modality::Mr);
        assert_eq!(Modality::parse("PET"), Modality::Other("PET".into()));
        let mut hu: Vec<f32> = (0..1000).map(|i| -1024.0 + i as f32).collect();
        let s = IntensityStats::from_values(&mut hu).unwrap();
        assert_eq!(guess_modality(Some(&s)).0, Modality::Ct);
        let mut mr: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        let s = IntensityStats::from_values(&mut mr).unwrap();
        assert!(matches!(guess_modality(Some(&s)).0, Modality::Other(_)));
    }

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

    #[test]
    fn summary_medians_labels_and_undeclared_values() {
        let mk = |id: &str, sp: [f64; 3], classes: &[f32]| {
            let img = Volume::new(
                Array4::from_elem((1, 2, 2, 2), 1.0),
                Volume::diag_affine(sp),
            );
            let mut lab = Volume::new(Array4::zeros((1, 2, 2, 2)), img.affine);
            for (i, &c) in classes.iter().enumerate() {
                lab.data[[0, i, 0, 0]] = c;
            }
            scan_volumes(id, &img, Some(&lab), &FingerprintOptions::default())
        };
        let scans = vec![
            mk("a", [1.0, 1.0, 5.0], &[1.0]),
            mk("b", [2.0, 1.0, 3.0], &[1.0, 2.0]),
            mk("c", [3.0, 1.0, 4.0], &[]),
            mk("d", [4.0, 1.0, 1.0], &[]),
        ];
        let declared: BTreeMap<u32, String> = [(0, "bg"), (1, "one"), (2, "two"), (3, "three")]
            .map(|(k, v)| (k, v.to_string()))
            .into();
        let f = summarize("t", scans.clone(), &declared, &["CT".into()]).unwrap();
        assert_eq!(f.median_spacing, [2.5, 1.0, 3.5]);
        assert_eq!(f.labels[&1].cases, 2);
        assert_eq!(f.labels[&2].name, "two");
        assert_eq!(f.missing_labels, vec![3]);
        assert_eq!(f.modality, vec![Modality::Ct]);
        assert!(f.table().contains("declared but never found: [3]"));
        let few: BTreeMap<u32, String> = [(0, "bg".to_string()), (1, "one".to_string())].into();
        let err = summarize("t", scans, &few, &[]).unwrap_err().to_string();
        assert!(
            err.contains("case b") && err.contains("label value 2"),
            "{err}"
        );
    }
}
