//! DICOM series uploads for `medmae.v1.Segmentation`: decode the streamed files (or one zip) with `imaging::dicom`
//! under the server's limits, and encode the predicted mask as a binary DICOM SEG that references the source series.
//!
//! Uploaded files are named only by their position ("file 3", "upload.zip!entry 3"), so no file name, patient
//! attribute or other header value from the request can reach an error message or a log line.

use std::path::PathBuf;

use imaging::dicom::{self, DicomOptions, DicomSeries, MaskLayout, SegOptions, Segment};
use imaging::{ImagingError, Volume};
use spec::OutputActivation;

use crate::config::Limits;
use crate::error::ServeError;
use crate::model::Model;
use crate::ops::Metrics;
use crate::pipeline::{segment_volume, SegmentOptions, Segmentation};
use crate::state::Cancel;

/// A DICOM series as received: one zip archive, or the Part 10 files in upload order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DicomUpload {
    /// The bytes of a zip archive holding the series.
    Zip(Vec<u8>),
    /// Whole DICOM files.
    Files(Vec<Vec<u8>>),
}

/// The `imaging::dicom` limits that follow from the server's.
pub fn options(limits: &Limits) -> DicomOptions {
    DicomOptions {
        max_files: limits.max_dicom_files,
        max_total_bytes: limits.max_upload_bytes,
        max_voxels: limits.max_voxels,
        neutral_names: true,
    }
}

/// Map a DICOM reading error onto a status: limits → RESOURCE_EXHAUSTED, everything else → INVALID_ARGUMENT.
fn upload_error(e: ImagingError) -> ServeError {
    let msg = format!("DICOM upload: {e}");
    match e {
        ImagingError::TooLarge { .. } => ServeError::TooLarge(msg),
        _ => ServeError::invalid(msg),
    }
}

/// Decode the uploaded series; `series` picks a SeriesInstanceUID or SeriesNumber ("" = the only series).
pub fn decode(
    upload: DicomUpload,
    series: &str,
    limits: &Limits,
) -> Result<DicomSeries, ServeError> {
    let files: Vec<(PathBuf, Vec<u8>)> = match upload {
        DicomUpload::Zip(bytes) => {
            if !bytes.starts_with(b"PK\x03\x04") {
                return Err(ServeError::invalid(
                    "DICOM upload: the DICOM_ZIP upload is not a zip archive (no PK signature)",
                ));
            }
            vec![(PathBuf::from("upload.zip"), bytes)]
        }
        DicomUpload::Files(files) => files
            .into_iter()
            .enumerate()
            .map(|(i, b)| (PathBuf::from(format!("file {}", i + 1)), b))
            .collect(),
    };
    let series = (!series.is_empty()).then_some(series);
    dicom::read_series_memory(files, series, &options(limits)).map_err(upload_error)
}

/// A DICOM series segmented: the result on the series grid and the source identifiers a SEG references.
pub struct SeriesSegmentation {
    /// The pipeline's result.
    pub seg: Segmentation,
    /// The decoded series; its volume keeps only the grid (zero channels): the voxels went to the pipeline.
    pub source: DicomSeries,
    /// Seconds spent in the pipeline.
    pub seconds: f64,
}

/// Decode an uploaded series and segment it: the one path from a DICOM series to a mask, shared by the gRPC
/// Segmentation service and the DICOM node (which then encode it with [`seg_bytes`]).
pub fn segment_series(
    model: &Model,
    upload: DicomUpload,
    series: &str,
    limits: &Limits,
    opts: &SegmentOptions,
    metrics: Option<&Metrics>,
    cancel: Option<&Cancel>,
) -> Result<SeriesSegmentation, ServeError> {
    let mut source = decode(upload, series, limits)?;
    let volume = take_voxels(&mut source);
    let start = std::time::Instant::now();
    // The server's voxel limit bounds the preprocessed grid and the logits too, unless the caller set its own.
    let opts = SegmentOptions {
        max_values: opts.max_values.or(Some(limits.max_voxels)),
        ..opts.clone()
    };
    let seg = segment_volume(model, volume, &opts, metrics, cancel)?;
    Ok(SeriesSegmentation {
        seg,
        source,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Move the voxels out of a decoded series for the pipeline, which consumes them; the SEG needs only the grid
/// (shape and affine), so the series keeps a zero-channel volume instead of a copy.
pub fn take_voxels(source: &mut DicomSeries) -> Volume {
    let [x, y, z] = source.volume.spatial_shape();
    let grid = Volume::new(ndarray::Array4::zeros((0, x, y, z)), source.volume.affine);
    std::mem::replace(&mut source.volume, grid)
}

/// The SEG segments for a model's mask: one per foreground class of a softmax model (label values 1..K-1 of a
/// label map), one per channel of a sigmoid model (segment `i + 1` = channel `i`); names from the model's labels.
pub fn segments(
    labels: &[String],
    classes: usize,
    activation: OutputActivation,
) -> (Vec<Segment>, MaskLayout) {
    let name = |i: usize| {
        labels
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("label_{i}"))
    };
    let capped = classes.min(usize::from(u16::MAX));
    match activation {
        OutputActivation::Softmax => (
            (1..capped)
                .map(|i| Segment::generic(i as u16, &name(i)))
                .collect(),
            MaskLayout::LabelMap,
        ),
        OutputActivation::Sigmoid => (
            (0..capped)
                .map(|i| Segment::generic(i as u16 + 1, &name(i)))
                .collect(),
            MaskLayout::Channels,
        ),
    }
}

/// Encode `mask` (the pipeline's result on the source grid) as DICOM SEG bytes.
pub fn seg_bytes(
    model: &Model,
    mask: &Volume,
    source: &DicomSeries,
    anonymize: bool,
) -> Result<Vec<u8>, ServeError> {
    let info = &model.info;
    let activation = info.inference().map(|i| i.activation).unwrap_or_default();
    let (segs, layout) = segments(info.labels(), info.out_channels, activation);
    if segs.is_empty() {
        return Err(ServeError::invalid(format!(
            "model {:?} has no foreground class to write as a DICOM SEG segment; ask for NIfTI output",
            info.name
        )));
    }
    let opts = SegOptions {
        anonymize,
        series_description: format!("medmae {} segmentation", info.name),
        algorithm: format!("medmae {} v{}", info.name, info.version),
        ..SegOptions::default()
    };
    dicom::encode_seg(mask, layout, source, &segs, &opts)
        .map_err(|e| ServeError::Internal(format!("encoding the DICOM SEG: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_follow_the_activation() {
        let labels: Vec<String> = ["background", "liver", "tumour"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (s, layout) = segments(&labels, 3, OutputActivation::Softmax);
        assert_eq!(layout, MaskLayout::LabelMap);
        assert_eq!(
            s.iter()
                .map(|g| (g.label, g.name.as_str()))
                .collect::<Vec<_>>(),
            vec![(1, "liver"), (2, "tumour")]
        );
        let (s, layout) = segments(&labels[..2], 3, OutputActivation::Sigmoid);
        assert_eq!(layout, MaskLayout::Channels);
        assert_eq!(
            s.iter()
                .map(|g| (g.label, g.name.as_str()))
                .collect::<Vec<_>>(),
            vec![(1, "background"), (2, "liver"), (3, "label_2")]
        );
        assert!(segments(&labels, 1, OutputActivation::Softmax).0.is_empty());
    }

    #[test]
    fn uploads_are_checked_and_errors_name_no_files() {
        let limits = Limits {
            max_message_bytes: 1 << 20,
            max_voxels: 1 << 20,
            max_upload_bytes: 1 << 20,
            max_upload_memory_bytes: 1 << 20,
            max_dicom_files: 2,
            request_timeout: std::time::Duration::from_secs(1),
            max_concurrent: 1,
            max_queue: 1,
        };
        let e = decode(DicomUpload::Zip(b"not a zip".to_vec()), "", &limits).unwrap_err();
        assert!(matches!(e, ServeError::InvalidArgument(_)), "{e}");
        let e = decode(DicomUpload::Files(vec![vec![0; 10]; 3]), "", &limits).unwrap_err();
        assert!(matches!(e, ServeError::TooLarge(_)), "{e}");
        assert!(e.to_string().contains("3 files, more than 2"), "{e}");
        let e = decode(
            DicomUpload::Files(vec![b"hello".to_vec(), vec![1; 200]]),
            "",
            &limits,
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, ServeError::InvalidArgument(_)), "{msg}");
        assert!(
            msg.contains("file 1") && msg.contains("not a DICOM Part 10 file"),
            "{msg}"
        );
    }
}
