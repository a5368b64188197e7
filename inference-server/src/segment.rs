//! `medmae.v1.Segmentation`: receive an image file in chunks or a DICOM series (zip, or one message per file),
//! segment it with [`crate::pipeline`], stream back a summary, the label map (NIfTI, or DICOM SEG for DICOM input) and
//! optional probabilities. Uploads are written under neutral names in a private temp directory or kept in memory;
//! nothing from the request (file names, headers, patient attributes) reaches logs or error messages.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use imaging::io::{self, LoadOptions, NiftiDtype};
use imaging::Volume;
use ndarray::Array4;
use tokio::io::AsyncWriteExt;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::dicom::{self, DicomUpload};
use crate::error::ServeError;
use crate::model::Model;
use crate::pipeline::{segment_volume, SegmentOptions, Segmentation};
use crate::proto::medmae_v1::{
    self as pb, segment_request::Payload, segmentation_server::Segmentation as SegmentationRpc,
    OutputFormat, VolumeFormat,
};
use crate::state::Shared;

/// Bytes per response chunk.
pub const CHUNK_BYTES: usize = 1 << 20;
const SERVICE: &str = "segmentation";

/// The segmentation service over the shared state.
pub struct SegmentService {
    shared: Arc<Shared>,
}

impl SegmentService {
    /// Wrap the shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

/// An upload on disk (or in memory for raw volumes).
enum Upload {
    File {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
    },
    Raw {
        geometry: pb::RawGeometry,
        bytes: Vec<u8>,
    },
    Dicom(DicomUpload),
}

fn upload_name(format: VolumeFormat) -> Result<&'static str, ServeError> {
    match format {
        VolumeFormat::Nifti => Ok("upload.nii"),
        VolumeFormat::NiftiGz => Ok("upload.nii.gz"),
        VolumeFormat::Metaimage => Ok("upload.mha"),
        VolumeFormat::RawF32 | VolumeFormat::DicomZip | VolumeFormat::DicomFiles => Ok(""),
        VolumeFormat::Unspecified => Err(ServeError::invalid(
            "header.format is unspecified; set NIFTI, NIFTI_GZ, METAIMAGE, RAW_F32, DICOM_ZIP or DICOM_FILES",
        )),
    }
}

/// Receive the chunks that follow the header, enforcing the upload limit.
async fn receive(
    stream: &mut Streaming<pb::SegmentRequest>,
    header: &pb::SegmentHeader,
    max_bytes: u64,
    max_files: usize,
) -> Result<Upload, ServeError> {
    let format = VolumeFormat::try_from(header.format).map_err(|_| {
        ServeError::invalid(format!(
            "header.format {} is not a known VolumeFormat",
            header.format
        ))
    })?;
    let name = upload_name(format)?;
    if header.total_bytes > max_bytes {
        return Err(ServeError::TooLarge(format!(
            "upload of {} bytes exceeds the server limit of {max_bytes} bytes",
            header.total_bytes
        )));
    }
    if format == VolumeFormat::DicomFiles {
        return receive_files(stream, header, max_bytes, max_files).await;
    }
    let mut total: u64 = 0;
    let next = async |stream: &mut Streaming<pb::SegmentRequest>,
                      total: &mut u64|
           -> Result<Option<Vec<u8>>, ServeError> {
        match stream.next().await {
            None => Ok(None),
            Some(Err(s)) => Err(ServeError::invalid(format!(
                "upload interrupted: {}",
                s.message()
            ))),
            Some(Ok(pb::SegmentRequest {
                payload: Some(Payload::Chunk(c)),
            })) => {
                *total += c.len() as u64;
                if *total > max_bytes {
                    return Err(ServeError::TooLarge(format!(
                        "upload exceeds the server limit of {max_bytes} bytes"
                    )));
                }
                Ok(Some(c))
            }
            Some(Ok(pb::SegmentRequest {
                payload: Some(Payload::File(_)),
            })) => Err(ServeError::invalid(
                "`file` messages belong to DICOM_FILES uploads; this format is sent in `chunk` messages",
            )),
            Some(Ok(_)) => Err(ServeError::invalid(
                "only the first message may carry a header; later messages must be chunks",
            )),
        }
    };
    if format == VolumeFormat::RawF32 {
        let geometry = header
            .raw_geometry
            .clone()
            .ok_or_else(|| ServeError::invalid("RAW_F32 uploads need header.raw_geometry"))?;
        let mut bytes = Vec::new();
        while let Some(c) = next(stream, &mut total).await? {
            bytes.extend_from_slice(&c);
        }
        return Ok(Upload::Raw { geometry, bytes });
    }
    if format == VolumeFormat::DicomZip {
        let mut bytes = Vec::new();
        while let Some(c) = next(stream, &mut total).await? {
            bytes.extend_from_slice(&c);
        }
        if bytes.is_empty() {
            return Err(ServeError::invalid("the upload is empty"));
        }
        return Ok(Upload::Dicom(DicomUpload::Zip(bytes)));
    }
    let dir = tempfile::Builder::new()
        .prefix("medmae-upload-")
        .tempdir()
        .map_err(|e| ServeError::Internal(format!("temp dir: {e}")))?;
    let path = dir.path().join(name);
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(|e| ServeError::Internal(format!("temp file: {e}")))?;
    while let Some(c) = next(stream, &mut total).await? {
        file.write_all(&c)
            .await
            .map_err(|e| ServeError::Internal(format!("temp file: {e}")))?;
    }
    file.flush()
        .await
        .map_err(|e| ServeError::Internal(format!("temp file: {e}")))?;
    if total == 0 {
        return Err(ServeError::invalid("the upload is empty"));
    }
    Ok(Upload::File { _dir: dir, path })
}

/// Receive a DICOM series sent as one `file` message per file, enforcing the file-count and byte limits.
async fn receive_files(
    stream: &mut Streaming<pb::SegmentRequest>,
    header: &pb::SegmentHeader,
    max_bytes: u64,
    max_files: usize,
) -> Result<Upload, ServeError> {
    let too_many = |n: usize| {
        ServeError::TooLarge(format!(
            "DICOM upload of {n} files exceeds the server limit of {max_files} files"
        ))
    };
    if header.file_count as usize > max_files {
        return Err(too_many(header.file_count as usize));
    }
    let (mut files, mut total) = (Vec::new(), 0u64);
    while let Some(msg) = stream.next().await {
        let msg =
            msg.map_err(|s| ServeError::invalid(format!("upload interrupted: {}", s.message())))?;
        match msg.payload {
            Some(Payload::File(f)) => {
                total += f.len() as u64;
                if total > max_bytes {
                    return Err(ServeError::TooLarge(format!(
                        "DICOM upload exceeds the server limit of {max_bytes} bytes"
                    )));
                }
                if files.len() == max_files {
                    return Err(too_many(max_files + 1));
                }
                files.push(f);
            }
            Some(Payload::Chunk(_)) => return Err(ServeError::invalid(
                "DICOM_FILES uploads send one whole file per `file` message, not `chunk` messages",
            )),
            _ => {
                return Err(ServeError::invalid(
                    "only the first message may carry a header; later messages must be files",
                ))
            }
        }
    }
    if files.is_empty() {
        return Err(ServeError::invalid("the DICOM upload holds no files"));
    }
    Ok(Upload::Dicom(DicomUpload::Files(files)))
}

/// Build a volume from a `RAW_F32` upload: geometry, voxel limit and byte count are validated first (public so the
/// fuzzer in `fuzz/` can drive it).
pub fn raw_volume(
    g: &pb::RawGeometry,
    bytes: &[u8],
    max_voxels: u64,
) -> Result<Volume, ServeError> {
    let [x, y, z] = <[u64; 3]>::try_from(g.shape.as_slice()).map_err(|_| {
        ServeError::invalid(format!(
            "raw_geometry.shape needs 3 values (X, Y, Z), got {}",
            g.shape.len()
        ))
    })?;
    let c = u64::from(g.channels);
    let n = [c, x, y, z]
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .filter(|&n| n > 0)
        .ok_or_else(|| ServeError::invalid("raw_geometry has a zero or overflowing dimension"))?;
    if n > max_voxels {
        return Err(ServeError::TooLarge(format!(
            "volume of {n} voxels exceeds the server limit of {max_voxels}"
        )));
    }
    if bytes.len() as u64 != n * 4 {
        return Err(ServeError::invalid(format!(
            "raw upload is {} bytes; shape {c}x{x}x{y}x{z} float32 needs {}",
            bytes.len(),
            n * 4
        )));
    }
    let three = |v: &[f64], default: f64, field: &str| -> Result<[f64; 3], ServeError> {
        match v.len() {
            0 => Ok([default; 3]),
            3 => Ok([v[0], v[1], v[2]]),
            k => Err(ServeError::invalid(format!(
                "raw_geometry.{field} needs 3 values, got {k}"
            ))),
        }
    };
    let spacing = three(&g.spacing, 1.0, "spacing")?;
    if spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(ServeError::invalid(format!(
            "raw_geometry.spacing must be positive, got {spacing:?}"
        )));
    }
    let origin = three(&g.origin, 0.0, "origin")?;
    let direction = match g.direction.len() {
        0 => [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        9 => [
            [g.direction[0], g.direction[1], g.direction[2]],
            [g.direction[3], g.direction[4], g.direction[5]],
            [g.direction[6], g.direction[7], g.direction[8]],
        ],
        k => {
            return Err(ServeError::invalid(format!(
                "raw_geometry.direction needs 9 values (row-major 3x3), got {k}"
            )))
        }
    };
    let data: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let shape = (c as usize, x as usize, y as usize, z as usize);
    let data =
        Array4::from_shape_vec(shape, data).map_err(|e| ServeError::Internal(e.to_string()))?;
    Ok(Volume::new(
        data,
        Volume::affine_from(spacing, origin, direction),
    ))
}

/// Load the uploaded file; errors name "the uploaded volume", never the temp path.
fn load_upload(upload: &Upload, max_voxels: u64) -> Result<Volume, ServeError> {
    match upload {
        Upload::Raw { geometry, bytes } => raw_volume(geometry, bytes, max_voxels),
        Upload::Dicom(_) => Err(ServeError::Internal(
            "a DICOM upload reached the volume loader".into(),
        )),
        Upload::File { path, .. } => {
            let opts = LoadOptions {
                max_voxels,
                confine_data_files: true,
                ..LoadOptions::default()
            };
            io::load_with(path, &opts).map_err(|e| {
                let msg = e
                    .to_string()
                    .replace(&path.display().to_string(), "uploaded volume");
                if msg.contains("exceeds") || msg.contains("max_voxels") || msg.contains("limit") {
                    ServeError::TooLarge(msg)
                } else {
                    ServeError::invalid(msg)
                }
            })
        }
    }
}

/// Encode a volume as .nii.gz bytes (through a temp file, since the writer is path-based).
fn nifti_bytes(v: &Volume, dtype: NiftiDtype) -> Result<Vec<u8>, ServeError> {
    let dir = tempfile::Builder::new()
        .prefix("medmae-result-")
        .tempdir()
        .map_err(|e| ServeError::Internal(format!("temp dir: {e}")))?;
    let path = dir.path().join("result.nii.gz");
    io::save_nifti(v, &path, dtype)
        .map_err(|e| ServeError::Internal(format!("writing the result: {e}")))?;
    std::fs::read(&path).map_err(|e| ServeError::Internal(format!("reading the result: {e}")))
}

/// Label dtype that holds every class value.
pub fn mask_dtype(classes: usize) -> NiftiDtype {
    if classes <= 256 {
        NiftiDtype::U8
    } else {
        NiftiDtype::I16
    }
}

/// What the summary reports beyond the segmentation itself.
struct Facts {
    mask_len: usize,
    prob_len: usize,
    seconds: f64,
    mask_format: OutputFormat,
    /// DICOM input: SeriesInstanceUID and slice count.
    series: Option<(String, u32)>,
}

fn summary(model: &Model, seg: &Segmentation, f: &Facts) -> pb::SegmentSummary {
    let (series_uid, slices) = f.series.clone().unwrap_or_default();
    pb::SegmentSummary {
        model_name: model.info.name.clone(),
        model_version: model.info.version.clone(),
        shape: seg.mask.spatial_shape().iter().map(|&d| d as u64).collect(),
        spacing: seg.mask.spacing().to_vec(),
        labels: seg
            .labels
            .iter()
            .map(|l| pb::LabelStatistics {
                value: l.value,
                name: l.name.clone(),
                voxels: l.voxels,
                volume_ml: l.volume_ml,
            })
            .collect(),
        mask_bytes: f.mask_len as u64,
        probabilities_bytes: f.prob_len as u64,
        inference_seconds: f.seconds,
        windows: seg.windows as u64,
        mask_format: f.mask_format as i32,
        series_uid,
        slices,
    }
}

/// The output format a request gets: its choice, or the default for its input (DICOM SEG for DICOM input).
fn output_format(header: &pb::SegmentHeader) -> Result<OutputFormat, ServeError> {
    let dicom_input = matches!(
        VolumeFormat::try_from(header.format),
        Ok(VolumeFormat::DicomZip | VolumeFormat::DicomFiles)
    );
    let requested = OutputFormat::try_from(header.output).map_err(|_| {
        ServeError::invalid(format!(
            "header.output {} is not a known OutputFormat",
            header.output
        ))
    })?;
    if !dicom_input && !header.series.is_empty() {
        return Err(ServeError::invalid(
            "header.series picks a series of a DICOM upload; this upload is not DICOM",
        ));
    }
    match (requested, dicom_input) {
        (OutputFormat::Unspecified, true) => Ok(OutputFormat::DicomSeg),
        (OutputFormat::Unspecified, false) => Ok(OutputFormat::NiftiGz),
        (OutputFormat::DicomSeg, false) => Err(ServeError::invalid(
            "DICOM SEG output needs a DICOM upload (DICOM_ZIP or DICOM_FILES): the SEG references the source series",
        )),
        (f, _) => Ok(f),
    }
}

/// The whole request after the header: upload, compute, encode. Returns the response messages in order.
async fn handle(
    shared: &Shared,
    stream: &mut Streaming<pb::SegmentRequest>,
    header: pb::SegmentHeader,
) -> Result<Vec<pb::SegmentResponse>, ServeError> {
    let model = shared.repo.segmentation_model(&header.model_name)?;
    let output = output_format(&header)?;
    let limits = shared.limits.clone();
    let upload = receive(
        stream,
        &header,
        limits.max_upload_bytes,
        limits.max_dicom_files,
    )
    .await?;
    let opts = SegmentOptions {
        overlap: (header.overlap > 0.0).then_some(f64::from(header.overlap)),
        probabilities: header.return_probabilities,
    };
    let metrics = shared.metrics.clone();
    let m = model.clone();
    let (series, anonymize) = (header.series.clone(), header.anonymize);
    let (seg, mask, probs, facts) = shared
        .compute(move || {
            let (seg, source, seconds) = match upload {
                Upload::Dicom(d) => {
                    let r = dicom::segment_series(&m, d, &series, &limits, &opts, Some(&metrics))?;
                    (r.seg, Some(r.source), r.seconds)
                }
                other => {
                    let volume = load_upload(&other, limits.max_voxels)?;
                    let start = Instant::now();
                    let seg = segment_volume(&m, volume, &opts, Some(&metrics))?;
                    (seg, None, start.elapsed().as_secs_f64())
                }
            };
            let mask = match (&source, output) {
                (Some(src), OutputFormat::DicomSeg) => {
                    dicom::seg_bytes(&m, &seg.mask, src, anonymize)?
                }
                _ => nifti_bytes(&seg.mask, mask_dtype(m.info.out_channels))?,
            };
            let probs = seg
                .probabilities
                .as_ref()
                .map(|p| nifti_bytes(p, NiftiDtype::F32))
                .transpose()?;
            let facts = Facts {
                mask_len: mask.len(),
                prob_len: probs.as_ref().map_or(0, Vec::len),
                seconds,
                mask_format: output,
                series: source.map(|s| (s.info.series_uid, s.instances.len() as u32)),
            };
            Ok((seg, mask, probs, facts))
        })
        .await?;
    let mut out = vec![pb::SegmentResponse {
        payload: Some(pb::segment_response::Payload::Summary(summary(
            &model, &seg, &facts,
        ))),
    }];
    out.extend(mask.chunks(CHUNK_BYTES).map(|c| pb::SegmentResponse {
        payload: Some(pb::segment_response::Payload::MaskChunk(c.to_vec())),
    }));
    if let Some(p) = probs {
        out.extend(p.chunks(CHUNK_BYTES).map(|c| pb::SegmentResponse {
            payload: Some(pb::segment_response::Payload::ProbabilitiesChunk(
                c.to_vec(),
            )),
        }));
    }
    Ok(out)
}

type SegmentStream =
    Pin<Box<dyn Stream<Item = Result<pb::SegmentResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl SegmentationRpc for SegmentService {
    type SegmentStream = SegmentStream;

    async fn segment(
        &self,
        request: Request<Streaming<pb::SegmentRequest>>,
    ) -> Result<Response<SegmentStream>, Status> {
        let mut stream = request.into_inner();
        let s = &self.shared;
        let header = match stream.next().await {
            Some(Ok(pb::SegmentRequest {
                payload: Some(Payload::Header(h)),
            })) => h,
            Some(Err(e)) => return Err(e),
            _ => {
                return s
                    .instrument(SERVICE, "Segment", "", async {
                        Err::<Response<SegmentStream>, _>(ServeError::invalid(
                            "the first message must carry the header (model name, format)",
                        ))
                    })
                    .await
            }
        };
        let model = header.model_name.clone();
        let messages = s
            .instrument(SERVICE, "Segment", &model, handle(s, &mut stream, header))
            .await?;
        Ok(Response::new(Box::pin(tokio_stream::iter(
            messages.into_iter().map(Ok),
        ))))
    }

    async fn list_models(
        &self,
        _r: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let s = &self.shared;
        let models = s
            .repo
            .models()
            .map(|m| {
                let i = &m.info;
                pb::ModelDescription {
                    name: i.name.clone(),
                    version: i.version.clone(),
                    kind: i.kind.clone(),
                    spatial_dims: i.spatial_dims as u32,
                    roi_size: i.roi_size.iter().map(|&r| r as u64).collect(),
                    in_channels: i.in_channels as u32,
                    out_channels: i.out_channels as u32,
                    labels: i.labels.clone(),
                    preprocessing_json: serde_json::to_string(&i.preprocessing).unwrap_or_default(),
                    inference_json: i
                        .inference
                        .as_ref()
                        .and_then(|x| serde_json::to_string(x).ok())
                        .unwrap_or_default(),
                    ready: s.ready(),
                }
            })
            .collect();
        s.instrument(SERVICE, "ListModels", "", async {
            Ok(pb::ListModelsResponse { models })
        })
        .await
        .map(Response::new)
    }
}

/// True if `path` names a NIfTI file by extension (helper for clients choosing a format).
pub fn format_for_path(path: &Path) -> Option<VolumeFormat> {
    let n = path.file_name()?.to_str()?.to_ascii_lowercase();
    if n.ends_with(".nii.gz") {
        Some(VolumeFormat::NiftiGz)
    } else if n.ends_with(".nii") {
        Some(VolumeFormat::Nifti)
    } else if n.ends_with(".mha") {
        Some(VolumeFormat::Metaimage)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_volume_checks_geometry_and_size() {
        let g = pb::RawGeometry {
            channels: 1,
            shape: vec![2, 3, 4],
            spacing: vec![1.0, 2.0, 3.0],
            origin: vec![],
            direction: vec![],
        };
        let bytes: Vec<u8> = (0..24).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let v = raw_volume(&g, &bytes, 100).unwrap();
        assert_eq!(v.spatial_shape(), [2, 3, 4]);
        assert_eq!(v.spacing(), [1.0, 2.0, 3.0]);
        assert_eq!(v.data[[0, 1, 2, 3]], 23.0);
        assert!(raw_volume(&g, &bytes[..90], 100)
            .unwrap_err()
            .to_string()
            .contains("90 bytes"));
        assert!(matches!(
            raw_volume(&g, &bytes, 10).unwrap_err(),
            ServeError::TooLarge(_)
        ));
        let bad = pb::RawGeometry {
            shape: vec![2, 3],
            ..g.clone()
        };
        assert!(raw_volume(&bad, &bytes, 100)
            .unwrap_err()
            .to_string()
            .contains("3 values"));
        let bad = pb::RawGeometry {
            spacing: vec![1.0, 0.0, 1.0],
            ..g
        };
        assert!(raw_volume(&bad, &bytes, 100)
            .unwrap_err()
            .to_string()
            .contains("spacing"));
    }

    #[test]
    fn formats_from_names() {
        assert_eq!(
            format_for_path(Path::new("/a/b.NII.GZ")),
            Some(VolumeFormat::NiftiGz)
        );
        assert_eq!(
            format_for_path(Path::new("b.nii")),
            Some(VolumeFormat::Nifti)
        );
        assert_eq!(
            format_for_path(Path::new("b.mha")),
            Some(VolumeFormat::Metaimage)
        );
        assert_eq!(format_for_path(Path::new("b.mhd")), None);
        assert_eq!(mask_dtype(14), NiftiDtype::U8);
    }
}
