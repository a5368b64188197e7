//! NIfTI-1 single files (`.nii`, `.nii.gz`): header parsing with the `nifti` crate, then validation, geometry and
//! scaling exactly as nibabel loads them (its header fixes, `get_best_affine`, `get_slope_inter`).

mod write;

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use nifti::{NiftiError, NiftiHeader};

use super::dtype::{decode, ByteOrder, ElementType};
use super::qform::{base_affine, qform_to_affine, Qform};
use super::stream::{self, Codec};
use super::{channel_first, AffineSource, FileFormat, Header, LoadOptions};
use crate::error::{ImagingError, Result};
use crate::volume::Volume;

pub(crate) use write::save;
pub use write::NiftiDtype;

/// Size of a NIfTI-1 header.
const HEADER_BYTES: u64 = 348;
/// Smallest `vox_offset` of a single-file NIfTI-1 (header plus the 4-byte extension flag).
const MIN_VOX_OFFSET: u64 = 352;

/// A validated header and where its voxel data lies.
struct Layout {
    header: Header,
    vox_offset: u64,
    order: ByteOrder,
    /// `(C, Z, Y, X, 1)` in file order.
    file_shape: [usize; 5],
    nbytes: u64,
}

/// Read only the header.
pub(crate) fn probe(path: &Path, opts: &LoadOptions) -> Result<Header> {
    let mut file = stream::open(path)?;
    let (raw, gzip) = read_header_bytes(path, &mut file)?;
    Ok(parse(path, &raw, gzip, opts)?.header)
}

/// Load a whole volume.
pub(crate) fn load(path: &Path, opts: &LoadOptions) -> Result<Volume> {
    let mut file = stream::open(path)?;
    let (raw, gzip) = read_header_bytes(path, &mut file)?;
    let layout = parse(path, &raw, gzip, opts)?;
    let bytes = if gzip {
        let compressed_len = stream::file_len(path, &file)?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| ImagingError::io(path, e))?;
        let mut dec = Codec::Gzip.decoder(BufReader::new(file));
        stream::skip_inflated(
            path,
            &mut dec,
            Codec::Gzip,
            layout.vox_offset,
            "header and extensions",
        )?;
        stream::read_inflated(
            path,
            &mut dec,
            Codec::Gzip,
            layout.nbytes,
            compressed_len,
            "voxel data",
        )?
    } else {
        stream::read_region(
            path,
            &mut file,
            layout.vox_offset,
            layout.nbytes,
            "voxel data",
        )?
    };
    let values = decode(
        &bytes,
        layout.header.dtype,
        layout.order,
        layout.header.scaling,
    );
    let data = channel_first(path, values, layout.file_shape)?;
    Ok(Volume::new(data, layout.header.affine))
}

/// The first 348 (decompressed) bytes, and whether the file is gzip (sniffed from its magic, not its name).
fn read_header_bytes(path: &Path, file: &mut std::fs::File) -> Result<(Vec<u8>, bool)> {
    let mut head = [0u8; 2];
    let n = file
        .read(&mut head)
        .map_err(|e| ImagingError::io(path, e))?;
    let gzip = Codec::sniff(&head[..n]) == Codec::Gzip;
    if gzip {
        let compressed_len = stream::file_len(path, file)?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| ImagingError::io(path, e))?;
        let mut dec = Codec::Gzip.decoder(BufReader::new(&mut *file));
        let raw = stream::read_inflated(
            path,
            &mut dec,
            Codec::Gzip,
            HEADER_BYTES,
            compressed_len,
            "NIfTI header",
        )?;
        Ok((raw, true))
    } else {
        Ok((
            stream::read_region(path, file, 0, HEADER_BYTES, "NIfTI header")?,
            false,
        ))
    }
}

fn field_err(path: &Path, field: &str, msg: impl Into<String>) -> ImagingError {
    ImagingError::HeaderField {
        path: path.into(),
        field: field.into(),
        msg: msg.into(),
    }
}

/// Validate the header the way nibabel does on load and compute the layout.
fn parse(path: &Path, raw: &[u8], gzip: bool, opts: &LoadOptions) -> Result<Layout> {
    let sizeof_hdr = raw
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .unwrap_or_default();
    if [
        i32::from_le_bytes(sizeof_hdr),
        i32::from_be_bytes(sizeof_hdr),
    ]
    .contains(&540)
    {
        return Err(ImagingError::Unsupported {
            path: path.into(),
            what: "NIfTI-2 (sizeof_hdr = 540)".into(),
        });
    }
    let h = NiftiHeader::from_reader(raw).map_err(|e| match e {
        NiftiError::InvalidFormat => {
            field_err(path, "magic", "expected \"n+1\\0\" (single-file NIfTI-1)")
        }
        other => ImagingError::format(path, format!("cannot parse NIfTI-1 header: {other}")),
    })?;
    if h.sizeof_hdr != 348 {
        return Err(field_err(
            path,
            "sizeof_hdr",
            format!("is {}, expected 348 (or dim[0] is not 1..7)", h.sizeof_hdr),
        ));
    }
    if &h.magic != b"n+1\0" {
        return Err(ImagingError::Unsupported {
            path: path.into(),
            what: "NIfTI-1 header/image pair (magic \"ni1\"); expected a single .nii/.nii.gz"
                .into(),
        });
    }
    let ndim = h.dim[0] as i16;
    if !(1..=7).contains(&ndim) {
        return Err(field_err(
            path,
            "dim[0]",
            format!("is {ndim}, expected 1..7"),
        ));
    }
    let ndim = ndim as usize;
    let mut dims = Vec::with_capacity(ndim);
    for (i, &d) in h.dim.iter().enumerate().skip(1).take(ndim) {
        let d = d as i16;
        if d < 1 {
            return Err(field_err(
                path,
                &format!("dim[{i}]"),
                format!("is {d}, expected >= 1"),
            ));
        }
        dims.push(d as usize);
    }
    let dtype = element_type(path, h.datatype)?;
    let order = match h.endianness {
        nifti::Endianness::Little => ByteOrder::Little,
        nifti::Endianness::Big => ByteOrder::Big,
    };

    let too_large = || ImagingError::TooLarge {
        path: path.into(),
        msg: format!("dimensions {dims:?} overflow"),
    };
    let mut channels: usize = 1;
    for &d in dims.iter().skip(3) {
        channels = channels.checked_mul(d).ok_or_else(too_large)?;
    }
    let dim_at = |i: usize| dims.get(i).copied().unwrap_or(1);
    let shape = [dim_at(0), dim_at(1), dim_at(2)];
    let elements = shape
        .iter()
        .try_fold(channels as u64, |acc, &n| acc.checked_mul(n as u64))
        .ok_or_else(too_large)?;
    if elements > opts.max_voxels {
        return Err(ImagingError::TooLarge {
            path: path.into(),
            msg: format!(
                "dimensions {dims:?} hold {elements} values, more than the limit of {}",
                opts.max_voxels
            ),
        });
    }
    let nbytes = elements
        .checked_mul(dtype.size() as u64)
        .ok_or_else(too_large)?;

    if !h.vox_offset.is_finite() || (h.vox_offset as f64) < MIN_VOX_OFFSET as f64 {
        return Err(field_err(
            path,
            "vox_offset",
            format!("is {}, expected >= {MIN_VOX_OFFSET}", h.vox_offset),
        ));
    }
    let vox_offset = h.vox_offset as u64;

    let slope = h.scl_slope as f64;
    let scaling = if slope == 0.0 || !slope.is_finite() {
        None
    } else {
        let inter = h.scl_inter as f64;
        if !inter.is_finite() {
            return Err(field_err(
                path,
                "scl_inter",
                format!("is {inter} with a valid scl_slope; expected a finite value"),
            ));
        }
        Some((slope, inter))
    };

    let (affine, affine_source) = best_affine(path, &h, &dims)?;
    let header = Header {
        path: path.into(),
        format: FileFormat::from_path(path).unwrap_or(if gzip {
            FileFormat::NiiGz
        } else {
            FileFormat::Nii
        }),
        dims,
        shape,
        channels,
        dtype,
        big_endian: order == ByteOrder::Big,
        compressed: gzip,
        scaling,
        affine,
        affine_source,
        spacing: [0.0; 3],
        origin: [0.0; 3],
        direction: [[0.0; 3]; 3],
        data_files: Vec::new(),
    }
    .with_geometry();
    Ok(Layout {
        header,
        vox_offset,
        order,
        file_shape: [channels, shape[2], shape[1], shape[0], 1],
        nbytes,
    })
}

/// nibabel's `get_best_affine` after its load-time header fixes: sform if `sform_code != 0`, else qform if
/// `qform_code != 0`, else the centred pixdim affine. pixdim[1..4] of 0 become 1 and negatives their absolute value;
/// a `pixdim[0]` (qfac) other than +-1 becomes 1.
fn best_affine(
    path: &Path,
    h: &NiftiHeader,
    dims: &[usize],
) -> Result<([[f64; 4]; 4], AffineSource)> {
    let mut pixdim: Vec<f64> = h.pixdim.iter().map(|&p| p as f64).collect();
    for p in pixdim.iter_mut().take(4).skip(1) {
        *p = if *p == 0.0 { 1.0 } else { p.abs() };
    }
    let qfac = if pixdim[0] == 1.0 || pixdim[0] == -1.0 {
        pixdim[0]
    } else {
        1.0
    };
    let (affine, source, fields) = if h.sform_code != 0 {
        let mut a = [[0.0; 4]; 4];
        for (row, srow) in a.iter_mut().zip([h.srow_x, h.srow_y, h.srow_z]) {
            for (v, s) in row.iter_mut().zip(srow) {
                *v = s as f64;
            }
        }
        a[3][3] = 1.0;
        (
            a,
            AffineSource::Sform { code: h.sform_code },
            "srow_x/srow_y/srow_z",
        )
    } else if h.qform_code != 0 {
        let q = Qform {
            bcd: [h.quatern_b as f64, h.quatern_c as f64, h.quatern_d as f64],
            offset: [h.quatern_x as f64, h.quatern_y as f64, h.quatern_z as f64],
            qfac,
            zooms: [pixdim[1], pixdim[2], pixdim[3]],
        };
        let a = qform_to_affine(&q).ok_or_else(|| {
            field_err(
                path,
                "quatern_b/c/d",
                "b^2 + c^2 + d^2 > 1: not a unit quaternion",
            )
        })?;
        (
            a,
            AffineSource::Qform { code: h.qform_code },
            "quatern_*/qoffset_*/pixdim",
        )
    } else {
        let shape: Vec<f64> = dims.iter().map(|&d| d as f64).collect();
        let zooms = pixdim.get(1..=dims.len()).unwrap_or(&[]);
        (base_affine(&shape, zooms), AffineSource::Pixdim, "pixdim")
    };
    if affine.iter().flatten().any(|v| !v.is_finite()) {
        return Err(field_err(path, fields, "the affine has non-finite entries"));
    }
    Ok((affine, source))
}

/// The element type of a NIfTI `datatype` code.
fn element_type(path: &Path, code: i16) -> Result<ElementType> {
    Ok(match code {
        2 => ElementType::U8,
        4 => ElementType::I16,
        8 => ElementType::I32,
        16 => ElementType::F32,
        64 => ElementType::F64,
        256 => ElementType::I8,
        512 => ElementType::U16,
        768 => ElementType::U32,
        1024 => ElementType::I64,
        1280 => ElementType::U64,
        other => {
            let name = match other {
                1 => "binary",
                32 => "complex64",
                128 => "rgb24",
                1536 => "float128",
                1792 => "complex128",
                2048 => "complex256",
                2304 => "rgba32",
                _ => "unknown",
            };
            return Err(ImagingError::Unsupported {
                path: path.into(),
                what: format!("NIfTI datatype {other} ({name})"),
            });
        }
    })
}

#[cfg(test)]
mod tests;
