//! Medical image files <-> [`Volume`]: NIfTI-1 and NIfTI-2 (`.nii`, `.nii.gz`) and MetaImage (`.mha`, `.mhd` + data
//! files), from a path or from bytes in memory.
//!
//! Every loaded volume speaks RAS like nibabel (MetaImage's LPS geometry is converted), keeps the source's voxel
//! order, and is channel-first `(C, X, Y, Z)`. Sizes implied by a header are checked against the file and against
//! [`LoadOptions::max_voxels`] before anything is allocated, degenerate geometry is refused when read, MetaImage data
//! files stay inside the header's folder unless [`LoadOptions::allow_external_data`] is set, and no byte input can
//! make a reader panic. Writers are atomic and durable (temporary file in the target directory, fsync, rename).

mod atomic;
mod dtype;
mod geometry;
mod header;
mod input;
mod layout;
mod metaimage;
mod nifti;
mod qform;
mod slabs;
mod stream;

use std::path::{Path, PathBuf};

use ndarray::Axis;

use crate::error::{ImagingError, Result};
use crate::volume::Volume;

pub(crate) use atomic::write_atomic;
pub use atomic::write_file_atomic;
pub use dtype::ElementType;
pub use geometry::check_affine;
pub use header::{AffineSource, Header, StoredAxes, TimeUnit};
use input::Input;
pub(crate) use layout::channel_first;
pub use nifti::{NiftiDtype, NiftiVersion};

/// Default [`LoadOptions::max_voxels`]: 2^30 values (4 GiB as `f32`).
pub const DEFAULT_MAX_VOXELS: u64 = 1 << 30;
/// Default [`LoadOptions::max_header_bytes`]: 1 MiB of MetaImage header text.
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 1 << 20;

/// Limits and policies for reading files. The default is the safe one every entry point gets: build options with
/// `..LoadOptions::default()` so that a new policy cannot be forgotten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Largest number of values (voxels x channels) a file may declare; larger headers are rejected before any
    /// allocation.
    pub max_voxels: u64,
    /// Largest MetaImage header (including a `LIST` of slice files) that is read.
    pub max_header_bytes: u64,
    /// Let MetaImage `ElementDataFile` entries (single file, `LIST` and pattern forms) name files outside the
    /// header's folder: absolute paths and `..` components. Off by default, so that a header cannot make a
    /// program read an arbitrary file; turn it on (`medmae --allow-external-data`) only for headers you trust.
    pub allow_external_data: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            max_voxels: DEFAULT_MAX_VOXELS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            allow_external_data: false,
        }
    }
}

/// A supported file format, chosen by file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// Uncompressed single-file NIfTI-1 or NIfTI-2 (`.nii`).
    Nii,
    /// gzip-compressed NIfTI-1 or NIfTI-2 (`.nii.gz`).
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

/// Load a volume with default [`LoadOptions`]; the format follows the extension.
pub fn load(path: &Path) -> Result<Volume> {
    load_with(path, &LoadOptions::default())
}

/// Load a volume with explicit limits.
pub fn load_with(path: &Path, opts: &LoadOptions) -> Result<Volume> {
    let format = FileFormat::of(path)?;
    read(&mut Input::file(path)?, format, opts)
}

/// Read only the header of a file.
pub fn probe(path: &Path) -> Result<Header> {
    probe_with(path, &LoadOptions::default())
}

/// Read only the header of a file, with explicit limits.
pub fn probe_with(path: &Path, opts: &LoadOptions) -> Result<Header> {
    let format = FileFormat::of(path)?;
    read_header(&mut Input::file(path)?, format, opts)
}

/// Load a volume from bytes held in memory (e.g. an upload), without temporary files; `name` stands for the input in
/// messages. A MetaImage header must hold its data (`ElementDataFile = LOCAL`): bytes have no folder to find data
/// files in. gzip is recognised by its magic, so `NiiGz` and `Nii` read the same.
pub fn load_bytes(
    bytes: &[u8],
    format: FileFormat,
    name: &str,
    opts: &LoadOptions,
) -> Result<Volume> {
    read(&mut Input::memory(Path::new(name), bytes), format, opts)
}

/// Read only the header of bytes held in memory (see [`load_bytes`]).
pub fn probe_bytes(
    bytes: &[u8],
    format: FileFormat,
    name: &str,
    opts: &LoadOptions,
) -> Result<Header> {
    read_header(&mut Input::memory(Path::new(name), bytes), format, opts)
}

/// Load a volume from a reader (read to its end first, bounded by what the header then allows).
pub fn load_reader(
    reader: impl std::io::Read,
    format: FileFormat,
    name: &str,
    opts: &LoadOptions,
) -> Result<Volume> {
    let mut bytes = Vec::new();
    // No header can ask for more than max_voxels 8-byte values plus its own text and a generous slack.
    let cap = opts
        .max_voxels
        .saturating_mul(8)
        .saturating_add(opts.max_header_bytes)
        .saturating_add(1 << 20);
    use std::io::Read;
    reader
        .take(cap.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| ImagingError::io(name, e))?;
    if bytes.len() as u64 > cap {
        return Err(ImagingError::TooLarge {
            path: name.into(),
            msg: format!("input exceeds {cap} bytes, more than LoadOptions::max_voxels allows"),
        });
    }
    load_bytes(&bytes, format, name, opts)
}

fn read(input: &mut Input, format: FileFormat, opts: &LoadOptions) -> Result<Volume> {
    match format {
        FileFormat::Nii | FileFormat::NiiGz => nifti::load(input, opts),
        FileFormat::Mha | FileFormat::Mhd => metaimage::load(input, opts),
    }
}

fn read_header(input: &mut Input, format: FileFormat, opts: &LoadOptions) -> Result<Header> {
    match format {
        FileFormat::Nii | FileFormat::NiiGz => nifti::probe(input, opts),
        FileFormat::Mha | FileFormat::Mhd => metaimage::probe(input, opts),
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
                    "grid {} vs {}; expected the same grid",
                    nifti::list(&parts[0].shape()[1..]),
                    nifti::list(&v.spatial_shape())
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
                    "affines differ by up to {worst:.3e}; expected at most {CHANNEL_AFFINE_TOLERANCE:e} (the same \
                     geometry)"
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

/// How a volume is written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SaveOptions {
    /// NIfTI element type (MetaImage output is always `f32`).
    pub dtype: NiftiDtype,
    /// NIfTI header version.
    pub nifti_version: NiftiVersion,
    /// How the channels are stored. `None`: NIfTI puts them on the 4th axis (`dim[4]`), MetaImage stores them as
    /// vector components (`ElementNumberOfChannels`). Give the source's [`Header::axes`] to keep a 2-D file 2-D, a
    /// 4-D file 4-D, its time step and unit, and vector components as components.
    pub axes: Option<StoredAxes>,
}

impl Default for SaveOptions {
    fn default() -> Self {
        Self {
            dtype: NiftiDtype::F32,
            nifti_version: NiftiVersion::One,
            axes: None,
        }
    }
}

/// Save a volume as NIfTI (`.nii`/`.nii.gz`, `f32`) or MetaImage (`.mha`/`.mhd`), by extension.
pub fn save(vol: &Volume, path: &Path) -> Result<()> {
    save_with(vol, path, &SaveOptions::default())
}

/// Save a volume with explicit options; the format follows the extension.
pub fn save_with(vol: &Volume, path: &Path, opts: &SaveOptions) -> Result<()> {
    match FileFormat::of(path)? {
        FileFormat::Nii | FileFormat::NiiGz => nifti::save(vol, path, opts),
        FileFormat::Mha | FileFormat::Mhd => metaimage::save(vol, path, opts.axes),
    }
}

/// Save a volume as NIfTI-1 (`.nii` or `.nii.gz`): sform and qform from the affine, pixdim = spacing, units mm;
/// multi-channel volumes become 4-D. Integer types round and reject values out of range.
pub fn save_nifti(vol: &Volume, path: &Path, dtype: NiftiDtype) -> Result<()> {
    nifti::save(
        vol,
        path,
        &SaveOptions {
            dtype,
            ..SaveOptions::default()
        },
    )
}

/// Encode a volume as the bytes of a NIfTI-1 file in memory (`gzip`: a `.nii.gz` file), as [`save_nifti`] writes
/// it; `name` is what errors call it.
pub fn encode_nifti(vol: &Volume, name: &str, dtype: NiftiDtype, gzip: bool) -> Result<Vec<u8>> {
    nifti::encode(
        vol,
        Path::new(name),
        &SaveOptions {
            dtype,
            ..SaveOptions::default()
        },
        gzip,
    )
}

/// Save a volume as MetaImage (`.mha` with local data, or `.mhd` + `.raw` beside it) in `f32`, with LPS geometry
/// on disk; channels are written as `ElementNumberOfChannels`.
pub fn save_metaimage(vol: &Volume, path: &Path) -> Result<()> {
    metaimage::save(vol, path, None)
}

/// The stored dimensions of `vol` under `axes` (spatial ones, then time, then components when either is > 1), after
/// checking that the axes fit the volume.
pub(crate) fn stored_dims(vol: &Volume, path: &Path, axes: &StoredAxes) -> Result<Vec<usize>> {
    let shape = vol.spatial_shape();
    if vol.data.is_empty() {
        return Err(ImagingError::Shape(format!(
            "{}: cannot write an empty volume of shape {}",
            path.display(),
            nifti::list(vol.data.shape())
        )));
    }
    let fits = (1..=3).contains(&axes.spatial)
        && shape[axes.spatial..].iter().all(|&n| n == 1)
        && axes.channels() == vol.channels();
    if !fits {
        return Err(ImagingError::Shape(format!(
            "{}: {} spatial dimension(s) x {} time point(s) x {} component(s) do not fit a volume of {} channel(s) on \
             a {} grid",
            path.display(),
            axes.spatial,
            axes.time,
            axes.components,
            vol.channels(),
            nifti::list(&shape)
        )));
    }
    let mut dims = if axes.time > 1 || axes.components > 1 {
        shape.to_vec()
    } else {
        shape[..axes.spatial].to_vec()
    };
    if axes.time > 1 || axes.components > 1 {
        dims.push(axes.time);
    }
    if axes.components > 1 {
        dims.push(axes.components);
    }
    Ok(dims)
}

#[cfg(test)]
mod tests {
    use super::*;

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
