//! Voxel-axis orientation from an affine, and reorientation to any axis codes — nibabel's `io_orientation`,
//! `aff2axcodes`, `ornt_transform`, `inv_ornt_aff` and MONAI's `Orientation` (flip + transpose of voxel axes; the
//! affine changes so that every voxel keeps its world position).

use crate::transforms::geometry::{permute_flip, permute_flip_affine, permute_flip_owned};
use crate::transforms::linalg::{inv4, matmul4, sym_eig3, Mat4};
use crate::{ImagingError, Result, Volume};

/// Labels of the (negative, positive) end of each world axis (RAS+).
const LABELS: [(char, char); 3] = [('L', 'R'), ('P', 'A'), ('I', 'S')];

/// For each input voxel axis: the world axis it follows most closely and whether it runs the opposite way.
/// `None` for an axis that does not map to any world axis (degenerate affine).
pub type Ornt = [Option<(usize, bool)>; 3];

/// nibabel `io_orientation`: for each voxel axis, the closest world axis and its direction, from the polar
/// decomposition of the affine's (zoom-normalised) 3x3 part; axes are assigned strongest first, ties stable.
pub fn io_orientation(affine: &Mat4) -> Ornt {
    let mut rs = [[0.0; 3]; 3];
    for j in 0..3 {
        let zoom = (0..3)
            .map(|i| affine[i][j] * affine[i][j])
            .sum::<f64>()
            .sqrt();
        let zoom = if zoom == 0.0 { 1.0 } else { zoom };
        for (i, row) in rs.iter_mut().enumerate() {
            row[j] = affine[i][j] / zoom;
        }
    }
    // Polar factor R = Σ_kept u_k v_kᵀ from the eigen-decomposition of RSᵀRS (singular values s_k = √λ_k).
    let mut rtr = [[0.0; 3]; 3];
    for (a, row) in rtr.iter_mut().enumerate() {
        for (b, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|i| rs[i][a] * rs[i][b]).sum();
        }
    }
    let (lambda, v) = sym_eig3(&rtr);
    let s: Vec<f64> = lambda.iter().map(|l| l.max(0.0).sqrt()).collect();
    let smax = s.iter().copied().fold(0.0, f64::max);
    let tol = smax * 3.0 * f64::EPSILON;
    let mut r = [[0.0; 3]; 3];
    for k in 0..3 {
        if s[k] <= tol {
            continue;
        }
        let vk = [v[0][k], v[1][k], v[2][k]];
        for (i, row) in r.iter_mut().enumerate() {
            let uk = (0..3).map(|j| rs[i][j] * vk[j]).sum::<f64>() / s[k];
            for (j, x) in row.iter_mut().enumerate() {
                *x += uk * vk[j];
            }
        }
    }
    let mut order = [0usize, 1, 2];
    let key = |j: usize| {
        (0..3)
            .map(|i| -(r[i][j] * r[i][j]))
            .fold(f64::INFINITY, f64::min)
    };
    order.sort_by(|&a, &b| key(a).total_cmp(&key(b)));
    let mut ornt: Ornt = [None; 3];
    for in_ax in order {
        let col = [r[0][in_ax], r[1][in_ax], r[2][in_ax]];
        if col.iter().all(|x| x.abs() <= 1e-8) {
            continue;
        }
        let mut out_ax = 0;
        for i in 1..3 {
            if col[i].abs() > col[out_ax].abs() {
                out_ax = i;
            }
        }
        ornt[in_ax] = Some((out_ax, col[out_ax] < 0.0));
        r[out_ax] = [0.0; 3];
    }
    ornt
}

/// nibabel `aff2axcodes`: the world direction (R/L, A/P, S/I) towards which each voxel axis increases; `'?'` for a
/// degenerate axis.
pub fn axcodes(affine: &Mat4) -> [char; 3] {
    let mut out = ['?'; 3];
    for (o, a) in out.iter_mut().zip(io_orientation(affine)) {
        if let Some((ax, flip)) = a {
            *o = if flip { LABELS[ax].0 } else { LABELS[ax].1 };
        }
    }
    out
}

/// Parse target axis codes such as "RAS" or "LPI" (nibabel `axcodes2ornt`; case-insensitive): for each output voxel
/// axis, the world axis and whether it runs towards the negative label.
pub fn parse_axcodes(codes: &str) -> Result<[(usize, bool); 3]> {
    let chars: Vec<char> = codes.chars().map(|c| c.to_ascii_uppercase()).collect();
    let bad = || {
        ImagingError::config(
            "axcodes",
            format!(
                "expected 3 codes from L/R, P/A, I/S naming each world axis once, got {codes:?}"
            ),
        )
    };
    if chars.len() != 3 {
        return Err(bad());
    }
    let mut out = [(0, false); 3];
    let mut seen = [false; 3];
    for (o, ch) in out.iter_mut().zip(&chars) {
        let ax = LABELS
            .iter()
            .position(|(n, p)| n == ch || p == ch)
            .ok_or_else(bad)?;
        if seen[ax] {
            return Err(bad());
        }
        seen[ax] = true;
        *o = (ax, LABELS[ax].0 == *ch);
    }
    Ok(out)
}

/// A reorientation applied to a volume: output voxel axis `perm[k]` ← input axis, flips on input axes.
#[derive(Debug, Clone, PartialEq)]
pub struct OrientOp {
    /// Output axis `k` is input axis `perm[k]`.
    pub perm: [usize; 3],
    /// Input axes that were reversed.
    pub flip: [bool; 3],
    /// Spatial shape of the input.
    pub in_shape: [usize; 3],
}

impl OrientOp {
    /// True when the operation leaves the voxel grid unchanged.
    pub fn is_identity(&self) -> bool {
        self.perm == [0, 1, 2] && self.flip == [false; 3]
    }

    /// Apply this operation to a volume on the input grid (e.g. the label of the same image).
    pub fn apply(&self, vol: &Volume) -> Result<Volume> {
        if vol.spatial_shape() != self.in_shape {
            return Err(ImagingError::Shape(format!(
                "orientation: volume has spatial shape {:?}, the operation was planned for {:?}",
                vol.spatial_shape(),
                self.in_shape
            )));
        }
        if self.is_identity() {
            return Ok(vol.clone());
        }
        Ok(permute_flip(vol, self.perm, self.flip))
    }

    /// [`Self::apply`] to a volume the caller gives up: flips without a permutation happen in place.
    pub fn apply_owned(&self, vol: Volume) -> Result<Volume> {
        if vol.spatial_shape() != self.in_shape {
            return self.apply(&vol);
        }
        if self.is_identity() {
            return Ok(vol);
        }
        Ok(permute_flip_owned(vol, self.perm, self.flip))
    }

    /// Map a volume on the reoriented grid back to the original voxel axes (and affine).
    pub fn invert(&self, vol: &Volume) -> Result<Volume> {
        let out_shape = [
            self.in_shape[self.perm[0]],
            self.in_shape[self.perm[1]],
            self.in_shape[self.perm[2]],
        ];
        if vol.spatial_shape() != out_shape {
            return Err(ImagingError::Shape(format!(
                "orientation inverse: volume has spatial shape {:?}, expected {out_shape:?}",
                vol.spatial_shape()
            )));
        }
        if self.is_identity() {
            return Ok(vol.clone());
        }
        // Inverse permutation: input axis i was output axis inv[i]; its flip now applies to that output axis.
        let mut inv = [0usize; 3];
        for (k, &i) in self.perm.iter().enumerate() {
            inv[i] = k;
        }
        let mut flip_out = [false; 3];
        for (i, &k) in inv.iter().enumerate() {
            flip_out[k] = self.flip[i];
        }
        let mut back = permute_flip(vol, inv, flip_out);
        // Recompute the affine from the exact inverse of the forward voxel map (entries are small integers).
        let fwd = permute_flip_affine(self.in_shape, self.perm, self.flip);
        if let Some(fi) = inv4(&fwd) {
            back.affine = matmul4(&vol.affine, &fi);
        }
        Ok(back)
    }
}

/// Plan the reorientation of a volume with `affine` and spatial shape `shape` to `target` axis codes
/// (nibabel `ornt_transform(io_orientation(affine), axcodes2ornt(target))`).
pub fn plan(affine: &Mat4, shape: [usize; 3], target: &str) -> Result<OrientOp> {
    let dst = parse_axcodes(target)?;
    let src = io_orientation(affine);
    let mut perm = [0usize; 3];
    let mut flip = [false; 3];
    let mut used = [false; 3];
    for (in_ax, s) in src.iter().enumerate() {
        let (world, sflip) = s.ok_or_else(|| {
            ImagingError::Shape(format!(
                "orientation: voxel axis {in_ax} of affine {affine:?} has no world direction"
            ))
        })?;
        let out_ax = dst.iter().position(|d| d.0 == world).unwrap_or(in_ax);
        if used[out_ax] {
            return Err(ImagingError::Shape(format!(
                "orientation: affine {affine:?} maps two voxel axes to one world axis"
            )));
        }
        used[out_ax] = true;
        perm[out_ax] = in_ax;
        flip[in_ax] = sflip != dst[out_ax].1;
    }
    Ok(OrientOp {
        perm,
        flip,
        in_shape: shape,
    })
}

/// Reorient a volume to `target` axis codes (e.g. "RAS"): returns the new volume and the operation (to invert it).
pub fn reorient(vol: &Volume, target: &str) -> Result<(Volume, OrientOp)> {
    let op = plan(&vol.affine, vol.spatial_shape(), target)?;
    Ok((op.apply(vol)?, op))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    fn rot_z(deg: f64) -> Mat4 {
        let (s, c) = deg.to_radians().sin_cos();
        [
            [c, -s, 0.0, 1.0],
            [s, c, 0.0, 2.0],
            [0.0, 0.0, 1.0, 3.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    }

    #[test]
    fn axcodes_of_simple_affines() {
        let mut a = Volume::diag_affine([1.0, 2.0, 3.0]);
        assert_eq!(axcodes(&a), ['R', 'A', 'S']);
        a[0][0] = -1.0;
        a[1][1] = -2.0;
        assert_eq!(axcodes(&a), ['L', 'P', 'S']);
        let p = [
            [0.0, 0.0, -2.0, 0.0],
            [1.5, 0.0, 0.0, 0.0],
            [0.0, 3.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        assert_eq!(axcodes(&p), ['A', 'S', 'L']);
        assert_eq!(axcodes(&rot_z(30.0)), ['R', 'A', 'S']);
        assert_eq!(axcodes(&rot_z(60.0)), ['A', 'L', 'S']);
        let mut degenerate = Volume::diag_affine([1.0, 1.0, 1.0]);
        degenerate[2][2] = 0.0;
        assert_eq!(axcodes(&degenerate), ['R', 'A', '?']);
    }

    #[test]
    fn parse_rejects_bad_codes() {
        assert_eq!(
            parse_axcodes("ras").unwrap(),
            [(0, false), (1, false), (2, false)]
        );
        assert_eq!(
            parse_axcodes("PIL").unwrap(),
            [(1, true), (2, true), (0, true)]
        );
        for bad in ["RA", "RAR", "RLS", "XYZ", "RASS"] {
            assert!(parse_axcodes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reorient_and_invert_roundtrip() {
        let data = Array4::from_shape_fn((2, 3, 4, 5), |(c, i, j, k)| {
            (c * 100 + i * 20 + j * 5 + k) as f32
        });
        let affine = [
            [0.0, 0.0, -2.0, 10.0],
            [1.5, 0.0, 0.0, -3.0],
            [0.0, -3.0, 0.0, 7.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let v = Volume::new(data, affine);
        for target in ["RAS", "LPS", "SAR", "IPL"] {
            let (o, op) = reorient(&v, target).unwrap();
            assert_eq!(axcodes(&o.affine).iter().collect::<String>(), target);
            let back = op.invert(&o).unwrap();
            assert_eq!(back.data, v.data);
            assert_eq!(back.affine, v.affine);
        }
        let (o, _) = reorient(&v, "RAS").unwrap();
        assert_eq!(o.spatial_shape(), [5, 3, 4]);
        // RAS: world x increases along voxel axis 0 → it was the flipped input axis 2.
        assert_eq!(o.data[[1, 0, 0, 0]], v.data[[1, 0, 3, 4]]);
    }
}
