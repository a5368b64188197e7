//! `medmae convert`: any input → NIfTI-1/NIfTI-2 or MetaImage, keeping the stored axes (2-D stays 2-D, a 4-D file
//! keeps its 4th axis with its step and unit, vector components stay components), optionally reoriented.

use std::path::Path;

use anyhow::{bail, Result};
use imaging::io::{FileFormat, LoadOptions, NiftiDtype, NiftiVersion, SaveOptions, StoredAxes};
use imaging::Volume;

use crate::load::{describe, load_any};

/// How `convert` stores the channels of its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ChannelAxis {
    /// As the input stores them (time axis, vector components, or both).
    Keep,
    /// All channels on a 4th (time) axis.
    Time,
    /// All channels as per-voxel vector components.
    Components,
}

/// Resolved arguments of `medmae convert`.
pub(crate) struct ConvertArgs<'a> {
    pub input: &'a Path,
    pub output: &'a Path,
    pub series: Option<&'a str>,
    pub dtype: &'a str,
    pub orient: Option<&'a str>,
    pub channels: ChannelAxis,
    pub nifti2: bool,
}

/// Run `medmae convert`.
pub(crate) fn run(a: &ConvertArgs, opts: &LoadOptions) -> Result<()> {
    let format = FileFormat::from_path(a.output).ok_or_else(|| {
        anyhow::anyhow!(
            "{}: unknown output extension; expected .nii, .nii.gz, .mha or .mhd",
            a.output.display()
        )
    })?;
    if a.nifti2 && !matches!(format, FileFormat::Nii | FileFormat::NiiGz) {
        bail!(
            "--nifti2 needs a .nii or .nii.gz output, not {}",
            a.output.display()
        );
    }
    let loaded = load_any(a.input, a.series, opts)?;
    let mut vol = loaded.volume;
    let mut axes = loaded.header.map(|h| h.axes);
    if let Some(codes) = a.orient {
        vol = imaging::orient::reorient(&vol, codes)?.0;
    }
    axes = match a.channels {
        ChannelAxis::Keep => axes,
        ChannelAxis::Time => Some(StoredAxes {
            time: vol.channels(),
            components: 1,
            ..axes.unwrap_or_else(|| StoredAxes::time_series(1))
        }),
        ChannelAxis::Components => Some(StoredAxes {
            time: 1,
            components: vol.channels(),
            time_step: None,
            ..axes.unwrap_or_else(|| StoredAxes::time_series(1))
        }),
    };
    if let Some(ax) = axes.as_mut() {
        // A reorientation can move a 2-D file's single slice off the third axis: store all three then.
        if vol.spatial_shape()[ax.spatial..].iter().any(|&n| n != 1) {
            ax.spatial = 3;
        }
    }
    let save = SaveOptions {
        dtype: parse_dtype(a.dtype, &vol)?,
        nifti_version: if a.nifti2 {
            NiftiVersion::Two
        } else {
            NiftiVersion::One
        },
        axes,
    };
    imaging::io::save_with(&vol, a.output, &save)?;
    eprintln!("wrote {} ({})", a.output.display(), describe(&vol));
    Ok(())
}

/// The NIfTI element type for `--dtype`; `auto` picks the smallest integer type that holds every value exactly, and
/// `f32` when a value is fractional, non-finite or a negative zero (which integers cannot keep).
pub(crate) fn parse_dtype(s: &str, vol: &Volume) -> Result<NiftiDtype> {
    Ok(match s {
        "u8" => NiftiDtype::U8,
        "i16" => NiftiDtype::I16,
        "i32" => NiftiDtype::I32,
        "f32" => NiftiDtype::F32,
        "auto" => {
            let integral = vol
                .data
                .iter()
                .all(|v| v.fract() == 0.0 && !(*v == 0.0 && v.is_sign_negative()));
            let (lo, hi) = vol
                .data
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                });
            if !integral || vol.data.is_empty() {
                NiftiDtype::F32
            } else if lo >= 0.0 && hi <= 255.0 {
                NiftiDtype::U8
            } else if lo >= -32768.0 && hi <= 32767.0 {
                NiftiDtype::I16
            } else {
                NiftiDtype::F32
            }
        }
        other => bail!("--dtype {other}: expected auto, u8, i16, i32 or f32"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    #[test]
    fn auto_dtype_keeps_negative_zero_and_fractions() {
        let vol = |v: Vec<f32>| {
            Volume::new(
                Array4::from_shape_vec((1, v.len(), 1, 1), v).unwrap(),
                Volume::diag_affine([1.0; 3]),
            )
        };
        assert_eq!(
            parse_dtype("auto", &vol(vec![0.0, 3.0])).unwrap(),
            NiftiDtype::U8
        );
        assert_eq!(
            parse_dtype("auto", &vol(vec![-1.0, 300.0])).unwrap(),
            NiftiDtype::I16
        );
        assert_eq!(
            parse_dtype("auto", &vol(vec![-0.0, 3.0])).unwrap(),
            NiftiDtype::F32
        );
        assert_eq!(
            parse_dtype("auto", &vol(vec![0.5])).unwrap(),
            NiftiDtype::F32
        );
        assert_eq!(
            parse_dtype("auto", &vol(vec![f32::NAN])).unwrap(),
            NiftiDtype::F32
        );
        assert_eq!(
            parse_dtype("auto", &vol(vec![1e6])).unwrap(),
            NiftiDtype::F32
        );
        assert!(parse_dtype("f64", &vol(vec![1.0])).is_err());
    }
}
