//! MetaImage (ITK's `.mha` / `.mhd`): header interpretation, LPS -> RAS geometry, and reading of local, external,
//! `LIST`ed, zlib-compressed (`CompressedData`) and gzip (`.raw.gz`) voxel data.

mod text;
mod write;

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use super::dtype::{decode, ByteOrder, ElementType};
use super::stream::{self, Codec};
use super::{channel_first, AffineSource, FileFormat, Header, LoadOptions};
use crate::error::{ImagingError, Result};
use crate::volume::Volume;
use text::MetaText;

pub(crate) use write::save;

/// Where the voxel bytes are.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    /// In the header file, from this byte offset.
    Local(u64),
    /// In these files, concatenated in order (one file, or a `LIST` of slices).
    Files(Vec<PathBuf>),
}

/// A validated header and how to read its data.
struct Layout {
    header: Header,
    order: ByteOrder,
    compressed: bool,
    compressed_size: Option<u64>,
    /// `HeaderSize`: bytes to skip in each data file; -1 means "the data is at the end of the file".
    header_size: i64,
    source: Source,
    /// `(T, Z, Y, X, K)` in file order (K = `ElementNumberOfChannels`, fastest).
    file_shape: [usize; 5],
    nbytes: u64,
}

/// Read only the header.
pub(crate) fn probe(path: &Path, opts: &LoadOptions) -> Result<Header> {
    Ok(layout(path, opts)?.header)
}

/// Load a whole volume.
pub(crate) fn load(path: &Path, opts: &LoadOptions) -> Result<Volume> {
    let l = layout(path, opts)?;
    let bytes = match &l.source {
        Source::Local(offset) => read_chunk(path, path, *offset, l.nbytes, &l)?,
        Source::Files(files) => {
            let n = files.len() as u64;
            if n == 0 || l.nbytes % n != 0 {
                let msg = format!("{n} data files cannot split {} bytes evenly", l.nbytes);
                return Err(field_err(path, "ElementDataFile", msg));
            }
            let mut all = Vec::new();
            for f in files {
                all.extend(read_chunk(path, f, 0, l.nbytes / n, &l)?);
            }
            all
        }
    };
    let values = decode(&bytes, l.header.dtype, l.order, None);
    let data = channel_first(path, values, l.file_shape)?;
    Ok(Volume::new(data, l.header.affine))
}

/// Read `len` voxel bytes of one data file (`base` is where data starts in it: after the header for LOCAL).
fn read_chunk(header: &Path, data: &Path, base: u64, len: u64, l: &Layout) -> Result<Vec<u8>> {
    let mut file = std::fs::File::open(data).map_err(|source| {
        if data == header {
            ImagingError::io(data, source)
        } else {
            ImagingError::MissingDataFile {
                header: header.into(),
                data: data.into(),
                source,
            }
        }
    })?;
    let file_len = stream::file_len(data, &file)?;
    // Errors name the data file; say which header it belongs to.
    let what = if data == header {
        "voxel data".to_string()
    } else {
        format!("voxel data for {}", header.display())
    };
    let gz_name = data != header && data.to_string_lossy().to_ascii_lowercase().ends_with(".gz");
    if l.compressed || gz_name {
        let start = base.saturating_add(l.header_size.max(0) as u64);
        file.seek(SeekFrom::Start(start))
            .map_err(|e| ImagingError::io(data, e))?;
        let mut head = [0u8; 2];
        let n = file
            .read(&mut head)
            .map_err(|e| ImagingError::io(data, e))?;
        let codec = Codec::sniff(head.get(..n).unwrap_or_default());
        file.seek(SeekFrom::Start(start))
            .map_err(|e| ImagingError::io(data, e))?;
        let available = file_len.saturating_sub(start);
        let compressed_len = l.compressed_size.map_or(available, |s| s.min(available));
        let mut dec = codec.decoder(BufReader::new(file).take(compressed_len));
        return stream::read_inflated(data, &mut dec, codec, len, compressed_len, &what);
    }
    let offset = match l.header_size {
        -1 => file_len
            .checked_sub(len)
            .filter(|&o| o >= base)
            .ok_or_else(|| ImagingError::Truncated {
                path: data.into(),
                what: format!("{what} (HeaderSize = -1)"),
                expected: base.saturating_add(len),
                found: file_len,
            })?,
        h => base.saturating_add(h.max(0) as u64),
    };
    stream::read_region(data, &mut file, offset, len, &what)
}

fn field_err(path: &Path, field: &str, msg: impl Into<String>) -> ImagingError {
    ImagingError::HeaderField {
        path: path.into(),
        field: field.into(),
        msg: msg.into(),
    }
}

/// Parse and validate the header.
fn layout(path: &Path, opts: &LoadOptions) -> Result<Layout> {
    let t = text::read(path, opts.max_header_bytes)?;
    if let Some((_, v)) = t.get(&["ObjectType"]) {
        if v != "Image" {
            return Err(ImagingError::Unsupported {
                path: path.into(),
                what: format!("MetaImage ObjectType {v:?}"),
            });
        }
    }
    let ndims =
        ints(path, &t, &["NDims"], 1)?.ok_or_else(|| field_err(path, "NDims", "missing"))?;
    let n = match ndims.first() {
        Some(&n @ 1..=4) => n as usize,
        other => {
            return Err(field_err(
                path,
                "NDims",
                format!("is {other:?}, expected 1..4"),
            ))
        }
    };
    let dims_raw =
        ints(path, &t, &["DimSize"], n)?.ok_or_else(|| field_err(path, "DimSize", "missing"))?;
    if let Some(bad) = dims_raw.iter().find(|&&d| d < 1) {
        return Err(field_err(
            path,
            "DimSize",
            format!("has {bad}, expected sizes >= 1"),
        ));
    }
    let dims: Vec<usize> = dims_raw.iter().map(|&d| d as usize).collect();
    let k = match ints(path, &t, &["ElementNumberOfChannels"], 1)? {
        None => 1,
        Some(v) => match v.first() {
            Some(&c) if c >= 1 => c as usize,
            other => {
                return Err(field_err(
                    path,
                    "ElementNumberOfChannels",
                    format!("is {other:?}, expected >= 1"),
                ))
            }
        },
    };
    let dim_at = |i: usize| dims.get(i).copied().unwrap_or(1);
    let (shape, tdim) = ([dim_at(0), dim_at(1), dim_at(2)], dim_at(3));
    let too_large = || ImagingError::TooLarge {
        path: path.into(),
        msg: format!("DimSize {dims:?} x {k} channels overflows"),
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
                "DimSize {dims:?} x {k} channels hold {elements} values, more than the limit of {}",
                opts.max_voxels
            ),
        });
    }
    let (_, ty) = t
        .get(&["ElementType"])
        .ok_or_else(|| field_err(path, "ElementType", "missing"))?;
    let dtype = element_type(ty).ok_or_else(|| ImagingError::Unsupported {
        path: path.into(),
        what: format!("ElementType {ty:?} (expected MET_UCHAR, MET_CHAR, MET_USHORT, MET_SHORT, MET_UINT, MET_INT, MET_ULONG, MET_LONG, MET_ULONG_LONG, MET_LONG_LONG, MET_FLOAT or MET_DOUBLE)"),
    })?;
    let nbytes = elements
        .checked_mul(dtype.size() as u64)
        .ok_or_else(too_large)?;
    if !flag(path, &t, &["BinaryData"], true)? {
        return Err(ImagingError::Unsupported {
            path: path.into(),
            what: "ASCII voxel data (BinaryData = False)".into(),
        });
    }
    let big = flag(
        path,
        &t,
        &["BinaryDataByteOrderMSB", "ElementByteOrderMSB"],
        false,
    )?;
    let compressed = flag(path, &t, &["CompressedData"], false)?;
    let compressed_size = match ints(path, &t, &["CompressedDataSize"], 1)? {
        Some(v) => Some(
            v.first()
                .copied()
                .filter(|&s| s >= 0)
                .ok_or_else(|| field_err(path, "CompressedDataSize", "expected >= 0"))?
                as u64,
        ),
        None => None,
    };
    let header_size = match ints(path, &t, &["HeaderSize"], 1)? {
        Some(v) => v
            .first()
            .copied()
            .filter(|&s| s >= -1)
            .ok_or_else(|| field_err(path, "HeaderSize", "expected >= -1"))?,
        None => 0,
    };
    let affine = lps_to_ras_affine(path, &t, n)?;
    let source = data_source(path, &t, opts)?;
    let data_files = match &source {
        Source::Local(_) => Vec::new(),
        Source::Files(f) => f.clone(),
    };
    let header = Header {
        path: path.into(),
        format: FileFormat::from_path(path).unwrap_or(FileFormat::Mha),
        dims,
        shape,
        channels,
        dtype,
        big_endian: big,
        compressed,
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
    let file_shape = [tdim, shape[2], shape[1], shape[0], k];
    Ok(Layout {
        header,
        order,
        compressed,
        compressed_size,
        header_size,
        source,
        file_shape,
        nbytes,
    })
}

/// The voxel-to-RAS affine from `ElementSpacing` (or `ElementSize`), `Offset` (`Origin`, `Position`) and
/// `TransformMatrix` (`Rotation`, `Orientation`). As in ITK, the matrix lists one voxel axis direction after the
/// other, so it is the transpose of the direction matrix. A 4th dimension's geometry is dropped (it becomes channels).
fn lps_to_ras_affine(path: &Path, t: &MetaText, n: usize) -> Result<[[f64; 4]; 4]> {
    let spacing =
        floats(path, t, &["ElementSpacing", "ElementSize"], n)?.unwrap_or_else(|| vec![1.0; n]);
    let offset =
        floats(path, t, &["Offset", "Origin", "Position"], n)?.unwrap_or_else(|| vec![0.0; n]);
    let matrix = floats(
        path,
        t,
        &["TransformMatrix", "Rotation", "Orientation"],
        n * n,
    )?;
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
    Ok(a)
}

/// Interpret `ElementDataFile`.
fn data_source(path: &Path, t: &MetaText, opts: &LoadOptions) -> Result<Source> {
    let (_, value) = t
        .get(&["ElementDataFile"])
        .ok_or_else(|| field_err(path, "ElementDataFile", "missing"))?;
    if value == "LOCAL" {
        return Ok(Source::Local(t.data_offset));
    }
    let names: Vec<&str> = if text::is_list(value) {
        if t.list.is_empty() {
            return Err(field_err(path, "ElementDataFile", "LIST names no files"));
        }
        t.list.iter().map(String::as_str).collect()
    } else if value.contains('%') {
        return Err(ImagingError::Unsupported {
            path: path.into(),
            what: format!("ElementDataFile pattern {value:?}"),
        });
    } else if value.is_empty() {
        return Err(field_err(path, "ElementDataFile", "is empty"));
    } else {
        vec![value]
    };
    let dir = path.parent().unwrap_or(Path::new(""));
    names
        .into_iter()
        .map(|name| {
            let p = Path::new(name);
            if opts.confine_data_files
                && !p
                    .components()
                    .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
            {
                return Err(field_err(
                    path,
                    "ElementDataFile",
                    format!("{name:?} is outside the header's directory"),
                ));
            }
            Ok(dir.join(p))
        })
        .collect::<Result<Vec<_>>>()
        .map(Source::Files)
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
    values(path, t, names, n, |s| s.parse::<i64>().ok())
}

/// The first `n` whitespace-separated finite numbers of a field, if present.
fn floats(path: &Path, t: &MetaText, names: &[&str], n: usize) -> Result<Option<Vec<f64>>> {
    values(path, t, names, n, |s| {
        s.parse::<f64>().ok().filter(|v| v.is_finite())
    })
}

fn values<T>(
    path: &Path,
    t: &MetaText,
    names: &[&str],
    n: usize,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<Vec<T>>> {
    let Some((key, value)) = t.get(names) else {
        return Ok(None);
    };
    let parsed: Option<Vec<T>> = value.split_whitespace().take(n).map(parse).collect();
    match parsed {
        Some(v) if v.len() == n => Ok(Some(v)),
        _ => Err(field_err(
            path,
            key,
            format!("is {value:?}, expected {n} number(s)"),
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
                format!("is {v:?}, expected True or False"),
            )),
        },
    }
}

#[cfg(test)]
mod tests;
