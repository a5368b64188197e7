//! Medical image files <-> [`Volume`]: NIfTI-1 (`.nii`, `.nii.gz`) and MetaImage (`.mha`, `.mhd` + data files).
//!
//! Every loaded volume speaks RAS like nibabel (MetaImage's LPS geometry is converted), keeps the source's voxel
//! order, and is channel-first `(C, X, Y, Z)`. Sizes implied by a header are checked against the file and against
//! [`LoadOptions::max_voxels`] before anything is allocated, and no byte input can make a reader panic.
//! Writers are atomic (temporary file in the target directory, then rename).

mod dtype;
mod metaimage;
mod nifti;
mod qform;
mod stream;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ndarray::{Array4, Array5, Axis, Ix4};

use crate::error::{ImagingError, Result};
use crate::volume::Volume;

pub use dtype::ElementType;
pub use nifti::NiftiDtype;

/// Default [`LoadOptions::max_voxels`]: 2^30 values (4 GiB as `f32`).
pub const DEFAULT_MAX_VOXELS: u64 = 1 << 30;
/// Default [`LoadOptions::max_header_bytes`]: 1 MiB of MetaImage header text.
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 1 << 20;

/// Limits and policies for reading files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Largest number of values (voxels x channels) a file may declare; larger headers are rejected before any
    /// allocation.
    pub max_voxels: u64,
    /// Largest MetaImage header (including a `LIST` of slice files) that is read.
    pub max_header_bytes: u64,
    /// When true, MetaImage data files must lie in the header's directory (no absolute paths, no `..`): use this for
    /// files from untrusted sources.
    pub confine_data_files: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            max_voxels: DEFAULT_MAX_VOXELS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            confine_data_files: false,
        }
    }
}

/// A supported file format, chosen by file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// Uncompressed single-file NIfTI-1 (`.nii`).
    Nii,
    /// gzip-compressed NIfTI-1 (`.nii.gz`).
    NiiGz,
    /// MetaImage with header and (usually) data in one file (`.mha`).
    Mha,
    /// MetaImage header naming separate data files (`.mhd`).
    Mhd,
}

impl FileFormat {
    /// The format a path's extension names (case-insensitive), if any.
    pub fn from_path(path: &Path) -> Option<Self> {
        let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
        if name.ends_with(".nii.gz") {
            Some(Self::NiiGz)
        } else if name.ends_with(".nii") {
            Some(Self::Nii)
        } else if name.ends_with(".mha") {
            Some(Self::Mha)
        } else if name.ends_with(".mhd") {
            Some(Self::Mhd)
        } else {
            None
        }
    }

    /// The extension, with its leading dot.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Nii => ".nii",
            Self::NiiGz => ".nii.gz",
            Self::Mha => ".mha",
            Self::Mhd => ".mhd",
        }
    }

    fn of(path: &Path) -> Result<Self> {
        Self::from_path(path).ok_or_else(|| ImagingError::Unsupported {
            path: path.into(),
            what: "file extension (expected .nii, .nii.gz, .mha or .mhd)".into(),
        })
    }
}

/// Where a file's affine came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum AffineSource {
    /// NIfTI `srow_*` (`sform_code` != 0).
    Sform {
        /// The `sform_code`.
        code: i16,
    },
    /// NIfTI quaternion fields (`qform_code` != 0, `sform_code` == 0).
    Qform {
        /// The `qform_code`.
        code: i16,
    },
    /// NIfTI `pixdim` only (both codes 0): nibabel's centred, x-flipped base affine.
    Pixdim,
    /// MetaImage `Offset`, `ElementSpacing` and `TransformMatrix`, converted from LPS.
    MetaImage,
}

/// What a file's header says, read without touching the voxel data (for `medmae info` and for planning).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Header {
    /// The file that was probed.
    pub path: PathBuf,
    /// Its format.
    pub format: FileFormat,
    /// Dimensions as stored (NIfTI `dim[1..=dim[0]]`, MetaImage `DimSize`).
    pub dims: Vec<usize>,
    /// Spatial shape `(X, Y, Z)` of the loaded volume (2-D files have `Z = 1`).
    pub shape: [usize; 3],
    /// Channels of the loaded volume (NIfTI dims 4..7, MetaImage 4th dim x `ElementNumberOfChannels`).
    pub channels: usize,
    /// Element type on disk.
    pub dtype: ElementType,
    /// True if multi-byte elements are stored most significant byte first.
    pub big_endian: bool,
    /// True if the voxel data is gzip/zlib compressed.
    pub compressed: bool,
    /// NIfTI `(scl_slope, scl_inter)` applied on load, when the slope is non-zero and finite.
    pub scaling: Option<(f64, f64)>,
    /// Voxel-to-RAS affine.
    pub affine: [[f64; 4]; 4],
    /// Which header fields the affine came from.
    pub affine_source: AffineSource,
    /// Voxel spacing in mm (column norms of the affine).
    pub spacing: [f64; 3],
    /// RAS position of voxel (0, 0, 0).
    pub origin: [f64; 3],
    /// RAS direction cosines (columns = voxel axes).
    pub direction: [[f64; 3]; 3],
    /// Separate data files (MetaImage `.mhd`), in reading order.
    pub data_files: Vec<PathBuf>,
}

impl Header {
    /// Number of values (voxels x channels) the file holds.
    pub fn len(&self) -> u64 {
        self.shape
            .iter()
            .chain([&self.channels])
            .map(|&n| n as u64)
            .product()
    }

    /// True if the file holds no values (never the case for files that pass validation).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fill the derived geometry fields from the affine.
    pub(crate) fn with_geometry(mut self) -> Self {
        let geo = Volume::new(Array4::zeros((0, 0, 0, 0)), self.affine);
        self.spacing = geo.spacing();
        self.origin = geo.origin();
        self.direction = geo.direction();
        self
    }
}

/// Load a volume with default [`LoadOptions`]; the format follows the extension.
pub fn load(path: &Path) -> Result<Volume> {
    load_with(path, &LoadOptions::default())
}

/// Load a volume with explicit limits.
pub fn load_with(path: &Path, opts: &LoadOptions) -> Result<Volume> {
    match FileFormat::of(path)? {
        FileFormat::Nii | FileFormat::NiiGz => nifti::load(path, opts),
        FileFormat::Mha | FileFormat::Mhd => metaimage::load(path, opts),
    }
}

/// Read only the header of a file.
pub fn probe(path: &Path) -> Result<Header> {
    probe_with(path, &LoadOptions::default())
}

/// Read only the header of a file, with explicit limits.
pub fn probe_with(path: &Path, opts: &LoadOptions) -> Result<Header> {
    match FileFormat::of(path)? {
        FileFormat::Nii | FileFormat::NiiGz => nifti::probe(path, opts),
        FileFormat::Mha | FileFormat::Mhd => metaimage::probe(path, opts),
    }
}

/// Stack the channels of several files (typically one file per modality) into one volume, in the given order.
pub fn load_channels(paths: &[PathBuf]) -> Result<Volume> {
    load_channels_with(paths, &LoadOptions::default())
}

/// Largest per-element affine difference tolerated between stacked channel files.
pub const CHANNEL_AFFINE_TOLERANCE: f64 = 1e-4;

/// [`load_channels`] with explicit limits (applied to each file).
pub fn load_channels_with(paths: &[PathBuf], opts: &LoadOptions) -> Result<Volume> {
    let (first_path, rest) = paths
        .split_first()
        .ok_or_else(|| ImagingError::config("paths", "at least one channel file is needed"))?;
    let first = load_with(first_path, opts)?;
    let mut parts = vec![first.data];
    for p in rest {
        let v = load_with(p, opts)?;
        if v.spatial_shape() != parts[0].shape()[1..] {
            return Err(ImagingError::ChannelMismatch {
                first: first_path.clone(),
                other: p.clone(),
                msg: format!(
                    "shape {:?} vs {:?}",
                    &parts[0].shape()[1..],
                    v.spatial_shape()
                ),
            });
        }
        let diff = first
            .affine
            .iter()
            .flatten()
            .zip(v.affine.iter().flatten())
            .map(|(a, b)| (a - b).abs());
        let worst = diff.fold(
            0.0f64,
            |m, d| if d.is_nan() { f64::INFINITY } else { m.max(d) },
        );
        if worst > CHANNEL_AFFINE_TOLERANCE {
            return Err(ImagingError::ChannelMismatch {
                first: first_path.clone(),
                other: p.clone(),
                msg: format!(
                    "affines differ by {worst:.3e} (> {CHANNEL_AFFINE_TOLERANCE:e}): {:?} vs {:?}",
                    first.affine, v.affine
                ),
            });
        }
        parts.push(v.data);
    }
    let views: Vec<_> = parts.iter().map(|a| a.view()).collect();
    let data =
        ndarray::concatenate(Axis(0), &views).map_err(|e| ImagingError::Shape(e.to_string()))?;
    Ok(Volume::new(data, first.affine))
}

/// Save a volume as NIfTI (`.nii`/`.nii.gz`, `f32`) or MetaImage (`.mha`/`.mhd`), by extension.
pub fn save(vol: &Volume, path: &Path) -> Result<()> {
    match FileFormat::of(path)? {
        FileFormat::Nii | FileFormat::NiiGz => save_nifti(vol, path, NiftiDtype::F32),
        FileFormat::Mha | FileFormat::Mhd => save_metaimage(vol, path),
    }
}

/// Save a volume as NIfTI-1 (`.nii` or `.nii.gz`): sform and qform from the affine, pixdim = spacing, units mm;
/// multi-channel volumes become 4-D. Integer types round and reject values out of range.
pub fn save_nifti(vol: &Volume, path: &Path, dtype: NiftiDtype) -> Result<()> {
    nifti::save(vol, path, dtype)
}

/// Save a volume as MetaImage (`.mha` with local data, or `.mhd` + `.raw` beside it) in `f32`, with LPS geometry
/// on disk; channels are written as `ElementNumberOfChannels`.
pub fn save_metaimage(vol: &Volume, path: &Path) -> Result<()> {
    metaimage::save(vol, path)
}

/// Reorder values read in file order — `(outer, Z, Y, X, inner)` with `inner` fastest — into channel-first
/// `(outer * inner, X, Y, Z)`, channel index `inner + n_inner * outer`.
pub(crate) fn channel_first(
    path: &Path,
    values: Vec<f32>,
    [outer, z, y, x, inner]: [usize; 5],
) -> Result<Array4<f32>> {
    let bad = |e: ndarray::ShapeError| {
        ImagingError::format(path, format!("voxel data does not fit its shape: {e}"))
    };
    if inner == 1 {
        // The common case (scalar voxels): a cache-blocked transpose per channel, several times faster than
        // ndarray's element-wise copy of a permuted view.
        let n = z * y * x;
        if values.len() != outer * n {
            return Err(ImagingError::format(
                path,
                format!(
                    "voxel data does not fit its shape: {} values for {outer} x {z} x {y} x {x}",
                    values.len()
                ),
            ));
        }
        let mut out = vec![0.0f32; values.len()];
        for (src, dst) in values
            .chunks_exact(n.max(1))
            .zip(out.chunks_exact_mut(n.max(1)))
        {
            transpose_zyx_to_xyz(src, dst, [z, y, x]);
        }
        return Array4::from_shape_vec((outer, x, y, z), out).map_err(bad);
    }
    let arr = Array5::from_shape_vec((outer, z, y, x, inner), values).map_err(bad)?;
    let arr = arr
        .permuted_axes([0, 4, 3, 2, 1])
        .as_standard_layout()
        .into_owned();
    arr.into_shape_with_order((outer * inner, x, y, z))
        .map_err(bad)?
        .into_dimensionality::<Ix4>()
        .map_err(bad)
}

/// `dst[(x·Y + y)·Z + z] = src[(z·Y + y)·X + x]` in 32×32 tiles of (z, x), so that both sides stay in cache.
fn transpose_zyx_to_xyz(src: &[f32], dst: &mut [f32], [z, y, x]: [usize; 3]) {
    const TILE: usize = 32;
    for yi in 0..y {
        for z0 in (0..z).step_by(TILE) {
            let z1 = (z0 + TILE).min(z);
            for x0 in (0..x).step_by(TILE) {
                let x1 = (x0 + TILE).min(x);
                for zi in z0..z1 {
                    let row = &src[(zi * y + yi) * x..][..x];
                    for xi in x0..x1 {
                        dst[(xi * y + yi) * z + zi] = row[xi];
                    }
                }
            }
        }
    }
}

/// Write a file atomically: `write` fills a temporary path in the same directory (ending in `suffix`, which some
/// writers use to pick compression), which is then renamed over `path`.
pub(crate) fn write_atomic(
    path: &Path,
    suffix: &str,
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".medmae-tmp-{}-{n}{suffix}", std::process::id()));
    let res = write(&tmp)
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| ImagingError::io(path, e)));
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_first_reorders_file_order() {
        // File order: outer=2, z=1, y=2, x=3, inner=2 (values are their own linear file index).
        let vals: Vec<f32> = (0..24).map(|v| v as f32).collect();
        let a = channel_first(Path::new("t"), vals, [2, 1, 2, 3, 2]).unwrap();
        assert_eq!(a.shape(), &[4, 3, 2, 1]);
        // channel c = inner + 2*outer; file index = (((outer*1 + z)*2 + y)*3 + x)*2 + inner
        for outer in 0..2 {
            for inner in 0..2 {
                for y in 0..2 {
                    for x in 0..3 {
                        let want = ((((outer * 2 + y) * 3 + x) * 2) + inner) as f32;
                        assert_eq!(a[[inner + 2 * outer, x, y, 0]], want);
                    }
                }
            }
        }
        assert!(channel_first(Path::new("t"), vec![0.0; 5], [1, 1, 2, 3, 1]).is_err());
    }

    #[test]
    fn blocked_transpose_matches_the_definition() {
        // Sizes around and across the tile edge, two channels; values are their own file index.
        for [outer, z, y, x] in [[2, 33, 3, 40], [1, 1, 1, 1], [1, 70, 2, 31], [3, 5, 64, 65]] {
            let n = outer * z * y * x;
            let vals: Vec<f32> = (0..n).map(|v| v as f32).collect();
            let a = channel_first(Path::new("t"), vals, [outer, z, y, x, 1]).unwrap();
            assert_eq!(a.shape(), &[outer, x, y, z]);
            for ((c, xi, yi, zi), &v) in a.indexed_iter() {
                assert_eq!(v, (((c * z + zi) * y + yi) * x + xi) as f32);
            }
        }
    }

    #[test]
    fn format_from_extension() {
        assert_eq!(
            FileFormat::from_path(Path::new("a/b.NII.GZ")),
            Some(FileFormat::NiiGz)
        );
        assert_eq!(
            FileFormat::from_path(Path::new("b.nii")),
            Some(FileFormat::Nii)
        );
        assert_eq!(
            FileFormat::from_path(Path::new("b.mhd")),
            Some(FileFormat::Mhd)
        );
        assert_eq!(
            FileFormat::from_path(Path::new("b.mha")),
            Some(FileFormat::Mha)
        );
        assert_eq!(FileFormat::from_path(Path::new("b.png")), None);
        assert!(matches!(
            load(Path::new("x.png")),
            Err(ImagingError::Unsupported { .. })
        ));
    }
}
