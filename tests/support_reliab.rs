//! Helpers shared by the reliability tests (`malformed.rs`, `load.rs`): the inference-server fixtures (made once per
//! test binary by `inference-server/tests/support/make_fixtures.py`), a `medmae-serve` process (from
//! `medmae-test-support`: log captured, metrics and memory readable), and gRPC request builders for the fixture's
//! `demo` model.

#![allow(dead_code)]

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use medmae_tests::repo_root;
use server::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use server::proto::inference::model_infer_request::InferInputTensor;
use server::proto::inference::ModelInferRequest;
use server::proto::medmae_v1::segment_request::Payload;
use server::proto::medmae_v1::segmentation_client::SegmentationClient;
use server::proto::medmae_v1::{SegmentHeader, SegmentRequest, SegmentResponse, VolumeFormat};
use tonic::transport::Channel;

pub use medmae_tests::serve;

/// The inference-server fixtures: `repo/demo` (Conv3d 1→3, roi 16³, input `input`, output `logits`), `slow_repo/slow`
/// (~1 s per call), `volume.nii.gz`, `corrupt.nii.gz`, `truncated.nii`.
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        medmae_test_support::run_fixture_script(
            &repo_root().join("inference-server/tests/support/make_fixtures.py"),
        )
    })
    .path()
}

/// A KServe client with 64 MiB message limits.
pub async fn kserve(url: &str) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::connect(url.to_string())
        .await
        .expect("connect KServe client")
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

/// A Segmentation client with 64 MiB message limits.
pub async fn segmentation(url: &str) -> SegmentationClient<Channel> {
    SegmentationClient::connect(url.to_string())
        .await
        .expect("connect Segmentation client")
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

/// The demo model's input shape for a batch of `n`.
pub fn demo_shape(n: i64) -> Vec<i64> {
    vec![n, 1, 16, 16, 16]
}

/// A valid ModelInfer request for `model` (input `[n, 1, 16, 16, 16]` with raw FP32 contents).
pub fn infer_request(model: &str, n: i64) -> ModelInferRequest {
    let count = (n * 16 * 16 * 16) as usize;
    let raw: Vec<u8> = (0..count)
        .flat_map(|i| ((i % 97) as f32).to_le_bytes())
        .collect();
    ModelInferRequest {
        model_name: model.into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: demo_shape(n),
            ..Default::default()
        }],
        raw_input_contents: vec![raw.into()],
        ..Default::default()
    }
}

/// The messages of a Segment upload: a header, then the bytes in 64 KiB chunks.
pub fn upload(model: &str, format: VolumeFormat, bytes: &[u8]) -> Vec<SegmentRequest> {
    let header = SegmentHeader {
        model_name: model.into(),
        format: format as i32,
        total_bytes: bytes.len() as u64,
        ..Default::default()
    };
    std::iter::once(SegmentRequest {
        payload: Some(Payload::Header(header)),
    })
    .chain(bytes.chunks(64 << 10).map(|c| SegmentRequest {
        payload: Some(Payload::Chunk(c.to_vec())),
    }))
    .collect()
}

/// Send a Segment upload and collect the response stream (summary + mask bytes) or the first error.
pub async fn segment(
    client: &mut SegmentationClient<Channel>,
    msgs: Vec<SegmentRequest>,
    timeout: Option<Duration>,
) -> Result<Vec<SegmentResponse>, tonic::Status> {
    let mut req = tonic::Request::new(tokio_stream::iter(msgs));
    if let Some(t) = timeout {
        req.set_timeout(t);
    }
    let mut stream = client.segment(req).await?.into_inner();
    let mut out = Vec::new();
    while let Some(m) = stream.message().await? {
        out.push(m);
    }
    Ok(out)
}

/// Percentile (0..=100) of a sample, nearest-rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
