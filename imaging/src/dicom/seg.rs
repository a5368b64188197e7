//! DICOM SEG writer: a label map on a source series' grid → a binary Segmentation object (one segment per label),
//! referencing the source SOP instances, study and frame of reference.
//!
//! Frames hold one slice of one segment (empty slices are left out), bit-packed as the standard requires for
//! `SegmentationType = BINARY`. A mask is a label map or one binary channel per segment ([`MaskLayout`]); when nothing
//! is segmented, one all-zero frame keeps the object valid. [`encode_seg`] returns the Part 10 bytes (what the server
//! streams), [`write_seg`] writes a file. With `anonymize`, patient and study attributes that identify a person get
//! replacement values; otherwise they are copied from the source series verbatim (never printed).

use std::path::Path;

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

use crate::error::{ImagingError, Result};
use crate::volume::Volume;

use super::uid::{new_uid, now_da_tm};
use super::DicomSeries;

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

fn ds(v: f64) -> String {
    // DS holds at most 16 characters.
    let s = format!("{v:.10}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    let s = if s == "-0" { "0" } else { s };
    s.chars().take(16).collect()
}

fn ds_list(v: &[f64]) -> String {
    v.iter().map(|x| ds(*x)).collect::<Vec<_>>().join("\\")
}

fn item(elements: Vec<DataElement<InMemDicomObject>>) -> InMemDicomObject {
    InMemDicomObject::from_element_iter(elements)
}

fn seq(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

fn s(tag: Tag, vr: VR, v: impl Into<String>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(v.into()))
}

fn us(tag: Tag, v: u16) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::US, PrimitiveValue::from(v))
}

fn code_item(c: &Code) -> InMemDicomObject {
    item(vec![
        s(tags::CODE_VALUE, VR::SH, c.value.clone()),
        s(tags::CODING_SCHEME_DESIGNATOR, VR::SH, c.scheme.clone()),
        s(tags::CODE_MEANING, VR::LO, c.meaning.clone()),
    ])
}

/// How a mask volume holds the segments' voxels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskLayout {
    /// One channel of label values: segment `label` is where the value equals `label`.
    LabelMap,
    /// One binary channel per class (e.g. sigmoid models): segment `label` is where channel `label - 1` is > 0.5.
    Channels,
}

/// Check that a mask lies on the source series' grid and holds every segment.
fn check_grid(
    mask: &Volume,
    layout: MaskLayout,
    segments: &[Segment],
    source: &DicomSeries,
) -> Result<()> {
    let want = source.volume.spatial_shape();
    let channels_ok = match layout {
        MaskLayout::LabelMap => mask.channels() == 1,
        MaskLayout::Channels => segments
            .iter()
            .all(|s| usize::from(s.label) <= mask.channels()),
    };
    if !channels_ok || mask.spatial_shape() != want {
        return Err(ImagingError::Shape(format!(
            "mask {:?} ({layout:?}) does not match the source series grid ({}, {}, {}) or lacks a segment's channel; resample or reorient it back first",
            mask.data.shape(),
            want[0],
            want[1],
            want[2]
        )));
    }
    let tol = 1e-3 * source.volume.spacing().iter().cloned().fold(1.0, f64::max);
    for r in 0..3 {
        for c in 0..4 {
            if (mask.affine[r][c] - source.volume.affine[r][c]).abs() > tol {
                return Err(ImagingError::Shape(format!(
                    "label map affine differs from the source series at [{r}][{c}]: {} vs {}",
                    mask.affine[r][c], source.volume.affine[r][c]
                )));
            }
        }
    }
    Ok(())
}

/// One per-frame functional group item: the source slice `inst` at `position`, segment `label`, slice index `k`.
fn frame_item(
    label: u16,
    k: usize,
    inst: &super::SourceInstance,
    position: [f64; 3],
) -> InMemDicomObject {
    item(vec![
        seq(
            tags::DERIVATION_IMAGE_SEQUENCE,
            vec![item(vec![
                seq(
                    tags::DERIVATION_CODE_SEQUENCE,
                    vec![code_item(&Code::new("113076", "DCM", "Segmentation"))],
                ),
                seq(
                    tags::SOURCE_IMAGE_SEQUENCE,
                    vec![item(vec![
                        s(
                            tags::REFERENCED_SOP_CLASS_UID,
                            VR::UI,
                            inst.sop_class_uid.clone(),
                        ),
                        s(
                            tags::REFERENCED_SOP_INSTANCE_UID,
                            VR::UI,
                            inst.sop_instance_uid.clone(),
                        ),
                        seq(
                            tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                            vec![code_item(&Code::new(
                                "121322",
                                "DCM",
                                "Source image for image processing operation",
                            ))],
                        ),
                        // The frames lie exactly on the source slices (same grid, no resampling).
                        s(tags::SPATIAL_LOCATIONS_PRESERVED, VR::CS, "YES"),
                    ])],
                ),
            ])],
        ),
        seq(
            tags::FRAME_CONTENT_SEQUENCE,
            vec![item(vec![DataElement::new(
                tags::DIMENSION_INDEX_VALUES,
                VR::UL,
                PrimitiveValue::U32([u32::from(label), k as u32 + 1].into_iter().collect()),
            )])],
        ),
        seq(
            tags::PLANE_POSITION_SEQUENCE,
            vec![item(vec![s(
                tags::IMAGE_POSITION_PATIENT,
                VR::DS,
                ds_list(&position),
            )])],
        ),
        seq(
            tags::SEGMENT_IDENTIFICATION_SEQUENCE,
            vec![item(vec![us(tags::REFERENCED_SEGMENT_NUMBER, label)])],
        ),
    ])
}

/// Write `labels` (integer label map on the grid of `source`) as a binary DICOM SEG file with the given segments.
pub fn write_seg(
    labels: &Volume,
    source: &DicomSeries,
    segments: &[Segment],
    opts: &SegOptions,
    out: &Path,
) -> Result<()> {
    let bytes = encode_seg(labels, MaskLayout::LabelMap, source, segments, opts)?;
    let tmp = out.with_extension("dcm.tmp");
    std::fs::write(&tmp, bytes).map_err(|e| ImagingError::io(&tmp, e))?;
    std::fs::rename(&tmp, out).map_err(|e| ImagingError::io(out, e))
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
    if segments.is_empty() || segments.iter().any(|s| s.label == 0) {
        return Err(ImagingError::config(
            "segments",
            "expected at least one segment, with label values >= 1",
        ));
    }
    check_grid(mask, layout, segments, source)?;
    let labels = mask;
    let [nx, ny, nz] = labels.spatial_shape();
    let (rows, cols) = (
        u16::try_from(ny)
            .map_err(|_| ImagingError::Shape(format!("{ny} rows exceed DICOM's 65535")))?,
        u16::try_from(nx)
            .map_err(|_| ImagingError::Shape(format!("{nx} columns exceed DICOM's 65535")))?,
    );
    if nx == 0 || ny == 0 || nz == 0 {
        return Err(ImagingError::Shape(
            "an empty mask has no frames to encode".into(),
        ));
    }
    if source.instances.len() != nz {
        return Err(ImagingError::Shape(format!(
            "{} source instances for {nz} slices",
            source.instances.len()
        )));
    }
    let a = &labels.affine;
    let sp = labels.spacing();
    let dir = labels.direction();
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
        let mut p = [0.0; 3];
        for (r, v) in p.iter_mut().enumerate() {
            *v = flip[r] * (a[r][2] * k as f64 + a[r][3]);
        }
        p
    };

    let frame_bits = nx * ny;
    let mut bits: Vec<u8> = Vec::new();
    let mut n_frames = 0usize;
    let mut per_frame = Vec::new();
    let hit = |slice: &ndarray::ArrayView3<f32>, label: u16, c: usize, r: usize| match layout {
        MaskLayout::LabelMap => slice[[0, c, r]] == f32::from(label),
        MaskLayout::Channels => slice[[usize::from(label) - 1, c, r]] > 0.5,
    };
    for seg in segments {
        for k in 0..nz {
            let slice = labels.data.index_axis(ndarray::Axis(3), k);
            let any = (0..ny).any(|r| (0..nx).any(|c| hit(&slice, seg.label, c, r)));
            if !any {
                continue;
            }
            let base = n_frames * frame_bits;
            bits.resize((base + frame_bits).div_ceil(8), 0);
            for r in 0..ny {
                for c in 0..nx {
                    if hit(&slice, seg.label, c, r) {
                        let bit = base + r * nx + c;
                        bits[bit / 8] |= 1 << (bit % 8);
                    }
                }
            }
            n_frames += 1;
            per_frame.push(frame_item(seg.label, k, &source.instances[k], position(k)));
        }
    }
    if n_frames == 0 {
        // Nothing segmented: one all-zero frame keeps the object valid (NumberOfFrames >= 1).
        bits.resize(frame_bits.div_ceil(8), 0);
        n_frames = 1;
        per_frame.push(frame_item(
            segments[0].label,
            0,
            &source.instances[0],
            position(0),
        ));
    }
    if bits.len() % 2 == 1 {
        bits.push(0);
    }

    let (date, time) = now_da_tm();
    let series_uid = new_uid(&format!("series {}", source.info.series_uid));
    let sop_uid = new_uid(&format!("instance {}", source.info.series_uid));
    let dim_org = new_uid("dimension organization");
    let mut obj = InMemDicomObject::new_empty();
    let put = |o: &mut InMemDicomObject, e: DataElement<InMemDicomObject>| {
        o.put(e);
    };
    put(
        &mut obj,
        s(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"),
    );
    put(
        &mut obj,
        s(tags::SOP_CLASS_UID, VR::UI, SEGMENTATION_STORAGE),
    );
    put(&mut obj, s(tags::SOP_INSTANCE_UID, VR::UI, sop_uid));
    put(&mut obj, s(tags::IMAGE_TYPE, VR::CS, "DERIVED\\PRIMARY"));
    put(&mut obj, s(tags::CONTENT_DATE, VR::DA, date.clone()));
    put(&mut obj, s(tags::CONTENT_TIME, VR::TM, time.clone()));
    put(&mut obj, s(tags::SERIES_DATE, VR::DA, date));
    put(&mut obj, s(tags::SERIES_TIME, VR::TM, time));
    put(&mut obj, s(tags::MODALITY, VR::CS, "SEG"));
    put(&mut obj, s(tags::MANUFACTURER, VR::LO, "medmae"));
    put(&mut obj, s(tags::MANUFACTURER_MODEL_NAME, VR::LO, "medmae"));
    put(&mut obj, s(tags::DEVICE_SERIAL_NUMBER, VR::LO, "0"));
    put(
        &mut obj,
        s(tags::SOFTWARE_VERSIONS, VR::LO, env!("CARGO_PKG_VERSION")),
    );
    put(
        &mut obj,
        s(
            tags::SERIES_DESCRIPTION,
            VR::LO,
            opts.series_description.clone(),
        ),
    );
    // Patient and study identification: copied verbatim, or placeholders when anonymising.
    for e in source.patient.elements(opts.anonymize) {
        put(&mut obj, e);
    }
    put(
        &mut obj,
        s(tags::STUDY_INSTANCE_UID, VR::UI, source.study_uid.clone()),
    );
    put(&mut obj, s(tags::SERIES_INSTANCE_UID, VR::UI, series_uid));
    put(
        &mut obj,
        s(tags::SERIES_NUMBER, VR::IS, opts.series_number.to_string()),
    );
    put(&mut obj, s(tags::INSTANCE_NUMBER, VR::IS, "1"));
    put(
        &mut obj,
        s(
            tags::FRAME_OF_REFERENCE_UID,
            VR::UI,
            source
                .frame_of_reference
                .clone()
                .unwrap_or_else(|| new_uid("frame of reference")),
        ),
    );
    put(&mut obj, s(tags::POSITION_REFERENCE_INDICATOR, VR::LO, ""));
    put(&mut obj, s(tags::CONTENT_LABEL, VR::CS, "MEDMAE_SEG"));
    put(
        &mut obj,
        s(
            tags::CONTENT_DESCRIPTION,
            VR::LO,
            opts.series_description.clone(),
        ),
    );
    put(&mut obj, s(tags::CONTENT_CREATOR_NAME, VR::PN, "medmae"));
    put(&mut obj, s(tags::SEGMENTATION_TYPE, VR::CS, "BINARY"));
    put(&mut obj, s(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"));
    put(&mut obj, us(tags::SAMPLES_PER_PIXEL, 1));
    put(
        &mut obj,
        s(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
    );
    put(
        &mut obj,
        s(tags::NUMBER_OF_FRAMES, VR::IS, n_frames.to_string()),
    );
    put(&mut obj, us(tags::ROWS, rows));
    put(&mut obj, us(tags::COLUMNS, cols));
    put(&mut obj, us(tags::BITS_ALLOCATED, 1));
    put(&mut obj, us(tags::BITS_STORED, 1));
    put(&mut obj, us(tags::HIGH_BIT, 0));
    put(&mut obj, us(tags::PIXEL_REPRESENTATION, 0));
    put(
        &mut obj,
        seq(
            tags::SEGMENT_SEQUENCE,
            segments
                .iter()
                .map(|g| {
                    item(vec![
                        seq(
                            tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE,
                            vec![code_item(&g.category)],
                        ),
                        us(tags::SEGMENT_NUMBER, g.label),
                        s(tags::SEGMENT_LABEL, VR::LO, g.name.clone()),
                        s(tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC"),
                        s(tags::SEGMENT_ALGORITHM_NAME, VR::LO, opts.algorithm.clone()),
                        seq(
                            tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE,
                            vec![code_item(&g.property_type)],
                        ),
                    ])
                })
                .collect(),
        ),
    );
    put(
        &mut obj,
        seq(
            tags::DIMENSION_ORGANIZATION_SEQUENCE,
            vec![item(vec![s(
                tags::DIMENSION_ORGANIZATION_UID,
                VR::UI,
                dim_org.clone(),
            )])],
        ),
    );
    let dim = |pointer: Tag, group: Tag, label: &str| {
        item(vec![
            s(tags::DIMENSION_ORGANIZATION_UID, VR::UI, dim_org.clone()),
            DataElement::new(
                tags::DIMENSION_INDEX_POINTER,
                VR::AT,
                PrimitiveValue::Tags([pointer].into_iter().collect()),
            ),
            DataElement::new(
                tags::FUNCTIONAL_GROUP_POINTER,
                VR::AT,
                PrimitiveValue::Tags([group].into_iter().collect()),
            ),
            s(tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label),
        ])
    };
    put(
        &mut obj,
        seq(
            tags::DIMENSION_INDEX_SEQUENCE,
            vec![
                dim(
                    tags::REFERENCED_SEGMENT_NUMBER,
                    tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                    "ReferencedSegmentNumber",
                ),
                dim(
                    tags::IMAGE_POSITION_PATIENT,
                    tags::PLANE_POSITION_SEQUENCE,
                    "ImagePositionPatient",
                ),
            ],
        ),
    );
    put(
        &mut obj,
        seq(
            tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
            vec![item(vec![
                seq(
                    tags::PIXEL_MEASURES_SEQUENCE,
                    vec![item(vec![
                        s(tags::SLICE_THICKNESS, VR::DS, ds(sp[2])),
                        s(tags::PIXEL_SPACING, VR::DS, ds_list(&[sp[1], sp[0]])),
                        s(tags::SPACING_BETWEEN_SLICES, VR::DS, ds(sp[2])),
                    ])],
                ),
                seq(
                    tags::PLANE_ORIENTATION_SEQUENCE,
                    vec![item(vec![s(
                        tags::IMAGE_ORIENTATION_PATIENT,
                        VR::DS,
                        ds_list(&iop),
                    )])],
                ),
            ])],
        ),
    );
    put(
        &mut obj,
        seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, per_frame),
    );
    put(
        &mut obj,
        seq(
            tags::REFERENCED_SERIES_SEQUENCE,
            vec![item(vec![
                seq(
                    tags::REFERENCED_INSTANCE_SEQUENCE,
                    source
                        .instances
                        .iter()
                        .map(|i| {
                            item(vec![
                                s(
                                    tags::REFERENCED_SOP_CLASS_UID,
                                    VR::UI,
                                    i.sop_class_uid.clone(),
                                ),
                                s(
                                    tags::REFERENCED_SOP_INSTANCE_UID,
                                    VR::UI,
                                    i.sop_instance_uid.clone(),
                                ),
                            ])
                        })
                        .collect(),
                ),
                s(
                    tags::SERIES_INSTANCE_UID,
                    VR::UI,
                    source.info.series_uid.clone(),
                ),
            ])],
        ),
    );
    put(
        &mut obj,
        DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::U8(bits.into())),
    );

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
