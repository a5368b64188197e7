//! `medmae info`: a volume's facts as text or JSON (like `fslhd`, `nib-ls`, `mrinfo`).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use imaging::Volume;
use serde::Serialize;

/// Most distinct values listed as labels; images with more are treated as intensities only.
const MAX_LABELS: usize = 256;

/// Intensity statistics over all voxels and channels.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct Stats {
    min: f64,
    max: f64,
    mean: f64,
    std: f64,
    nonzero: u64,
    non_finite: u64,
}

/// Everything `info` reports.
#[derive(Debug, Serialize)]
pub(crate) struct Facts {
    path: String,
    format: String,
    dtype: Option<String>,
    shape: [usize; 3],
    channels: usize,
    spacing: [f64; 3],
    origin: [f64; 3],
    direction: [[f64; 3]; 3],
    affine_ras: [[f64; 4]; 4],
    axcodes: String,
    stats: Stats,
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

/// Gather the facts of an input.
pub(crate) fn facts(input: &Path, series: Option<&str>) -> Result<Facts> {
    let (vol, format) = crate::load_any(input, series)?;
    let dtype = if format == "dicom" {
        Some("float32 (rescaled)".to_string())
    } else {
        imaging::io::probe(input)
            .ok()
            .map(|h| format!("{:?}", h.dtype).to_lowercase())
    };
    Ok(Facts {
        path: input.display().to_string(),
        format,
        dtype,
        shape: vol.spatial_shape(),
        channels: vol.channels(),
        spacing: vol.spacing(),
        origin: vol.origin(),
        direction: vol.direction(),
        affine_ras: vol.affine,
        axcodes: imaging::orient::axcodes(&vol.affine).iter().collect(),
        stats: stats(&vol),
        labels: labels(&vol),
    })
}

fn fmt3(v: [f64; 3]) -> String {
    format!("{:.6} {:.6} {:.6}", v[0], v[1], v[2])
}

/// Run `medmae info`.
pub(crate) fn run(input: &Path, series: Option<&str>, json: bool) -> Result<()> {
    let f = facts(input, series)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&f)?);
        return Ok(());
    }
    println!("path        {}", f.path);
    println!("format      {}", f.format);
    println!("dtype       {}", f.dtype.as_deref().unwrap_or("-"));
    println!(
        "shape       {} x {} x {}",
        f.shape[0], f.shape[1], f.shape[2]
    );
    println!("channels    {}", f.channels);
    println!("spacing     {}", fmt3(f.spacing));
    println!("origin      {}", fmt3(f.origin));
    for (i, row) in f.direction.iter().enumerate() {
        println!(
            "{}{}",
            if i == 0 {
                "direction   "
            } else {
                "            "
            },
            fmt3(*row)
        );
    }
    for (i, row) in f.affine_ras.iter().enumerate() {
        let r = format!("{:.6} {:.6} {:.6} {:.6}", row[0], row[1], row[2], row[3]);
        println!(
            "{}{r}",
            if i == 0 {
                "affine RAS  "
            } else {
                "            "
            }
        );
    }
    println!("axcodes     {}", f.axcodes);
    let s = &f.stats;
    println!(
        "intensity   min {} max {} mean {:.6} std {:.6} nonzero {} non-finite {}",
        s.min, s.max, s.mean, s.std, s.nonzero, s.non_finite
    );
    if let Some(l) = &f.labels {
        let list: Vec<String> = l.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        println!("labels      {}", list.join(" "));
    }
    Ok(())
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
        assert_eq!((s.min, s.max, s.mean, s.nonzero), (0.0, 2.0, 1.0, 3));
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
