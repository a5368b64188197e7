//! Degenerate geometry is refused when a file is read, naming the file and the header field it came from: a
//! non-finite affine entry, a voxel axis of zero or non-finite length (spacing), or axes that do not span space
//! (a singular direction matrix). Every later step (orientation, resampling, writing) relies on this.

use std::path::Path;

use nalgebra::Matrix3;

use crate::error::{ImagingError, Result};

/// Smallest |determinant| of the unit-column direction matrix accepted: below it the voxel axes are (nearly)
/// linearly dependent and no orientation or inverse is meaningful.
pub(crate) const MIN_DIRECTION_DET: f64 = 1e-6;

/// Check the voxel-to-world `affine` read from `field` of `path`: finite entries, positive finite spacings, a
/// non-singular direction matrix. Errors name `path` and `field`.
pub fn check_affine(path: &Path, field: &str, affine: &[[f64; 4]; 4]) -> Result<()> {
    let bad = |msg: String| ImagingError::field(path, field, msg);
    if let Some((r, c)) = (0..3)
        .flat_map(|r| (0..4).map(move |c| (r, c)))
        .find(|&(r, c)| !affine[r][c].is_finite())
    {
        return Err(bad(format!(
            "affine entry [{r}][{c}] is {}; expected finite numbers",
            affine[r][c]
        )));
    }
    let m = Matrix3::from_fn(|r, c| affine[r][c]);
    let mut unit = m;
    for (c, mut col) in unit.column_iter_mut().enumerate() {
        let n = col.norm();
        if !(n.is_finite() && n > 0.0) {
            return Err(bad(format!(
                "voxel axis {c} has spacing {n}; expected a positive, finite spacing"
            )));
        }
        col /= n;
    }
    let det = unit.determinant();
    if !(det.abs() >= MIN_DIRECTION_DET) {
        return Err(bad(format!(
            "the direction matrix is singular (determinant {det:.3e} of its unit columns); expected three \
             independent voxel axes"
        )));
    }
    Ok(())
}

/// Check a list of spacings read from `field` (positive and finite).
pub(crate) fn check_spacing(path: &Path, field: &str, spacing: &[f64]) -> Result<()> {
    match spacing.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
        Some(i) => Err(ImagingError::field(
            path,
            field,
            format!(
                "value {} (axis {i}) is {}; expected a positive, finite spacing",
                i + 1,
                spacing[i]
            ),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diag(a: f64, b: f64, c: f64) -> [[f64; 4]; 4] {
        [
            [a, 0.0, 0.0, 1.0],
            [0.0, b, 0.0, 2.0],
            [0.0, 0.0, c, 3.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    }

    #[test]
    fn refuses_zero_nan_and_singular_geometry() {
        let p = Path::new("g.nii");
        check_affine(p, "srow", &diag(1.0, -2.0, 0.5)).unwrap();
        let e = check_affine(p, "srow", &diag(1.0, 0.0, 1.0)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "g.nii: header field `srow`: voxel axis 1 has spacing 0; expected a positive, finite spacing"
        );
        let e = check_affine(p, "srow", &diag(1.0, f64::NAN, 1.0)).unwrap_err();
        assert!(e.to_string().contains("affine entry [1][1] is NaN"), "{e}");
        let mut collinear = diag(1.0, 1.0, 1.0);
        collinear[0][1] = 1.0;
        collinear[1][1] = 1e-9;
        let e = check_affine(p, "TransformMatrix", &collinear).unwrap_err();
        assert!(e.to_string().contains("singular"), "{e}");
        assert!(check_spacing(p, "ElementSpacing", &[1.0, -1.0]).is_err());
        assert!(check_spacing(p, "ElementSpacing", &[1.0, f64::INFINITY]).is_err());
        check_spacing(p, "ElementSpacing", &[0.5, 2.0]).unwrap();
    }
}
