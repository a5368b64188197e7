//! NIfTI affine arithmetic: the qform quaternion in both directions and the pixdim-only base affine, following
//! nibabel's `get_qform` / `set_qform` / `shape_zoom_affine` formulations (matrix work done with `nalgebra`).

use nalgebra::{Matrix3, Quaternion, Rotation3, UnitQuaternion};

type M3 = [[f64; 3]; 3];

fn arr(m: &Matrix3<f64>) -> M3 {
    std::array::from_fn(|r| std::array::from_fn(|c| m[(r, c)]))
}

/// The quaternion part of a NIfTI qform (what goes into the header fields of the same names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Qform {
    /// `quatern_b`, `quatern_c`, `quatern_d`.
    pub bcd: [f64; 3],
    /// `qoffset_x`, `qoffset_y`, `qoffset_z`.
    pub offset: [f64; 3],
    /// `pixdim[0]`: +1, or -1 for a left-handed voxel grid.
    pub qfac: f64,
    /// `pixdim[1..4]`.
    pub zooms: [f64; 3],
}

/// nibabel's `quaternion_threshold` for `fillpositive`: `-3 * float32 eps`.
const W2_THRESHOLD: f64 = -3.0 * f32::EPSILON as f64;

/// The affine that a qform describes: `R(quaternion) * diag(zooms[0], zooms[1], zooms[2] * qfac)` plus the offset.
/// Returns `None` when `b^2 + c^2 + d^2` exceeds 1 beyond float32 tolerance (nibabel raises there too).
pub(crate) fn qform_to_affine(q: &Qform) -> Option<[[f64; 4]; 4]> {
    let [b, c, d] = q.bcd;
    let w2 = 1.0 - (b * b + c * c + d * d);
    let a = if w2 < 0.0 {
        if w2 < W2_THRESHOLD {
            return None;
        }
        0.0
    } else {
        w2.sqrt()
    };
    let r = quat_to_mat(a, b, c, d);
    let s = [q.zooms[0], q.zooms[1], q.zooms[2] * q.qfac];
    let mut out = [[0.0; 4]; 4];
    for i in 0..3 {
        for j in 0..3 {
            out[i][j] = r[i][j] * s[j];
        }
        out[i][3] = q.offset[i];
    }
    out[3][3] = 1.0;
    Some(out)
}

/// Rotation matrix of a (not necessarily unit) quaternion `w + xi + yj + zk`; identity for a near-zero one.
fn quat_to_mat(w: f64, x: f64, y: f64, z: f64) -> M3 {
    let q = Quaternion::new(w, x, y, z);
    if q.norm_squared() < f64::EPSILON {
        return arr(&Matrix3::identity());
    }
    arr(UnitQuaternion::from_quaternion(q)
        .to_rotation_matrix()
        .matrix())
}

/// The qform of an affine, like nibabel's `set_qform(strip_shears=True)`: zooms are the column norms, a negative
/// determinant flips the third column into `qfac = -1`, and shears are removed by taking the closest rotation
/// (the orthogonal polar factor). Returns `None` if a column has zero or non-finite length.
pub(crate) fn affine_to_qform(aff: &[[f64; 4]; 4]) -> Option<Qform> {
    let mut zooms = [0.0; 3];
    for (j, z) in zooms.iter_mut().enumerate() {
        *z = (aff[0][j].powi(2) + aff[1][j].powi(2) + aff[2][j].powi(2)).sqrt();
        if !(z.is_finite() && *z > 0.0) {
            return None;
        }
    }
    let mut r = Matrix3::from_fn(|i, j| aff[i][j] / zooms[j]);
    let qfac = if r.determinant() > 0.0 {
        1.0
    } else {
        r.column_mut(2).neg_mut();
        -1.0
    };
    let pr = polar_rotation(&r)?;
    let [_, x, y, z] = mat_to_quat(&pr);
    Some(Qform {
        bcd: [x, y, z],
        offset: [aff[0][3], aff[1][3], aff[2][3]],
        qfac,
        zooms,
    })
}

/// nibabel's `shape_zoom_affine(shape, zooms, x_flip=True)`: a diagonal affine with the grid centre at the origin.
/// Only the first three entries are used; shorter inputs are padded with ones.
pub(crate) fn base_affine(shape: &[f64], zooms: &[f64]) -> [[f64; 4]; 4] {
    let mut out = [[0.0; 4]; 4];
    for (i, row) in out.iter_mut().enumerate().take(3) {
        let n = shape.get(i).copied().unwrap_or(1.0);
        let mut z = zooms.get(i).copied().unwrap_or(1.0);
        if i == 0 {
            z = -z;
        }
        row[i] = z;
        row[3] = -((n - 1.0) / 2.0) * z;
    }
    out[3][3] = 1.0;
    out
}

/// The orthogonal factor of the polar decomposition (the rotation closest to `m` in Frobenius norm): `U Vᵀ` of the
/// SVD `m = U S Vᵀ`; `None` for a (numerically) singular or non-finite `m`.
fn polar_rotation(m: &Matrix3<f64>) -> Option<Matrix3<f64>> {
    let d = m.determinant();
    if !(d.is_finite() && d.abs() > 1e-12) {
        return None;
    }
    let svd = m.svd(true, true);
    Some(svd.u? * svd.v_t?)
}

/// Unit quaternion `[w, x, y, z]` of a rotation matrix, with `w >= 0` as nibabel prefers.
fn mat_to_quat(m: &Matrix3<f64>) -> [f64; 4] {
    let q = UnitQuaternion::from_rotation_matrix(&Rotation3::from_matrix_unchecked(*m));
    let (w, i, j, k) = (q.w, q.i, q.j, q.k);
    if w < 0.0 {
        [-w, -i, -j, -k]
    } else {
        [w, i, j, k]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[[f64; 4]; 4], b: &[[f64; 4]; 4], tol: f64) -> bool {
        a.iter()
            .flatten()
            .zip(b.iter().flatten())
            .all(|(x, y)| (x - y).abs() <= tol)
    }

    fn rot(axis: [f64; 3], angle: f64) -> M3 {
        let n = (axis[0] * axis[0] + axis[1] * axis[1] + axis[2] * axis[2]).sqrt();
        let (s, c) = (angle / 2.0).sin_cos();
        quat_to_mat(c, axis[0] / n * s, axis[1] / n * s, axis[2] / n * s)
    }

    #[test]
    fn quaternion_matches_hand_computed_rotation() {
        // 90 degrees about z: quaternion (cos45, 0, 0, sin45) maps x -> y.
        let h = std::f64::consts::FRAC_1_SQRT_2;
        let q = Qform {
            bcd: [0.0, 0.0, h],
            offset: [1.0, 2.0, 3.0],
            qfac: 1.0,
            zooms: [2.0, 3.0, 4.0],
        };
        let a = qform_to_affine(&q).unwrap();
        let want = [
            [0.0, -3.0, 0.0, 1.0],
            [2.0, 0.0, 0.0, 2.0],
            [0.0, 0.0, 4.0, 3.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        assert!(close(&a, &want, 1e-12), "{a:?}");
        let back = affine_to_qform(&a).unwrap();
        assert!(
            (back.bcd[2] - h).abs() < 1e-12 && back.qfac == 1.0 && back.zooms == [2.0, 3.0, 4.0]
        );
    }

    #[test]
    fn round_trips_oblique_and_left_handed_affines() {
        for (axis, angle, flip) in [
            ([1.0, 2.0, 3.0], 0.7, 1.0),
            ([0.0, 1.0, 0.0], 3.1, -1.0),
            ([1.0, 0.0, 0.0], std::f64::consts::PI, -1.0),
        ] {
            let r = rot(axis, angle);
            let zooms = [0.8, 1.25, 2.5];
            let mut a = [[0.0; 4]; 4];
            for i in 0..3 {
                for j in 0..3 {
                    a[i][j] = r[i][j] * zooms[j] * if j == 2 { flip } else { 1.0 };
                }
                a[i][3] = 10.0 * i as f64 - 7.0;
            }
            a[3][3] = 1.0;
            let q = affine_to_qform(&a).unwrap();
            assert_eq!(q.qfac, flip);
            let back = qform_to_affine(&q).unwrap();
            assert!(close(&a, &back, 1e-10), "{a:?} vs {back:?}");
        }
    }

    #[test]
    fn shears_are_stripped_to_the_closest_rotation() {
        let a = [
            [1.0, 0.1, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let q = affine_to_qform(&a).unwrap();
        let b = qform_to_affine(&q).unwrap();
        // The result is orthogonal: columns have the input's norms and are mutually perpendicular.
        let dot01: f64 = (0..3).map(|i| b[i][0] * b[i][1]).sum();
        assert!(dot01.abs() < 1e-12);
        assert!(affine_to_qform(&[[0.0; 4]; 4]).is_none());
    }

    #[test]
    fn invalid_quaternion_and_base_affine() {
        let q = Qform {
            bcd: [1.0, 0.5, 0.0],
            offset: [0.0; 3],
            qfac: 1.0,
            zooms: [1.0; 3],
        };
        assert!(qform_to_affine(&q).is_none());
        // nibabel: shape_zoom_affine((3, 5, 7), (3, 2, 1)) -> diag(-3, 2, 1) with offsets (3, -4, -3)
        let a = base_affine(&[3.0, 5.0, 7.0], &[3.0, 2.0, 1.0]);
        let want = [
            [-3.0, 0.0, 0.0, 3.0],
            [0.0, 2.0, 0.0, -4.0],
            [0.0, 0.0, 1.0, -3.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        assert_eq!(a, want);
        let a2 = base_affine(&[4.0, 2.0], &[2.0, 2.0]);
        assert_eq!(a2[0][3], 3.0);
        assert_eq!(a2[2], [0.0, 0.0, 1.0, 0.0]);
    }
}
