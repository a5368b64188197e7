//! MONAI-style transforms, one module each, built from config (`TransformSpec`) into a [`Compose`].
//!
//! Spatial transforms apply to the image and the label alike (labels: nearest / exact integer operations);
//! intensity transforms touch only the image; `ConvertToMultiChannelBasedOnBratsClasses` only the label. Random
//! transforms draw from an explicit [`crate::Rng`], so a seed fixes the output on any machine and thread count.

pub mod brats;
pub mod compose;
pub mod crop_foreground;
pub(crate) mod geometry;
pub mod inverse;
pub(crate) mod linalg;
pub mod normalize_intensity;
pub mod orientation;
pub mod rand_crop_by_pos_neg_label;
pub mod rand_flip;
pub mod rand_rotate90;
pub mod rand_scale_intensity;
pub mod rand_shift_intensity;
pub mod rand_spatial_crop;
pub mod resample;
pub mod scale_intensity_range;
pub mod spacing;
pub mod spatial_pad;

pub use brats::ConvertToMultiChannelBasedOnBratsClasses;
pub use compose::Compose;
pub use crop_foreground::{CropBox, CropForeground};
pub use inverse::Inverse;
pub use normalize_intensity::NormalizeIntensity;
pub use orientation::Orientation;
pub use rand_crop_by_pos_neg_label::RandCropByPosNegLabel;
pub use rand_flip::RandFlip;
pub use rand_rotate90::{rot90, RandRotate90};
pub use rand_scale_intensity::RandScaleIntensity;
pub use rand_shift_intensity::RandShiftIntensity;
pub use rand_spatial_crop::RandSpatialCrop;
pub use resample::{resample_to, Interp};
pub use scale_intensity_range::ScaleIntensityRange;
pub use spacing::Spacing;
pub use spatial_pad::SpatialPad;

use rand::Rng as _;
use rayon::prelude::*;

use crate::{ImagingError, Result, Rng};

/// Refuse an array of `channels` × `shape` values over `max_values` (checked before it is allocated; `what` names it).
pub(crate) fn check_grid_values(
    what: &str,
    channels: usize,
    shape: [usize; 3],
    max_values: u64,
) -> Result<()> {
    let values = shape
        .iter()
        .fold(channels as u128, |n, &d| n.saturating_mul(d as u128));
    if values > u128::from(max_values) {
        return Err(ImagingError::Limit(format!(
            "{what} of {shape:?} voxels x {channels} channel(s) = {values} values exceeds the limit of {max_values} \
             values"
        )));
    }
    Ok(())
}

/// Per-axis integer parameter: 0 values → `fill` everywhere, 1 → all axes, 2 → x, y (z = `fill`), 3 → as given.
pub(crate) fn spatial3(field: &str, v: &[usize], fill: usize) -> Result<[usize; 3]> {
    match *v {
        [] => Ok([fill; 3]),
        [a] => Ok([a; 3]),
        [a, b] => Ok([a, b, fill]),
        [a, b, c] => Ok([a, b, c]),
        _ => Err(ImagingError::config(
            field,
            format!(
                "expected 1 to 3 values (one per spatial axis), got {}",
                v.len()
            ),
        )),
    }
}

/// As [`spatial3`] for a size that must be given (at least one value).
pub(crate) fn required3(field: &str, v: &[usize]) -> Result<[usize; 3]> {
    if v.is_empty() {
        return Err(ImagingError::config(
            field,
            "expected 1 to 3 sizes (one per spatial axis), got none",
        ));
    }
    spatial3(field, v, 0)
}

/// Check a probability.
pub(crate) fn check_prob(prob: f64) -> Result<()> {
    if (0.0..=1.0).contains(&prob) {
        Ok(())
    } else {
        Err(ImagingError::config(
            "prob",
            format!("expected a probability in [0, 1], got {prob}"),
        ))
    }
}

/// A uniform draw in [0, 1) (53 random bits; identical on every platform).
pub(crate) fn rand_unit(rng: &mut Rng) -> f64 {
    rng.random::<f64>()
}

/// A uniform integer in `0..n` (`n` ≥ 1), drawn as u64 so the stream does not depend on the pointer width.
pub(crate) fn rand_below(rng: &mut Rng, n: usize) -> usize {
    rng.random_range(0..n.max(1) as u64) as usize
}

/// Apply `f` to every voxel in parallel (fixed chunks: no thread-dependent result).
pub(crate) fn map_inplace(data: &mut ndarray::Array4<f32>, f: impl Fn(f32) -> f32 + Sync) {
    match data.as_slice_mut() {
        Some(s) => s
            .par_chunks_mut(1 << 16)
            .for_each(|c| c.iter_mut().for_each(|x| *x = f(*x))),
        None => data.mapv_inplace(f),
    }
}
