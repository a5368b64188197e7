//! MONAI `SpatialPad` (method `symmetric`, constant 0): pad each spatial axis up to `spatial_size`, the smaller half
//! of an odd padding before the data; axes already large enough are left alone.

use super::geometry::crop_pad;
use super::required3;
use crate::{Result, Sample, Volume};

/// Pad up to a minimum spatial size.
#[derive(Debug, Clone, PartialEq)]
pub struct SpatialPad {
    size: [usize; 3],
}

impl SpatialPad {
    /// Build from 1 (all axes), 2 (x, y) or 3 sizes; 0 keeps an axis.
    pub fn new(spatial_size: &[usize]) -> Result<Self> {
        Ok(Self {
            size: required3("spatial_size", spatial_size)?,
        })
    }

    /// Start (negative = padding before) and output size for an input shape; `None` if nothing to pad.
    pub fn plan(&self, shape: [usize; 3]) -> Option<([i64; 3], [usize; 3])> {
        if (0..3).all(|a| shape[a] >= self.size[a]) {
            return None;
        }
        let mut start = [0i64; 3];
        let mut out = shape;
        for a in 0..3 {
            let width = self.size[a].saturating_sub(shape[a]);
            start[a] = -((width / 2) as i64);
            out[a] = shape[a] + width;
        }
        Some((start, out))
    }

    /// Pad one volume with zeros.
    pub fn apply_volume(&self, vol: &Volume) -> Volume {
        match self.plan(vol.spatial_shape()) {
            Some((start, size)) => crop_pad(vol, start, size),
            None => vol.clone(),
        }
    }

    /// Pad image and label.
    pub fn apply(&self, sample: Sample) -> Result<Sample> {
        sample.map_both(|v, _| Ok(self.apply_volume(v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    #[test]
    fn symmetric_split() {
        let p = SpatialPad::new(&[6, 3, 0]).unwrap();
        assert_eq!(p.plan([3, 4, 2]), Some(([-1, 0, 0], [6, 4, 2])));
        assert_eq!(p.plan([6, 5, 1]), None);
        let v = Volume::new(
            Array4::from_elem((1, 3, 4, 2), 1.0),
            Volume::diag_affine([2.0; 3]),
        );
        let o = p.apply_volume(&v);
        assert_eq!(o.data.sum(), 24.0);
        assert_eq!(o.data[[0, 0, 0, 0]], 0.0);
        assert_eq!(o.data[[0, 1, 0, 0]], 1.0);
        assert_eq!(o.data[[0, 4, 0, 0]], 0.0);
        assert_eq!(o.affine[0][3], -2.0);
        assert!(SpatialPad::new(&[])
            .unwrap_err()
            .to_string()
            .contains("spatial_size"));
    }
}
