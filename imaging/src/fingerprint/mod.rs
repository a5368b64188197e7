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

mod scan;
mod stats;

pub use scan::{
    grid_mismatch, grid_mismatch_parts, scan_case, scan_volumes, CaseFingerprint, CaseScan,
    GRID_TOLERANCE,
};
pub use stats::{median, percentile_sorted, strided_sample, IntensityStats};

use std::collections::BTreeMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::datasets::Case;
use crate::error::{ImagingError, Result};

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
    use crate::volume::Volume;
    use ndarray::Array4;

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
