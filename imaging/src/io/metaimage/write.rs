//! Writing MetaImage files (`.mha` with local data, `.mhd` + `.raw`): `f32` little-endian voxels, channels
//! interleaved, geometry converted back from RAS to ITK's LPS.

use std::fmt::Write as _;
use std::path::Path;

use super::super::{write_atomic, FileFormat};
use crate::error::{ImagingError, Result};
use crate::volume::Volume;

/// Save `vol` as `.mha` (local data) or `.mhd` with a `.raw` file of the same stem beside it, atomically per file.
pub(crate) fn save(vol: &Volume, path: &Path) -> Result<()> {
    let format = FileFormat::from_path(path);
    if !matches!(format, Some(FileFormat::Mha | FileFormat::Mhd)) {
        return Err(ImagingError::Unsupported {
            path: path.into(),
            what: "extension for MetaImage output (expected .mha or .mhd)".into(),
        });
    }
    let shape = vol.data.shape();
    if shape.contains(&0) {
        return Err(ImagingError::Shape(format!(
            "{}: cannot write an empty volume of shape {shape:?}",
            path.display()
        )));
    }
    let geometry = lps_geometry(vol, path)?;
    if format == Some(FileFormat::Mha) {
        let header = header_text(vol, &geometry, "LOCAL");
        return write_atomic(path, ".mha", |tmp| write_file(tmp, header.as_bytes(), vol));
    }
    let raw_path = path.with_extension("raw");
    let raw_name = raw_path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| ImagingError::Unsupported {
            path: path.into(),
            what: "non-UTF-8 file name for the .raw data file".into(),
        })?;
    let header = header_text(vol, &geometry, raw_name);
    write_atomic(&raw_path, ".raw", |tmp| write_file(tmp, &[], vol))?;
    write_atomic(path, ".mhd", |tmp| {
        std::fs::write(tmp, header.as_bytes()).map_err(|e| ImagingError::io(tmp, e))
    })
}

/// Spacing, LPS origin and the `TransformMatrix` entries (voxel axis directions one after the other).
struct Geometry {
    spacing: [f64; 3],
    origin: [f64; 3],
    matrix: [f64; 9],
}

fn lps_geometry(vol: &Volume, path: &Path) -> Result<Geometry> {
    let spacing = vol.spacing();
    let a = &vol.affine;
    if a.iter().flatten().any(|v| !v.is_finite()) || spacing.iter().any(|&s| s <= 0.0) {
        return Err(ImagingError::format(
            path,
            format!("cannot write affine {a:?}: it needs finite entries and non-zero columns"),
        ));
    }
    let flip = [-1.0, -1.0, 1.0];
    let mut matrix = [0.0; 9];
    for c in 0..3 {
        for r in 0..3 {
            matrix[c * 3 + r] = flip[r] * a[r][c] / spacing[c];
        }
    }
    let origin = [-a[0][3], -a[1][3], a[2][3]];
    Ok(Geometry {
        spacing,
        origin,
        matrix,
    })
}

/// Space-separated shortest round-trip decimals (`-0` written as `0`).
fn join(v: &[f64]) -> String {
    v.iter()
        .map(|x| (x + 0.0).to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn header_text(vol: &Volume, g: &Geometry, data_file: &str) -> String {
    let [x, y, z] = vol.spatial_shape();
    let mut s = String::new();
    // `write!` into a String cannot fail.
    let _ = write!(
        s,
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\nCompressedData = False\n\
         TransformMatrix = {}\nOffset = {}\nCenterOfRotation = 0 0 0\nElementSpacing = {}\nDimSize = {x} {y} {z}\n",
        join(&g.matrix),
        join(&g.origin),
        join(&g.spacing),
    );
    if vol.channels() > 1 {
        let _ = writeln!(s, "ElementNumberOfChannels = {}", vol.channels());
    }
    let _ = write!(
        s,
        "ElementType = MET_FLOAT\nElementDataFile = {data_file}\n"
    );
    s
}

/// Write `header` followed by the voxels in MetaImage order (channel fastest, then x, y, z).
fn write_file(path: &Path, header: &[u8], vol: &Volume) -> Result<()> {
    let ordered = vol.data.view().permuted_axes([3, 2, 1, 0]);
    let ordered = ordered.as_standard_layout();
    let mut bytes = Vec::with_capacity(header.len() + ordered.len() * 4);
    bytes.extend_from_slice(header);
    for v in ordered.iter() {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes).map_err(|e| ImagingError::io(path, e))
}
