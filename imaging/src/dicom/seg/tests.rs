//! Unit tests of the DICOM SEG encoder: decimal strings, channel layouts, empty results, grid checks.

use super::elements::ds;
use super::*;
use crate::dicom::{PatientContext, SeriesInfo, SourceInstance};
use dicom_object::DefaultDicomObject;
use ndarray::Array4;

/// A 3 x 2 x 2 source grid with two instances.
fn source() -> DicomSeries {
    let affine = Volume::affine_from(
        [1.0, 2.0, 3.0],
        [5.0, 6.0, 7.0],
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    );
    DicomSeries {
        volume: Volume::new(Array4::zeros((1, 3, 2, 2)), affine),
        info: SeriesInfo {
            series_uid: "1.2.3".into(),
            series_number: Some(1),
            modality: "CT".into(),
            description: String::new(),
            files: 2,
            images: 2,
            size: Some((3, 2)),
            transfer_syntax: String::new(),
        },
        study_uid: "1.2.4".into(),
        frame_of_reference: Some("1.2.5".into()),
        instances: (1..=2)
            .map(|k| SourceInstance {
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                sop_instance_uid: format!("1.2.6.{k}"),
            })
            .collect(),
        patient: PatientContext::default(),
    }
}

fn parse(bytes: &[u8]) -> DefaultDicomObject {
    assert_eq!(&bytes[128..132], b"DICM");
    dicom_object::from_reader(&bytes[128..]).unwrap()
}

fn frames(obj: &DefaultDicomObject) -> (u32, Vec<u8>) {
    let n = obj
        .element(tags::NUMBER_OF_FRAMES)
        .unwrap()
        .to_int::<u32>()
        .unwrap();
    (
        n,
        obj.element(tags::PIXEL_DATA)
            .unwrap()
            .to_bytes()
            .unwrap()
            .to_vec(),
    )
}

#[test]
fn channel_masks_and_empty_results_encode() {
    let src = source();
    let segs = [Segment::generic(1, "a"), Segment::generic(2, "b")];
    // Channel 0 holds voxel (column 2, row 1) of slice 1; channel 1 is empty.
    let mut m = Array4::<f32>::zeros((2, 3, 2, 2));
    m[[0, 2, 1, 1]] = 1.0;
    let mask = Volume::new(m, src.volume.affine);
    let bytes = encode_seg(
        &mask,
        MaskLayout::Channels,
        &src,
        &segs,
        &SegOptions::default(),
    )
    .unwrap();
    let obj = parse(&bytes);
    let (n, bits) = frames(&obj);
    assert_eq!(n, 1);
    // Bit r * columns + c = 1 * 3 + 2 = 5 of the only frame.
    assert_eq!(bits[0], 1 << 5);
    let per_frame = obj
        .element(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .unwrap();
    let item = &per_frame.items().unwrap()[0];
    let src_uid = item
        .element(tags::DERIVATION_IMAGE_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()[0]
        .element(tags::SOURCE_IMAGE_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()[0]
        .element(tags::REFERENCED_SOP_INSTANCE_UID)
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(src_uid.trim_end_matches('\0'), "1.2.6.2");
    assert_eq!(
        obj.element(tags::SEGMENT_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()
            .len(),
        2
    );

    // Nothing segmented: one all-zero frame.
    let empty = Volume::new(Array4::zeros((1, 3, 2, 2)), src.volume.affine);
    let (n, bits) = frames(&parse(
        &encode_seg(
            &empty,
            MaskLayout::LabelMap,
            &src,
            &segs,
            &SegOptions::default(),
        )
        .unwrap(),
    ));
    assert_eq!(n, 1);
    assert!(bits.iter().all(|&b| b == 0));

    // A segment without its channel, and a label map with two channels, are shape errors.
    let one = Volume::new(Array4::zeros((1, 3, 2, 2)), src.volume.affine);
    assert!(encode_seg(
        &one,
        MaskLayout::Channels,
        &src,
        &segs,
        &SegOptions::default()
    )
    .is_err());
    assert!(encode_seg(
        &mask,
        MaskLayout::LabelMap,
        &src,
        &segs,
        &SegOptions::default()
    )
    .is_err());
}

#[test]
fn decimal_strings_fit_ds() {
    assert_eq!(ds(2.5), "2.5");
    assert_eq!(ds(-0.0), "0");
    assert_eq!(ds(-123.456789012345), "-123.4567890123");
    assert_eq!(ds(10.0), "10");
    assert!(ds(1e-11).len() <= 16);
}
