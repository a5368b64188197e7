//! `medmae info`: a volume's facts as text or JSON (like `fslhd`, `nib-ls`, `mrinfo`); a DICOM SEG's segments; a
//! folder of images as one line per file.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use imaging::io::{LoadOptions, StoredAxes, TimeUnit};
use imaging::Volume;
use serde::Serialize;

use crate::load::{grid, load_any};

/// Most distinct values listed as labels; images with more are treated as intensities only.
const MAX_LABELS: usize = 256;

/// Intensity statistics over all voxels and channels.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct Stats {
    min: f64,
    max: f64,
    mean: f64,
    std: f64,
    sum: f64,
    nonzero: u64,
    non_finite: u64,
}

/// Everything `info` reports for a volume.
#[derive(Debug, Serialize)]
pub(crate) struct Facts {
    path: String,
    format: String,
    /// NIfTI header version (1 or 2).
    nifti_version: Option<u8>,
    /// Dimensions as stored in the file (a 2-D file has 2).
    dims: Vec<usize>,
    /// `dims.len()`.
    ndim: usize,
    /// Length of the 4th (time) axis, 1 if none.
    time: usize,
    /// Vector components per voxel, 1 for scalar images.
    components: usize,
    /// Step along the 4th axis (NIfTI pixdim[4]), if stored.
    time_step: Option<f64>,
    /// Unit of the 4th axis.
    time_unit: TimeUnit,
    dtype: Option<String>,
    /// `stored` (the file's voxel order) or the axis codes the volume was reoriented to (`--orient`, `--ras`).
    orientation: String,
    shape: [usize; 3],
    channels: usize,
    spacing: [f64; 3],
    origin: [f64; 3],
    direction: [[f64; 3]; 3],
    affine_ras: [[f64; 4]; 4],
    axcodes: String,
    stats: Stats,
    /// SHA-256 of the voxel values (see `Volume::checksum`), in the reported grid's order.
    checksum: String,
    /// Label value -> voxel count, for integer-valued images with few distinct values.
    labels: Option<BTreeMap<i64, u64>>,
}

/// Statistics of a volume (NaN/inf counted apart and left out of the moments).
pub(crate) fn stats(vol: &Volume) -> Stats {
    let (mut n, mut sum, mut sq) = (0u64, 0.0f64, 0.0f64);
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut nonzero, mut non_finite) = (0u64, 0u64);
    for &v in vol.data.iter() {
        let v = v as f64;
        if !v.is_finite() {
            non_finite += 1;
            continue;
        }
        n += 1;
        sum += v;
        sq += v * v;
        min = min.min(v);
        max = max.max(v);
        nonzero += u64::from(v != 0.0);
    }
    let mean = if n > 0 { sum / n as f64 } else { f64::NAN };
    let var = if n > 0 {
        (sq / n as f64 - mean * mean).max(0.0)
    } else {
        f64::NAN
    };
    Stats {
        min,
        max,
        mean,
        std: var.sqrt(),
        sum,
        nonzero,
        non_finite,
    }
}

/// Label counts if every value is an integer and there are at most [`MAX_LABELS`] distinct values.
pub(crate) fn labels(vol: &Volume) -> Option<BTreeMap<i64, u64>> {
    let mut counts = BTreeMap::new();
    for &v in vol.data.iter() {
        if !v.is_finite() || v.fract() != 0.0 || v.abs() > 1e15 {
            return None;
        }
        *counts.entry(v as i64).or_insert(0u64) += 1;
        if counts.len() > MAX_LABELS {
            return None;
        }
    }
    Some(counts)
}

/// Gather the facts of an input, reoriented to `orient` axis codes when given.
pub(crate) fn facts(
    input: &Path,
    series: Option<&str>,
    orient: Option<&str>,
    opts: &LoadOptions,
) -> Result<Facts> {
    let loaded = load_any(input, series, opts)?;
    let mut vol = loaded.volume;
    let orientation = match orient {
        Some(codes) => {
            vol = imaging::orient::reorient(&vol, codes)?.0;
            codes.to_ascii_uppercase()
        }
        None => "stored".into(),
    };
    let (dims, axes, dtype, version) = match &loaded.header {
        Some(h) => (
            h.dims.clone(),
            h.axes,
            Some(h.dtype.name().to_string()),
            h.nifti_version.map(|v| v.number()),
        ),
        None => (
            vol.spatial_shape().to_vec(),
            StoredAxes::time_series(vol.channels()),
            Some("f32 (rescaled)".to_string()),
            None,
        ),
    };
    Ok(Facts {
        path: input.display().to_string(),
        format: loaded.format,
        nifti_version: version,
        ndim: dims.len(),
        dims,
        time: axes.time,
        components: axes.components,
        time_step: axes.time_step,
        time_unit: axes.time_unit,
        dtype,
        orientation,
        shape: vol.spatial_shape(),
        channels: vol.channels(),
        spacing: vol.spacing(),
        origin: vol.origin(),
        direction: vol.direction(),
        affine_ras: vol.affine,
        axcodes: imaging::orient::axcodes(&vol.affine).iter().collect(),
        stats: stats(&vol),
        checksum: vol.checksum(),
        labels: labels(&vol),
    })
}

fn fmt3(v: [f64; 3]) -> String {
    format!("{:.6} {:.6} {:.6}", v[0], v[1], v[2])
}

/// Print the facts as text.
pub(crate) fn print(f: &Facts) {
    let version = f
        .nifti_version
        .map(|v| format!(" (NIfTI-{v})"))
        .unwrap_or_default();
    println!("path        {}", f.path);
    println!("format      {}{version}", f.format);
    println!("dtype       {}", f.dtype.as_deref().unwrap_or("-"));
    let dims: Vec<String> = f.dims.iter().map(|d| d.to_string()).collect();
    println!("dims        {} ({}-D as stored)", dims.join(" x "), f.ndim);
    if f.time > 1 || f.components > 1 {
        let step = f
            .time_step
            .map(|s| format!(", step {s} {:?}", f.time_unit).to_lowercase())
            .unwrap_or_default();
        println!(
            "channels    {} = {} time point(s){step} x {} vector component(s)",
            f.channels, f.time, f.components
        );
    } else {
        println!("channels    {}", f.channels);
    }
    println!("orientation {}", f.orientation);
    println!("shape       {}", grid(f.shape));
    println!("spacing     {}", fmt3(f.spacing));
    println!("origin      {}", fmt3(f.origin));
    for (i, row) in f.direction.iter().enumerate() {
        let lead = if i == 0 {
            "direction   "
        } else {
            "            "
        };
        println!("{lead}{}", fmt3(*row));
    }
    for (i, row) in f.affine_ras.iter().enumerate() {
        let lead = if i == 0 {
            "affine RAS  "
        } else {
            "            "
        };
        println!(
            "{lead}{:.6} {:.6} {:.6} {:.6}",
            row[0], row[1], row[2], row[3]
        );
    }
    println!("axcodes     {}", f.axcodes);
    let s = &f.stats;
    println!(
        "intensity   min {} max {} mean {:.6} std {:.6} sum {} nonzero {} non-finite {}",
        s.min, s.max, s.mean, s.std, s.sum, s.nonzero, s.non_finite
    );
    println!("checksum    sha256:{}", f.checksum);
    if let Some(l) = &f.labels {
        let list: Vec<String> = l.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        println!("labels      {}", list.join(" "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    #[test]
    fn stats_and_labels_by_hand() {
        let data = Array4::from_shape_vec((1, 2, 2, 1), vec![0.0, 1.0, 1.0, 2.0]).unwrap();
        let v = Volume::new(data, Volume::diag_affine([1.0; 3]));
        let s = stats(&v);
        assert_eq!(
            (s.min, s.max, s.mean, s.sum, s.nonzero),
            (0.0, 2.0, 1.0, 4.0, 3)
        );
        assert!((s.std - 0.5f64.sqrt()).abs() < 1e-12);
        assert_eq!(
            labels(&v).unwrap(),
            BTreeMap::from([(0, 1), (1, 2), (2, 1)])
        );
        let frac = Volume::new(
            Array4::from_elem((1, 1, 1, 1), 0.5),
            Volume::diag_affine([1.0; 3]),
        );
        assert!(labels(&frac).is_none());
    }
}
