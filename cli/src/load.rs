//! Reading any input of the `medmae` command line: an image file (with its header) or a DICOM series.
//!
//! Errors come from `imaging` and already name the file, the field and what was expected; they are passed on
//! unchanged (wrapping them in "cannot read PATH" would print the path twice).

use std::path::Path;

use anyhow::{bail, Result};
use imaging::io::{FileFormat, Header, LoadOptions};
use imaging::Volume;

/// A loaded input.
pub(crate) struct Loaded {
    /// The volume (channel-first, RAS affine).
    pub volume: Volume,
    /// `nii`, `niigz`, `mha`, `mhd` or `dicom`.
    pub format: String,
    /// The file header (image files only).
    pub header: Option<Header>,
}

/// Load an image file or a DICOM series (`series` picks one when the input holds several).
pub(crate) fn load_any(input: &Path, series: Option<&str>, opts: &LoadOptions) -> Result<Loaded> {
    if let Some(format) = FileFormat::from_path(input) {
        let header = imaging::io::probe_with(input, opts)?;
        let volume = imaging::io::load_with(input, opts)?;
        return Ok(Loaded {
            volume,
            format: format_name(format).into(),
            header: Some(header),
        });
    }
    if imaging::dicom::is_seg_file(input) {
        bail!(
            "{}: a DICOM SEG holds segments, not an image volume; `medmae info` lists them",
            input.display()
        );
    }
    if imaging::dicom::looks_like_dicom(input) {
        let volume = imaging::dicom::read_series(input, series)?;
        return Ok(Loaded {
            volume,
            format: "dicom".into(),
            header: None,
        });
    }
    if input.is_dir() {
        bail!(
            "{}: not a DICOM series folder (no file with the DICM marker); give an image file or a DICOM folder, \
             .zip or .dcm",
            input.display()
        );
    }
    if !input.exists() {
        bail!("{}: no such file or directory", input.display());
    }
    bail!(
        "{}: unknown input; expected .nii, .nii.gz, .mha, .mhd, a DICOM directory, .zip or .dcm",
        input.display()
    )
}

/// The short name of a file format (as `medmae info` prints it).
pub(crate) fn format_name(f: FileFormat) -> &'static str {
    match f {
        FileFormat::Nii => "nii",
        FileFormat::NiiGz => "niigz",
        FileFormat::Mha => "mha",
        FileFormat::Mhd => "mhd",
    }
}

/// `X x Y x Z` of a grid.
pub(crate) fn grid(shape: [usize; 3]) -> String {
    format!("{} x {} x {}", shape[0], shape[1], shape[2])
}

/// `X x Y x Z, C channel(s)` of a volume.
pub(crate) fn describe(vol: &Volume) -> String {
    format!(
        "{}, {} channel(s)",
        grid(vol.spatial_shape()),
        vol.channels()
    )
}
