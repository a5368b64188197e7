//! MONAI `Spacing`: resample to voxel size `pixdim` (mm), keeping the direction cosines (`diagonal=False`),
//! trilinear for images and nearest for labels, border padding, `align_corners=False`, computed in double precision.
//!
//! The target grid follows MONAI's `zoom_affine` + `compute_shape_offset`: shape = round(extent / pixdim) + 1 per axis
//! (ties to even), origin at the input corner that is smallest in the output axes (the input origin for unflipped
//! grids). An axis whose spacing is already within 1e-3 mm of the target keeps its spacing.

use super::linalg::{
    apply, cholesky_upper, column_norms, inv_upper3, linear_part, matmul3, solve4, transpose3, Mat4,
};
use super::resample::{resample_to, Interp, AFFINE_TOL};
use crate::{ImagingError, Result, Sample, Volume};

/// Resample to a target voxel size.
#[derive(Debug, Clone, PartialEq)]
pub struct Spacing {
    pixdim: [f64; 3],
}

impl Spacing {
    /// Build from `pixdim` (1..=3 values; a shorter list repeats its last value like MONAI; a non-positive value keeps
    /// the input spacing of that axis).
    pub fn new(pixdim: &[f64]) -> Result<Self> {
        let last = *pixdim.last().ok_or_else(|| {
            ImagingError::config(
                "pixdim",
                "expected 1 to 3 voxel sizes in mm, got an empty list",
            )
        })?;
        if pixdim.len() > 3 {
            return Err(ImagingError::config(
                "pixdim",
                format!("expected at most 3 values, got {}", pixdim.len()),
            ));
        }
        if pixdim.iter().any(|v| !v.is_finite()) {
            return Err(ImagingError::config(
                "pixdim",
                format!("expected finite values, got {pixdim:?}"),
            ));
        }
        let mut p = [last; 3];
        p[..pixdim.len()].copy_from_slice(pixdim);
        Ok(Self { pixdim: p })
    }

    /// The target grid (affine and spatial shape) for an input grid.
    pub fn target_grid(&self, affine: &Mat4, shape: [usize; 3]) -> Result<(Mat4, [usize; 3])> {
        let orig = column_norms(affine);
        let mut scale = [0.0; 3];
        for a in 0..3 {
            let t = self.pixdim[a];
            scale[a] = if (t - AFFINE_TOL..=t + AFFINE_TOL).contains(&orig[a]) || t <= 0.0 {
                orig[a]
            } else {
                t
            };
        }
        // zoom_affine(diagonal=False): keep the rotation of the QR (Cholesky) decomposition, replace the zooms.
        let rzs = linear_part(affine);
        let zs = cholesky_upper(&matmul3(&transpose3(&rzs), &rzs)).ok_or_else(|| {
            ImagingError::Shape(format!(
                "Spacing: affine {affine:?} has a singular 3x3 part (no voxel size)"
            ))
        })?;
        let rot = matmul3(&rzs, &inv_upper3(&zs));
        let mut new = super::linalg::identity4();
        for i in 0..3 {
            for j in 0..3 {
                new[i][j] = rot[i][j] * scale[j];
            }
        }
        let (out_shape, offset) = shape_offset(shape, affine, &new)?;
        for (row, o) in new.iter_mut().zip(offset) {
            row[3] = o;
        }
        Ok((new, out_shape))
    }

    /// Resample one volume (`label`: nearest instead of trilinear).
    pub fn apply_volume(&self, vol: &Volume, label: bool) -> Result<Volume> {
        self.apply_volume_within(vol, label, crate::io::DEFAULT_MAX_VOXELS)
    }

    /// [`Self::apply_volume`], refusing before it allocates a resampled grid of more than `max_values` values over
    /// all channels (a 128³ volume whose header claims 1 m voxels would otherwise ask for ~10^14 at 1.5 mm).
    pub fn apply_volume_within(
        &self,
        vol: &Volume,
        label: bool,
        max_values: u64,
    ) -> Result<Volume> {
        let (affine, shape) = self.target_grid(&vol.affine, vol.spatial_shape())?;
        super::check_grid_values(
            "Spacing: the resampled grid",
            vol.data.shape()[0],
            shape,
            max_values,
        )?;
        resample_to(
            vol,
            &affine,
            shape,
            if label {
                Interp::Nearest
            } else {
                Interp::Linear
            },
        )
    }

    /// Resample image and label.
    pub fn apply(&self, sample: Sample) -> Result<Sample> {
        sample.map_both(|v, label| self.apply_volume(v, label))
    }
}

/// MONAI `compute_shape_offset` with `scale_extent=False`.
fn shape_offset(
    shape: [usize; 3],
    in_aff: &Mat4,
    out_aff: &Mat4,
) -> Result<([usize; 3], [f64; 3])> {
    let m = solve4(out_aff, in_aff).ok_or_else(|| {
        ImagingError::Shape(format!(
            "Spacing: target affine {out_aff:?} is not invertible"
        ))
    })?;
    let mut corners = Vec::with_capacity(8);
    for a in 0..2 {
        for b in 0..2 {
            for c in 0..2 {
                let pick = |bit: usize, n: usize| if bit == 0 { 0.0 } else { n as f64 - 1.0 };
                corners.push([pick(a, shape[0]), pick(b, shape[1]), pick(c, shape[2])]);
            }
        }
    }
    let dist: Vec<[f64; 3]> = corners.iter().map(|p| apply(&m, *p)).collect();
    let mut out_shape = [0usize; 3];
    for (ax, o) in out_shape.iter_mut().enumerate() {
        let (lo, hi) = dist
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), d| {
                (l.min(d[ax]), h.max(d[ax]))
            });
        let n = (hi - lo + 1.0).round_ties_even();
        if !(1.0..1e9).contains(&n) {
            return Err(ImagingError::Shape(format!(
                "Spacing: output extent {n} along axis {ax} is not a valid size"
            )));
        }
        *o = n as usize;
    }
    let smallest = (0..8).find(|&i| {
        (0..3).all(|ax| {
            dist.iter()
                .map(|d| d[ax] - dist[i][ax])
                .fold(f64::INFINITY, f64::min)
                .abs()
                <= 1e-8
        })
    });
    let offset = match smallest {
        Some(i) => apply(in_aff, corners[i]),
        None => {
            let mut o = [0.0; 3];
            for (r, v) in o.iter_mut().enumerate() {
                *v = in_aff[r][3]
                    + (0..3)
                        .map(|c| {
                            in_aff[r][c] * shape[c] as f64 / 2.0
                                - out_aff[r][c] * out_shape[c] as f64 / 2.0
                        })
                        .sum::<f64>();
            }
            o
        }
    };
    Ok((out_shape, offset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    #[test]
    fn validation_names_pixdim() {
        assert!(Spacing::new(&[])
            .unwrap_err()
            .to_string()
            .contains("pixdim"));
        assert!(Spacing::new(&[1.0, 1.0, 1.0, 1.0]).is_err());
        assert_eq!(Spacing::new(&[1.0, 2.0]).unwrap().pixdim, [1.0, 2.0, 2.0]);
    }

    #[test]
    fn grid_of_a_diagonal_affine() {
        let mut a = Volume::diag_affine([0.8, 1.0, 2.5]);
        a[0][3] = -10.0;
        let s = Spacing::new(&[1.5, 1.0004, 2.0]).unwrap();
        let (new, shape) = s.target_grid(&a, [101, 20, 9]).unwrap();
        // 100 * 0.8 / 1.5 = 53.33 → 54 voxels; y keeps 1.0 (within 1e-3); 8 * 2.5 / 2 = 10 → 11.
        assert_eq!(shape, [54, 20, 11]);
        assert_eq!(new[0][0], 1.5);
        assert_eq!(new[1][1], 1.0);
        assert_eq!(new[0][3], -10.0);
    }

    #[test]
    fn flipped_axes_keep_their_direction() {
        let a = [
            [-2.0, 0.0, 0.0, 30.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let v = Volume::new(
            Array4::from_shape_fn((1, 6, 2, 2), |(_, i, _, _)| i as f32),
            a,
        );
        let out = Spacing::new(&[1.0])
            .unwrap()
            .apply_volume(&v, false)
            .unwrap();
        assert_eq!(out.spatial_shape(), [11, 2, 2]);
        // The direction is kept, so the input's first voxel (world x = 30) stays the origin.
        assert_eq!(out.affine[0][3], 30.0);
        assert_eq!(out.affine[0][0], -1.0);
        assert!((out.data[[0, 1, 0, 0]] - 0.5).abs() < 1e-6);
        assert!((out.data[[0, 10, 0, 0]] - 5.0).abs() < 1e-6);
    }
}
