//! NIfTI-1 and NIfTI-2 single files (`.nii`, `.nii.gz`): header decoding, validation, geometry and scaling exactly as
//! nibabel loads them (`get_best_affine`, `get_slope_inter`), except that degenerate geometry is refused.

mod header;
mod write;

use std::io::BufReader;
use std::path::Path;

use super::dtype::{ByteOrder, ElementType};
use super::geometry::check_affine;
use super::input::Input;
use super::qform::{base_affine, qform_to_affine, Qform};
use super::slabs::{self, Stored};
use super::stream::{self, Codec};
use super::{AffineSource, FileFormat, Header, LoadOptions, StoredAxes, TimeUnit};
use crate::error::{ImagingError, Result};
use crate::volume::Volume;
use header::RawHeader;

pub use header::NiftiVersion;
pub use write::NiftiDtype;
pub(crate) use write::{encode, save};

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
pub(crate) fn probe(input: &mut Input, opts: &LoadOptions) -> Result<Header> {
    let (raw, gzip) = read_header(input)?;
    Ok(parse(&input.name, &raw, gzip, opts)?.header)
}

/// Load a whole volume.
pub(crate) fn load(input: &mut Input, opts: &LoadOptions) -> Result<Volume> {
    let (raw, gzip) = read_header(input)?;
    let layout = parse(&input.name, &raw, gzip, opts)?;
    let [channels, z, y, x, _] = layout.file_shape;
    let stored = Stored {
        ty: layout.header.dtype,
        order: layout.order,
        // Like nibabel's `apply_read_scaling`, slope 1 and intercept 0 leave the values alone (so -0.0 stays -0.0).
        scaling: layout.header.scaling.filter(|&s| s != (1.0, 0.0)),
        channels,
        dims: [z, y, x],
    };
    let name = input.name.clone();
    let data = if gzip {
        let compressed_len = input.len();
        let mut dec =
            Codec::Gzip.decoder(BufReader::with_capacity(stream::READ_BUFFER, input.at(0)?));
        stream::skip_inflated(
            &name,
            &mut dec,
            Codec::Gzip,
            layout.vox_offset,
            "header and extensions",
        )?;
        slabs::inflate_decoded(
            &name,
            &mut dec,
            Codec::Gzip,
            compressed_len,
            stored,
            "voxel data",
        )?
    } else {
        let bytes = stream::read_region(input, layout.vox_offset, layout.nbytes, "voxel data")?;
        slabs::decode_all(&name, &bytes, stored)?
    };
    Ok(Volume::new(data, layout.header.affine))
}

/// The decoded header, and whether the input is gzip (sniffed from its magic, not its name).
fn read_header(input: &mut Input) -> Result<(RawHeader, bool)> {
    let name = input.name.clone();
    let head = stream::read_region(input, 0, input.len().min(4), "NIfTI header")?;
    let gzip = Codec::sniff(&head) == Codec::Gzip;
    if gzip {
        let compressed_len = input.len();
        let mut dec = Codec::Gzip.decoder(BufReader::new(input.at(0)?));
        let first = stream::read_inflated(
            &name,
            &mut dec,
            Codec::Gzip,
            4,
            compressed_len,
            "NIfTI header",
        )?;
        let (version, order) = header::sniff(&name, &first)?;
        let rest = stream::read_inflated(
            &name,
            &mut dec,
            Codec::Gzip,
            version.header_bytes() - 4,
            compressed_len,
            "NIfTI header",
        )?;
        let raw = [first, rest].concat();
        return Ok((header::decode(&name, &raw, version, order)?, true));
    }
    let (version, order) = header::sniff(&name, &head)?;
    let what = format!("NIfTI-{} header", version.number());
    let raw = stream::read_region(input, 0, version.header_bytes(), &what)?;
    Ok((header::decode(&name, &raw, version, order)?, false))
}

/// Validate the header and compute the layout.
fn parse(path: &Path, h: &RawHeader, gzip: bool, opts: &LoadOptions) -> Result<Layout> {
    let ndim = h.dim[0];
    if !(1..=7).contains(&ndim) {
        return Err(ImagingError::field(
            path,
            "dim[0]",
            format!("is {ndim}; expected the number of dimensions, 1..7"),
        ));
    }
    let too_large = |what: String| ImagingError::TooLarge {
        path: path.into(),
        msg: what,
    };
    let mut dims = Vec::with_capacity(ndim as usize);
    for (i, &d) in h.dim.iter().enumerate().skip(1).take(ndim as usize) {
        if d < 1 {
            return Err(ImagingError::field(
                path,
                format!("dim[{i}]"),
                format!("is {d}; expected a size >= 1"),
            ));
        }
        dims.push(usize::try_from(d).map_err(|_| too_large(format!("dim[{i}] = {d} overflows")))?);
    }
    let dtype = element_type(path, h.datatype)?;
    let overflow = || too_large(format!("dimensions {} overflow", list(&dims)));
    let dim_at = |i: usize| dims.get(i).copied().unwrap_or(1);
    let shape = [dim_at(0), dim_at(1), dim_at(2)];
    let time = dim_at(3);
    let components = dims
        .iter()
        .skip(4)
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(overflow)?;
    let channels = time.checked_mul(components).ok_or_else(overflow)?;
    let elements = shape
        .iter()
        .try_fold(channels as u64, |acc, &n| acc.checked_mul(n as u64))
        .ok_or_else(overflow)?;
    if elements > opts.max_voxels {
        return Err(too_large(format!(
            "dimensions {} hold {elements} values, more than the limit of {} (LoadOptions::max_voxels)",
            list(&dims),
            opts.max_voxels
        )));
    }
    let nbytes = elements
        .checked_mul(dtype.size() as u64)
        .ok_or_else(overflow)?;

    let min_offset = h.version.min_vox_offset();
    if !h.vox_offset.is_finite() || h.vox_offset < min_offset as f64 {
        return Err(ImagingError::field(
            path,
            "vox_offset",
            format!("is {}; expected >= {min_offset}", h.vox_offset),
        ));
    }
    let vox_offset = h.vox_offset as u64;

    let slope = h.scl_slope;
    let scaling = if slope == 0.0 || !slope.is_finite() {
        None
    } else {
        let inter = h.scl_inter;
        if !inter.is_finite() {
            return Err(ImagingError::field(
                path,
                "scl_inter",
                format!("is {inter} with a valid scl_slope; expected a finite value"),
            ));
        }
        Some((slope, inter))
    };

    let (affine, affine_source) = best_affine(path, h, &dims)?;
    let time_step =
        (dims.len() >= 4 && h.pixdim[4].is_finite() && h.pixdim[4] >= 0.0).then_some(h.pixdim[4]);
    let axes = StoredAxes {
        spatial: dims.len().min(3),
        time,
        components,
        time_step,
        time_unit: if dims.len() >= 4 {
            TimeUnit::from_nifti(h.xyzt_units)
        } else {
            TimeUnit::Unknown
        },
    };
    let header = Header {
        path: path.into(),
        format: FileFormat::from_path(path).unwrap_or(if gzip {
            FileFormat::NiiGz
        } else {
            FileFormat::Nii
        }),
        nifti_version: Some(h.version),
        dims,
        axes,
        shape,
        channels,
        dtype,
        big_endian: h.order == ByteOrder::Big,
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
        order: h.order,
        file_shape: [channels, shape[2], shape[1], shape[0], 1],
        nbytes,
    })
}

/// `[a, b, c]` without Rust's debug formatting.
pub(crate) fn list(v: &[usize]) -> String {
    let parts: Vec<String> = v.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// nibabel's `get_best_affine`: sform if `sform_code != 0`, else qform if `qform_code != 0`, else the centred pixdim
/// affine; a `pixdim[0]` (qfac) other than +-1 becomes 1. Unlike nibabel, which silently turns a zero spacing into 1
/// and a negative one into its absolute value, a spacing of a stored axis that the affine uses must be positive and
/// finite, and the resulting affine must not be degenerate (see [`check_affine`]). For an axis the file does not have
/// (the third of a 2-D file) the qform uses pixdim[3] with nibabel's fix and the pixdim affine uses 1, as nibabel.
fn best_affine(
    path: &Path,
    h: &RawHeader,
    dims: &[usize],
) -> Result<([[f64; 4]; 4], AffineSource)> {
    let pixdim = &h.pixdim;
    let qfac = if pixdim[0] == 1.0 || pixdim[0] == -1.0 {
        pixdim[0]
    } else {
        1.0
    };
    let zooms = |path: &Path, from_pixdim_beyond: bool| -> Result<[f64; 3]> {
        let mut z = [1.0; 3];
        for (i, zi) in z.iter_mut().enumerate() {
            let p = pixdim[i + 1];
            if i < dims.len() {
                if !(p.is_finite() && p > 0.0) {
                    return Err(ImagingError::field(
                        path,
                        format!("pixdim[{}]", i + 1),
                        format!("is {p}; expected a positive, finite voxel spacing"),
                    ));
                }
                *zi = p;
            } else if from_pixdim_beyond && p.is_finite() && p != 0.0 {
                *zi = p.abs();
            }
        }
        Ok(z)
    };
    let (affine, source, fields) = if h.sform_code != 0 {
        let mut a = [[0.0; 4]; 4];
        for (row, srow) in a.iter_mut().zip(h.srow) {
            *row = srow;
        }
        a[3][3] = 1.0;
        (
            a,
            AffineSource::Sform { code: h.sform_code },
            "srow_x/srow_y/srow_z",
        )
    } else if h.qform_code != 0 {
        let q = Qform {
            bcd: h.quatern,
            offset: h.qoffset,
            qfac,
            zooms: zooms(path, true)?,
        };
        let a = qform_to_affine(&q).ok_or_else(|| {
            ImagingError::field(
                path,
                "quatern_b/c/d",
                "b^2 + c^2 + d^2 > 1; expected the vector part of a unit quaternion",
            )
        })?;
        (
            a,
            AffineSource::Qform { code: h.qform_code },
            "quatern_*/qoffset_*/pixdim",
        )
    } else {
        let shape: Vec<f64> = dims.iter().map(|&d| d as f64).collect();
        (
            base_affine(&shape, &zooms(path, false)?),
            AffineSource::Pixdim,
            "pixdim",
        )
    };
    check_affine(path, fields, &affine)?;
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
