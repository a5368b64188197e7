//! MONAI `RandSpatialCrop` (fixed size, random centre): a crop of `roi_size` (clipped to the image, MONAI does not
//! pad) at a uniformly random position, the same box for image and label.

use super::geometry::crop_pad;
use super::{rand_below, required3};
use crate::{Result, Rng, Sample};

/// Random fixed-size crop.
#[derive(Debug, Clone, PartialEq)]
pub struct RandSpatialCrop {
    roi: [usize; 3],
}

impl RandSpatialCrop {
    /// Build from 1, 2 (x, y) or 3 sizes; 0 means the whole axis.
    pub fn new(roi_size: &[usize]) -> Result<Self> {
        Ok(Self {
            roi: required3("roi_size", roi_size)?,
        })
    }

    /// Crop a sample at a random position.
    pub fn apply(&self, sample: Sample, rng: &mut Rng) -> Result<Sample> {
        let shape = sample.image.spatial_shape();
        let mut start = [0i64; 3];
        let mut size = [0usize; 3];
        for a in 0..3 {
            size[a] = if self.roi[a] == 0 {
                shape[a]
            } else {
                self.roi[a].min(shape[a])
            };
            if shape[a] > size[a] {
                start[a] = rand_below(rng, shape[a] - size[a] + 1) as i64;
            }
        }
        sample.map_both(|v, _| Ok(crop_pad(v, start, size)))
    }
}
