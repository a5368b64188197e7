//! Problems of a dataset found before a training run finds them: missing or unreadable files, label maps off their
//! image's grid, label values that are not class ids or that `dataset.json` does not declare, channel counts that
//! differ from the declared modalities, mixed orientations and very different spacings.
//!
//! Used by `medmae dataset check` (every case) and by the checks at the start of training (a sample of cases).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::Case;
use crate::fingerprint::{scan_case, CaseScan, FingerprintOptions};

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Training would fail or learn from wrong data.
    Error,
    /// Works, but probably not what was meant.
    Warning,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// The case it concerns (`None` for the dataset as a whole).
    pub case: Option<String>,
    /// What is wrong, with the evidence.
    pub message: String,
}

/// Spacing ratio (largest / smallest case, per axis) above which the spacings are reported as very different.
pub const SPACING_SPREAD_WARNING: f64 = 3.0;

/// The result of an audit: the problems, and the scans of the cases that could be read.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    /// Problems, errors first.
    pub problems: Vec<Problem>,
    /// The scans of the readable labelled cases (for further checks).
    pub scans: Vec<CaseScan>,
}

impl Audit {
    /// Number of errors.
    pub fn errors(&self) -> usize {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .count()
    }

    fn push(&mut self, severity: Severity, case: Option<&str>, message: String) {
        self.problems.push(Problem {
            severity,
            case: case.map(str::to_string),
            message,
        });
    }
}

/// Audit labelled `cases` (read in full) and unlabelled `unlabelled` ones (headers only) against the declared
/// label names (`dataset.json` `labels`; empty = anything goes) and channel count (0 = not declared).
pub fn audit(
    cases: &[Case],
    unlabelled: &[Case],
    declared: &BTreeMap<u32, String>,
    declared_channels: usize,
    opts: &FingerprintOptions,
) -> Audit {
    let mut a = Audit::default();
    for c in cases.iter().chain(unlabelled) {
        for p in c.images.iter().chain(&c.label) {
            if !p.is_file() {
                a.push(
                    Severity::Error,
                    Some(&c.id),
                    format!("file {} does not exist", p.display()),
                );
            }
        }
    }
    let missing: BTreeSet<String> = a.problems.iter().filter_map(|p| p.case.clone()).collect();
    for c in unlabelled.iter().filter(|c| !missing.contains(&c.id)) {
        for p in &c.images {
            if let Err(e) = crate::io::probe(p) {
                a.push(Severity::Error, Some(&c.id), e.to_string());
            }
        }
    }
    for c in cases.iter().filter(|c| !missing.contains(&c.id)) {
        if c.label.is_none() {
            a.push(
                Severity::Error,
                Some(&c.id),
                "a training case without a label map".into(),
            );
            continue;
        }
        match scan_case(c, opts) {
            Ok(s) => a.scans.push(s),
            Err(e) => a.push(Severity::Error, Some(&c.id), e.to_string()),
        }
    }
    check_scans(&mut a, declared, declared_channels);
    a.problems.sort_by_key(|p| p.severity);
    a
}

fn check_scans(a: &mut Audit, declared: &BTreeMap<u32, String>, declared_channels: usize) {
    let mut found = BTreeSet::new();
    let mut orientations: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut findings = Vec::new();
    for s in &a.scans {
        let f = &s.fingerprint;
        for p in &f.problems {
            findings.push((Severity::Error, Some(f.id.clone()), p.clone()));
        }
        if declared_channels > 0 && f.channels != declared_channels {
            findings.push((
                Severity::Error,
                Some(f.id.clone()),
                format!(
                    "{} image channel(s), dataset.json's `modality` declares {declared_channels}",
                    f.channels
                ),
            ));
        }
        if !declared.is_empty() {
            let extra: Vec<u32> = f
                .labels
                .keys()
                .filter(|v| !declared.contains_key(v))
                .copied()
                .collect();
            if !extra.is_empty() {
                findings.push((
                    Severity::Error,
                    Some(f.id.clone()),
                    format!(
                        "label value(s) {extra:?} are not declared in dataset.json's `labels` {:?}",
                        declared.keys().collect::<Vec<_>>()
                    ),
                ));
            }
        }
        if f.shape[2] == 1 {
            findings.push((
                Severity::Warning,
                Some(f.id.clone()),
                format!("a 2-D image ({}x{}x1)", f.shape[0], f.shape[1]),
            ));
        }
        found.extend(f.labels.keys().copied());
        orientations
            .entry(f.axcodes.clone())
            .or_default()
            .push(f.id.clone());
    }
    for (sev, case, msg) in findings {
        a.push(sev, case.as_deref(), msg);
    }
    let never: Vec<u32> = declared
        .keys()
        .filter(|k| !found.contains(k))
        .copied()
        .collect();
    if !never.is_empty() && !a.scans.is_empty() {
        a.push(
            Severity::Warning,
            None,
            format!(
                "declared label value(s) {never:?} occur in none of the {} readable case(s)",
                a.scans.len()
            ),
        );
    }
    if orientations.len() > 1 {
        let list = orientations
            .iter()
            .map(|(k, ids)| format!("{k} ({} case(s), e.g. {})", ids.len(), ids[0]))
            .collect::<Vec<_>>()
            .join(", ");
        a.push(
            Severity::Warning,
            None,
            format!(
                "mixed orientations: {list}; keep an `Orientation` transform (RAS) in the pipeline"
            ),
        );
    }
    for axis in 0..3 {
        let sp: Vec<(f64, &str)> = a
            .scans
            .iter()
            .map(|s| (s.fingerprint.ras_spacing[axis], s.fingerprint.id.as_str()))
            .collect();
        let lo = sp.iter().min_by(|x, y| x.0.total_cmp(&y.0));
        let hi = sp.iter().max_by(|x, y| x.0.total_cmp(&y.0));
        if let (Some(lo), Some(hi)) = (lo, hi) {
            if lo.0 > 0.0 && hi.0 / lo.0 > SPACING_SPREAD_WARNING {
                let msg = format!(
                    "spacing along RAS axis {axis} ranges from {:.3} mm ({}) to {:.3} mm ({}); a `Spacing` transform resamples them to one grid",
                    lo.0, lo.1, hi.0, hi.1
                );
                a.push(Severity::Warning, None, msg);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Volume;
    use ndarray::Array4;

    fn write(dir: &std::path::Path, id: &str, affine: [[f64; 4]; 4], label_value: f32) -> Case {
        let img = Volume::new(Array4::from_elem((1, 4, 4, 3), 1.0), affine);
        let mut lab = Volume::new(Array4::zeros((1, 4, 4, 3)), affine);
        lab.data[[0, 1, 1, 1]] = label_value;
        let (ip, lp) = (
            dir.join(format!("{id}.nii.gz")),
            dir.join(format!("{id}_seg.nii.gz")),
        );
        crate::io::save(&img, &ip).unwrap();
        crate::io::save(&lab, &lp).unwrap();
        Case {
            id: id.into(),
            images: vec![ip],
            label: Some(lp),
        }
    }

    #[test]
    fn finds_missing_files_undeclared_labels_and_mixed_orientations() {
        let t = tempfile::tempdir().unwrap();
        let ras = Volume::diag_affine([1.0, 1.0, 2.0]);
        let mut lps = ras;
        lps[0][0] = -1.0;
        lps[1][1] = -1.0;
        let mut cases = vec![
            write(t.path(), "a", ras, 1.0),
            write(t.path(), "b", lps, 3.0),
            write(t.path(), "c", ras, 1.5),
        ];
        cases.push(Case {
            id: "gone".into(),
            images: vec![t.path().join("gone.nii.gz")],
            label: Some(t.path().join("gone_seg.nii.gz")),
        });
        let declared: BTreeMap<u32, String> = [
            (0, "bg".to_string()),
            (1, "fg".to_string()),
            (2, "x".to_string()),
        ]
        .into();
        let a = audit(&cases, &[], &declared, 1, &FingerprintOptions::default());
        let text: Vec<String> = a
            .problems
            .iter()
            .map(|p| format!("{:?} {:?} {}", p.severity, p.case, p.message))
            .collect();
        let has = |s: &str| text.iter().any(|t| t.contains(s));
        assert!(has("Error Some(\"gone\") file"), "{text:#?}");
        assert!(
            has("Error Some(\"b\") label value(s) [3] are not declared"),
            "{text:#?}"
        );
        assert!(has("Error Some(\"c\") label value 1.5"), "{text:#?}");
        assert!(
            has("Warning None mixed orientations: LPS (1 case(s), e.g. b), RAS"),
            "{text:#?}"
        );
        assert!(has("Warning None declared label value(s) [2]"), "{text:#?}");
        assert_eq!(a.errors(), 4, "{text:#?}");
        assert_eq!(a.problems[0].severity, Severity::Error);
    }

    #[test]
    fn finds_grid_mismatch_and_channel_count() {
        let t = tempfile::tempdir().unwrap();
        let ras = Volume::diag_affine([1.0, 1.0, 2.0]);
        let c = write(t.path(), "a", ras, 1.0);
        let mut shifted = crate::io::load(c.label.as_ref().unwrap()).unwrap();
        shifted.affine[2][3] = 4.0;
        crate::io::save(&shifted, c.label.as_ref().unwrap()).unwrap();
        let a = audit(
            &[c],
            &[],
            &BTreeMap::new(),
            2,
            &FingerprintOptions::default(),
        );
        let msgs: Vec<&str> = a.problems.iter().map(|p| p.message.as_str()).collect();
        assert!(
            msgs.iter()
                .any(|m| m.contains("not on the image grid: origin")),
            "{msgs:?}"
        );
        assert!(msgs.iter().any(|m| m.contains("declares 2")), "{msgs:?}");
    }
}
