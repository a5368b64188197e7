//! Per-file DICOM attributes needed to group, sort and decode a series (read without the pixel data).
//!
//! Only technical attributes are read; patient-identifying ones (PatientName, PatientID, BirthDate,
//! AccessionNumber, ...) are never extracted, so nothing downstream can print or log them.

use std::path::{Path, PathBuf};

use dicom_core::header::HasLength;
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions};

use crate::error::{ImagingError, Result};

/// The uncompressed transfer syntaxes whose pixel data is decoded.
pub(crate) const NATIVE_SYNTAXES: [&str; 3] = [
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
];

/// A readable name for a transfer syntax UID (for error messages).
pub(crate) fn syntax_name(uid: &str) -> String {
    let name = match uid {
        "1.2.840.10008.1.2" => "Implicit VR Little Endian",
        "1.2.840.10008.1.2.1" => "Explicit VR Little Endian",
        "1.2.840.10008.1.2.2" => "Explicit VR Big Endian",
        "1.2.840.10008.1.2.1.99" => "Deflated Explicit VR Little Endian",
        "1.2.840.10008.1.2.4.50" => "JPEG Baseline (Process 1)",
        "1.2.840.10008.1.2.4.51" => "JPEG Extended (Process 2 & 4)",
        "1.2.840.10008.1.2.4.57" => "JPEG Lossless (Process 14)",
        "1.2.840.10008.1.2.4.70" => "JPEG Lossless SV1",
        "1.2.840.10008.1.2.4.80" => "JPEG-LS Lossless",
        "1.2.840.10008.1.2.4.81" => "JPEG-LS Near-Lossless",
        "1.2.840.10008.1.2.4.90" => "JPEG 2000 Lossless",
        "1.2.840.10008.1.2.4.91" => "JPEG 2000",
        "1.2.840.10008.1.2.4.201" => "HTJ2K Lossless",
        "1.2.840.10008.1.2.4.203" => "HTJ2K",
        "1.2.840.10008.1.2.5" => "RLE Lossless",
        _ => "unknown transfer syntax",
    };
    format!("{name} ({uid})")
}

/// SOP classes that never hold image pixels (DICOMDIR).
const MEDIA_DIRECTORY: &str = "1.2.840.10008.1.3.10";

/// The attributes of one DICOM file that matter for building a volume.
#[derive(Debug, Clone)]
pub(crate) struct SliceMeta {
    /// File name (for errors).
    pub name: PathBuf,
    /// Index into the gathered source files.
    pub source: usize,
    /// Transfer syntax UID.
    pub transfer_syntax: String,
    /// SOP Class UID.
    pub sop_class_uid: String,
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// Series Instance UID.
    pub series_uid: String,
    /// Study Instance UID.
    pub study_uid: String,
    /// Frame of Reference UID.
    pub frame_of_reference: Option<String>,
    /// Modality (CT, MR, ...).
    pub modality: String,
    /// Series Number.
    pub series_number: Option<i64>,
    /// Series Description.
    pub series_description: String,
    /// True if the object has a Pixel Data element.
    pub has_pixels: bool,
    /// Rows (image height).
    pub rows: u16,
    /// Columns (image width).
    pub cols: u16,
    /// Samples per pixel.
    pub samples: u16,
    /// Bits Allocated.
    pub bits_allocated: u16,
    /// Number of Frames (1 when absent).
    pub frames: u32,
    /// Image Orientation (Patient): row cosines then column cosines, LPS.
    pub iop: Option<[f64; 6]>,
    /// Image Position (Patient): centre of the first transmitted pixel, LPS mm.
    pub ipp: Option<[f64; 3]>,
    /// Pixel Spacing: (between rows, between columns) mm.
    pub pixel_spacing: Option<[f64; 2]>,
    /// Spacing Between Slices or Slice Thickness (used for single-slice volumes).
    pub slice_step: Option<f64>,
    /// Rescale Slope (1 when absent).
    pub slope: f64,
    /// Rescale Intercept (0 when absent).
    pub intercept: f64,
}

impl SliceMeta {
    /// True for the DICOMDIR media directory object.
    pub fn is_directory(&self) -> bool {
        self.sop_class_uid == MEDIA_DIRECTORY
    }
}

/// Parse a file's bytes as a DICOM Part 10 object; `header_only` stops before the pixel data.
pub(crate) fn parse(name: &Path, bytes: &[u8], header_only: bool) -> Result<DefaultDicomObject> {
    let body = if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        &bytes[128..]
    } else if bytes.len() >= 4 && &bytes[..4] == b"DICM" {
        bytes
    } else {
        return Err(ImagingError::format(
            name,
            "not a DICOM Part 10 file (no `DICM` marker after the 128-byte preamble)",
        ));
    };
    // dicom-parser reserves declared lengths before reading: check them against the bytes first.
    super::bounds::check_lengths(name, body)?;
    let mut opts = OpenFileOptions::new().read_preamble(ReadPreamble::Never);
    if header_only {
        opts = opts.read_until(tags::PIXEL_DATA);
    }
    opts.from_reader(body).map_err(|e| {
        ImagingError::format(
            name,
            format!("unreadable DICOM data set (truncated or corrupt?): {e}"),
        )
    })
}

/// A trimmed string attribute, if present and decodable.
fn text(obj: &DefaultDicomObject, tag: Tag) -> Option<String> {
    let el = obj.element_opt(tag).ok()??;
    let s = el.to_str().ok()?;
    let s = s
        .trim_matches(|c: char| c == '\0' || c.is_whitespace())
        .to_string();
    (!s.is_empty()).then_some(s)
}

/// A numeric multi-valued attribute with exactly `N` finite values, or a header-field error.
fn floats<const N: usize>(
    name: &Path,
    obj: &DefaultDicomObject,
    tag: Tag,
    field: &str,
) -> Result<Option<[f64; N]>> {
    let Some(el) = obj.element_opt(tag).ok().flatten() else {
        return Ok(None);
    };
    if el.is_empty() {
        return Ok(None);
    }
    let bad = |msg: String| ImagingError::HeaderField {
        path: name.into(),
        field: field.into(),
        msg,
    };
    let v = el
        .to_multi_float64()
        .map_err(|e| bad(format!("expected {N} numbers: {e}")))?;
    let arr: [f64; N] = v
        .clone()
        .try_into()
        .map_err(|_| bad(format!("expected {N} numbers, found {}", v.len())))?;
    if arr.iter().any(|x| !x.is_finite()) {
        let shown: Vec<String> = arr.iter().map(|v| v.to_string()).collect();
        return Err(bad(format!(
            "is {}; expected finite numbers",
            shown.join("\\")
        )));
    }
    Ok(Some(arr))
}

/// An unsigned short attribute (0 when absent), or a header-field error.
fn ushort(name: &Path, obj: &DefaultDicomObject, tag: Tag, field: &str) -> Result<Option<u16>> {
    let Some(el) = obj.element_opt(tag).ok().flatten() else {
        return Ok(None);
    };
    el.to_int::<u16>()
        .map(Some)
        .map_err(|e| ImagingError::HeaderField {
            path: name.into(),
            field: field.into(),
            msg: format!("expected an unsigned 16-bit integer: {e}"),
        })
}

/// Extract the attributes of one parsed object.
pub(crate) fn extract(name: &Path, source: usize, obj: &DefaultDicomObject) -> Result<SliceMeta> {
    let meta = obj.meta();
    let clean = |s: &str| s.trim_end_matches(['\0', ' ']).to_string();
    let transfer_syntax = clean(meta.transfer_syntax());
    let sop_class_uid =
        text(obj, tags::SOP_CLASS_UID).unwrap_or_else(|| clean(meta.media_storage_sop_class_uid()));
    let sop_instance_uid = text(obj, tags::SOP_INSTANCE_UID)
        .unwrap_or_else(|| clean(meta.media_storage_sop_instance_uid()));
    let one = |v: Option<[f64; 1]>| v.map(|a| a[0]);
    let slice_step = one(floats::<1>(
        name,
        obj,
        tags::SPACING_BETWEEN_SLICES,
        "SpacingBetweenSlices",
    )?)
    .or(one(floats::<1>(
        name,
        obj,
        tags::SLICE_THICKNESS,
        "SliceThickness",
    )?))
    .filter(|s| *s > 0.0);
    let frames = match text(obj, tags::NUMBER_OF_FRAMES) {
        None => 1,
        Some(s) => s.parse::<u32>().map_err(|_| ImagingError::HeaderField {
            path: name.into(),
            field: "NumberOfFrames".into(),
            msg: format!("expected a positive integer, found `{s}`"),
        })?,
    };
    let has_pixels = obj.element_opt(tags::PIXEL_DATA).ok().flatten().is_some()
        || obj.element_opt(tags::ROWS).ok().flatten().is_some();
    Ok(SliceMeta {
        name: name.into(),
        source,
        transfer_syntax,
        sop_class_uid,
        sop_instance_uid,
        series_uid: text(obj, tags::SERIES_INSTANCE_UID).unwrap_or_default(),
        study_uid: text(obj, tags::STUDY_INSTANCE_UID).unwrap_or_default(),
        frame_of_reference: text(obj, tags::FRAME_OF_REFERENCE_UID),
        modality: text(obj, tags::MODALITY).unwrap_or_default(),
        series_number: text(obj, tags::SERIES_NUMBER).and_then(|s| s.parse().ok()),
        series_description: text(obj, tags::SERIES_DESCRIPTION).unwrap_or_default(),
        has_pixels,
        rows: ushort(name, obj, tags::ROWS, "Rows")?.unwrap_or(0),
        cols: ushort(name, obj, tags::COLUMNS, "Columns")?.unwrap_or(0),
        samples: ushort(name, obj, tags::SAMPLES_PER_PIXEL, "SamplesPerPixel")?.unwrap_or(1),
        bits_allocated: ushort(name, obj, tags::BITS_ALLOCATED, "BitsAllocated")?.unwrap_or(0),
        frames,
        iop: floats::<6>(
            name,
            obj,
            tags::IMAGE_ORIENTATION_PATIENT,
            "ImageOrientationPatient",
        )?,
        ipp: floats::<3>(
            name,
            obj,
            tags::IMAGE_POSITION_PATIENT,
            "ImagePositionPatient",
        )?,
        pixel_spacing: floats::<2>(name, obj, tags::PIXEL_SPACING, "PixelSpacing")?,
        slice_step,
        slope: one(floats::<1>(name, obj, tags::RESCALE_SLOPE, "RescaleSlope")?).unwrap_or(1.0),
        intercept: one(floats::<1>(
            name,
            obj,
            tags::RESCALE_INTERCEPT,
            "RescaleIntercept",
        )?)
        .unwrap_or(0.0),
    })
}
