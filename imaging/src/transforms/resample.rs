//! Resampling of a volume onto another voxel grid — what MONAI's `SpatialResample` does through
//! `torch.nn.functional.grid_sample` with `padding_mode="border"`: output voxel `p` takes the input value at the
//! continuous voxel position `xform · p` (clamped to the input's extent), trilinear or nearest (ties to even).
//!
//! Axis-aligned transforms (every Spacing of an unsheared image) run a separable kernel: per output row, the 2-D
//! (x, y) interpolation of four contiguous input rows, then a gather along z. Other transforms take the general
//! 8-tap path. Work is split by output slab, so results are independent of the thread count.

use ndarray::Array4;
use rayon::prelude::*;

use super::geometry::contiguous;
use super::linalg::{solve4, Mat4};
use crate::{ImagingError, Result, Volume};

/// Interpolation mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interp {
    /// Trilinear (MONAI/torch "bilinear" in 3-D).
    Linear,
    /// Nearest neighbour, ties rounded to even (torch `nearbyint`), for label maps.
    Nearest,
}

/// MONAI's `AFFINE_TOL`: affines closer than this are treated as equal.
pub(crate) const AFFINE_TOL: f64 = 1e-3;

/// Resample `vol` onto the grid of `dst_affine` with spatial shape `dst_shape`.
///
/// Like MONAI, a target grid equal to the source one (affines within [`AFFINE_TOL`], same shape) returns the input
/// unchanged, keeping its affine.
pub fn resample_to(
    vol: &Volume,
    dst_affine: &Mat4,
    dst_shape: [usize; 3],
    interp: Interp,
) -> Result<Volume> {
    let in_shape = vol.spatial_shape();
    if in_shape.contains(&0) || vol.channels() == 0 {
        return Err(ImagingError::Shape(format!(
            "cannot resample an empty volume of spatial shape {in_shape:?}"
        )));
    }
    let xform = solve4(&vol.affine, dst_affine).ok_or_else(|| {
        ImagingError::Shape(format!(
            "resample: source affine {:?} is not invertible",
            vol.affine
        ))
    })?;
    let close = |a: &Mat4, b: &Mat4| {
        a.iter()
            .flatten()
            .zip(b.iter().flatten())
            .all(|(x, y)| (x - y).abs() <= AFFINE_TOL + 1e-5 * y.abs())
    };
    let ident = super::linalg::identity4();
    if dst_shape == in_shape && (close(&vol.affine, dst_affine) || close(&xform, &ident)) {
        return Ok(vol.clone());
    }
    Ok(Volume::new(
        resample_voxels(vol, &xform, dst_shape, interp),
        *dst_affine,
    ))
}

/// Per-axis lookup for the separable path: lower index, upper index, weight of the upper sample.
struct AxisTable {
    lo: Vec<usize>,
    hi: Vec<usize>,
    w: Vec<f32>,
}

/// torch `linspace(-1, 1, n)` in double precision, bit for bit: its CPU kernel evaluates `start + step * i` (and
/// `end - step * (n - 1 - i)` for the upper half) as fused multiply-adds.
fn torch_linspace(n: usize, i: usize) -> f64 {
    if n == 1 {
        return -1.0;
    }
    let step = 2.0 / (n - 1) as f64;
    if i < n / 2 {
        step.mul_add(i as f64, -1.0)
    } else {
        (-step).mul_add((n - 1 - i) as f64, 1.0)
    }
}

/// Source voxel coordinates along one axis for `x = scale * p + shift`, evaluated the way MONAI's
/// `AffineTransform` + torch `affine_grid`/`grid_sample` (align_corners=False) do: normalise to [-1, 1] by
/// `to_norm_affine`, sample the base grid, unnormalise. Matching the rounding matters where `x` lands exactly on
/// a half voxel, which nearest-neighbour label resampling hits often (e.g. spacing 1.0 → 1.5).
fn torch_coords(scale: f64, shift: f64, n_in: usize, n_out: usize) -> impl Iterator<Item = f64> {
    let (ni, no) = (n_in as f64, n_out as f64);
    let (s, u) = (2.0 / ni, 1.0 / ni - 1.0);
    let (d, v) = (2.0 / no, 1.0 / no - 1.0);
    let inv_d = 1.0 / d;
    let inv_t = -v * inv_d;
    let (m, mt) = (s * scale, s * shift + u);
    let (t, tt) = (m * inv_d, m * inv_t + mt);
    (0..n_out).map(move |p| {
        let base = torch_linspace(n_out, p) * (no - 1.0) / no;
        let g = base * t + tt;
        ((g + 1.0) * ni - 1.0) / 2.0
    })
}

fn axis_table(scale: f64, shift: f64, n_out: usize, n_in: usize, interp: Interp) -> AxisTable {
    let max = (n_in - 1) as f64;
    let mut t = AxisTable {
        lo: Vec::with_capacity(n_out),
        hi: Vec::with_capacity(n_out),
        w: Vec::with_capacity(n_out),
    };
    for x in torch_coords(scale, shift, n_in, n_out) {
        let x = x.clamp(0.0, max);
        match interp {
            Interp::Linear => {
                let lo = x.floor();
                let l = lo as usize;
                t.lo.push(l);
                t.hi.push((l + 1).min(n_in - 1));
                t.w.push((x - lo) as f32);
            }
            Interp::Nearest => {
                let l = x.round_ties_even() as usize;
                t.lo.push(l);
                t.hi.push(l);
                t.w.push(0.0);
            }
        }
    }
    t
}

/// Resample the voxel data: output voxel `p` samples the input at `xform · p` (voxel coordinates), border padding.
/// The input must be non-empty.
pub(crate) fn resample_voxels(
    vol: &Volume,
    xform: &Mat4,
    out_shape: [usize; 3],
    interp: Interp,
) -> Array4<f32> {
    let in_shape = vol.spatial_shape();
    let c = vol.channels();
    let src = contiguous(&vol.data);
    let max_dim = out_shape.iter().copied().max().unwrap_or(0) as f64;
    let off_diag = (0..3).flat_map(|i| (0..3).filter(move |&j| j != i).map(move |j| (i, j)));
    let separable = off_diag.map(|(i, j)| xform[i][j].abs()).fold(0.0, f64::max) * max_dim < 1e-9;
    let slab = out_shape[1] * out_shape[2];
    let mut out = vec![0f32; c * out_shape[0] * slab];
    if slab > 0 {
        if separable {
            let tables: Vec<AxisTable> = (0..3)
                .map(|a| axis_table(xform[a][a], xform[a][3], out_shape[a], in_shape[a], interp))
                .collect();
            separable_kernel(&src, in_shape, &tables, out_shape, interp, &mut out);
        } else {
            general_kernel(&src, in_shape, xform, out_shape, interp, &mut out);
        }
    }
    Array4::from_shape_vec((c, out_shape[0], out_shape[1], out_shape[2]), out)
        .unwrap_or_else(|_| unreachable!("buffer length equals the product of the output shape"))
}

fn separable_kernel(
    src: &[f32],
    in_shape: [usize; 3],
    t: &[AxisTable],
    out_shape: [usize; 3],
    interp: Interp,
    out: &mut [f32],
) {
    let (ny, nz) = (in_shape[1], in_shape[2]);
    let chan = in_shape[0] * ny * nz;
    let slab = out_shape[1] * out_shape[2];
    out.par_chunks_mut(slab).enumerate().for_each_init(
        || vec![0f32; nz],
        |tmp, (ci, dst)| {
            let (ch, i) = (ci / out_shape[0], ci % out_shape[0]);
            let base = ch * chan;
            let (x0, x1, wx) = (t[0].lo[i], t[0].hi[i], t[0].w[i]);
            for (j, row) in dst.chunks_mut(out_shape[2]).enumerate() {
                let (y0, y1, wy) = (t[1].lo[j], t[1].hi[j], t[1].w[j]);
                let r = |x: usize, y: usize| {
                    &src[base + (x * ny + y) * nz..base + (x * ny + y + 1) * nz]
                };
                match interp {
                    Interp::Nearest => {
                        let r00 = r(x0, y0);
                        for (d, &zi) in row.iter_mut().zip(&t[2].lo) {
                            *d = r00[zi];
                        }
                    }
                    Interp::Linear => {
                        let (w00, w01, w10, w11) = (
                            (1.0 - wx) * (1.0 - wy),
                            (1.0 - wx) * wy,
                            wx * (1.0 - wy),
                            wx * wy,
                        );
                        let (r00, r01, r10, r11) = (r(x0, y0), r(x0, y1), r(x1, y0), r(x1, y1));
                        for (z, v) in tmp.iter_mut().enumerate() {
                            *v = w00 * r00[z] + w01 * r01[z] + w10 * r10[z] + w11 * r11[z];
                        }
                        for (k, d) in row.iter_mut().enumerate() {
                            let w = t[2].w[k];
                            *d = (1.0 - w) * tmp[t[2].lo[k]] + w * tmp[t[2].hi[k]];
                        }
                    }
                }
            }
        },
    );
}

fn general_kernel(
    src: &[f32],
    in_shape: [usize; 3],
    m: &Mat4,
    out_shape: [usize; 3],
    interp: Interp,
    out: &mut [f32],
) {
    let (ny, nz) = (in_shape[1], in_shape[2]);
    let chan = in_shape[0] * ny * nz;
    let slab = out_shape[1] * out_shape[2];
    let max = [(in_shape[0] - 1) as f64, (ny - 1) as f64, (nz - 1) as f64];
    out.par_chunks_mut(slab).enumerate().for_each(|(ci, dst)| {
        let (ch, i) = (ci / out_shape[0], ci % out_shape[0]);
        let s = &src[ch * chan..(ch + 1) * chan];
        for (j, row) in dst.chunks_mut(out_shape[2]).enumerate() {
            for (k, d) in row.iter_mut().enumerate() {
                let p = [i as f64, j as f64, k as f64];
                let mut lo = [0usize; 3];
                let mut hi = [0usize; 3];
                let mut w = [0f64; 3];
                for a in 0..3 {
                    let x = (m[a][0] * p[0] + m[a][1] * p[1] + m[a][2] * p[2] + m[a][3])
                        .clamp(0.0, max[a]);
                    match interp {
                        Interp::Linear => {
                            let f = x.floor();
                            lo[a] = f as usize;
                            hi[a] = (lo[a] + 1).min(max[a] as usize);
                            w[a] = x - f;
                        }
                        Interp::Nearest => {
                            lo[a] = x.round_ties_even() as usize;
                        }
                    }
                }
                *d = match interp {
                    Interp::Nearest => s[(lo[0] * ny + lo[1]) * nz + lo[2]],
                    Interp::Linear => {
                        let mut acc = 0f64;
                        for (xi, wx) in [(lo[0], 1.0 - w[0]), (hi[0], w[0])] {
                            for (yi, wy) in [(lo[1], 1.0 - w[1]), (hi[1], w[1])] {
                                let r = (xi * ny + yi) * nz;
                                acc += wx
                                    * wy
                                    * ((1.0 - w[2]) * s[r + lo[2]] as f64
                                        + w[2] * s[r + hi[2]] as f64);
                            }
                        }
                        acc as f32
                    }
                };
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transforms::linalg::{identity4, translate};

    /// A volume whose values are an affine function of the voxel index: trilinear interpolation reproduces it
    /// exactly inside the volume.
    fn linear_field(shape: [usize; 3]) -> Volume {
        let data = Array4::from_shape_fn((1, shape[0], shape[1], shape[2]), |(_, i, j, k)| {
            1.0 + 2.0 * i as f32 - 0.5 * j as f32 + 0.25 * k as f32
        });
        Volume::new(data, identity4())
    }

    fn field(p: [f64; 3]) -> f64 {
        1.0 + 2.0 * p[0] - 0.5 * p[1] + 0.25 * p[2]
    }

    #[test]
    fn linear_reproduces_affine_fields_both_paths() {
        let v = linear_field([6, 7, 8]);
        // Separable: scale + shift, some positions outside (clamped to the border).
        let mut sep = identity4();
        sep[0][0] = 0.7;
        sep[1][1] = 1.3;
        sep[2][2] = 0.45;
        sep[0][3] = 0.2;
        // General: a small rotation in the x-y plane.
        let (s, c) = 0.3f64.sin_cos();
        let rot = [
            [c, -s, 0.0, 1.0],
            [s, c, 0.0, 0.5],
            [0.0, 0.0, 1.0, 0.3],
            [0.0, 0.0, 0.0, 1.0],
        ];
        for m in [sep, rot] {
            let out = resample_voxels(&v, &m, [5, 6, 9], Interp::Linear);
            for ((_, i, j, k), &got) in out.indexed_iter() {
                let p = crate::transforms::linalg::apply(&m, [i as f64, j as f64, k as f64]);
                let clamped = [
                    p[0].clamp(0.0, 5.0),
                    p[1].clamp(0.0, 6.0),
                    p[2].clamp(0.0, 7.0),
                ];
                assert!(
                    (got as f64 - field(clamped)).abs() < 1e-4,
                    "{m:?} {i} {j} {k}"
                );
            }
        }
    }

    #[test]
    fn nearest_half_voxels_round_like_torch() {
        let v = linear_field([5, 1, 1]);
        let mut m = identity4();
        m[0][0] = 0.5;
        let out = resample_voxels(&v, &m, [10, 1, 1], Interp::Nearest);
        // Positions 0, .5, 1, 1.5, ..., 4.5 (clamped to 4). Ties go to even, except 1.5, which torch's grid
        // arithmetic lands just below (MONAI's Spacing gives [0, 0, 1, 1, 2, 2, 3, 4, 4, 4] here too).
        let idx: Vec<usize> = out.iter().map(|&x| ((x - 1.0) / 2.0) as usize).collect();
        assert_eq!(idx, vec![0, 0, 1, 1, 2, 2, 3, 4, 4, 4]);
    }

    #[test]
    fn identity_target_returns_input() {
        let v = linear_field([3, 3, 3]);
        let out = resample_to(&v, &v.affine, [3, 3, 3], Interp::Linear).unwrap();
        assert_eq!(out, v);
        let shifted =
            resample_to(&v, &translate([1.0, 0.0, 0.0]), [2, 3, 3], Interp::Linear).unwrap();
        assert_eq!(shifted.data[[0, 0, 1, 1]], v.data[[0, 1, 1, 1]]);
        let mut sing = v.clone();
        sing.affine = [[0.0; 4]; 4];
        assert!(resample_to(&sing, &v.affine, [3, 3, 3], Interp::Linear).is_err());
    }
}
