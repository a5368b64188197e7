//! Writing NIfTI-1 files: the `nifti` crate serialises header and data; this module fills the header the way
//! nibabel does (sform from the affine, qform quaternion from its rotation part) and converts the voxel type.

use std::path::Path;

use ndarray::{Array, IxDyn, ShapeBuilder};
use nifti::writer::WriterOptions;
use nifti::NiftiHeader;

use super::super::qform::affine_to_qform;
use super::super::{write_atomic, FileFormat};
use crate::error::{ImagingError, Result};
use crate::volume::Volume;

/// Voxel type of a written NIfTI file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NiftiDtype {
    /// `uint8` (label maps with < 256 classes, 8-bit images).
    U8,
    /// `int16` (CT, most MR).
    I16,
    /// `int32`.
    I32,
    /// `float32` (probabilities, normalised images).
    F32,
}

impl NiftiDtype {
    /// The inclusive integer range of the type, `None` for `F32`.
    fn range(self) -> Option<(f64, f64)> {
        match self {
            Self::U8 => Some((0.0, u8::MAX as f64)),
            Self::I16 => Some((i16::MIN as f64, i16::MAX as f64)),
            Self::I32 => Some((i32::MIN as f64, i32::MAX as f64)),
            Self::F32 => None,
        }
    }
}

/// `NIFTI_XFORM_SCANNER_ANAT`, the code ITK and most converters write for both forms.
const XFORM_SCANNER: i16 = 1;
/// `NIFTI_UNITS_MM` in `xyzt_units`.
const UNITS_MM: u8 = 2;

/// Save `vol` to a `.nii` or `.nii.gz` file, atomically.
pub(crate) fn save(vol: &Volume, path: &Path, dtype: NiftiDtype) -> Result<()> {
    let (gzip, suffix) = match FileFormat::from_path(path) {
        Some(FileFormat::Nii) => (false, ".nii"),
        Some(FileFormat::NiiGz) => (true, ".nii.gz"),
        _ => {
            return Err(ImagingError::Unsupported {
                path: path.into(),
                what: "extension for NIfTI output (expected .nii or .nii.gz)".into(),
            })
        }
    };
    let shape = vol.data.shape();
    if shape.contains(&0) {
        return Err(ImagingError::Shape(format!(
            "{}: cannot write an empty volume of shape {shape:?}",
            path.display()
        )));
    }
    if let Some(&n) = shape.iter().find(|&&n| n > i16::MAX as usize) {
        return Err(ImagingError::TooLarge {
            path: path.into(),
            msg: format!(
                "dimension {n} of shape {shape:?} exceeds NIfTI-1's limit of {}",
                i16::MAX
            ),
        });
    }
    check_range(vol, path, dtype)?;
    let header = header_for(vol, path)?;
    // NIfTI's fourth dimension is the channel axis: (X, Y, Z) or (X, Y, Z, C).
    let dims: Vec<usize> = if shape[0] == 1 {
        shape[1..].to_vec()
    } else {
        vec![shape[1], shape[2], shape[3], shape[0]]
    };
    write_atomic(path, suffix, |tmp| {
        let opts = WriterOptions::new(tmp)
            .reference_header(&header)
            .compress(gzip);
        let res = match dtype {
            NiftiDtype::F32 => opts.write_nifti(&file_order(vol, &dims, |v| v)?),
            // Rounding half to even like numpy's `rint`; values were range-checked before.
            NiftiDtype::U8 => opts.write_nifti(&file_order(vol, &dims, |v| {
                (v as f64).round_ties_even() as u8
            })?),
            NiftiDtype::I16 => opts.write_nifti(&file_order(vol, &dims, |v| {
                (v as f64).round_ties_even() as i16
            })?),
            NiftiDtype::I32 => opts.write_nifti(&file_order(vol, &dims, |v| {
                (v as f64).round_ties_even() as i32
            })?),
        };
        res.map_err(|e| ImagingError::format(tmp, format!("writing NIfTI failed: {e}")))
    })
}

/// The converted voxels as a Fortran-order array of shape `dims`. The nifti crate writes `data.t()` slice by slice
/// and flattens each slice in C order; only a Fortran-order input makes every slice C-contiguous for any shape.
fn file_order<T>(vol: &Volume, dims: &[usize], conv: impl Fn(f32) -> T) -> Result<Array<T, IxDyn>> {
    // ndarray's layout copy is much faster than iterating the permuted view element by element.
    let ordered = vol
        .data
        .view()
        .permuted_axes([0, 3, 2, 1])
        .as_standard_layout()
        .into_owned();
    let values: Vec<T> = ordered.into_iter().map(conv).collect();
    Array::from_shape_vec(IxDyn(dims).f(), values).map_err(|e| ImagingError::Shape(e.to_string()))
}

/// Reject values an integer type cannot hold (after rounding), naming the first offending voxel.
fn check_range(vol: &Volume, path: &Path, dtype: NiftiDtype) -> Result<()> {
    let Some((lo, hi)) = dtype.range() else {
        return Ok(());
    };
    let bad = vol.data.indexed_iter().find(|(_, &v)| {
        let r = (v as f64).round_ties_even();
        !(r >= lo && r <= hi)
    });
    match bad {
        Some(((c, x, y, z), v)) => Err(ImagingError::format(
            path,
            format!("value {v} at (c={c}, x={x}, y={y}, z={z}) cannot be stored as {dtype:?} (range {lo}..={hi})"),
        )),
        None => Ok(()),
    }
}

/// A header carrying the volume's geometry: sform = affine, qform = its rotation/zoom/offset part, pixdim =
/// spacing (with qfac), units mm. `dim`, `datatype`, `vox_offset` and scaling are filled by the writer.
fn header_for(vol: &Volume, path: &Path) -> Result<NiftiHeader> {
    let a = &vol.affine;
    let q = affine_to_qform(a)
        .filter(|_| a.iter().flatten().all(|v| v.is_finite()))
        .ok_or_else(|| {
            ImagingError::format(
                path,
                format!("cannot write affine {a:?}: it needs finite entries and non-zero columns"),
            )
        })?;
    let mut h = NiftiHeader {
        sform_code: XFORM_SCANNER,
        qform_code: XFORM_SCANNER,
        xyzt_units: UNITS_MM,
        quatern_b: q.bcd[0] as f32,
        quatern_c: q.bcd[1] as f32,
        quatern_d: q.bcd[2] as f32,
        quatern_x: q.offset[0] as f32,
        quatern_y: q.offset[1] as f32,
        quatern_z: q.offset[2] as f32,
        endianness: nifti::Endianness::Little,
        ..NiftiHeader::default()
    };
    h.pixdim[0] = q.qfac as f32;
    for (p, z) in h.pixdim[1..4].iter_mut().zip(q.zooms) {
        *p = z as f32;
    }
    for (srow, row) in [&mut h.srow_x, &mut h.srow_y, &mut h.srow_z]
        .into_iter()
        .zip(a)
    {
        for (s, v) in srow.iter_mut().zip(row) {
            *s = *v as f32;
        }
    }
    h.set_description(b"medmae".to_vec())
        .map_err(|e| ImagingError::format(path, e.to_string()))?;
    Ok(h)
}
