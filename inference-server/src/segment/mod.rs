//! `medmae.v1.Segmentation`: receive an image file in chunks or a DICOM series (zip, or one message per file),
//! segment it with [`crate::pipeline`], stream back a summary, the label map (NIfTI, or DICOM SEG for DICOM input) and
//! optional probabilities. Uploads are kept in memory (never written to disk) and decoded there;
//! nothing from the request (file names, headers, patient attributes) reaches logs or error messages.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

mod upload;

use imaging::io::{self, NiftiDtype};
use imaging::Volume;
use spec::OutputActivation;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::config::Limits;
use crate::dicom;
use crate::error::ServeError;
use crate::model::{Model, ModelInfo};
use crate::ops::accounting;
use crate::pipeline::{segment_volume, SegmentOptions, Segmentation};
use crate::proto::medmae_v1::{
    self as pb, segment_request::Payload, segmentation_server::Segmentation as SegmentationRpc,
    OutputFormat, VolumeFormat,
};
use crate::state::Shared;
pub use upload::raw_volume;
use upload::{load_upload, raw_shape, receive, Upload};

pub use protocol::{CHUNK_BYTES, CHUNK_FRAMING};
/// Metrics label of this service.
pub(crate) const SERVICE: &str = "segmentation";

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

/// Encode a volume as .nii.gz bytes, in memory.
fn nifti_bytes(v: &Volume, dtype: NiftiDtype) -> Result<Vec<u8>, ServeError> {
    io::encode_nifti(v, "result", dtype, true)
        .map_err(|e| ServeError::Internal(format!("encoding the result: {e}")))
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

/// The outputs a volume of `voxels` (spatial) would get, against `max_voxels`, before the model runs: the label map
/// (one channel, or one per class for sigmoid models) and, if asked for, the per-class probabilities — both on the
/// input's grid.
pub fn check_outputs(
    info: &ModelInfo,
    voxels: u64,
    opts: &SegmentOptions,
    limits: &Limits,
) -> Result<(), ServeError> {
    let k = info.out_channels as u64;
    let sigmoid = info
        .inference()
        .is_some_and(|i| i.activation == OutputActivation::Sigmoid);
    let mut outputs = vec![("label map", if sigmoid { k } else { 1 })];
    if opts.probabilities {
        outputs.push(("probabilities", k));
    }
    for (what, channels) in outputs {
        let values = channels.saturating_mul(voxels);
        if values > limits.max_voxels {
            return Err(ServeError::TooLarge(format!(
                "the {what} ({channels} channel(s) x {voxels} voxels = {values} values) would exceed the server limit max_voxels = {}",
                limits.max_voxels
            )));
        }
    }
    Ok(())
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
    // 0 = the model's overlap; anything else must be a usable overlap, refused before the upload is read.
    if !(0.0..1.0).contains(&header.overlap) {
        return Err(ServeError::invalid(format!(
            "header.overlap must be in [0, 1) (0 = the model's own), got {}",
            header.overlap
        )));
    }
    let opts = SegmentOptions {
        overlap: (header.overlap > 0.0).then_some(f64::from(header.overlap)),
        probabilities: header.return_probabilities,
        max_values: Some(limits.max_voxels),
    };
    // A raw volume declares its shape in the header: its outputs are checked before the upload is even read.
    if let Some(g) = header
        .raw_geometry
        .as_ref()
        .filter(|_| header.format == VolumeFormat::RawF32 as i32)
    {
        let (_, shape) = raw_shape(g, limits.max_voxels)?;
        check_outputs(&model.info, shape.iter().product(), &opts, &limits)?;
    }
    // Held until the upload is decoded (or the request ends): the server-wide bound on upload bytes in memory.
    let mut held = shared.uploads.reservation();
    let upload = receive(stream, &header, &limits, &mut held).await?;
    let is_file = matches!(upload, Upload::File { .. });
    let metrics = shared.metrics.clone();
    let m = model.clone();
    let (series, anonymize) = (header.series.clone(), header.anonymize);
    let (seg, mask, probs, facts) =
        shared
            .compute(move |cancel| {
                let (volume, source) = match upload {
                    Upload::Dicom(d) => {
                        let mut s = dicom::decode(d, &series, &limits)?;
                        (dicom::take_voxels(&mut s), Some(s))
                    }
                    other => (load_upload(&other, limits.max_voxels)?, None),
                };
                drop(held);
                let from_file = is_file;
                let voxels = volume.spatial_shape().iter().map(|&d| d as u64).product();
                check_outputs(&m.info, voxels, &opts, &limits)?;
                let start = Instant::now();
                let seg = segment_volume(&m, volume, &opts, Some(&metrics), Some(&cancel))
                    .map_err(|e| match e {
                        // An input the model cannot take: name the upload, as the loader's errors do.
                        ServeError::InvalidArgument(msg) if from_file => {
                            ServeError::invalid(format!("{}: {msg}", upload::UPLOAD_NAME))
                        }
                        other => other,
                    })?;
                let seconds = start.elapsed().as_secs_f64();
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
    // A chunk message must fit the message limit (at least 1 MiB = protocol::CHUNK_MESSAGE_BYTES, so CHUNK_BYTES does).
    let chunk = CHUNK_BYTES.min(
        shared
            .limits
            .max_message_bytes
            .saturating_sub(CHUNK_FRAMING),
    );
    out.extend(mask.chunks(chunk).map(|c| pb::SegmentResponse {
        payload: Some(pb::segment_response::Payload::MaskChunk(c.to_vec())),
    }));
    if let Some(p) = probs {
        out.extend(p.chunks(chunk).map(|c| pb::SegmentResponse {
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
            Some(Err(e)) => {
                let e = accounting::stream_error(e, s.limits.max_message_bytes);
                return s
                    .instrument(SERVICE, "Segment", "", async {
                        Err::<Response<SegmentStream>, _>(e)
                    })
                    .await;
            }
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
        // Logs and metrics carry the model that serves the request, also when the client left the choice to the server.
        let model = s
            .repo
            .segmentation_model(&header.model_name)
            .map_or_else(|_| header.model_name.clone(), |m| m.info.name.clone());
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
                    kind: i.kind().to_string(),
                    spatial_dims: i.spatial_dims as u32,
                    roi_size: i.roi_size.iter().map(|&r| r as u64).collect(),
                    in_channels: i.in_channels as u32,
                    out_channels: i.out_channels as u32,
                    labels: i.labels().to_vec(),
                    preprocessing_json: serde_json::to_string(i.preprocessing())
                        .unwrap_or_default(),
                    inference_json: i
                        .inference()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_dtype_holds_every_class() {
        assert_eq!(mask_dtype(14), NiftiDtype::U8);
        assert_eq!(mask_dtype(256), NiftiDtype::U8);
        assert_eq!(mask_dtype(257), NiftiDtype::I16);
    }
}
