//! MONAI `RandRotate90`: with probability `prob`, rotate image and label by k quarter turns in the plane
//! `spatial_axes`, k uniform in 1..=max_k (MONAI draws `randint(max_k) + 1` only when it rotates). One quarter turn
//! is numpy/torch `rot90`: transpose the plane, then reverse its first axis.

use super::geometry::permute_flip;
use super::{check_prob, rand_below, rand_unit};
use crate::{ImagingError, Result, Rng, Sample, Volume};

/// Random quarter-turn rotation.
#[derive(Debug, Clone, PartialEq)]
pub struct RandRotate90 {
    prob: f64,
    max_k: usize,
    axes: [usize; 2],
}

/// Rotate a volume by `k` quarter turns in the plane `axes` (numpy `rot90(m, k, axes)` on the spatial axes).
pub fn rot90(vol: &Volume, k: usize, axes: [usize; 2]) -> Volume {
    let [a0, a1] = axes;
    let mut perm = [0, 1, 2];
    let mut flip = [false; 3];
    match k % 4 {
        0 => return vol.clone(),
        1 => {
            perm.swap(a0, a1);
            flip[a1] = true;
        }
        2 => {
            flip[a0] = true;
            flip[a1] = true;
        }
        _ => {
            perm.swap(a0, a1);
            flip[a0] = true;
        }
    }
    permute_flip(vol, perm, flip)
}

impl RandRotate90 {
    /// Build; `spatial_axes` two different axes in 0..3, `max_k` ≥ 1.
    pub fn new(prob: f64, max_k: usize, spatial_axes: [usize; 2]) -> Result<Self> {
        check_prob(prob)?;
        if max_k == 0 {
            return Err(ImagingError::config("max_k", "expected at least 1"));
        }
        if spatial_axes[0] == spatial_axes[1] || spatial_axes.iter().any(|&a| a > 2) {
            return Err(ImagingError::config(
                "spatial_axes",
                format!("expected two different axes in 0..=2, got {spatial_axes:?}"),
            ));
        }
        Ok(Self {
            prob,
            max_k,
            axes: spatial_axes,
        })
    }

    /// Rotate by `k` quarter turns.
    pub fn rotate(&self, sample: Sample, k: usize) -> Result<Sample> {
        sample.map_both(|v, _| Ok(rot90(v, k, self.axes)))
    }

    /// Rotate with probability `prob` by a random k.
    pub fn apply(&self, sample: Sample, rng: &mut Rng) -> Result<Sample> {
        if rand_unit(rng) < self.prob {
            let k = rand_below(rng, self.max_k) + 1;
            self.rotate(sample, k)
        } else {
            Ok(sample)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    #[test]
    fn one_quarter_turn_is_numpy_rot90() {
        // m = [[0, 1, 2], [3, 4, 5]] in the (0, 1) plane; np.rot90(m) = [[2, 5], [1, 4], [0, 3]].
        let m = Array4::from_shape_vec((1, 2, 3, 1), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        let r = rot90(&Volume::new(m, Volume::diag_affine([1.0; 3])), 1, [0, 1]);
        assert_eq!(
            r.data.iter().copied().collect::<Vec<_>>(),
            vec![2.0, 5.0, 1.0, 4.0, 0.0, 3.0]
        );
    }
}
