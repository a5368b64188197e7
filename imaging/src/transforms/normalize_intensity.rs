//! MONAI `NormalizeIntensity`: subtract the mean and divide by the population standard deviation (ddof 0), over
//! all voxels or only nonzero ones, for the whole image or per channel. A zero std divides by 1 (the result is
//! `x - mean`); with `nonzero` and no nonzero voxel the data is left unchanged.

use rayon::prelude::*;

use super::geometry::contiguous;
use crate::{Result, Sample, Volume};

/// Zero-mean, unit-variance normalisation.
#[derive(Debug, Clone, PartialEq)]
pub struct NormalizeIntensity {
    nonzero: bool,
    channel_wise: bool,
}

/// Mean and population std over `values` (optionally skipping zeros), in double precision; `None` if empty.
fn stats(values: &[f32], nonzero: bool) -> Option<(f64, f64)> {
    let chunk = 1 << 16;
    // Fixed-size chunks, combined in order: the result does not depend on the thread count.
    let parts: Vec<(usize, f64)> = values
        .par_chunks(chunk)
        .map(|c| {
            c.iter()
                .filter(|&&x| !nonzero || x != 0.0)
                .fold((0usize, 0.0f64), |(n, s), &x| (n + 1, s + f64::from(x)))
        })
        .collect();
    let n: usize = parts.iter().map(|p| p.0).sum();
    if n == 0 {
        return None;
    }
    let mean = parts.iter().map(|p| p.1).sum::<f64>() / n as f64;
    let ss: f64 = values
        .par_chunks(chunk)
        .map(|c| {
            c.iter()
                .filter(|&&x| !nonzero || x != 0.0)
                .map(|&x| (f64::from(x) - mean).powi(2))
                .sum::<f64>()
        })
        .collect::<Vec<f64>>()
        .iter()
        .sum();
    Some((mean, (ss / n as f64).sqrt()))
}

fn normalize(values: &mut [f32], nonzero: bool) {
    let Some((mean, std)) = stats(values, nonzero) else {
        return;
    };
    // MONAI subtracts and divides by Python floats applied to an f32 tensor: single precision.
    let mean = mean as f32;
    let std = if std as f32 == 0.0 { 1.0 } else { std as f32 };
    values.par_chunks_mut(1 << 16).for_each(|c| {
        for x in c.iter_mut() {
            if !nonzero || *x != 0.0 {
                *x = (*x - mean) / std;
            }
        }
    });
}

impl NormalizeIntensity {
    /// Build (no parameter can be out of range).
    pub fn new(nonzero: bool, channel_wise: bool) -> Result<Self> {
        Ok(Self {
            nonzero,
            channel_wise,
        })
    }

    /// Apply to a volume.
    pub fn apply_volume(&self, vol: &mut Volume) {
        let mut buf = contiguous(&vol.data).into_owned();
        let chan = vol.spatial_shape().iter().product::<usize>();
        if self.channel_wise && chan > 0 {
            for c in buf.chunks_mut(chan) {
                normalize(c, self.nonzero);
            }
        } else {
            normalize(&mut buf, self.nonzero);
        }
        let shape = vol.data.raw_dim();
        vol.data = ndarray::Array4::from_shape_vec(shape, buf)
            .unwrap_or_else(|_| unreachable!("buffer has the volume's element count"));
    }

    /// Apply to the image of a sample.
    pub fn apply(&self, mut sample: Sample) -> Sample {
        self.apply_volume(&mut sample.image);
        sample
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    fn vol(values: Vec<f32>, c: usize) -> Volume {
        let n = values.len() / c;
        Volume::new(
            Array4::from_shape_vec((c, 1, 1, n), values).unwrap(),
            Volume::diag_affine([1.0; 3]),
        )
    }

    #[test]
    fn hand_computed_cases() {
        // values 0, 2, 4, 6: mean 3, population std √5.
        let mut v = vol(vec![0.0, 2.0, 4.0, 6.0], 1);
        NormalizeIntensity::new(false, false)
            .unwrap()
            .apply_volume(&mut v);
        let s5 = 5f32.sqrt();
        let want = [-3.0 / s5, -1.0 / s5, 1.0 / s5, 3.0 / s5];
        assert!(v.data.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-6));
        // nonzero: stats over 2, 4, 6 (mean 4, std √(8/3)); the zero stays.
        let mut v = vol(vec![0.0, 2.0, 4.0, 6.0], 1);
        NormalizeIntensity::new(true, false)
            .unwrap()
            .apply_volume(&mut v);
        let s = (8f32 / 3.0).sqrt();
        let want = [0.0, -2.0 / s, 0.0, 2.0 / s];
        assert!(
            v.data.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-6),
            "{:?}",
            v.data
        );
        // channel-wise with a constant channel: x - mean.
        let mut v = vol(vec![5.0, 5.0, 1.0, 3.0], 2);
        NormalizeIntensity::new(false, true)
            .unwrap()
            .apply_volume(&mut v);
        assert_eq!(
            v.data.iter().copied().collect::<Vec<_>>(),
            vec![0.0, 0.0, -1.0, 1.0]
        );
        // nonzero with no nonzero voxel: unchanged.
        let mut v = vol(vec![0.0; 4], 1);
        NormalizeIntensity::new(true, true)
            .unwrap()
            .apply_volume(&mut v);
        assert!(v.data.iter().all(|&x| x == 0.0));
    }
}
