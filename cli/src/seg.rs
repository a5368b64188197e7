//! `medmae seg`: a label map → DICOM SEG referencing its source series.

use std::path::PathBuf;

use anyhow::{Context, Result};
use imaging::dicom::{self, DicomOptions, SegOptions, Segment};

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
pub(crate) fn run(a: &SegArgs) -> Result<()> {
    let source = dicom::read_series_with(&a.source, a.series.as_deref(), &DicomOptions::default())
        .with_context(|| format!("cannot read DICOM source {}", a.source.display()))?;
    let labels = imaging::io::load(&a.labels)
        .with_context(|| format!("cannot read {}", a.labels.display()))?;
    // A label map saved in another axis order (e.g. RAS after inference) is brought back onto the source grid.
    let codes: String = imaging::orient::axcodes(&source.volume.affine)
        .iter()
        .collect();
    let (labels, _) = imaging::orient::reorient(&labels, &codes).with_context(|| {
        format!(
            "cannot reorient {} to the source's {codes}",
            a.labels.display()
        )
    })?;
    let mut values: Vec<u16> = Vec::new();
    for &v in labels.data.iter() {
        if v == 0.0 {
            continue;
        }
        if v.fract() != 0.0 || !(1.0..=65535.0).contains(&v) {
            anyhow::bail!(
                "{}: label value {v} is not an integer in 1..=65535",
                a.labels.display()
            );
        }
        let v = v as u16;
        if !values.contains(&v) {
            values.push(v);
            if values.len() > 255 {
                anyhow::bail!("{}: more than 255 distinct labels", a.labels.display());
            }
        }
    }
    values.sort_unstable();
    let segments: Vec<Segment> = values
        .iter()
        .map(|&l| {
            let name = a
                .names
                .get(usize::from(l) - 1)
                .cloned()
                .unwrap_or_else(|| format!("label {l}"));
            Segment::generic(l, &name)
        })
        .collect();
    let opts = SegOptions {
        anonymize: a.anonymize,
        ..Default::default()
    };
    dicom::write_seg(&labels, &source, &segments, &opts, &a.output)
        .with_context(|| format!("cannot write DICOM SEG {}", a.output.display()))?;
    eprintln!("wrote {} ({} segments)", a.output.display(), segments.len());
    Ok(())
}
