//! Voxel-exact geometric kernels shared by the transforms: axis permutation + flips (orientation, flip, rot90) and
//! crop/pad by a box (CropForeground, SpatialPad, random crops and their inverses).
//!
//! Every kernel updates the affine so that the world position of every voxel is preserved, and parallelises over
//! output slabs only, so results never depend on the number of threads.

use ndarray::Array4;
use rayon::prelude::*;

use super::linalg::{matmul4, translate, Mat4};
use crate::Volume;

/// Contiguous (standard-layout) voxel data of a volume, copying only if the array is not already contiguous.
pub(crate) fn contiguous(data: &Array4<f32>) -> std::borrow::Cow<'_, [f32]> {
    match data.as_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(data.as_standard_layout().iter().copied().collect()),
    }
}

/// The affine `M` (output voxel → input voxel) of a permutation with flips: output axis `k` reads input axis
/// `perm[k]`, reversed when `flip_in[perm[k]]`.
pub(crate) fn permute_flip_affine(
    in_shape: [usize; 3],
    perm: [usize; 3],
    flip_in: [bool; 3],
) -> Mat4 {
    let mut m = [[0.0; 4]; 4];
    m[3][3] = 1.0;
    for (k, &i) in perm.iter().enumerate() {
        if flip_in[i] {
            m[i][k] = -1.0;
            m[i][3] = in_shape[i] as f64 - 1.0;
        } else {
            m[i][k] = 1.0;
        }
    }
    m
}

/// Permute and flip the spatial axes: output axis `k` is input axis `perm[k]`, reversed when `flip_in[perm[k]]`.
/// `perm` must be a permutation of 0..3 (callers construct it; it is not input-derived).
pub(crate) fn permute_flip(vol: &Volume, perm: [usize; 3], flip_in: [bool; 3]) -> Volume {
    let in_shape = vol.spatial_shape();
    let c = vol.channels();
    let out_shape = [in_shape[perm[0]], in_shape[perm[1]], in_shape[perm[2]]];
    let in_strides = [in_shape[1] * in_shape[2], in_shape[2], 1];
    let src = contiguous(&vol.data);
    let chan = in_shape.iter().product::<usize>();
    // Per output axis: signed step in the input buffer and the offset contributed by a flip.
    let mut step = [0isize; 3];
    let mut base = 0isize;
    for (k, &i) in perm.iter().enumerate() {
        let s = in_strides[i] as isize;
        if flip_in[i] {
            step[k] = -s;
            base += (in_shape[i] as isize - 1) * s;
        } else {
            step[k] = s;
        }
    }
    let slab = out_shape[1] * out_shape[2];
    let mut out = vec![0f32; c * out_shape[0] * slab];
    if slab > 0 {
        out.par_chunks_mut(slab).enumerate().for_each(|(ci, dst)| {
            let (ch, i) = (ci / out_shape[0], ci % out_shape[0]);
            let plane = (ch * chan) as isize + base + i as isize * step[0];
            for (j, row) in dst.chunks_mut(out_shape[2]).enumerate() {
                let start = plane + j as isize * step[1];
                match step[2] {
                    1 => {
                        let s = start as usize;
                        row.copy_from_slice(&src[s..s + out_shape[2]]);
                    }
                    -1 => {
                        let s = start as usize + 1 - out_shape[2];
                        for (d, v) in row.iter_mut().zip(src[s..=start as usize].iter().rev()) {
                            *d = *v;
                        }
                    }
                    st => {
                        for (k, d) in row.iter_mut().enumerate() {
                            *d = src[(start + k as isize * st) as usize];
                        }
                    }
                }
            }
        });
    }
    let data = Array4::from_shape_vec((c, out_shape[0], out_shape[1], out_shape[2]), out)
        .unwrap_or_else(|_| unreachable!("buffer length equals the product of the output shape"));
    let affine = matmul4(&vol.affine, &permute_flip_affine(in_shape, perm, flip_in));
    Volume::new(data, affine)
}

/// [`permute_flip`] of a volume the caller gives up: a flip without permutation (LPS → RAS, random flips) swaps
/// voxels in place instead of filling a new buffer (the first touch of a fresh 100 MB buffer costs more than the
/// copy itself).
pub(crate) fn permute_flip_owned(mut vol: Volume, perm: [usize; 3], flip_in: [bool; 3]) -> Volume {
    if perm != [0, 1, 2] {
        return permute_flip(&vol, perm, flip_in);
    }
    let shape = vol.spatial_shape();
    let affine = matmul4(&vol.affine, &permute_flip_affine(shape, perm, flip_in));
    match vol.data.as_slice_mut() {
        Some(data) => {
            flip_in_place(data, shape, flip_in);
            vol.affine = affine;
            vol
        }
        None => permute_flip(&vol, perm, flip_in),
    }
}

/// Reverse `data` (channels of `[X, Y, Z]`, z fastest) along the axes marked in `flip`, in place; parallel over
/// pairs of x slabs.
fn flip_in_place(data: &mut [f32], [nx, ny, nz]: [usize; 3], flip: [bool; 3]) {
    let slab = ny * nz;
    if slab == 0 || nx == 0 {
        return;
    }
    let [_, fy, fz] = flip;
    for chan in data.chunks_mut(nx * slab) {
        if flip[0] {
            let (lo, rest) = chan.split_at_mut(nx / 2 * slab);
            let (mid, hi) = rest.split_at_mut(nx % 2 * slab);
            lo.par_chunks_mut(slab)
                .zip(hi.par_chunks_mut(slab).rev())
                .for_each(|(a, b)| swap_slabs(a, b, nz, fy, fz));
            flip_slab(mid, ny, nz, fy, fz);
        } else {
            chan.par_chunks_mut(slab)
                .for_each(|s| flip_slab(s, ny, nz, fy, fz));
        }
    }
}

/// Exchange two x slabs of rows of `nz` values, reversing the row order (`fy`) and each row (`fz`) as asked.
fn swap_slabs(a: &mut [f32], b: &mut [f32], nz: usize, fy: bool, fz: bool) {
    let rows_b: Box<dyn Iterator<Item = &mut [f32]>> = if fy {
        Box::new(b.chunks_mut(nz).rev())
    } else {
        Box::new(b.chunks_mut(nz))
    };
    for (ra, rb) in a.chunks_mut(nz).zip(rows_b) {
        ra.swap_with_slice(rb);
        if fz {
            ra.reverse();
            rb.reverse();
        }
    }
}

/// Flip one x slab (empty for none) along y and/or z in place.
fn flip_slab(s: &mut [f32], ny: usize, nz: usize, fy: bool, fz: bool) {
    if s.is_empty() {
        return;
    }
    if fy {
        let (lo, rest) = s.split_at_mut(ny / 2 * nz);
        let (mid, hi) = rest.split_at_mut(ny % 2 * nz);
        for (ra, rb) in lo.chunks_mut(nz).zip(hi.chunks_mut(nz).rev()) {
            ra.swap_with_slice(rb);
            if fz {
                ra.reverse();
                rb.reverse();
            }
        }
        if fz {
            mid.reverse();
        }
    } else if fz {
        s.chunks_mut(nz).for_each(|r| r.reverse());
    }
}

/// The box `[start, start + size)` of the input (in voxels, possibly outside it), zero outside the input.
/// The affine origin moves to voxel `start`.
pub(crate) fn crop_pad(vol: &Volume, start: [i64; 3], size: [usize; 3]) -> Volume {
    crop_pad_with(vol, start, size, 0.0)
}

/// As [`crop_pad`] with an explicit fill value outside the input.
pub(crate) fn crop_pad_with(vol: &Volume, start: [i64; 3], size: [usize; 3], fill: f32) -> Volume {
    let in_shape = vol.spatial_shape();
    let c = vol.channels();
    let src = contiguous(&vol.data);
    let chan = in_shape.iter().product::<usize>();
    let slab = size[1] * size[2];
    let mut out = vec![fill; c * size[0] * slab];
    // Overlap of the output z range with the input, as output indices.
    let z_lo = (-start[2]).clamp(0, size[2] as i64) as usize;
    let z_hi = (in_shape[2] as i64 - start[2]).clamp(0, size[2] as i64) as usize;
    if slab > 0 && z_hi > z_lo {
        out.par_chunks_mut(slab).enumerate().for_each(|(ci, dst)| {
            let (ch, i) = (ci / size[0], ci % size[0]);
            let si = i as i64 + start[0];
            if si < 0 || si >= in_shape[0] as i64 {
                return;
            }
            for (j, row) in dst.chunks_mut(size[2]).enumerate() {
                let sj = j as i64 + start[1];
                if sj < 0 || sj >= in_shape[1] as i64 {
                    continue;
                }
                let s = ch * chan + (si as usize * in_shape[1] + sj as usize) * in_shape[2];
                let sz = (z_lo as i64 + start[2]) as usize;
                row[z_lo..z_hi].copy_from_slice(&src[s + sz..s + sz + (z_hi - z_lo)]);
            }
        });
    }
    let data = Array4::from_shape_vec((c, size[0], size[1], size[2]), out)
        .unwrap_or_else(|_| unreachable!("buffer length equals the product of the output shape"));
    let affine = matmul4(
        &vol.affine,
        &translate([start[0] as f64, start[1] as f64, start[2] as f64]),
    );
    Volume::new(data, affine)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transforms::linalg::apply;

    fn ramp(shape: [usize; 4]) -> Volume {
        let n: usize = shape.iter().product();
        let data = Array4::from_shape_vec(
            (shape[0], shape[1], shape[2], shape[3]),
            (0..n).map(|v| v as f32).collect(),
        )
        .unwrap();
        let affine = [
            [0.0, 0.0, 2.0, 5.0],
            [-1.5, 0.0, 0.0, 1.0],
            [0.0, 3.0, 0.0, -2.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        Volume::new(data, affine)
    }

    fn world(v: &Volume, p: [usize; 3]) -> [f64; 3] {
        apply(&v.affine, [p[0] as f64, p[1] as f64, p[2] as f64])
    }

    #[test]
    fn flips_in_place_equal_the_copying_kernel() {
        // Odd and even extents on every axis, every flip combination, two channels.
        for shape in [[3, 4, 5], [4, 5, 2], [1, 1, 7], [5, 3, 1]] {
            let n = 2 * shape.iter().product::<usize>();
            let data = Array4::from_shape_vec(
                (2, shape[0], shape[1], shape[2]),
                (0..n).map(|v| v as f32).collect(),
            )
            .unwrap();
            let v = Volume::new(data, Volume::diag_affine([0.8, 1.0, 2.5]));
            for bits in 0..8 {
                let flips = [bits & 1 != 0, bits & 2 != 0, bits & 4 != 0];
                let want = permute_flip(&v, [0, 1, 2], flips);
                let got = permute_flip_owned(v.clone(), [0, 1, 2], flips);
                assert_eq!(got.data, want.data, "shape {shape:?} flips {flips:?}");
                assert_eq!(got.affine, want.affine);
            }
            let want = permute_flip(&v, [2, 0, 1], [true, false, true]);
            assert_eq!(
                permute_flip_owned(v.clone(), [2, 0, 1], [true, false, true]).data,
                want.data
            );
        }
    }

    #[test]
    fn permute_flip_preserves_world_positions() {
        let v = ramp([2, 3, 4, 5]);
        for perm in [[0, 1, 2], [2, 0, 1], [1, 2, 0], [2, 1, 0]] {
            for f in 0..8 {
                let flips = [f & 1 != 0, f & 2 != 0, f & 4 != 0];
                let o = permute_flip(&v, perm, flips);
                let os = o.spatial_shape();
                for c in 0..2 {
                    for i in 0..os[0] {
                        for j in 0..os[1] {
                            for k in 0..os[2] {
                                let val = o.data[[c, i, j, k]];
                                let n = (val as usize) % 60;
                                let src = [n / 20, (n / 5) % 4, n % 5];
                                assert_eq!(val as usize / 60, c);
                                let (a, b) = (world(&o, [i, j, k]), world(&v, src));
                                assert!(
                                    a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12),
                                    "{perm:?} {flips:?}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn crop_pad_box_and_zero_fill() {
        let v = ramp([1, 3, 4, 5]);
        let o = crop_pad(&v, [-1, 1, 3], [5, 2, 4]);
        assert_eq!(o.spatial_shape(), [5, 2, 4]);
        for i in 0..5i64 {
            for j in 0..2i64 {
                for k in 0..4i64 {
                    let (si, sj, sk) = (i - 1, j + 1, k + 3);
                    let want =
                        if (0..3).contains(&si) && (0..4).contains(&sj) && (0..5).contains(&sk) {
                            v.data[[0, si as usize, sj as usize, sk as usize]]
                        } else {
                            0.0
                        };
                    assert_eq!(o.data[[0, i as usize, j as usize, k as usize]], want);
                }
            }
        }
        assert_eq!(world(&o, [1, 0, 0]), world(&v, [0, 1, 3]));
        let back = crop_pad(&o, [1, -1, -3], [3, 4, 5]);
        assert_eq!(back.affine, v.affine);
        let empty = crop_pad(&v, [10, 0, 0], [2, 2, 2]);
        assert!(empty.data.iter().all(|&x| x == 0.0));
    }
}
