//! The KServe v2 / Triton `inference.GRPCInferenceService`: liveness, readiness, metadata, model configuration and
//! tensor inference (raw or typed contents in, raw contents out), unary and streaming.

pub mod tensor;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::config::Limits;
use crate::error::ServeError;
use crate::model::{Model, ModelInfo};
use crate::ops::accounting;
use crate::proto::inference as pb;
use crate::proto::inference::grpc_inference_service_server::GrpcInferenceService;
use crate::state::Shared;

/// The v2 service over the shared state.
pub struct KServe {
    shared: Arc<Shared>,
}

impl KServe {
    /// Wrap the shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

/// Metrics label of this service.
pub(crate) const SERVICE: &str = "kserve";

/// Dims with the batch axis shown as -1 (any).
fn any_batch(dims: &[usize]) -> Vec<i64> {
    std::iter::once(-1)
        .chain(dims.iter().skip(1).map(|&d| d as i64))
        .collect()
}

fn tensor_meta(name: &str, shape: Vec<i64>) -> pb::model_metadata_response::TensorMetadata {
    pb::model_metadata_response::TensorMetadata {
        name: name.into(),
        datatype: "FP32".into(),
        shape,
    }
}

/// Bytes a response message may carry besides the output tensor's raw contents (names, shape, ids, framing): the
/// check after compute leaves this much room so the streaming wrapper also fits.
const RESPONSE_FRAMING: usize = 64;

/// The output for a batch of `n` against the limits, from the model's output dims alone (before any compute): its
/// values against `max_voxels`, its bytes against `max_message_bytes`. Outputs with symbolic dims other than the
/// batch are checked after compute ([`check_response`]).
pub fn check_output_size(info: &ModelInfo, n: usize, limits: &Limits) -> Result<(), ServeError> {
    let dims = info.output_dims(n as i64);
    let Some(values) = dims.iter().try_fold(1u64, |acc, &d| {
        u64::try_from(d).ok().and_then(|d| acc.checked_mul(d))
    }) else {
        return Ok(());
    };
    let name = &info.output.name;
    if values > limits.max_voxels {
        return Err(ServeError::TooLarge(format!(
            "output {name:?} of shape {dims:?} would hold {values} values, over the server limit max_voxels = {}; send fewer windows per request",
            limits.max_voxels
        )));
    }
    let bytes = values.saturating_mul(4);
    if bytes > limits.max_message_bytes as u64 {
        return Err(ServeError::TooLarge(format!(
            "output {name:?} of shape {dims:?} would be {bytes} bytes, over the server limit max_message_bytes = {} bytes for the response; send fewer windows per request",
            limits.max_message_bytes
        )));
    }
    Ok(())
}

/// The encoded response against `max_message_bytes` (for outputs whose size was not known before compute).
fn check_response(resp: &pb::ModelInferResponse, limits: &Limits) -> Result<(), ServeError> {
    let len = prost::Message::encoded_len(resp) + RESPONSE_FRAMING;
    if len > limits.max_message_bytes {
        return Err(ServeError::TooLarge(format!(
            "the response of {len} bytes is over the server limit max_message_bytes = {} bytes; send fewer windows per request",
            limits.max_message_bytes
        )));
    }
    Ok(())
}

/// Run one inference request end to end (used by the unary and the streaming RPC).
async fn infer(
    shared: &Shared,
    mut req: pb::ModelInferRequest,
) -> Result<pb::ModelInferResponse, ServeError> {
    // The transport has received the whole message before this runs; it is counted under the server-wide bound on
    // upload bytes in memory (shared with segmentation uploads) until its computation starts, so requests beyond
    // the bound are refused at once and free their bytes instead of waiting in the queue.
    let mut held = shared.uploads.reservation();
    held.grow_to(prost::Message::encoded_len(&req) as u64)?;
    let model = shared.repo.get(&req.model_name, &req.model_version)?;
    tensor::check_requested_outputs(&req, &model.info)?;
    let input = tensor::decode_input(&req, &model.info, shared.limits.max_voxels)?;
    // Only the id is needed from here on: the raw contents go now, not after the computation.
    let id = std::mem::take(&mut req.id);
    drop(req);
    check_output_size(&model.info, input.shape()[0], &shared.limits)?;
    let metrics = shared.metrics.clone();
    let m = model.clone();
    let output = shared
        // One engine call: nothing to stop between, so the cancel token is not consulted.
        .compute(move |_cancel| {
            drop(held);
            let start = Instant::now();
            let out = m.backend.run(input);
            metrics.record_inference(
                &m.info.name,
                m.backend.name(),
                start.elapsed().as_secs_f64(),
            );
            out
        })
        .await?;
    let raw = tensor::to_le_bytes(&output);
    let out_tensor = pb::model_infer_response::InferOutputTensor {
        name: model.info.output.name.clone(),
        datatype: "FP32".into(),
        shape: output.shape().iter().map(|&d| d as i64).collect(),
        parameters: HashMap::new(),
        contents: None,
    };
    let resp = pb::ModelInferResponse {
        model_name: model.info.name.clone(),
        model_version: model.info.version.clone(),
        id,
        parameters: HashMap::new(),
        outputs: vec![out_tensor],
        raw_output_contents: vec![raw],
    };
    check_response(&resp, &shared.limits)?;
    Ok(resp)
}

fn config_of(m: &Model) -> pb::ModelConfig {
    let i = &m.info;
    let mut params: HashMap<String, pb::ModelParameter> = HashMap::new();
    let mut put = |k: &str, v: String| {
        params.insert(k.into(), pb::ModelParameter { string_value: v });
    };
    put("kind", i.kind().to_string());
    put("spatial_dims", i.spatial_dims.to_string());
    put(
        "roi_size",
        serde_json::to_string(&i.roi_size).unwrap_or_default(),
    );
    put("in_channels", i.in_channels.to_string());
    put("out_channels", i.out_channels.to_string());
    put(
        "labels",
        serde_json::to_string(i.labels()).unwrap_or_default(),
    );
    put(
        "preprocessing",
        serde_json::to_string(i.preprocessing()).unwrap_or_default(),
    );
    if let Some(inf) = i.inference() {
        put("inference", serde_json::to_string(inf).unwrap_or_default());
    }
    put("medmae_version", i.medmae_version().to_string());
    pb::ModelConfig {
        name: i.name.clone(),
        platform: m.backend.platform().into(),
        max_batch_size: 0,
        input: vec![pb::ModelInput {
            name: i.input.name.clone(),
            data_type: pb::DataType::TypeFp32 as i32,
            format: pb::model_input::Format::Nchw as i32,
            dims: any_batch(&i.input_shape(1)),
        }],
        output: vec![pb::ModelOutput {
            name: i.output.name.clone(),
            data_type: pb::DataType::TypeFp32 as i32,
            dims: i.output_dims(-1),
        }],
        parameters: params,
        backend: m.backend.name().into(),
        runtime: String::new(),
    }
}

type InferStream =
    Pin<Box<dyn Stream<Item = Result<pb::ModelStreamInferResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl GrpcInferenceService for KServe {
    async fn server_live(
        &self,
        _r: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        self.shared
            .instrument(SERVICE, "ServerLive", "", async {
                Ok(pb::ServerLiveResponse { live: true })
            })
            .await
            .map(Response::new)
    }

    async fn server_ready(
        &self,
        _r: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        let ready = self.shared.ready();
        self.shared
            .instrument(SERVICE, "ServerReady", "", async move {
                Ok(pb::ServerReadyResponse { ready })
            })
            .await
            .map(Response::new)
    }

    async fn model_ready(
        &self,
        r: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let r = r.into_inner();
        let s = &self.shared;
        s.instrument(SERVICE, "ModelReady", &r.name, async {
            s.repo
                .get(&r.name, &r.version)
                .map(|_| pb::ModelReadyResponse { ready: s.ready() })
        })
        .await
        .map(Response::new)
    }

    async fn server_metadata(
        &self,
        _r: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        let resp = pb::ServerMetadataResponse {
            name: "medmae-serve".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec!["model_configuration".into(), "medmae_segmentation".into()],
        };
        self.shared
            .instrument(SERVICE, "ServerMetadata", "", async { Ok(resp) })
            .await
            .map(Response::new)
    }

    async fn model_metadata(
        &self,
        r: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let r = r.into_inner();
        let s = &self.shared;
        s.instrument(SERVICE, "ModelMetadata", &r.name, async {
            let m = s.repo.get(&r.name, &r.version)?;
            Ok(pb::ModelMetadataResponse {
                name: m.info.name.clone(),
                versions: vec![m.info.version.clone()],
                platform: m.backend.platform().into(),
                inputs: vec![tensor_meta(
                    &m.info.input.name,
                    any_batch(&m.info.input_shape(1)),
                )],
                outputs: vec![tensor_meta(&m.info.output.name, m.info.output_dims(-1))],
            })
        })
        .await
        .map(Response::new)
    }

    async fn model_config(
        &self,
        r: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        let r = r.into_inner();
        let s = &self.shared;
        s.instrument(SERVICE, "ModelConfig", &r.name, async {
            s.repo
                .get(&r.name, &r.version)
                .map(|m| pb::ModelConfigResponse {
                    config: Some(config_of(&m)),
                })
        })
        .await
        .map(Response::new)
    }

    async fn model_infer(
        &self,
        r: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let r = r.into_inner();
        let model = r.model_name.clone();
        let s = &self.shared;
        s.instrument(SERVICE, "ModelInfer", &model, infer(s, r))
            .await
            .map(Response::new)
    }

    type ModelStreamInferStream = InferStream;

    async fn model_stream_infer(
        &self,
        r: Request<Streaming<pb::ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let mut incoming = r.into_inner();
        let shared = self.shared.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(accounting::within(async move {
            while let Some(item) = incoming.next().await {
                let reply = match item {
                    Ok(req) => {
                        let model = req.model_name.clone();
                        match shared
                            .instrument(SERVICE, "ModelStreamInfer", &model, infer(&shared, req))
                            .await
                        {
                            Ok(resp) => pb::ModelStreamInferResponse {
                                error_message: String::new(),
                                infer_response: Some(resp),
                            },
                            Err(status) => pb::ModelStreamInferResponse {
                                error_message: status.message().to_string(),
                                infer_response: None,
                            },
                        }
                    }
                    Err(status) => {
                        // A transport failure on the stream (e.g. a message over the size limit) ends it; it is
                        // recorded here like any other outcome.
                        let e = accounting::stream_error(status, shared.limits.max_message_bytes);
                        let e = shared
                            .instrument(SERVICE, "ModelStreamInfer", "", async { Err::<(), _>(e) })
                            .await
                            .err();
                        if let Some(e) = e {
                            let _ = tx.send(Err(e)).await;
                        }
                        break;
                    }
                };
                if tx.send(Ok(reply)).await.is_err() {
                    break;
                }
            }
        }));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
