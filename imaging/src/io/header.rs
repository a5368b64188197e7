//! What a file's header says, read without the voxel data: format, stored dimensions, the meaning of the axes beyond
//! the spatial grid (time vs vector components), element type and geometry.

use std::path::PathBuf;

use ndarray::Array4;

use super::dtype::ElementType;
use super::nifti::NiftiVersion;
use super::FileFormat;
use crate::volume::Volume;

/// Where a file's affine came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum AffineSource {
    /// NIfTI `srow_*` (`sform_code` != 0).
    Sform {
        /// The `sform_code`.
        code: i32,
    },
    /// NIfTI quaternion fields (`qform_code` != 0, `sform_code` == 0).
    Qform {
        /// The `qform_code`.
        code: i32,
    },
    /// NIfTI `pixdim` only (both codes 0): nibabel's centred, x-flipped base affine.
    Pixdim,
    /// MetaImage `Offset`, `ElementSpacing` and `TransformMatrix`, converted from LPS.
    MetaImage,
}

/// Unit of a 4th (time) axis, as NIfTI's `xyzt_units` names it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum TimeUnit {
    /// Not stated (MetaImage has no time unit).
    #[default]
    Unknown,
    /// Seconds.
    Sec,
    /// Milliseconds.
    Msec,
    /// Microseconds.
    Usec,
    /// Hertz.
    Hz,
    /// Parts per million.
    Ppm,
    /// Radians per second.
    Rads,
}

impl TimeUnit {
    /// The unit encoded in the time bits of NIfTI `xyzt_units` (unknown codes read as `Unknown`).
    pub(crate) fn from_nifti(xyzt_units: i32) -> Self {
        match xyzt_units & 0x38 {
            8 => Self::Sec,
            16 => Self::Msec,
            24 => Self::Usec,
            32 => Self::Hz,
            40 => Self::Ppm,
            48 => Self::Rads,
            _ => Self::Unknown,
        }
    }

    /// The time bits of NIfTI `xyzt_units`.
    pub(crate) fn nifti_code(self) -> i32 {
        match self {
            Self::Unknown => 0,
            Self::Sec => 8,
            Self::Msec => 16,
            Self::Usec => 24,
            Self::Hz => 32,
            Self::Ppm => 40,
            Self::Rads => 48,
        }
    }
}

/// How a file stores the axes beyond the `(X, Y, Z)` grid. Whatever the format, the loaded volume's channel index is
/// `t + time * k` (time fastest) for time point `t` and vector component `k`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredAxes {
    /// Spatial dimensions stored (1..=3): a 2-D file has 2.
    pub spatial: usize,
    /// Length of the 4th (time or sequence) axis; 1 if there is none.
    pub time: usize,
    /// Vector components per voxel (NIfTI dims 5..7, MetaImage `ElementNumberOfChannels`); 1 for scalars.
    pub components: usize,
    /// Step along the 4th axis (NIfTI `pixdim[4]`, MetaImage's 4th `ElementSpacing`), if the file stores one.
    pub time_step: Option<f64>,
    /// Unit of the 4th axis.
    pub time_unit: TimeUnit,
}

impl StoredAxes {
    /// A scalar 3-D image with `time` points along a 4th axis and no step or unit.
    pub fn time_series(time: usize) -> Self {
        Self {
            spatial: 3,
            time,
            components: 1,
            time_step: None,
            time_unit: TimeUnit::Unknown,
        }
    }

    /// A 3-D image of `components`-vectors.
    pub fn vectors(components: usize) -> Self {
        Self {
            components,
            ..Self::time_series(1)
        }
    }

    /// Number of channels of the loaded volume.
    pub fn channels(&self) -> usize {
        self.time * self.components
    }
}

/// What a file's header says, read without touching the voxel data (for `medmae info` and for planning).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Header {
    /// The file that was probed (or the name given to bytes read from memory).
    pub path: PathBuf,
    /// Its format.
    pub format: FileFormat,
    /// NIfTI header version (`None` for MetaImage).
    pub nifti_version: Option<NiftiVersion>,
    /// Dimensions as stored (NIfTI `dim[1..=dim[0]]`, MetaImage `DimSize`).
    pub dims: Vec<usize>,
    /// What the dimensions beyond the spatial grid are.
    pub axes: StoredAxes,
    /// Spatial shape `(X, Y, Z)` of the loaded volume (2-D files have `Z = 1`).
    pub shape: [usize; 3],
    /// Channels of the loaded volume (`axes.time * axes.components`).
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
