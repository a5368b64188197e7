//! Reading a DICOM Segmentation object back (what `medmae info` reports for a SEG, e.g. medmae's own output): its
//! segments, how many frames and voxels each has, and the series it references. No patient attribute is read.

use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject};

use super::meta;
use super::seg::SEGMENTATION_STORAGE;
use crate::error::{ImagingError, Result};

/// One segment of a SEG, as read back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SegmentSummary {
    /// SegmentNumber.
    pub number: u16,
    /// SegmentLabel.
    pub label: String,
    /// SegmentAlgorithmType (AUTOMATIC, SEMIAUTOMATIC, MANUAL).
    pub algorithm_type: String,
    /// CodeMeaning of the segmented property category.
    pub category: String,
    /// CodeMeaning of the segmented property type.
    pub property_type: String,
    /// Frames that belong to the segment.
    pub frames: usize,
    /// Set voxels (binary) or non-zero voxels (fractional) in those frames.
    pub voxels: u64,
}

/// What a DICOM SEG holds (no patient attributes).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SegSummary {
    /// SegmentationType: BINARY or FRACTIONAL.
    pub segmentation_type: String,
    /// Rows of each frame.
    pub rows: u16,
    /// Columns of each frame.
    pub columns: u16,
    /// NumberOfFrames.
    pub frames: usize,
    /// SeriesInstanceUID of the referenced source series, if given.
    pub referenced_series: Option<String>,
    /// The segments in SegmentSequence order.
    pub segments: Vec<SegmentSummary>,
}

/// True if `path` is a single DICOM file whose SOP class is Segmentation Storage.
pub fn is_seg_file(path: &Path) -> bool {
    if !path.is_file() {
        return false;
    }
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    meta::parse(path, &bytes, true)
        .ok()
        .and_then(|o| text(&o, tags::SOP_CLASS_UID))
        .is_some_and(|c| c == SEGMENTATION_STORAGE)
}

/// Read the summary of the DICOM SEG file `path`.
pub fn read_seg_summary(path: &Path) -> Result<SegSummary> {
    let bytes = std::fs::read(path).map_err(|e| ImagingError::io(path, e))?;
    let obj = meta::parse(path, &bytes, false)?;
    let class = text(&obj, tags::SOP_CLASS_UID).unwrap_or_default();
    if class != SEGMENTATION_STORAGE {
        return Err(ImagingError::field(
            path,
            "SOPClassUID",
            format!("is {class:?}; expected Segmentation Storage ({SEGMENTATION_STORAGE})"),
        ));
    }
    let int = |tag, field: &str| -> Result<u64> {
        text(&obj, tag)
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| {
                ImagingError::field(path, field, "missing or not a non-negative integer")
            })
    };
    let rows = u16::try_from(int(tags::ROWS, "Rows")?)
        .map_err(|_| ImagingError::field(path, "Rows", "exceeds 65535"))?;
    let columns = u16::try_from(int(tags::COLUMNS, "Columns")?)
        .map_err(|_| ImagingError::field(path, "Columns", "exceeds 65535"))?;
    let frames = usize::try_from(int(tags::NUMBER_OF_FRAMES, "NumberOfFrames")?)
        .map_err(|_| ImagingError::field(path, "NumberOfFrames", "too large"))?;
    let segmentation_type = text(&obj, tags::SEGMENTATION_TYPE).unwrap_or_default();
    let frame_segments = frame_segment_numbers(path, &obj, frames)?;
    let counts = voxel_counts(
        path,
        &obj,
        &segmentation_type,
        rows,
        columns,
        &frame_segments,
    )?;
    let segments = items(&obj, tags::SEGMENT_SEQUENCE)
        .iter()
        .map(|it| {
            let number = text(it, tags::SEGMENT_NUMBER)
                .and_then(|s| s.parse::<u16>().ok())
                .unwrap_or(0);
            let (frames, voxels) = counts
                .iter()
                .filter(|(n, _)| *n == number)
                .fold((0, 0), |(f, v), (_, c)| (f + 1, v + c));
            SegmentSummary {
                number,
                label: text(it, tags::SEGMENT_LABEL).unwrap_or_default(),
                algorithm_type: text(it, tags::SEGMENT_ALGORITHM_TYPE).unwrap_or_default(),
                category: code_meaning(it, tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE),
                property_type: code_meaning(it, tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE),
                frames,
                voxels,
            }
        })
        .collect();
    let referenced_series = items(&obj, tags::REFERENCED_SERIES_SEQUENCE)
        .first()
        .and_then(|it| text(it, tags::SERIES_INSTANCE_UID));
    Ok(SegSummary {
        segmentation_type,
        rows,
        columns,
        frames,
        referenced_series,
        segments,
    })
}

/// The ReferencedSegmentNumber of every frame (per-frame functional groups).
fn frame_segment_numbers(path: &Path, obj: &DefaultDicomObject, frames: usize) -> Result<Vec<u16>> {
    let per_frame = items(obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
    if per_frame.len() != frames {
        return Err(ImagingError::field(
            path,
            "PerFrameFunctionalGroupsSequence",
            format!(
                "has {} items; expected one per frame ({frames})",
                per_frame.len()
            ),
        ));
    }
    Ok(per_frame
        .iter()
        .map(|f| {
            f.element(tags::SEGMENT_IDENTIFICATION_SEQUENCE)
                .ok()
                .and_then(|e| e.items())
                .and_then(|i| i.first())
                .and_then(|i| text(i, tags::REFERENCED_SEGMENT_NUMBER))
                .and_then(|s| s.parse::<u16>().ok())
                .unwrap_or(0)
        })
        .collect())
}

/// (segment number, set voxels) of every frame.
fn voxel_counts(
    path: &Path,
    obj: &DefaultDicomObject,
    segmentation_type: &str,
    rows: u16,
    columns: u16,
    frame_segments: &[u16],
) -> Result<Vec<(u16, u64)>> {
    let pixels = obj
        .element(tags::PIXEL_DATA)
        .map_err(|_| ImagingError::field(path, "PixelData", "missing"))?
        .to_bytes()
        .map_err(|e| ImagingError::field(path, "PixelData", format!("unreadable: {e}")))?;
    let per_frame = rows as usize * columns as usize;
    let binary = segmentation_type != "FRACTIONAL";
    let needed = if binary {
        (per_frame * frame_segments.len()).div_ceil(8)
    } else {
        per_frame * frame_segments.len()
    };
    if pixels.len() < needed {
        return Err(ImagingError::Truncated {
            path: path.into(),
            what: "SEG pixel data".into(),
            expected: needed as u64,
            found: pixels.len() as u64,
        });
    }
    Ok(frame_segments
        .iter()
        .enumerate()
        .map(|(f, &n)| {
            let count = if binary {
                (f * per_frame..(f + 1) * per_frame)
                    .filter(|&bit| pixels[bit / 8] & (1 << (bit % 8)) != 0)
                    .count()
            } else {
                pixels[f * per_frame..(f + 1) * per_frame]
                    .iter()
                    .filter(|&&b| b != 0)
                    .count()
            };
            (n, count as u64)
        })
        .collect())
}

fn items(obj: &InMemDicomObject, tag: dicom_core::Tag) -> &[InMemDicomObject] {
    obj.element(tag).ok().and_then(|e| e.items()).unwrap_or(&[])
}

fn text(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    let s = obj.element(tag).ok()?.to_str().ok()?;
    let s = s
        .trim_matches(|c: char| c == '\0' || c.is_whitespace())
        .to_string();
    (!s.is_empty()).then_some(s)
}

fn code_meaning(obj: &InMemDicomObject, seq: dicom_core::Tag) -> String {
    items(obj, seq)
        .first()
        .and_then(|c| text(c, tags::CODE_MEANING))
        .unwrap_or_default()
}
