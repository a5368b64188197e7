//! Voxel order conversions between files and the channel-first `(C, X, Y, Z)` volume.

use std::path::Path;

use ndarray::{Array4, Array5, Ix4};

use crate::error::{ImagingError, Result};

/// Reorder values read in file order — `(outer, Z, Y, X, inner)` with `inner` fastest — into channel-first
/// `(outer * inner, X, Y, Z)`, channel index `inner + n_inner * outer` (vector voxels; scalar voxels are decoded
/// straight into this layout by `slabs`).
pub(crate) fn channel_first(
    path: &Path,
    values: Vec<f32>,
    [outer, z, y, x, inner]: [usize; 5],
) -> Result<Array4<f32>> {
    let bad = |e: ndarray::ShapeError| {
        ImagingError::format(path, format!("voxel data does not fit its shape: {e}"))
    };
    let arr = Array5::from_shape_vec((outer, z, y, x, inner), values).map_err(bad)?;
    let arr = arr
        .permuted_axes([0, 4, 3, 2, 1])
        .as_standard_layout()
        .into_owned();
    arr.into_shape_with_order((outer * inner, x, y, z))
        .map_err(bad)?
        .into_dimensionality::<Ix4>()
        .map_err(bad)
}

/// Reorder channels stored component-fastest (`k + components * t`, MetaImage's file order) into the volume
/// convention `t + time * k`; `inverse` goes back.
pub(crate) fn interleave_channels(
    data: Array4<f32>,
    time: usize,
    components: usize,
    inverse: bool,
) -> Array4<f32> {
    if time <= 1 || components <= 1 {
        return data;
    }
    let mut out = Array4::zeros(data.raw_dim());
    for t in 0..time {
        for k in 0..components {
            let (from, to) = if inverse {
                (t + time * k, k + components * t)
            } else {
                (k + components * t, t + time * k)
            };
            out.index_axis_mut(ndarray::Axis(0), to)
                .assign(&data.index_axis(ndarray::Axis(0), from));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_first_reorders_file_order() {
        // File order: outer=2, z=1, y=2, x=3, inner=2 (values are their own linear file index).
        let vals: Vec<f32> = (0..24).map(|v| v as f32).collect();
        let a = channel_first(Path::new("t"), vals, [2, 1, 2, 3, 2]).unwrap();
        assert_eq!(a.shape(), &[4, 3, 2, 1]);
        // channel c = inner + 2*outer; file index = (((outer*1 + z)*2 + y)*3 + x)*2 + inner
        for outer in 0..2 {
            for inner in 0..2 {
                for y in 0..2 {
                    for x in 0..3 {
                        let want = ((((outer * 2 + y) * 3 + x) * 2) + inner) as f32;
                        assert_eq!(a[[inner + 2 * outer, x, y, 0]], want);
                    }
                }
            }
        }
        assert!(channel_first(Path::new("t"), vec![0.0; 5], [1, 1, 2, 3, 1]).is_err());
    }

    #[test]
    fn interleaving_moves_channels_and_inverts() {
        // 2 time points x 3 components stored k + 3 t: channel value = its stored index.
        let a = Array4::from_shape_fn((6, 1, 1, 1), |(c, _, _, _)| c as f32);
        let b = interleave_channels(a.clone(), 2, 3, false);
        for t in 0..2 {
            for k in 0..3 {
                assert_eq!(b[[t + 2 * k, 0, 0, 0]], (k + 3 * t) as f32);
            }
        }
        assert_eq!(interleave_channels(b, 2, 3, true), a);
    }
}
