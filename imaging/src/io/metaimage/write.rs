//! Writing MetaImage files (`.mha` with local data, `.mhd` + `.raw`): `f32` little-endian voxels, vector components
//! interleaved, a 4th (time) axis as a 4th dimension, geometry converted back from RAS to ITK's LPS.

use std::fmt::Write as _;
use std::path::Path;

use super::super::{stored_dims, write_atomic, write_file_atomic, FileFormat, StoredAxes};
use crate::error::{ImagingError, Result};
use crate::volume::Volume;

/// Save `vol` as `.mha` (local data) or `.mhd` with a `.raw` file of the same stem beside it, atomically per file.
/// `axes` says how to store the channels (default: as vector components of a 3-D image).
pub(crate) fn save(vol: &Volume, path: &Path, axes: Option<StoredAxes>) -> Result<()> {
    let format = FileFormat::from_path(path);
    if !matches!(format, Some(FileFormat::Mha | FileFormat::Mhd)) {
        return Err(ImagingError::Unsupported {
            path: path.into(),
            what: "extension for MetaImage output (expected .mha or .mhd)".into(),
        });
    }
    let axes = axes.unwrap_or_else(|| StoredAxes::vectors(vol.channels()));
    // MetaImage has no 5th dimension: components stay per-voxel vectors, time becomes the 4th dimension.
    let mut dims = stored_dims(vol, path, &axes)?;
    dims.truncate(if axes.time > 1 { 4 } else { axes.spatial });
    let geometry = lps_geometry(vol, path)?;
    let layout = Layout { dims, axes };
    if format == Some(FileFormat::Mha) {
        let header = header_text(&layout, &geometry, "LOCAL");
        return write_atomic(path, ".mha", |tmp| {
            write_file(tmp, header.as_bytes(), vol, &layout.axes)
        });
    }
    let raw_path = path.with_extension("raw");
    let raw_name = raw_path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| ImagingError::Unsupported {
            path: path.into(),
            what: "non-UTF-8 file name for the .raw data file".into(),
        })?;
    let header = header_text(&layout, &geometry, raw_name);
    write_atomic(&raw_path, ".raw", |tmp| {
        write_file(tmp, &[], vol, &layout.axes)
    })?;
    write_file_atomic(path, header.as_bytes())
}

/// The stored dimensions and what the axes beyond the grid are.
struct Layout {
    dims: Vec<usize>,
    axes: StoredAxes,
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
    super::super::geometry::check_affine(path, "affine", a)?;
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

/// The header for `layout`: an `n`-dimensional image (`n` = stored dims), the 4th axis (time) with its step and an
/// identity direction, components as `ElementNumberOfChannels`.
fn header_text(layout: &Layout, g: &Geometry, data_file: &str) -> String {
    let n = layout.dims.len();
    let m = n.min(3);
    let mut matrix = Vec::with_capacity(n * n);
    for c in 0..n {
        for r in 0..n {
            matrix.push(if c < m && r < m {
                g.matrix[c * 3 + r]
            } else {
                f64::from(u8::from(r == c))
            });
        }
    }
    let mut origin = g.origin[..m].to_vec();
    let mut spacing = g.spacing[..m].to_vec();
    if n == 4 {
        origin.push(0.0);
        spacing.push(layout.axes.time_step.filter(|s| *s > 0.0).unwrap_or(1.0));
    }
    let dims: Vec<String> = layout.dims.iter().map(|d| d.to_string()).collect();
    let mut s = String::new();
    // `write!` into a String cannot fail.
    let _ = write!(
        s,
        "ObjectType = Image\nNDims = {n}\nBinaryData = True\nBinaryDataByteOrderMSB = False\nCompressedData = False\n\
         TransformMatrix = {}\nOffset = {}\nCenterOfRotation = {}\nElementSpacing = {}\nDimSize = {}\n",
        join(&matrix),
        join(&origin),
        join(&vec![0.0; n]),
        join(&spacing),
        dims.join(" "),
    );
    if layout.axes.components > 1 {
        let _ = writeln!(s, "ElementNumberOfChannels = {}", layout.axes.components);
    }
    let _ = write!(
        s,
        "ElementType = MET_FLOAT\nElementDataFile = {data_file}\n"
    );
    s
}

/// Write `header` followed by the voxels in MetaImage order: time slowest, then z, y, x, and the vector component
/// fastest (volume channel `t + time * k`).
fn write_file(path: &Path, header: &[u8], vol: &Volume, axes: &StoredAxes) -> Result<()> {
    let [nx, ny, nz] = vol.spatial_shape();
    let mut bytes = Vec::with_capacity(header.len() + vol.data.len() * 4);
    bytes.extend_from_slice(header);
    // (z, y, x, c) with c fastest: one contiguous run of channels per voxel.
    let ordered = vol.data.view().permuted_axes([3, 2, 1, 0]);
    let ordered = ordered.as_standard_layout();
    let channels = vol.channels();
    let flat = ordered.as_slice().unwrap_or_default();
    for t in 0..axes.time {
        for voxel in 0..nx * ny * nz {
            let run = &flat[voxel * channels..(voxel + 1) * channels];
            for k in 0..axes.components {
                bytes.extend_from_slice(&run[t + axes.time * k].to_le_bytes());
            }
        }
    }
    std::fs::write(path, bytes).map_err(|e| ImagingError::io(path, e))
}
