//! `medmae seg`: a label map → DICOM SEG referencing its source series.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use imaging::dicom::{self, DicomOptions, SegOptions, Segment};
use imaging::io::LoadOptions;

use crate::load::grid;

/// Resolved arguments of `medmae seg`.
pub(crate) struct SegArgs {
    pub source: PathBuf,
    pub series: Option<String>,
    pub labels: PathBuf,
    pub names: Vec<String>,
    pub anonymize: bool,
    pub output: PathBuf,
}

/// Run `medmae seg`.
pub(crate) fn run(a: &SegArgs, opts: &LoadOptions) -> Result<()> {
    let source = dicom::read_series_with(&a.source, a.series.as_deref(), &DicomOptions::default())?;
    let labels = imaging::io::load_with(&a.labels, opts)?;
    let lp = a.labels.display();
    if labels.channels() != 1 {
        bail!(
            "{lp}: the label map has {} channels; expected one channel of integer labels",
            labels.channels()
        );
    }
    // A label map saved in another axis order (e.g. RAS after inference) is brought back onto the source grid.
    let codes: String = imaging::orient::axcodes(&source.volume.affine)
        .iter()
        .collect();
    let want = source.volume.spatial_shape();
    let (labels, _) = imaging::orient::reorient(&labels, &codes).map_err(|e| {
        anyhow::anyhow!("{lp}: cannot reorient the label map to the source's {codes}: {e}")
    })?;
    if labels.spatial_shape() != want {
        bail!(
            "{lp}: the label map's grid is {} in the source's axis order ({codes}); expected the source series grid \
             {} (resample the labels onto the source first)",
            grid(labels.spatial_shape()),
            grid(want)
        );
    }
    check_affine(&a.labels, &labels.affine, &source.volume)?;
    let segments = segments(&a.labels, &labels, &a.names)?;
    let seg_opts = SegOptions {
        anonymize: a.anonymize,
        ..Default::default()
    };
    dicom::write_seg(&labels, &source, &segments, &seg_opts, &a.output)?;
    eprintln!("wrote {} ({} segments)", a.output.display(), segments.len());
    Ok(())
}

/// The label map must sit where the source series is (same voxel-to-world map, within a thousandth of a voxel).
fn check_affine(path: &Path, affine: &[[f64; 4]; 4], source: &imaging::Volume) -> Result<()> {
    let tol = 1e-3 * source.spacing().iter().cloned().fold(1.0, f64::max);
    for r in 0..3 {
        for c in 0..4 {
            let (l, s) = (affine[r][c], source.affine[r][c]);
            if !((l - s).abs() <= tol) {
                bail!(
                    "{}: the label map's affine differs from the source series' at row {r}, column {c}: {l} vs \
                     {s}; expected the source's geometry",
                    path.display()
                );
            }
        }
    }
    Ok(())
}

/// One segment per distinct non-zero label, named from `names` (label N takes the N-th name).
fn segments(path: &Path, labels: &imaging::Volume, names: &[String]) -> Result<Vec<Segment>> {
    let mut values: Vec<u16> = Vec::new();
    for &v in labels.data.iter() {
        if v == 0.0 {
            continue;
        }
        if v.fract() != 0.0 || !(1.0..=65535.0).contains(&v) {
            bail!(
                "{}: label value {v} is not an integer in 1..=65535",
                path.display()
            );
        }
        let v = v as u16;
        if !values.contains(&v) {
            values.push(v);
            if values.len() > 255 {
                bail!("{}: more than 255 distinct labels", path.display());
            }
        }
    }
    values.sort_unstable();
    Ok(values
        .iter()
        .map(|&l| {
            let name = names
                .get(usize::from(l) - 1)
                .cloned()
                .unwrap_or_else(|| format!("label {l}"));
            Segment::generic(l, &name)
        })
        .collect())
}
