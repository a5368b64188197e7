//! DICOM SEG writer: a label map on a source series' grid → a binary Segmentation object (one segment per label),
//! referencing the source SOP instances, study and frame of reference.
//!
//! Frames hold one slice of one segment (empty slices are left out), bit-packed as the standard requires for
//! `SegmentationType = BINARY`. A mask is a label map or one binary channel per segment ([`MaskLayout`]); when nothing
//! is segmented, one all-zero frame keeps the object valid. [`encode_seg`] returns the Part 10 bytes (what the server
//! streams), [`write_seg`] writes a file. With `anonymize`, patient and study attributes that identify a person get
//! replacement values; otherwise they are copied from the source series verbatim (never printed).

mod elements;
mod frames;

use std::path::Path;

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

use crate::error::{ImagingError, Result};
use crate::volume::Volume;

use super::uid::{new_uid, now_da_tm};
use super::DicomSeries;
use elements::{put_all, SegUids};

/// The Segmentation Storage SOP class.
pub const SEGMENTATION_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.66.4";

/// A coded concept (code value, coding scheme designator, code meaning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    /// Code value, e.g. `85756007`.
    pub value: String,
    /// Coding scheme designator, e.g. `SCT`.
    pub scheme: String,
    /// Human-readable meaning, e.g. `Tissue`.
    pub meaning: String,
}

impl Code {
    /// Build a code from its three parts.
    pub fn new(value: &str, scheme: &str, meaning: &str) -> Self {
        Self {
            value: value.into(),
            scheme: scheme.into(),
            meaning: meaning.into(),
        }
    }
}

/// One segment: the label value it is made of and how it is described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Label value in the label map (also the SegmentNumber, 1..=65535).
    pub label: u16,
    /// SegmentLabel.
    pub name: String,
    /// SegmentedPropertyCategoryCodeSequence.
    pub category: Code,
    /// SegmentedPropertyTypeCodeSequence.
    pub property_type: Code,
}

impl Segment {
    /// A segment with generic codes (category "Anatomical Structure", type "Tissue").
    pub fn generic(label: u16, name: &str) -> Self {
        Self {
            label,
            name: name.into(),
            category: Code::new("91723000", "SCT", "Anatomical Structure"),
            property_type: Code::new("85756007", "SCT", "Tissue"),
        }
    }
}

/// Options of the SEG writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegOptions {
    /// Replace patient-identifying attributes by placeholder values instead of copying them from the source.
    pub anonymize: bool,
    /// SeriesDescription of the SEG series.
    pub series_description: String,
    /// SegmentAlgorithmName.
    pub algorithm: String,
    /// SeriesNumber of the SEG series.
    pub series_number: i32,
}

impl Default for SegOptions {
    fn default() -> Self {
        Self {
            anonymize: false,
            series_description: "medmae segmentation".into(),
            algorithm: "medmae".into(),
            series_number: 9901,
        }
    }
}

/// How a mask volume holds the segments' voxels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskLayout {
    /// One channel of label values: segment `label` is where the value equals `label`.
    LabelMap,
    /// One binary channel per class (e.g. sigmoid models): segment `label` is where channel `label - 1` is > 0.5.
    Channels,
}

/// Write `labels` (integer label map on the grid of `source`) as a binary DICOM SEG file with the given segments,
/// atomically.
pub fn write_seg(
    labels: &Volume,
    source: &DicomSeries,
    segments: &[Segment],
    opts: &SegOptions,
    out: &Path,
) -> Result<()> {
    let bytes = encode_seg(labels, MaskLayout::LabelMap, source, segments, opts)?;
    crate::io::write_file_atomic(out, &bytes)
}

/// Encode `mask` (on the grid of `source`, laid out as `layout`) as the bytes of a binary DICOM SEG Part 10 file.
///
/// Segments without any voxel are still described; if no segment has a voxel at all, one empty frame of the first
/// segment is written (the standard needs at least one frame). Only the grid of `source.volume` (shape and affine) is
/// used, so a caller may have replaced its voxels by a zero-channel array.
pub fn encode_seg(
    mask: &Volume,
    layout: MaskLayout,
    source: &DicomSeries,
    segments: &[Segment],
    opts: &SegOptions,
) -> Result<Vec<u8>> {
    let (rows, cols) = check_inputs(mask, layout, source, segments)?;
    let a = &mask.affine;
    let dir = mask.direction();
    // RAS -> LPS: negate world x and y.
    let flip = [-1.0, -1.0, 1.0];
    let iop = [
        flip[0] * dir[0][0],
        flip[1] * dir[1][0],
        dir[2][0],
        flip[0] * dir[0][1],
        flip[1] * dir[1][1],
        dir[2][1],
    ];
    let position = |k: usize| -> [f64; 3] {
        std::array::from_fn(|r| flip[r] * (a[r][2] * k as f64 + a[r][3]))
    };
    let frames = frames::pack(mask, layout, source, segments, position);

    let (date, time) = now_da_tm();
    let uids = SegUids {
        series: new_uid(&format!("series {}", source.info.series_uid)),
        instance: new_uid(&format!("instance {}", source.info.series_uid)),
        dimension_organization: new_uid("dimension organization"),
        frame_of_reference: source
            .frame_of_reference
            .clone()
            .unwrap_or_else(|| new_uid("frame of reference")),
    };
    let mut obj = InMemDicomObject::new_empty();
    put_all(
        &mut obj,
        elements::identification(source, opts, &uids, &date, &time),
    );
    put_all(
        &mut obj,
        elements::image_pixel(rows, cols, frames.per_frame.len()),
    );
    put_all(&mut obj, elements::dimensions(&uids.dimension_organization));
    put_all(
        &mut obj,
        vec![
            elements::segment_sequence(segments, opts),
            elements::shared_groups(mask.spacing(), iop),
            elements::seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, frames.per_frame),
            elements::referenced_series(source),
            DataElement::new(
                tags::PIXEL_DATA,
                VR::OB,
                PrimitiveValue::U8(frames.bits.into()),
            ),
        ],
    );
    to_part10(obj)
}

/// Check the segments, the mask's grid and sizes; returns (rows, columns).
fn check_inputs(
    mask: &Volume,
    layout: MaskLayout,
    source: &DicomSeries,
    segments: &[Segment],
) -> Result<(u16, u16)> {
    if segments.is_empty() || segments.iter().any(|s| s.label == 0) {
        return Err(ImagingError::config(
            "segments",
            "expected at least one segment, with label values >= 1",
        ));
    }
    frames::check_grid(mask, layout, segments, source)?;
    let [nx, ny, nz] = mask.spatial_shape();
    if nx == 0 || ny == 0 || nz == 0 {
        return Err(ImagingError::Shape(
            "an empty mask has no frames to encode".into(),
        ));
    }
    let rows = u16::try_from(ny)
        .map_err(|_| ImagingError::Shape(format!("{ny} rows exceed DICOM's 65535")))?;
    let cols = u16::try_from(nx)
        .map_err(|_| ImagingError::Shape(format!("{nx} columns exceed DICOM's 65535")))?;
    if source.instances.len() != nz {
        return Err(ImagingError::Shape(format!(
            "{} source instances for {nz} slices",
            source.instances.len()
        )));
    }
    Ok((rows, cols))
}

/// The data set as Part 10 bytes (Explicit VR Little Endian).
fn to_part10(obj: InMemDicomObject) -> Result<Vec<u8>> {
    let file = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax("1.2.840.10008.1.2.1"))
        .map_err(|e| {
            ImagingError::format(
                "DICOM SEG",
                format!("cannot build the file meta group: {e}"),
            )
        })?;
    let mut bytes = Vec::new();
    file.write_all(&mut bytes)
        .map_err(|e| ImagingError::format("DICOM SEG", format!("cannot encode: {e}")))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests;
