//! MONAI `RandCropByPosNegLabel`: `num_samples` crops of `spatial_size`, each centred on a foreground voxel of the
//! label with probability `pos / (pos + neg)`, else on a background voxel (optionally only where the image exceeds
//! `image_threshold`); centres are then clamped so the crop fits (MONAI `correct_crop_centers`).
//!
//! Foreground is any nonzero label voxel (for multi-channel labels, any of channels 1.., like MONAI's one-hot
//! handling). A roi larger than the image is an error, as in MONAI with `allow_smaller=False`.

use rayon::prelude::*;

use super::geometry::{contiguous, crop_pad};
use super::{rand_below, rand_unit, required3};
use crate::{ImagingError, Result, Rng, Sample, Volume};

/// Label-balanced random crops.
#[derive(Debug, Clone, PartialEq)]
pub struct RandCropByPosNegLabel {
    roi: [usize; 3],
    pos_ratio: f64,
    num_samples: usize,
    image_threshold: Option<f32>,
}

impl RandCropByPosNegLabel {
    /// Build; `pos`, `neg` ≥ 0 and not both 0, `num_samples` ≥ 1.
    pub fn new(
        spatial_size: &[usize],
        pos: f64,
        neg: f64,
        num_samples: usize,
        image_threshold: Option<f32>,
    ) -> Result<Self> {
        let roi = required3("spatial_size", spatial_size)?;
        if !(pos >= 0.0 && pos.is_finite()) {
            return Err(ImagingError::config(
                "pos",
                format!("expected a finite number >= 0, got {pos}"),
            ));
        }
        if !(neg >= 0.0 && neg.is_finite()) {
            return Err(ImagingError::config(
                "neg",
                format!("expected a finite number >= 0, got {neg}"),
            ));
        }
        if pos + neg == 0.0 {
            return Err(ImagingError::config("pos", "pos and neg cannot both be 0"));
        }
        if num_samples == 0 {
            return Err(ImagingError::config("num_samples", "expected at least 1"));
        }
        if image_threshold.is_some_and(f32::is_nan) {
            return Err(ImagingError::config(
                "image_threshold",
                "expected a number, got NaN",
            ));
        }
        Ok(Self {
            roi,
            pos_ratio: pos / (pos + neg),
            num_samples,
            image_threshold,
        })
    }

    /// Number of crops per input sample.
    pub fn num_samples(&self) -> usize {
        self.num_samples
    }

    /// Draw the crop centres (voxel indices, already corrected to fit) for a sample.
    pub fn centers(&self, sample: &Sample, rng: &mut Rng) -> Result<Vec<[usize; 3]>> {
        let label = sample.label.as_ref().ok_or_else(|| {
            ImagingError::config(
                "label",
                "RandCropByPosNegLabel needs a label map, the sample has none",
            )
        })?;
        let shape = label.spatial_shape();
        let roi = self.roi_for(shape)?;
        let image = self.image_threshold.map(|t| (&sample.image, t));
        let (fg, bg) = fg_bg_indices(label, image);
        if fg.is_empty() && bg.is_empty() {
            return Err(ImagingError::Shape(
                "RandCropByPosNegLabel: no foreground and no valid background voxel".into(),
            ));
        }
        let ratio = if fg.is_empty() {
            0.0
        } else if bg.is_empty() {
            1.0
        } else {
            self.pos_ratio
        };
        let mut out = Vec::with_capacity(self.num_samples);
        for _ in 0..self.num_samples {
            let pool = if rand_unit(rng) < ratio { &fg } else { &bg };
            let idx = pool[rand_below(rng, pool.len())] as usize;
            let c = [
                idx / (shape[1] * shape[2]),
                (idx / shape[2]) % shape[1],
                idx % shape[2],
            ];
            out.push(correct_center(c, roi, shape));
        }
        Ok(out)
    }

    fn roi_for(&self, shape: [usize; 3]) -> Result<[usize; 3]> {
        let mut roi = self.roi;
        for a in 0..3 {
            if roi[a] == 0 {
                roi[a] = shape[a];
            }
            if roi[a] > shape[a] {
                return Err(ImagingError::Shape(format!(
                    "RandCropByPosNegLabel: spatial_size {:?} is larger than the image {shape:?}",
                    self.roi
                )));
            }
        }
        Ok(roi)
    }

    /// Draw `num_samples` crops of image and label.
    pub fn apply(&self, sample: Sample, rng: &mut Rng) -> Result<Vec<Sample>> {
        let centers = self.centers(&sample, rng)?;
        let roi = self.roi_for(sample.image.spatial_shape())?;
        centers
            .into_iter()
            .map(|c| {
                let start = [0, 1, 2].map(|a| c[a] as i64 - (roi[a] / 2) as i64);
                sample.clone().map_both(|v, _| Ok(crop_pad(v, start, roi)))
            })
            .collect()
    }
}

/// MONAI `correct_crop_centers`: clamp a centre to `[roi/2, shape + 1 - roi/2)` (the upper bound truncated).
pub fn correct_center(c: [usize; 3], roi: [usize; 3], shape: [usize; 3]) -> [usize; 3] {
    let mut out = c;
    for a in 0..3 {
        let lo = roi[a] / 2;
        let mut hi = (shape[a] as f64 + 1.0 - roi[a] as f64 / 2.0) as usize;
        if lo == hi {
            hi += 1;
        }
        out[a] = c[a].max(lo).min(hi - 1);
    }
    out
}

/// Flat indices of foreground voxels and of (valid) background voxels.
fn fg_bg_indices(label: &Volume, image: Option<(&Volume, f32)>) -> (Vec<u32>, Vec<u32>) {
    let n = label.spatial_shape().iter().product::<usize>();
    let lab = contiguous(&label.data);
    let first = if label.channels() > 1 { 1 } else { 0 };
    let img = image.map(|(v, t)| (contiguous(&v.data), v.channels(), t));
    let chunk = 1 << 15;
    let parts: Vec<(Vec<u32>, Vec<u32>)> = (0..n.div_ceil(chunk))
        .into_par_iter()
        .map(|b| {
            let (mut fg, mut bg) = (Vec::new(), Vec::new());
            for i in b * chunk..((b + 1) * chunk).min(n) {
                if (first..label.channels()).any(|c| lab[c * n + i] != 0.0) {
                    fg.push(i as u32);
                } else if img
                    .as_ref()
                    .is_none_or(|(d, ch, t)| (0..*ch).any(|c| d[c * n + i] > *t))
                {
                    bg.push(i as u32);
                }
            }
            (fg, bg)
        })
        .collect();
    let (mut fg, mut bg) = (Vec::new(), Vec::new());
    for (f, b) in parts {
        fg.extend(f);
        bg.extend(b);
    }
    (fg, bg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centers_are_clamped_like_monai() {
        // shape 10, roi 4: valid centres 2..=8; roi 5: 2..=7.
        assert_eq!(
            correct_center([0, 9, 5], [4, 4, 4], [10, 10, 10]),
            [2, 8, 5]
        );
        assert_eq!(
            correct_center([0, 9, 5], [5, 5, 5], [10, 10, 10]),
            [2, 7, 5]
        );
        // roi == shape: the only centre is shape / 2.
        assert_eq!(correct_center([0, 9, 3], [10, 9, 1], [10, 9, 1]), [5, 4, 0]);
    }

    #[test]
    fn validation() {
        assert!(RandCropByPosNegLabel::new(&[4], 0.0, 0.0, 1, None)
            .unwrap_err()
            .to_string()
            .contains("pos"));
        assert!(RandCropByPosNegLabel::new(&[4], 1.0, 1.0, 0, None)
            .unwrap_err()
            .to_string()
            .contains("num_samples"));
        assert!(RandCropByPosNegLabel::new(&[4], 1.0, -1.0, 1, None)
            .unwrap_err()
            .to_string()
            .contains("neg"));
    }
}
