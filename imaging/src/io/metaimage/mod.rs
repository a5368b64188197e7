//! MetaImage (ITK's `.mha` / `.mhd`): header interpretation, LPS -> RAS geometry, and reading of local, external,
//! `LIST`ed, pattern-named, zlib-compressed (`CompressedData`) and gzip (`.raw.gz`) voxel data.

mod data;
mod text;
mod write;

use std::path::Path;

use super::dtype::{decode, ByteOrder, ElementType};
use super::geometry::{check_affine, check_spacing};
use super::input::Input;
use super::layout::interleave_channels;
use super::slabs::{self, Stored};
use super::{channel_first, AffineSource, FileFormat, Header, LoadOptions, StoredAxes, TimeUnit};
use crate::error::{ImagingError, Result};
use crate::volume::Volume;
use data::{Source, Storage};
use text::MetaText;

pub(crate) use write::save;

/// A validated header and how to read its data.
struct Layout {
    header: Header,
    order: ByteOrder,
    storage: Storage,
    source: Source,
    /// `(T, Z, Y, X, K)` in file order (K = `ElementNumberOfChannels`, fastest).
    file_shape: [usize; 5],
    nbytes: u64,
}

/// Read only the header.
pub(crate) fn probe(input: &mut Input, opts: &LoadOptions) -> Result<Header> {
    Ok(layout(input, opts)?.header)
}

/// Load a whole volume.
pub(crate) fn load(input: &mut Input, opts: &LoadOptions) -> Result<Volume> {
    let l = layout(input, opts)?;
    let bytes = match &l.source {
        Source::Local(offset) => data::read_chunk(input, None, *offset, l.nbytes, &l.storage)?,
        Source::Files(files) => {
            let n = files.len() as u64;
            if n == 0 || l.nbytes % n != 0 {
                let msg = format!(
                    "{n} data files cannot split {} bytes evenly; expected one file per slice or volume",
                    l.nbytes
                );
                return Err(field_err(&input.name, "ElementDataFile", msg));
            }
            let mut all = Vec::new();
            for f in files {
                all.extend(data::read_chunk(
                    input,
                    Some(f),
                    0,
                    l.nbytes / n,
                    &l.storage,
                )?);
            }
            all
        }
    };
    let data = match l.file_shape {
        // Scalar voxels: decoded straight into the volume's layout.
        [time, z, y, x, 1] => {
            let stored = Stored {
                ty: l.header.dtype,
                order: l.order,
                scaling: None,
                channels: time,
                dims: [z, y, x],
            };
            slabs::decode_all(&input.name, &bytes, stored)?
        }
        shape => channel_first(
            &input.name,
            decode(&bytes, l.header.dtype, l.order, None),
            shape,
        )?,
    };
    let axes = l.header.axes;
    let data = interleave_channels(data, axes.time, axes.components, false);
    Ok(Volume::new(data, l.header.affine))
}

fn field_err(path: &Path, field: &str, msg: impl Into<String>) -> ImagingError {
    ImagingError::field(path, field, msg)
}

/// Parse and validate the header.
fn layout(input: &mut Input, opts: &LoadOptions) -> Result<Layout> {
    let t = text::read(input, opts.max_header_bytes)?;
    let path = input.name.as_path();
    if let Some((_, v)) = t.get(&["ObjectType"]) {
        if v != "Image" {
            return Err(ImagingError::Unsupported {
                path: path.into(),
                what: format!("MetaImage ObjectType {v:?} (expected Image)"),
            });
        }
    }
    let Extent {
        n,
        dims,
        shape,
        tdim,
        k,
        channels,
        elements,
    } = extent(path, &t, opts)?;
    let (_, ty) = t
        .get(&["ElementType"])
        .ok_or_else(|| field_err(path, "ElementType", "missing"))?;
    let dtype = element_type(ty).ok_or_else(|| ImagingError::Unsupported {
        path: path.into(),
        what: format!("ElementType {ty:?} (expected MET_UCHAR, MET_CHAR, MET_USHORT, MET_SHORT, MET_UINT, MET_INT, MET_ULONG, MET_LONG, MET_ULONG_LONG, MET_LONG_LONG, MET_FLOAT or MET_DOUBLE)"),
    })?;
    let nbytes =
        elements
            .checked_mul(dtype.size() as u64)
            .ok_or_else(|| ImagingError::TooLarge {
                path: path.into(),
                msg: format!("{elements} values of {} bytes overflow", dtype.size()),
            })?;
    let (big, storage) = storage(path, &t)?;
    let (affine, time_step) = lps_to_ras_affine(path, &t, n)?;
    let source = data::source(path, input.dir.as_deref(), &t, opts)?;
    let data_files = match &source {
        Source::Local(_) => Vec::new(),
        Source::Files(f) => f.clone(),
    };
    let axes = StoredAxes {
        spatial: n.min(3),
        time: tdim,
        components: k,
        time_step,
        time_unit: TimeUnit::Unknown,
    };
    let header = Header {
        path: path.into(),
        format: FileFormat::from_path(path).unwrap_or(FileFormat::Mha),
        nifti_version: None,
        dims,
        axes,
        shape,
        channels,
        dtype,
        big_endian: big,
        compressed: storage.compressed,
        scaling: None,
        affine,
        affine_source: AffineSource::MetaImage,
        spacing: [0.0; 3],
        origin: [0.0; 3],
        direction: [[0.0; 3]; 3],
        data_files,
    }
    .with_geometry();
    let order = if big {
        ByteOrder::Big
    } else {
        ByteOrder::Little
    };
    Ok(Layout {
        header,
        order,
        storage,
        source,
        file_shape: [tdim, shape[2], shape[1], shape[0], k],
        nbytes,
    })
}

/// The stored dimensions: `NDims`, `DimSize`, `ElementNumberOfChannels`, checked against the voxel limit.
struct Extent {
    n: usize,
    dims: Vec<usize>,
    shape: [usize; 3],
    /// Length of the 4th axis (1 without one).
    tdim: usize,
    /// Vector components per voxel.
    k: usize,
    /// `tdim * k`.
    channels: usize,
    /// Values in the image (all channels).
    elements: u64,
}

fn extent(path: &Path, t: &text::MetaText, opts: &LoadOptions) -> Result<Extent> {
    let n = match ints(path, t, &["NDims"], 1)?.as_deref() {
        Some(&[n @ 1..=4]) => n as usize,
        Some(&[other]) => {
            return Err(field_err(
                path,
                "NDims",
                format!("is {other}; expected 1..4"),
            ))
        }
        _ => return Err(field_err(path, "NDims", "missing; expected 1..4")),
    };
    let dims_raw = ints(path, t, &["DimSize"], n)?
        .ok_or_else(|| field_err(path, "DimSize", format!("missing; expected {n} sizes")))?;
    if let Some(bad) = dims_raw.iter().find(|&&d| d < 1) {
        return Err(field_err(
            path,
            "DimSize",
            format!("has {bad}; expected sizes >= 1"),
        ));
    }
    let dims: Vec<usize> = dims_raw.iter().map(|&d| d as usize).collect();
    let k = match ints(path, t, &["ElementNumberOfChannels"], 1)?.as_deref() {
        None => 1,
        Some(&[c]) if c >= 1 => c as usize,
        Some(v) => {
            let shown: Vec<String> = v.iter().map(|x| x.to_string()).collect();
            return Err(field_err(
                path,
                "ElementNumberOfChannels",
                format!("is {}; expected >= 1", shown.join(" ")),
            ));
        }
    };
    let dim_at = |i: usize| dims.get(i).copied().unwrap_or(1);
    let (shape, tdim) = ([dim_at(0), dim_at(1), dim_at(2)], dim_at(3));
    let shown = super::nifti::list(&dims);
    let too_large = || ImagingError::TooLarge {
        path: path.into(),
        msg: format!("DimSize {shown} x {k} channels overflows"),
    };
    let channels = tdim.checked_mul(k).ok_or_else(too_large)?;
    let elements = shape
        .iter()
        .try_fold(channels as u64, |a, &d| a.checked_mul(d as u64))
        .ok_or_else(too_large)?;
    if elements > opts.max_voxels {
        return Err(ImagingError::TooLarge {
            path: path.into(),
            msg: format!(
                "DimSize {shown} x {k} channels hold {elements} values, more than the limit of {} \
                 (LoadOptions::max_voxels)",
                opts.max_voxels
            ),
        });
    }
    Ok(Extent {
        n,
        dims,
        shape,
        tdim,
        k,
        channels,
        elements,
    })
}

/// Byte order and storage (`BinaryData`, `BinaryDataByteOrderMSB`, `CompressedData`, `CompressedDataSize`,
/// `HeaderSize`); ASCII data is refused.
fn storage(path: &Path, t: &text::MetaText) -> Result<(bool, Storage)> {
    if !flag(path, t, &["BinaryData"], true)? {
        return Err(ImagingError::Unsupported {
            path: path.into(),
            what: "ASCII voxel data (BinaryData = False)".into(),
        });
    }
    let big = flag(
        path,
        t,
        &["BinaryDataByteOrderMSB", "ElementByteOrderMSB"],
        false,
    )?;
    let storage = Storage {
        compressed: flag(path, t, &["CompressedData"], false)?,
        compressed_size: match ints(path, t, &["CompressedDataSize"], 1)?.as_deref() {
            Some(&[s]) if s >= 0 => Some(s as u64),
            Some(_) => {
                return Err(field_err(
                    path,
                    "CompressedDataSize",
                    "is negative; expected >= 0",
                ))
            }
            None => None,
        },
        header_size: match ints(path, t, &["HeaderSize"], 1)?.as_deref() {
            Some(&[s]) if s >= -1 => s,
            Some(_) => return Err(field_err(path, "HeaderSize", "expected >= -1")),
            None => 0,
        },
    };
    Ok((big, storage))
}

/// The voxel-to-RAS affine from `ElementSpacing` (or `ElementSize`), `Offset` (`Origin`, `Position`) and
/// `TransformMatrix` (`Rotation`, `Orientation`). As in ITK, the matrix lists one voxel axis direction after the
/// other, so it is the transpose of the direction matrix. A 4th dimension keeps only its spacing (returned as the time
/// step); its offset and direction are dropped. Degenerate geometry is refused, naming the field.
fn lps_to_ras_affine(path: &Path, t: &MetaText, n: usize) -> Result<([[f64; 4]; 4], Option<f64>)> {
    let spacing_field = floats(path, t, &["ElementSpacing", "ElementSize"], n)?;
    if let Some((key, s)) = &spacing_field {
        check_spacing(path, key, s)?;
    }
    let time_step = spacing_field.as_ref().and_then(|(_, s)| s.get(3).copied());
    let spacing = spacing_field.map_or_else(|| vec![1.0; n], |(_, s)| s);
    let offset = floats(path, t, &["Offset", "Origin", "Position"], n)?
        .map_or_else(|| vec![0.0; n], |(_, o)| o);
    let matrix_field = floats(
        path,
        t,
        &["TransformMatrix", "Rotation", "Orientation"],
        n * n,
    )?;
    let matrix_key = matrix_field.as_ref().map_or("TransformMatrix", |(k, _)| *k);
    let matrix = matrix_field.as_ref().map(|(_, m)| m);
    let m = n.min(3);
    let mut a = [[0.0; 4]; 4];
    for (c, col_spacing) in (0..3).map(|c| {
        (
            c,
            if c < m {
                spacing.get(c).copied().unwrap_or(1.0)
            } else {
                1.0
            },
        )
    }) {
        for (r, row) in a.iter_mut().take(3).enumerate() {
            let dir = match &matrix {
                Some(tm) if r < m && c < m => tm.get(c * n + r).copied().unwrap_or(0.0),
                _ => f64::from(u8::from(r == c)),
            };
            row[c] = dir * col_spacing;
        }
    }
    for (r, row) in a.iter_mut().take(3).enumerate() {
        row[3] = if r < m {
            offset.get(r).copied().unwrap_or(0.0)
        } else {
            0.0
        };
    }
    a[3][3] = 1.0;
    // LPS -> RAS: negate the x and y world rows.
    for row in a.iter_mut().take(2) {
        for v in row.iter_mut() {
            *v = -*v;
        }
    }
    check_affine(path, matrix_key, &a)?;
    Ok((a, time_step))
}

fn element_type(name: &str) -> Option<ElementType> {
    Some(match name {
        "MET_UCHAR" => ElementType::U8,
        "MET_CHAR" | "MET_ASCII_CHAR" => ElementType::I8,
        "MET_USHORT" => ElementType::U16,
        "MET_SHORT" => ElementType::I16,
        // MetaIO's MET_LONG/MET_ULONG are 4 bytes on every platform.
        "MET_UINT" | "MET_ULONG" => ElementType::U32,
        "MET_INT" | "MET_LONG" => ElementType::I32,
        "MET_ULONG_LONG" => ElementType::U64,
        "MET_LONG_LONG" => ElementType::I64,
        "MET_FLOAT" => ElementType::F32,
        "MET_DOUBLE" => ElementType::F64,
        _ => return None,
    })
}

/// The first `n` whitespace-separated integers of a field, if present.
fn ints(path: &Path, t: &MetaText, names: &[&str], n: usize) -> Result<Option<Vec<i64>>> {
    Ok(values(path, t, names, n, |s| s.parse::<i64>().ok())?.map(|(_, v)| v))
}

/// The first `n` whitespace-separated finite numbers of a field, if present, with the field name found.
fn floats<'a>(
    path: &Path,
    t: &'a MetaText,
    names: &[&'a str],
    n: usize,
) -> Result<Option<(&'a str, Vec<f64>)>> {
    values(path, t, names, n, |s| {
        s.parse::<f64>().ok().filter(|v| v.is_finite())
    })
}

fn values<'a, T>(
    path: &Path,
    t: &'a MetaText,
    names: &[&'a str],
    n: usize,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<(&'a str, Vec<T>)>> {
    let Some((key, value)) = t.get(names) else {
        return Ok(None);
    };
    let parsed: Option<Vec<T>> = value.split_whitespace().take(n).map(parse).collect();
    match parsed {
        Some(v) if v.len() == n => Ok(Some((key, v))),
        _ => Err(field_err(
            path,
            key,
            format!("is {value:?}; expected {n} finite number(s)"),
        )),
    }
}

/// A boolean field (`True`/`False`, MetaIO reads the first letter), or `default` if absent.
fn flag(path: &Path, t: &MetaText, names: &[&str], default: bool) -> Result<bool> {
    match t.get(names) {
        None => Ok(default),
        Some((key, v)) => match v.chars().next() {
            Some('T' | 't' | '1') => Ok(true),
            Some('F' | 'f' | '0') => Ok(false),
            _ => Err(field_err(
                path,
                key,
                format!("is {v:?}; expected True or False"),
            )),
        },
    }
}

#[cfg(test)]
mod tests;
