//! Slice geometry of a series: sort along the slice normal, check that the slices form one regular grid, and build
//! the voxel-to-RAS affine.
//!
//! DICOM speaks LPS: ImageOrientationPatient holds the row direction (the direction of increasing column index) then
//! the column direction (increasing row index); ImagePositionPatient is the centre of the first pixel. As for
//! MetaImage/ITK in [`crate::io`], the LPS geometry is converted to RAS by negating the first two world axes.

use nalgebra::Vector3;

use crate::error::{ImagingError, Result};
use crate::io::check_affine;
use crate::volume::Volume;

use super::meta::SliceMeta;

/// Geometry of a sorted series.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Grid {
    /// Indices into the input slice list, in order of increasing position along the normal.
    pub order: Vec<usize>,
    /// Voxel-to-RAS affine of the volume `(X = columns, Y = rows, Z = slices)`.
    pub affine: [[f64; 4]; 4],
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    Vector3::from(a).dot(&Vector3::from(b))
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    Vector3::from(a).cross(&Vector3::from(b)).into()
}

fn unit(v: [f64; 3]) -> Option<[f64; 3]> {
    let v = Vector3::from(v);
    let n = v.norm();
    (n > 1e-6).then(|| (v / n).into())
}

fn err(s: &SliceMeta, msg: String) -> ImagingError {
    ImagingError::format(&s.name, msg)
}

/// Sort the slices of one series and derive its affine, or explain why they do not form one volume.
pub(crate) fn grid(slices: &[SliceMeta]) -> Result<Grid> {
    let Some(first) = slices.first() else {
        return Err(ImagingError::Shape(
            "a DICOM series without image slices".into(),
        ));
    };
    check_uniform(slices)?;
    let ps = pixel_spacing(first, slices.len())?;
    let plane = Plane::of(first, slices.len())?;
    let proj = project(slices, first, &plane, ps)?;
    let mut order: Vec<usize> = (0..slices.len()).collect();
    order.sort_by(|&a, &b| {
        proj[a]
            .total_cmp(&proj[b])
            .then_with(|| slices[a].name.cmp(&slices[b].name))
    });
    let step = if order.len() > 1 {
        slice_step(slices, &order, &proj, &plane, ps)?
    } else {
        first.slice_step.unwrap_or(1.0)
    };
    let origin_lps = slices[order[0]].ipp.unwrap_or(plane.ipp0);
    // Columns of the direction matrix: voxel axes X (along a row), Y (down a column), Z (along the normal).
    let (row, col, normal) = (plane.row, plane.col, plane.normal);
    let dir_lps = [
        [row[0], col[0], normal[0]],
        [row[1], col[1], normal[1]],
        [row[2], col[2], normal[2]],
    ];
    let flip = [-1.0, -1.0, 1.0];
    let mut dir = [[0.0; 3]; 3];
    let mut origin = [0.0; 3];
    for r in 0..3 {
        for c in 0..3 {
            dir[r][c] = flip[r] * dir_lps[r][c];
        }
        origin[r] = flip[r] * origin_lps[r];
    }
    let affine = Volume::affine_from([ps[1], ps[0], step], origin, dir);
    check_affine(
        &first.name,
        "PixelSpacing/ImageOrientationPatient/ImagePositionPatient",
        &affine,
    )?;
    Ok(Grid { order, affine })
}

/// Every slice has the size, sample layout and frame of reference of the first, and one frame.
fn check_uniform(slices: &[SliceMeta]) -> Result<()> {
    let first = &slices[0];
    for s in slices {
        if (s.rows, s.cols, s.samples, s.bits_allocated)
            != (first.rows, first.cols, first.samples, first.bits_allocated)
        {
            return Err(err(
                s,
                format!(
                    "slice size {}x{} ({} samples, {} bits) differs from {} ({}x{}, {} samples, {} bits)",
                    s.cols,
                    s.rows,
                    s.samples,
                    s.bits_allocated,
                    first.name.display(),
                    first.cols,
                    first.rows,
                    first.samples,
                    first.bits_allocated
                ),
            ));
        }
        if s.frame_of_reference != first.frame_of_reference {
            return Err(err(
                s,
                format!("FrameOfReferenceUID differs from {}", first.name.display()),
            ));
        }
    }
    if first.frames > 1 || slices.len() > 1 && slices.iter().any(|s| s.frames != 1) {
        return Err(ImagingError::Unsupported {
            path: first.name.clone(),
            what: format!(
                "multi-frame image ({} frames); expected one file per slice",
                first.frames
            ),
        });
    }
    Ok(())
}

/// PixelSpacing `(between rows, between columns)` of a slice: positive and finite; 1 mm for a lone slice without it.
fn pixel_spacing(s: &SliceMeta, n_slices: usize) -> Result<[f64; 2]> {
    match s.pixel_spacing {
        Some([r, c]) if r.is_finite() && c.is_finite() && r > 0.0 && c > 0.0 => Ok([r, c]),
        Some([r, c]) => Err(ImagingError::field(
            &s.name,
            "PixelSpacing",
            format!("is {r}\\{c}; expected two positive, finite spacings"),
        )),
        None if n_slices == 1 => Ok([1.0, 1.0]),
        None => Err(ImagingError::field(&s.name, "PixelSpacing", "missing")),
    }
}

/// The image plane of the first slice: unit row and column directions, their normal, and the first position.
struct Plane {
    iop: [f64; 6],
    ipp0: [f64; 3],
    row: [f64; 3],
    col: [f64; 3],
    normal: [f64; 3],
}

impl Plane {
    fn of(first: &SliceMeta, n_slices: usize) -> Result<Self> {
        let (iop, ipp0) = match (first.iop, first.ipp) {
            (Some(o), Some(p)) => (o, p),
            _ if n_slices == 1 => ([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], [0.0; 3]),
            _ => {
                return Err(err(
                    first,
                    "ImageOrientationPatient or ImagePositionPatient is missing".into(),
                ))
            }
        };
        let shown = iop.map(|v| v.to_string()).join("\\");
        let (Some(row), Some(col)) = (
            unit([iop[0], iop[1], iop[2]]),
            unit([iop[3], iop[4], iop[5]]),
        ) else {
            return Err(ImagingError::field(
                &first.name,
                "ImageOrientationPatient",
                format!("is {shown}: a zero direction; expected two unit vectors"),
            ));
        };
        if dot(row, col).abs() > 1e-3 {
            return Err(ImagingError::field(
                &first.name,
                "ImageOrientationPatient",
                format!("is {shown}: row and column directions are not orthogonal"),
            ));
        }
        Ok(Self {
            iop,
            ipp0,
            row,
            col,
            normal: cross(row, col),
        })
    }
}

/// Each slice's position along the normal, after checking its spacing and orientation match the first slice.
fn project(
    slices: &[SliceMeta],
    first: &SliceMeta,
    plane: &Plane,
    ps: [f64; 2],
) -> Result<Vec<f64>> {
    let mut proj = Vec::with_capacity(slices.len());
    for s in slices {
        let sps = pixel_spacing(s, slices.len())?;
        if (sps[0] - ps[0]).abs() > 1e-4 * ps[0].max(1.0)
            || (sps[1] - ps[1]).abs() > 1e-4 * ps[1].max(1.0)
        {
            return Err(err(
                s,
                format!(
                    "PixelSpacing {}\\{} differs from {}\\{} in {}",
                    sps[0],
                    sps[1],
                    ps[0],
                    ps[1],
                    first.name.display()
                ),
            ));
        }
        let (Some(o), Some(p)) = (s.iop, s.ipp) else {
            if slices.len() == 1 {
                proj.push(0.0);
                continue;
            }
            return Err(err(
                s,
                "ImageOrientationPatient or ImagePositionPatient is missing".into(),
            ));
        };
        if o.iter()
            .zip(plane.iop.iter())
            .any(|(a, b)| (a - b).abs() > 1e-4)
        {
            return Err(err(
                s,
                format!(
                    "mixed orientations: ImageOrientationPatient {} differs from {} in {}",
                    o.map(|v| v.to_string()).join("\\"),
                    plane.iop.map(|v| v.to_string()).join("\\"),
                    first.name.display()
                ),
            ));
        }
        proj.push(dot(p, plane.normal));
    }
    Ok(proj)
}

/// The regular step between sorted slices: no duplicates, no gaps, all on one line along the normal.
fn slice_step(
    slices: &[SliceMeta],
    order: &[usize],
    proj: &[f64],
    plane: &Plane,
    ps: [f64; 2],
) -> Result<f64> {
    let n = order.len();
    let mut diffs: Vec<f64> = order.windows(2).map(|w| proj[w[1]] - proj[w[0]]).collect();
    for (k, d) in diffs.iter().enumerate() {
        if *d < 1e-3 {
            let (a, b) = (&slices[order[k]], &slices[order[k + 1]]);
            return Err(err(
                b,
                format!(
                    "duplicated slice position: same ImagePositionPatient along the normal as {}",
                    a.name.display()
                ),
            ));
        }
    }
    diffs.sort_by(f64::total_cmp);
    let median = diffs[diffs.len() / 2];
    let tol = (0.01 * median).max(1e-3);
    for w in order.windows(2) {
        let d = proj[w[1]] - proj[w[0]];
        if (d - median).abs() > tol {
            return Err(err(
                &slices[w[1]],
                format!(
                    "irregular slice spacing: {d:.4} mm from {} where the series steps {median:.4} mm \
                     (missing slice?)",
                    slices[w[0]].name.display()
                ),
            ));
        }
    }
    // Slices must lie on one line along the normal (no gantry tilt / shear).
    let p0 = slices[order[0]].ipp.unwrap_or(plane.ipp0);
    for &i in order {
        let p = slices[i].ipp.unwrap_or(plane.ipp0);
        let along = proj[i] - proj[order[0]];
        let off = [
            p[0] - p0[0] - along * plane.normal[0],
            p[1] - p0[1] - along * plane.normal[1],
            p[2] - p0[2] - along * plane.normal[2],
        ];
        if dot(off, off).sqrt() > 0.05 * ps[0].min(ps[1]).max(1e-2) {
            return Err(ImagingError::Unsupported {
                path: slices[i].name.clone(),
                what: "slices not stacked along the slice normal (gantry tilt or sheared series)"
                    .into(),
            });
        }
    }
    Ok((proj[order[n - 1]] - proj[order[0]]) / (n - 1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn slice(name: &str, ipp: [f64; 3], iop: [f64; 6]) -> SliceMeta {
        SliceMeta {
            name: PathBuf::from(name),
            source: 0,
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            sop_instance_uid: format!("1.2.3.{name}"),
            series_uid: "1.2.3".into(),
            study_uid: "1.2".into(),
            frame_of_reference: Some("1.2.4".into()),
            modality: "CT".into(),
            series_number: Some(1),
            series_description: String::new(),
            has_pixels: true,
            rows: 4,
            cols: 3,
            samples: 1,
            bits_allocated: 16,
            frames: 1,
            iop: Some(iop),
            ipp: Some(ipp),
            pixel_spacing: Some([0.5, 0.75]),
            slice_step: None,
            slope: 1.0,
            intercept: 0.0,
        }
    }

    const AXIAL: [f64; 6] = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0];

    #[test]
    fn sorts_by_position_and_builds_ras_affine() {
        // Axial slices at z = 10, 12, 14 given out of order; LPS origin (5, 6, 10) -> RAS (-5, -6, 10).
        let s = vec![
            slice("b", [5.0, 6.0, 14.0], AXIAL),
            slice("a", [5.0, 6.0, 10.0], AXIAL),
            slice("c", [5.0, 6.0, 12.0], AXIAL),
        ];
        let g = grid(&s).unwrap();
        assert_eq!(g.order, vec![1, 2, 0]);
        let a = g.affine;
        assert_eq!([a[0][0], a[1][1], a[2][2]], [-0.75, -0.5, 2.0]);
        assert_eq!([a[0][3], a[1][3], a[2][3]], [-5.0, -6.0, 10.0]);
    }

    #[test]
    fn oblique_normal_is_row_cross_column() {
        let c = std::f64::consts::FRAC_1_SQRT_2;
        let iop = [c, c, 0.0, 0.0, 0.0, -1.0]; // row along (1,1,0)/√2, column along -z: normal = (-c, c, 0)
        let n = [-c, c, 0.0];
        let s: Vec<_> = (0..3)
            .map(|k| {
                slice(
                    &format!("s{k}"),
                    [3.0 * k as f64 * n[0], 3.0 * k as f64 * n[1], 0.0],
                    iop,
                )
            })
            .rev()
            .collect();
        let g = grid(&s).unwrap();
        assert_eq!(g.order, vec![2, 1, 0]);
        let a = g.affine;
        // Z column = 3 mm * normal, converted to RAS (x and y negated).
        assert!(
            (a[0][2] - 3.0 * c).abs() < 1e-9
                && (a[1][2] + 3.0 * c).abs() < 1e-9
                && a[2][2].abs() < 1e-12
        );
        // Y column = 0.5 mm * (0, 0, -1).
        assert!((a[2][1] + 0.5).abs() < 1e-12);
    }

    #[test]
    fn gaps_duplicates_and_mixed_orientations_are_errors() {
        let gap = vec![
            slice("a", [0.0, 0.0, 0.0], AXIAL),
            slice("b", [0.0, 0.0, 1.0], AXIAL),
            slice("c", [0.0, 0.0, 3.0], AXIAL),
        ];
        let e = grid(&gap).unwrap_err().to_string();
        assert!(e.contains("missing slice"), "{e}");
        let dup = vec![
            slice("a", [0.0, 0.0, 0.0], AXIAL),
            slice("b", [0.0, 0.0, 0.0], AXIAL),
        ];
        let e = grid(&dup).unwrap_err().to_string();
        assert!(e.contains("duplicated slice position"), "{e}");
        let mixed = vec![
            slice("a", [0.0, 0.0, 0.0], AXIAL),
            slice("b", [0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]),
        ];
        let e = grid(&mixed).unwrap_err().to_string();
        assert!(e.contains("mixed orientations"), "{e}");
        let tilt = vec![
            slice("a", [0.0, 0.0, 0.0], AXIAL),
            slice("b", [0.0, 2.0, 1.0], AXIAL),
        ];
        assert!(grid(&tilt).unwrap_err().to_string().contains("gantry tilt"));
        let mut other = slice("b", [0.0, 0.0, 1.0], AXIAL);
        other.rows = 5;
        assert!(grid(&[slice("a", [0.0; 3], AXIAL), other])
            .unwrap_err()
            .to_string()
            .contains("slice size"));
    }
}
