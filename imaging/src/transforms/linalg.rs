//! Small dense linear algebra on 3x3 / 4x4 affines (f64), enough for orientation and resampling geometry: the
//! row-major arrays the rest of the crate passes around, computed with `nalgebra`.
//!
//! Singular inputs return `None` so callers can name what failed.

use nalgebra::{Matrix3, Matrix4, SymmetricEigen};

/// A 4x4 homogeneous affine, row-major.
pub type Mat4 = [[f64; 4]; 4];
/// A 3x3 matrix, row-major.
pub type Mat3 = [[f64; 3]; 3];

fn na4(a: &Mat4) -> Matrix4<f64> {
    Matrix4::from_fn(|r, c| a[r][c])
}

fn na3(a: &Mat3) -> Matrix3<f64> {
    Matrix3::from_fn(|r, c| a[r][c])
}

fn arr4(m: &Matrix4<f64>) -> Mat4 {
    std::array::from_fn(|r| std::array::from_fn(|c| m[(r, c)]))
}

fn arr3(m: &Matrix3<f64>) -> Mat3 {
    std::array::from_fn(|r| std::array::from_fn(|c| m[(r, c)]))
}

/// The 4x4 identity.
pub fn identity4() -> Mat4 {
    arr4(&Matrix4::identity())
}

/// `a @ b` for 4x4 matrices.
pub fn matmul4(a: &Mat4, b: &Mat4) -> Mat4 {
    arr4(&(na4(a) * na4(b)))
}

/// `a @ b` for 3x3 matrices.
pub fn matmul3(a: &Mat3, b: &Mat3) -> Mat3 {
    arr3(&(na3(a) * na3(b)))
}

/// Transpose of a 3x3 matrix.
pub fn transpose3(a: &Mat3) -> Mat3 {
    arr3(&na3(a).transpose())
}

/// Determinant of a 3x3 matrix (cofactor expansion along the first row).
pub fn det3(m: &Mat3) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

/// The upper-left 3x3 block of an affine.
pub fn linear_part(a: &Mat4) -> Mat3 {
    arr3(&na4(a).fixed_view::<3, 3>(0, 0).into_owned())
}

/// `a⁻¹ @ b` by Gaussian elimination with partial pivoting (what `numpy.linalg.solve` computes); `None` if `a` is
/// singular. Hand-written rather than `nalgebra`'s LU on purpose: it reproduces LAPACK's operation order, so target
/// grids agree with MONAI/numpy bit for bit — `nalgebra` differs in the last bit, which moves nearest-neighbour label
/// samples that sit exactly halfway between voxels (16 voxels of the `spacing_flipped` golden case).
#[allow(clippy::needless_range_loop)] // index form mirrors the LAPACK reference
pub fn solve4(a: &Mat4, b: &Mat4) -> Option<Mat4> {
    let mut m = *a;
    let mut x = *b;
    for col in 0..4 {
        let pivot = (col..4).max_by(|&i, &j| m[i][col].abs().total_cmp(&m[j][col].abs()))?;
        if m[pivot][col] == 0.0 || !m[pivot][col].is_finite() {
            return None;
        }
        m.swap(col, pivot);
        x.swap(col, pivot);
        for row in col + 1..4 {
            let f = m[row][col] * (1.0 / m[col][col]);
            if f != 0.0 {
                for k in col..4 {
                    m[row][k] -= f * m[col][k];
                }
                for k in 0..4 {
                    x[row][k] -= f * x[col][k];
                }
            }
        }
    }
    // Back substitution column by column, subtracting the solved unknowns from the bottom up and multiplying by
    // the reciprocal pivot: the order OpenBLAS (numpy's LAPACK) uses, so results agree bit for bit on simple grids.
    for col in 0..4 {
        for k in (0..4).rev() {
            x[k][col] *= 1.0 / m[k][k];
            for row in 0..k {
                x[row][col] -= x[k][col] * m[row][k];
            }
        }
    }
    Some(x)
}

/// Inverse of a 4x4 matrix; `None` if singular.
pub fn inv4(a: &Mat4) -> Option<Mat4> {
    solve4(a, &identity4())
}

/// Translation affine by `t` voxels.
pub fn translate(t: [f64; 3]) -> Mat4 {
    let mut m = identity4();
    for (row, v) in m.iter_mut().zip(t) {
        row[3] = v;
    }
    m
}

/// Apply an affine to a point.
pub fn apply(a: &Mat4, p: [f64; 3]) -> [f64; 3] {
    let mut out = [0.0; 3];
    for (i, o) in out.iter_mut().enumerate() {
        *o = a[i][0] * p[0] + a[i][1] * p[1] + a[i][2] * p[2] + a[i][3];
    }
    out
}

/// Column norms of the 3x3 part (voxel sizes), with zero norms replaced by 1 (MONAI `affine_to_spacing`).
pub fn column_norms(a: &Mat4) -> [f64; 3] {
    let m = na3(&linear_part(a));
    std::array::from_fn(|j| {
        let n = m.column(j).norm();
        if n == 0.0 {
            1.0
        } else {
            n
        }
    })
}

/// Upper Cholesky factor `U` with `Uᵀ U = s` of a symmetric positive definite matrix; `None` if not positive definite.
pub fn cholesky_upper(s: &Mat3) -> Option<Mat3> {
    let m = na3(s);
    if m.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let l = m.cholesky()?.unpack();
    (0..3)
        .all(|i| l[(i, i)] > 0.0)
        .then(|| arr3(&l.transpose()))
}

/// Inverse of an upper-triangular 3x3 matrix with nonzero diagonal.
pub fn inv_upper3(u: &Mat3) -> Mat3 {
    let inv = na3(u)
        .solve_upper_triangular(&Matrix3::identity())
        .unwrap_or_else(|| Matrix3::from_element(f64::NAN));
    arr3(&inv)
}

/// Eigen-decomposition of a symmetric 3x3 matrix: eigenvalues and eigenvectors (as the columns of the returned
/// matrix), in no particular order.
pub fn sym_eig3(s: &Mat3) -> ([f64; 3], Mat3) {
    let e = SymmetricEigen::new(na3(s));
    (
        [e.eigenvalues[0], e.eigenvalues[1], e.eigenvalues[2]],
        arr3(&e.eigenvectors),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn det3_matches_hand_computed_values() {
        // 1·(1·0 − 4·6) − 2·(0·0 − 4·5) + 3·(0·6 − 1·5) = −24 + 40 − 15 = 1.
        assert_eq!(
            det3(&[[1.0, 2.0, 3.0], [0.0, 1.0, 4.0], [5.0, 6.0, 0.0]]),
            1.0
        );
        assert_eq!(
            det3(&[[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 4.0]]),
            24.0
        );
        // Swapping two rows flips the sign.
        assert_eq!(
            det3(&[[0.0, 3.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 4.0]]),
            -24.0
        );
    }

    fn close(a: &Mat4, b: &Mat4, tol: f64) -> bool {
        a.iter()
            .flatten()
            .zip(b.iter().flatten())
            .all(|(x, y)| (x - y).abs() <= tol)
    }

    #[test]
    fn solve_and_inverse() {
        let a = [
            [0.0, 2.0, 0.5, 3.0],
            [1.5, 0.0, 0.2, -1.0],
            [0.1, 0.3, 2.5, 7.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let inv = inv4(&a).unwrap();
        assert!(close(&matmul4(&a, &inv), &identity4(), 1e-12));
        let b = translate([1.0, 2.0, 3.0]);
        let x = solve4(&a, &b).unwrap();
        assert!(close(&matmul4(&a, &x), &b, 1e-12));
        let mut sing = a;
        sing[1] = sing[0];
        assert!(inv4(&sing).is_none());
    }

    #[test]
    fn cholesky_reconstructs() {
        let s = [[4.0, 2.0, 0.6], [2.0, 5.0, 1.0], [0.6, 1.0, 3.0]];
        let u = cholesky_upper(&s).unwrap();
        let r = matmul3(&transpose3(&u), &u);
        for i in 0..3 {
            for j in 0..3 {
                assert!((r[i][j] - s[i][j]).abs() < 1e-12);
            }
            for j in 0..i {
                assert_eq!(u[i][j], 0.0);
            }
        }
        let ui = inv_upper3(&u);
        let id = matmul3(&u, &ui);
        for (i, row) in id.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        assert!(cholesky_upper(&[[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]).is_none());
    }

    #[test]
    fn jacobi_eigen() {
        let s = [[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 5.0]];
        let (w, v) = sym_eig3(&s);
        let mut sorted = w;
        sorted.sort_by(f64::total_cmp);
        assert!(
            (sorted[0] - 1.0).abs() < 1e-12
                && (sorted[1] - 3.0).abs() < 1e-12
                && (sorted[2] - 5.0).abs() < 1e-12
        );
        for k in 0..3 {
            let col = [v[0][k], v[1][k], v[2][k]];
            for i in 0..3 {
                let sv: f64 = (0..3).map(|j| s[i][j] * col[j]).sum();
                assert!((sv - w[k] * col[i]).abs() < 1e-12);
            }
        }
    }
}
