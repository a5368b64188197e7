//! Building blocks of the SEG data set: element constructors and the modules that do not depend on the frames
//! (equipment and identification, segment descriptions, dimension organisation, shared geometry, references).

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::super::DicomSeries;
use super::{Code, SegOptions, Segment};

pub(super) fn ds(v: f64) -> String {
    // DS holds at most 16 characters.
    let s = format!("{v:.10}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    let s = if s == "-0" { "0" } else { s };
    s.chars().take(16).collect()
}

pub(super) fn ds_list(v: &[f64]) -> String {
    v.iter().map(|x| ds(*x)).collect::<Vec<_>>().join("\\")
}

pub(super) fn item(elements: Vec<DataElement<InMemDicomObject>>) -> InMemDicomObject {
    InMemDicomObject::from_element_iter(elements)
}

pub(super) fn seq(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

pub(super) fn s(tag: Tag, vr: VR, v: impl Into<String>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(v.into()))
}

pub(super) fn us(tag: Tag, v: u16) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::US, PrimitiveValue::from(v))
}

pub(super) fn code_item(c: &Code) -> InMemDicomObject {
    item(vec![
        s(tags::CODE_VALUE, VR::SH, c.value.clone()),
        s(tags::CODING_SCHEME_DESIGNATOR, VR::SH, c.scheme.clone()),
        s(tags::CODE_MEANING, VR::LO, c.meaning.clone()),
    ])
}

/// Put every element into `obj`.
pub(super) fn put_all(obj: &mut InMemDicomObject, elements: Vec<DataElement<InMemDicomObject>>) {
    for e in elements {
        obj.put(e);
    }
}

/// SOP common, general series/equipment and the SEG series attributes; patient and study identification comes from
/// `source` (or placeholders when anonymising).
pub(super) fn identification(
    source: &DicomSeries,
    opts: &SegOptions,
    uids: &SegUids,
    date: &str,
    time: &str,
) -> Vec<DataElement<InMemDicomObject>> {
    let mut e = vec![
        s(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"),
        s(tags::SOP_CLASS_UID, VR::UI, super::SEGMENTATION_STORAGE),
        s(tags::SOP_INSTANCE_UID, VR::UI, uids.instance.clone()),
        s(tags::IMAGE_TYPE, VR::CS, "DERIVED\\PRIMARY"),
        s(tags::CONTENT_DATE, VR::DA, date),
        s(tags::CONTENT_TIME, VR::TM, time),
        s(tags::SERIES_DATE, VR::DA, date),
        s(tags::SERIES_TIME, VR::TM, time),
        s(tags::MODALITY, VR::CS, "SEG"),
        s(tags::MANUFACTURER, VR::LO, "medmae"),
        s(tags::MANUFACTURER_MODEL_NAME, VR::LO, "medmae"),
        s(tags::DEVICE_SERIAL_NUMBER, VR::LO, "0"),
        s(tags::SOFTWARE_VERSIONS, VR::LO, env!("CARGO_PKG_VERSION")),
        s(
            tags::SERIES_DESCRIPTION,
            VR::LO,
            opts.series_description.clone(),
        ),
    ];
    // Patient and study identification: copied verbatim, or placeholders when anonymising.
    e.extend(source.patient.elements(opts.anonymize));
    e.extend([
        s(tags::STUDY_INSTANCE_UID, VR::UI, source.study_uid.clone()),
        s(tags::SERIES_INSTANCE_UID, VR::UI, uids.series.clone()),
        s(tags::SERIES_NUMBER, VR::IS, opts.series_number.to_string()),
        s(tags::INSTANCE_NUMBER, VR::IS, "1"),
        s(
            tags::FRAME_OF_REFERENCE_UID,
            VR::UI,
            uids.frame_of_reference.clone(),
        ),
        s(tags::POSITION_REFERENCE_INDICATOR, VR::LO, ""),
        s(tags::CONTENT_LABEL, VR::CS, "MEDMAE_SEG"),
        s(
            tags::CONTENT_DESCRIPTION,
            VR::LO,
            opts.series_description.clone(),
        ),
        // A person name in the component form (family^given): the plain form is retired.
        s(tags::CONTENT_CREATOR_NAME, VR::PN, "medmae^"),
        s(tags::SEGMENTATION_TYPE, VR::CS, "BINARY"),
        s(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"),
    ]);
    e
}

/// The UIDs a new SEG instance gets.
pub(super) struct SegUids {
    pub series: String,
    pub instance: String,
    pub dimension_organization: String,
    pub frame_of_reference: String,
}

/// Image pixel module of a bit-packed binary segmentation.
pub(super) fn image_pixel(
    rows: u16,
    cols: u16,
    frames: usize,
) -> Vec<DataElement<InMemDicomObject>> {
    vec![
        us(tags::SAMPLES_PER_PIXEL, 1),
        s(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        s(tags::NUMBER_OF_FRAMES, VR::IS, frames.to_string()),
        us(tags::ROWS, rows),
        us(tags::COLUMNS, cols),
        us(tags::BITS_ALLOCATED, 1),
        us(tags::BITS_STORED, 1),
        us(tags::HIGH_BIT, 0),
        us(tags::PIXEL_REPRESENTATION, 0),
    ]
}

/// SegmentSequence: one item per segment.
pub(super) fn segment_sequence(
    segments: &[Segment],
    opts: &SegOptions,
) -> DataElement<InMemDicomObject> {
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
    )
}

/// Dimension organisation: frames are indexed by segment number, then by plane position.
pub(super) fn dimensions(uid: &str) -> Vec<DataElement<InMemDicomObject>> {
    let dim = |pointer: Tag, group: Tag, label: &str| {
        item(vec![
            s(tags::DIMENSION_ORGANIZATION_UID, VR::UI, uid),
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
    vec![
        seq(
            tags::DIMENSION_ORGANIZATION_SEQUENCE,
            vec![item(vec![s(tags::DIMENSION_ORGANIZATION_UID, VR::UI, uid)])],
        ),
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
    ]
}

/// Shared functional groups: pixel measures (spacing `sp` = X, Y, Z in mm) and the plane orientation `iop` (LPS).
pub(super) fn shared_groups(sp: [f64; 3], iop: [f64; 6]) -> DataElement<InMemDicomObject> {
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
    )
}

/// ReferencedSeriesSequence: every source instance of the source series.
pub(super) fn referenced_series(source: &DicomSeries) -> DataElement<InMemDicomObject> {
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
    )
}
