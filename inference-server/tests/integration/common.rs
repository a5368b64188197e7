//! Shared set-up: fixtures made once per test binary with `$MEDMAE_PYTHON`, the server process (from
//! `medmae-test-support`), clients, certs.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub use medmae_test_support::ServeProcess;
use server::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use tonic::transport::Channel;

/// Fixture directory (models, volumes), generated once per test binary by `tests/support/make_fixtures.py`.
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        medmae_test_support::run_fixture_script(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/make_fixtures.py"),
        )
    })
    .path()
}

/// Path of the demo model file.
pub fn demo_onnx() -> PathBuf {
    fixtures().join("repo/demo/1/model.onnx")
}

/// Start `medmae-serve` on the fixture repository `repo` with one thread and `extra` flags.
pub fn start_server(repo: &str, extra: &[&str]) -> ServeProcess {
    let repo = fixtures().join(repo);
    let mut args = vec![
        "--model-repository",
        repo.to_str().expect("UTF-8 temp path"),
        "--threads",
        "1",
    ];
    args.extend_from_slice(extra);
    ServeProcess::start(
        Path::new(env!("CARGO_BIN_EXE_medmae-serve")),
        &args,
        &[],
        Path::new(env!("CARGO_MANIFEST_DIR")),
    )
}

/// A plaintext KServe client.
pub async fn kserve_client(url: &str) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::connect(url.to_string())
        .await
        .unwrap()
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

/// A KServe request for `model` with raw little-endian contents.
pub fn raw_request(
    model: &str,
    shape: &[i64],
    datatype: &str,
    raw: Vec<u8>,
) -> server::proto::inference::ModelInferRequest {
    use server::proto::inference::{model_infer_request::InferInputTensor, ModelInferRequest};
    ModelInferRequest {
        model_name: model.into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
            parameters: Default::default(),
            contents: None,
        }],
        raw_input_contents: vec![raw.into()],
        ..Default::default()
    }
}

/// Deterministic pseudo-random f32 values.
pub fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) * 100.0 - 10.0
        })
        .collect()
}

/// Little-endian bytes.
pub fn le(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// TLS material: a CA, a server cert for 127.0.0.1/localhost, a client cert from the same CA and one from a rogue CA.
pub struct Pki {
    /// Directory with ca.pem, server.pem, server.key, client.pem, client.key, rogue.pem, rogue.key.
    pub dir: tempfile::TempDir,
}

impl Pki {
    /// Generate.
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let w = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        let ca_for = |cn: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, cn);
            CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
        };
        let ca = ca_for("medmae test CA");
        let rogue = ca_for("rogue CA");
        w("ca.pem", ca.pem());
        let leaf = |names: Vec<String>, issuer: &CertifiedIssuer<'_, KeyPair>, stem: &str| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, issuer)
                .unwrap();
            w(&format!("{stem}.pem"), cert.pem());
            w(&format!("{stem}.key"), key.serialize_pem());
        };
        leaf(vec!["localhost".into(), "127.0.0.1".into()], &ca, "server");
        leaf(vec!["client".into()], &ca, "client");
        leaf(vec!["client".into()], &rogue, "rogue");
        Self { dir }
    }

    /// A file in the PKI directory.
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }
}

/// A KServe request of `batch` random 16³ windows to the slow fixture model; the output shape.
pub async fn slow_request(url: String, batch: usize) -> Result<Vec<i64>, tonic::Status> {
    let mut c = kserve_client(&url).await;
    let x = le(&values(batch * 4096, 9));
    c.model_infer(raw_request(
        "slow",
        &[batch as i64, 1, 16, 16, 16],
        "FP32",
        x,
    ))
    .await
    .map(|r| r.into_inner().outputs[0].shape.clone())
}

/// Wait (up to 10 s) until `/metrics` shows `n` requests computing.
pub fn wait_in_flight(srv: &ServeProcess, n: usize) {
    let want = format!("medmae_in_flight {n}");
    for _ in 0..400 {
        if srv.metrics_text().contains(&want) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("never saw {want}");
}

/// The messages of a Segment request for a raw float32 volume of `shape` (random values) with model `model`.
pub fn raw_segment_messages(
    model: &str,
    shape: [u64; 3],
    probabilities: bool,
) -> Vec<server::proto::medmae_v1::SegmentRequest> {
    use server::proto::medmae_v1::{
        segment_request::Payload, RawGeometry, SegmentHeader, SegmentRequest, VolumeFormat,
    };
    let n = shape.iter().product::<u64>() as usize;
    let header = SegmentHeader {
        model_name: model.into(),
        format: VolumeFormat::RawF32 as i32,
        raw_geometry: Some(RawGeometry {
            channels: 1,
            shape: shape.to_vec(),
            ..Default::default()
        }),
        return_probabilities: probabilities,
        ..Default::default()
    };
    let mut msgs = vec![SegmentRequest {
        payload: Some(Payload::Header(header)),
    }];
    msgs.extend(le(&values(n, 5)).chunks(256 << 10).map(|c| SegmentRequest {
        payload: Some(Payload::Chunk(c.to_vec())),
    }));
    msgs
}

/// Read a Segment reply: the summary and the mask bytes.
pub async fn collect_segment(
    mut replies: tonic::Streaming<server::proto::medmae_v1::SegmentResponse>,
) -> Result<(server::proto::medmae_v1::SegmentSummary, Vec<u8>), tonic::Status> {
    use server::proto::medmae_v1::segment_response::Payload;
    let (mut summary, mut mask) = (None, Vec::new());
    while let Some(m) = replies.message().await? {
        match m.payload {
            Some(Payload::Summary(s)) => summary = Some(s),
            Some(Payload::MaskChunk(b)) => mask.extend(b),
            _ => {}
        }
    }
    let summary = summary.ok_or_else(|| tonic::Status::internal("no summary in the reply"))?;
    Ok((summary, mask))
}

/// The value of the metric sample `line` (name and labels exactly as exposed), 0 when absent.
pub fn sample(metrics: &str, line: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or(0.0)
}
