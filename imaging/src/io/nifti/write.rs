//! Writing NIfTI-1 and NIfTI-2 files: the header is filled the way nibabel does (sform from the affine, qform
//! quaternion from its rotation part, pixdim = spacing, units mm), the axes beyond the grid follow [`StoredAxes`]
//! (time step and unit in `pixdim[4]` / `xyzt_units`, vector components in `dim[5]` with the vector intent), and the
//! voxels are converted to the requested type. `.nii.gz` is gzip-compressed.

use std::io::{BufWriter, Write};
use std::path::Path;

use flate2::write::GzEncoder;
use flate2::Compression;

use super::super::qform::affine_to_qform;
use super::super::{write_atomic, FileFormat, SaveOptions, StoredAxes};
use super::header::{self, NiftiVersion, RawHeader};
use super::list;
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

    /// NIfTI `datatype` code and `bitpix`.
    fn code(self) -> (i16, i16) {
        match self {
            Self::U8 => (2, 8),
            Self::I16 => (4, 16),
            Self::I32 => (8, 32),
            Self::F32 => (16, 32),
        }
    }

    /// Append `v` in this type, little-endian (integers round half to even like numpy's `rint`; the range was
    /// checked before).
    fn push(self, out: &mut Vec<u8>, v: f32) {
        let r = || (v as f64).round_ties_even();
        match self {
            Self::U8 => out.push(r() as u8),
            Self::I16 => out.extend_from_slice(&(r() as i16).to_le_bytes()),
            Self::I32 => out.extend_from_slice(&(r() as i32).to_le_bytes()),
            Self::F32 => out.extend_from_slice(&v.to_le_bytes()),
        }
    }

    fn size(self) -> usize {
        self.code().1 as usize / 8
    }
}

/// `NIFTI_XFORM_SCANNER_ANAT`, the code ITK and most converters write for both forms.
const XFORM_SCANNER: i32 = 1;
/// `NIFTI_UNITS_MM` in `xyzt_units`.
const UNITS_MM: i32 = 2;
/// `NIFTI_INTENT_VECTOR`: dim[5] holds vector components.
const INTENT_VECTOR: i32 = 1007;

/// Save `vol` to a `.nii` or `.nii.gz` file, atomically.
pub(crate) fn save(vol: &Volume, path: &Path, opts: &SaveOptions) -> Result<()> {
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
    let bytes = encode_raw(vol, path, opts)?;
    write_atomic(path, suffix, |tmp| {
        let file = std::fs::File::create(tmp).map_err(|e| ImagingError::io(tmp, e))?;
        let res = if gzip {
            let mut enc = GzEncoder::new(BufWriter::new(file), Compression::new(6));
            enc.write_all(&bytes)
                .and_then(|()| enc.finish())
                .and_then(|mut w| w.flush())
        } else {
            let mut w = BufWriter::new(file);
            w.write_all(&bytes).and_then(|()| w.flush())
        };
        res.map_err(|e| ImagingError::io(tmp, e))
    })
}

/// Encode `vol` as the bytes of a `.nii` file (`gzip`: of a `.nii.gz` file) in memory; `name` is what errors call
/// it.
pub(crate) fn encode(vol: &Volume, name: &Path, opts: &SaveOptions, gzip: bool) -> Result<Vec<u8>> {
    let bytes = encode_raw(vol, name, opts)?;
    if !gzip {
        return Ok(bytes);
    }
    let mut enc = GzEncoder::new(Vec::with_capacity(bytes.len() / 4), Compression::new(6));
    enc.write_all(&bytes)
        .and_then(|()| enc.finish())
        .map_err(|e| ImagingError::io(name, e))
}

/// Header, extension flag and voxels of an uncompressed NIfTI file.
fn encode_raw(vol: &Volume, path: &Path, opts: &SaveOptions) -> Result<Vec<u8>> {
    let axes = opts
        .axes
        .unwrap_or_else(|| StoredAxes::time_series(vol.channels()));
    let dims = super::super::stored_dims(vol, path, &axes)?;
    if opts.nifti_version == NiftiVersion::One {
        if let Some(&n) = dims.iter().find(|&&n| n > i16::MAX as usize) {
            return Err(ImagingError::TooLarge {
                path: path.into(),
                msg: format!(
                    "dimension {n} of {} exceeds NIfTI-1's limit of {}; write NIfTI-2 instead",
                    list(&dims),
                    i16::MAX
                ),
            });
        }
    }
    check_range(vol, path, opts.dtype)?;
    let header = header_for(vol, path, opts, &axes, &dims)?;
    // File order: x fastest, then y, z and the channels (time, then components).
    let ordered = vol.data.view().permuted_axes([0, 3, 2, 1]);
    let ordered = ordered.as_standard_layout();
    let mut bytes = Vec::with_capacity(header.len() + 4 + ordered.len() * opts.dtype.size());
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&[0; 4]);
    for &v in ordered.iter() {
        opts.dtype.push(&mut bytes, v);
    }
    Ok(bytes)
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
            format!(
                "value {v} at (c={c}, x={x}, y={y}, z={z}) cannot be stored as {}; expected {lo}..={hi}",
                format!("{dtype:?}").to_lowercase()
            ),
        )),
        None => Ok(()),
    }
}

/// The header: sform = affine, qform = its rotation/zoom/offset part, pixdim = spacing (with qfac) and the time
/// step, units mm plus the time unit, the vector intent for components.
fn header_for(
    vol: &Volume,
    path: &Path,
    opts: &SaveOptions,
    axes: &StoredAxes,
    dims: &[usize],
) -> Result<Vec<u8>> {
    let a = &vol.affine;
    super::super::geometry::check_affine(path, "affine", a)?;
    let q = affine_to_qform(a).ok_or_else(|| {
        ImagingError::field(
            path,
            "affine",
            "has no rotation part (a voxel axis of zero length); expected a non-degenerate affine",
        )
    })?;
    let mut dim = [1i64; 8];
    dim[0] = dims.len() as i64;
    for (d, &n) in dim[1..].iter_mut().zip(dims) {
        *d = n as i64;
    }
    let mut pixdim = [1.0f64; 8];
    pixdim[0] = q.qfac;
    pixdim[1..4].copy_from_slice(&q.zooms);
    if let Some(step) = axes.time_step {
        pixdim[4] = step;
    }
    let (datatype, bitpix) = opts.dtype.code();
    let mut srow = [[0.0; 4]; 3];
    for (s, row) in srow.iter_mut().zip(a) {
        *s = *row;
    }
    Ok(header::encode(&RawHeader {
        version: opts.nifti_version,
        order: super::super::dtype::ByteOrder::Little,
        dim,
        intent_code: if axes.components > 1 {
            INTENT_VECTOR
        } else {
            0
        },
        datatype,
        bitpix,
        pixdim,
        vox_offset: opts.nifti_version.min_vox_offset() as f64,
        scl_slope: 1.0,
        scl_inter: 0.0,
        xyzt_units: UNITS_MM | axes.time_unit.nifti_code(),
        qform_code: XFORM_SCANNER,
        sform_code: XFORM_SCANNER,
        quatern: q.bcd,
        qoffset: q.offset,
        srow,
        descrip: b"medmae".to_vec(),
    }))
}
