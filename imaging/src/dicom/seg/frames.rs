//! The frames of a SEG: the mask's grid checked against the source series, one bit-packed frame per (segment,
//! slice) that has a voxel, and the per-frame functional group that ties each frame to its source slice.

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::super::{DicomSeries, SourceInstance};
use super::elements::{code_item, ds_list, item, s, seq, us};
use super::{Code, MaskLayout, Segment};
use crate::error::{ImagingError, Result};
use crate::volume::Volume;

/// Check that a mask lies on the source series' grid and holds every segment.
pub(super) fn check_grid(
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
    let [x, y, z] = mask.spatial_shape();
    if mask.spatial_shape() != want {
        return Err(ImagingError::Shape(format!(
            "the mask grid {x} x {y} x {z} does not match the source series grid {} x {} x {}; expected the \
             source's grid (resample or reorient the mask back first)",
            want[0], want[1], want[2]
        )));
    }
    if !channels_ok {
        let expected = match layout {
            MaskLayout::LabelMap => "1 channel of label values".to_string(),
            MaskLayout::Channels => format!(
                "one channel per segment ({})",
                segments.iter().map(|s| s.label).max().unwrap_or(0)
            ),
        };
        return Err(ImagingError::Shape(format!(
            "the mask has {} channel(s); expected {expected}",
            mask.channels()
        )));
    }
    let tol = 1e-3 * source.volume.spacing().iter().cloned().fold(1.0, f64::max);
    for r in 0..3 {
        for c in 0..4 {
            if (mask.affine[r][c] - source.volume.affine[r][c]).abs() > tol {
                return Err(ImagingError::Shape(format!(
                    "the mask's affine differs from the source series' at row {r}, column {c}: {} vs {}; expected \
                     the source's geometry",
                    mask.affine[r][c], source.volume.affine[r][c]
                )));
            }
        }
    }
    Ok(())
}

/// One per-frame functional group item: the source slice `inst` at `position`, segment `label`, slice index `k`.
pub(super) fn frame_item(
    label: u16,
    k: usize,
    inst: &SourceInstance,
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

/// The packed frames of a mask.
pub(super) struct Frames {
    /// PixelData: frame after frame, bit `r * columns + c` of each (even length).
    pub bits: Vec<u8>,
    /// One per-frame functional group item per frame.
    pub per_frame: Vec<InMemDicomObject>,
}

/// Pack one frame per segment and slice with at least one voxel (if none has any, one empty frame of the first
/// segment keeps the object valid: NumberOfFrames >= 1). `position(k)` is slice `k`'s ImagePositionPatient (LPS).
pub(super) fn pack(
    mask: &Volume,
    layout: MaskLayout,
    source: &DicomSeries,
    segments: &[Segment],
    position: impl Fn(usize) -> [f64; 3],
) -> Frames {
    let [nx, ny, nz] = mask.spatial_shape();
    let frame_bits = nx * ny;
    let mut bits: Vec<u8> = Vec::new();
    let mut per_frame = Vec::new();
    let hit = |slice: &ndarray::ArrayView3<f32>, label: u16, c: usize, r: usize| match layout {
        MaskLayout::LabelMap => slice[[0, c, r]] == f32::from(label),
        MaskLayout::Channels => slice[[usize::from(label) - 1, c, r]] > 0.5,
    };
    for seg in segments {
        for k in 0..nz {
            let slice = mask.data.index_axis(ndarray::Axis(3), k);
            let any = (0..ny).any(|r| (0..nx).any(|c| hit(&slice, seg.label, c, r)));
            if !any {
                continue;
            }
            let base = per_frame.len() * frame_bits;
            bits.resize((base + frame_bits).div_ceil(8), 0);
            for r in 0..ny {
                for c in 0..nx {
                    if hit(&slice, seg.label, c, r) {
                        let bit = base + r * nx + c;
                        bits[bit / 8] |= 1 << (bit % 8);
                    }
                }
            }
            per_frame.push(frame_item(seg.label, k, &source.instances[k], position(k)));
        }
    }
    if per_frame.is_empty() {
        bits.resize(frame_bits.div_ceil(8), 0);
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
    Frames { bits, per_frame }
}
