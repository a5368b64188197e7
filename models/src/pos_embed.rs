//! Fixed sin-cos position tables (2-D He et al., 3-D SelfMedMAE) and resizing of a learned table to another grid.
//!
//! Both tables have one row per patch token in row-major grid order (`n = (ih·gw + iw)·gd + id`) and no cls row.

use tch::{Device, Kind, Tensor};

use crate::error::{shape_err, Result};

/// SelfMedMAE's 3-D table, `[N, dim]` row-major: with `pos_dim = dim/6`, `ω_k = 1/10000^(k/pos_dim)` (f32), token
/// `(ih, iw, id)` gets `[sin(ih·ω), cos(ih·ω), sin(iw·ω), cos(iw·ω), sin(id·ω), cos(id·ω)]` — block order (h, w, d).
pub fn sincos_3d(grid: [usize; 3], dim: usize) -> Result<Vec<f32>> {
    if dim == 0 || dim % 6 != 0 {
        return Err(shape_err(
            "3-D sincos width",
            "a positive multiple of 6",
            dim,
        ));
    }
    let pd = dim / 6;
    // f32 throughout, like the reference, so tables agree to the last bit or two.
    let omega: Vec<f32> = (0..pd)
        .map(|k| 1.0 / 10000f32.powf(k as f32 / pd as f32))
        .collect();
    let [gh, gw, gd] = grid;
    let mut out = Vec::with_capacity(gh * gw * gd * dim);
    for ih in 0..gh {
        for iw in 0..gw {
            for id in 0..gd {
                for coord in [ih, iw, id] {
                    out.extend(omega.iter().map(|w| (coord as f32 * w).sin()));
                    out.extend(omega.iter().map(|w| (coord as f32 * w).cos()));
                }
            }
        }
    }
    Ok(out)
}

/// He et al.'s 2-D table, `[N, dim]` row-major: with `ω_k = 1/10000^(k/(dim/4))` (computed in f64, stored as f32),
/// token `(row, col)` gets `[sin(col·ω), cos(col·ω), sin(row·ω), cos(row·ω)]` — the column block first.
pub fn sincos_2d(grid: [usize; 2], dim: usize) -> Result<Vec<f32>> {
    if dim == 0 || dim % 4 != 0 {
        return Err(shape_err(
            "2-D sincos width",
            "a positive multiple of 4",
            dim,
        ));
    }
    let q = dim / 4;
    let omega: Vec<f64> = (0..q)
        .map(|k| 1.0 / 10000f64.powf(k as f64 / q as f64))
        .collect();
    let [gh, gw] = grid;
    let mut out = Vec::with_capacity(gh * gw * dim);
    for r in 0..gh {
        for c in 0..gw {
            for coord in [c, r] {
                out.extend(omega.iter().map(|w| (coord as f64 * w).sin() as f32));
                out.extend(omega.iter().map(|w| (coord as f64 * w).cos() as f32));
            }
        }
    }
    Ok(out)
}

/// The sincos table for a 2-D or 3-D patch grid as a `[1, N, dim]` float tensor on `device`.
pub fn sincos_table(grid: &[usize], dim: usize, device: Device) -> Result<Tensor> {
    let data = match *grid {
        [h, w] => sincos_2d([h, w], dim)?,
        [h, w, d] => sincos_3d([h, w, d], dim)?,
        _ => return Err(shape_err("sincos grid", "2 or 3 axes", grid)),
    };
    let n: usize = grid.iter().product();
    Ok(Tensor::f_from_slice(&data)?
        .f_reshape([1, n as i64, dim as i64])?
        .f_to_device(device)?)
}

/// Every ordered way to write `n` as a product of `dims` positive factors (the patch grids with `n` tokens).
pub fn factorizations(n: usize, dims: usize) -> Vec<Vec<usize>> {
    if dims == 0 {
        return if n == 1 { vec![vec![]] } else { vec![] };
    }
    if dims == 1 {
        return if n >= 1 { vec![vec![n]] } else { vec![] };
    }
    let mut out = Vec::new();
    for f in (1..=n).filter(|f| n % f == 0) {
        for mut rest in factorizations(n / f, dims - 1) {
            rest.insert(0, f);
            out.push(rest);
        }
    }
    out
}

/// The patch grids (2 or 3 axes) whose sincos table, as this module builds it, equals `table` (`[N, dim]` row-major)
/// within `tol` everywhere. Used to read the grid off a checkpoint's fixed table when the image size is not given.
pub fn grids_matching_sincos(table: &[f32], dim: usize, dims: usize, tol: f32) -> Vec<Vec<usize>> {
    if dim == 0 || table.len() % dim != 0 || !(2..=3).contains(&dims) {
        return Vec::new();
    }
    let n = table.len() / dim;
    factorizations(n, dims)
        .into_iter()
        .filter(|g| {
            let cand = match *g.as_slice() {
                [h, w] => sincos_2d([h, w], dim),
                [h, w, d] => sincos_3d([h, w, d], dim),
                _ => return false,
            };
            cand.is_ok_and(|c| c.iter().zip(table).all(|(a, b)| (a - b).abs() <= tol))
        })
        .collect()
}

/// Resize a `[1, N, E]` position table laid out on grid `from` to grid `to`: trilinear in 3-D, bicubic in 2-D (timm's
/// choice for 2-D ViTs), `align_corners = false`, like `F.interpolate(size=to)`. Same grids return a copy.
pub fn resize_grid(pos: &Tensor, from: &[usize], to: &[usize]) -> Result<Tensor> {
    let size = pos.size();
    let n_from: usize = from.iter().product();
    if from.len() != to.len() || !(2..=3).contains(&from.len()) {
        return Err(shape_err(
            "position grid",
            "two 2-D or two 3-D grids",
            (from, to),
        ));
    }
    if size.len() != 3 || size[0] != 1 || size[1] != n_from as i64 {
        return Err(shape_err(
            "position table",
            format!("[1, {n_from}, E] for grid {from:?}"),
            size,
        ));
    }
    if from == to {
        return Ok(pos.f_detach()?.copy());
    }
    let e = size[2];
    let mut grid_shape = vec![1i64, e];
    grid_shape.extend(from.iter().map(|&g| g as i64));
    let g = pos
        .f_transpose(1, 2)?
        .f_reshape(&grid_shape)?
        .f_to_kind(Kind::Float)?;
    let target: Vec<i64> = to.iter().map(|&t| t as i64).collect();
    let r = if to.len() == 3 {
        g.f_upsample_trilinear3d(&target, false, None, None, None)?
    } else {
        g.f_upsample_bicubic2d(&target, false, None, None)?
    };
    let n_to: i64 = target.iter().product();
    Ok(r.f_reshape([1, e, n_to])?
        .f_transpose(1, 2)?
        .f_contiguous()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_3d_hand_values_and_block_order() {
        let g = [2, 3, 4];
        let t = sincos_3d(g, 12).unwrap();
        assert_eq!(t.len(), 24 * 12);
        // token 0 is (0,0,0): sin 0 = 0, cos 0 = 1 in every block
        assert_eq!(&t[..12], &[0., 0., 1., 1., 0., 0., 1., 1., 0., 0., 1., 1.]);
        // token (1, 2, 3) = (1*3 + 2)*4 + 3 = 23; pos_dim 2, ω = [1, 0.01]
        let row = &t[23 * 12..24 * 12];
        let exp = |c: f32| [(c).sin(), (c * 0.01).sin(), c.cos(), (c * 0.01).cos()];
        let want: Vec<f32> = [1.0f32, 2.0, 3.0].iter().flat_map(|&c| exp(c)).collect();
        for (a, b) in row.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6, "{row:?} vs {want:?}");
        }
    }

    #[test]
    fn table_2d_puts_column_first() {
        let t = sincos_2d([2, 3], 8).unwrap();
        // token (row 1, col 2) = 1*3 + 2 = 5; q = 2, ω = [1, 0.01]
        let row = &t[5 * 8..6 * 8];
        let want = [
            2f32.sin(),
            0.02f32.sin(),
            2f32.cos(),
            0.02f32.cos(),
            1f32.sin(),
            0.01f32.sin(),
            1f32.cos(),
            0.01f32.cos(),
        ];
        for (a, b) in row.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6);
        }
        assert!(sincos_2d([2, 2], 6).is_err());
        assert!(sincos_3d([2, 2, 2], 8).is_err());
    }

    #[test]
    fn grids_are_read_off_sincos_tables() {
        assert_eq!(
            factorizations(4, 2),
            vec![vec![1, 4], vec![2, 2], vec![4, 1]]
        );
        assert_eq!(factorizations(12, 3).len(), 18);
        for grid in [vec![4, 2, 2], vec![2, 4, 2], vec![1, 1, 16], vec![3, 5, 1]] {
            let t = sincos_3d([grid[0], grid[1], grid[2]], 6).unwrap();
            assert_eq!(grids_matching_sincos(&t, 6, 3, 1e-4), vec![grid]);
        }
        let t = sincos_2d([3, 4], 8).unwrap();
        assert_eq!(grids_matching_sincos(&t, 8, 2, 1e-4), vec![vec![3, 4]]);
        // a learned (random) table matches no grid
        let r: Vec<f32> = (0..12 * 8).map(|i| ((i * 37 % 11) as f32) / 7.0).collect();
        assert!(grids_matching_sincos(&r, 8, 2, 1e-4).is_empty());
    }

    #[test]
    fn resize_keeps_constants_and_shape() {
        let pos = Tensor::full([1, 8, 6], 0.5, (Kind::Float, Device::Cpu));
        let r = resize_grid(&pos, &[2, 2, 2], &[4, 4, 4]).unwrap();
        assert_eq!(r.size(), vec![1, 64, 6]);
        assert!((r - 0.5).abs().max().double_value(&[]) < 1e-6);
        let pos2 = Tensor::arange(12, (Kind::Float, Device::Cpu)).reshape([1, 6, 2]);
        assert_eq!(
            resize_grid(&pos2, &[2, 3], &[2, 3]).unwrap().size(),
            vec![1, 6, 2]
        );
        assert!(resize_grid(&pos2, &[2, 2], &[4, 4]).is_err());
    }
}
