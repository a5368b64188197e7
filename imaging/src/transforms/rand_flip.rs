//! MONAI `RandFlip`: with probability `prob`, reverse one spatial axis of image and label (affine updated so world
//! positions are kept).

use super::geometry::permute_flip_owned;
use super::{check_prob, rand_unit};
use crate::{ImagingError, Result, Rng, Sample};

/// Random flip along one axis.
#[derive(Debug, Clone, PartialEq)]
pub struct RandFlip {
    prob: f64,
    axis: usize,
}

impl RandFlip {
    /// Build; `spatial_axis` in 0..3.
    pub fn new(prob: f64, spatial_axis: usize) -> Result<Self> {
        check_prob(prob)?;
        if spatial_axis > 2 {
            return Err(ImagingError::config(
                "spatial_axis",
                format!("expected 0, 1 or 2, got {spatial_axis}"),
            ));
        }
        Ok(Self {
            prob,
            axis: spatial_axis,
        })
    }

    /// Flip unconditionally.
    pub fn flip(&self, sample: Sample) -> Result<Sample> {
        let mut f = [false; 3];
        f[self.axis] = true;
        sample.map_both_owned(|v, _| Ok(permute_flip_owned(v, [0, 1, 2], f)))
    }

    /// Flip with probability `prob` (one draw).
    pub fn apply(&self, sample: Sample, rng: &mut Rng) -> Result<Sample> {
        if rand_unit(rng) < self.prob {
            self.flip(sample)
        } else {
            Ok(sample)
        }
    }
}
