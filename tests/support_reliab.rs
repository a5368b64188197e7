//! Helpers shared by the reliability tests (`malformed.rs`, `load.rs`): the inference-server fixtures (made once per
//! test binary by `inference-server/tests/support/make_fixtures.py`), a `medmae-serve` process with its log captured
//! and its metrics and memory readable, and gRPC request builders for the fixture's `demo` model.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use medmae_tests::{bin, repo_root};
use server::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use server::proto::inference::model_infer_request::InferInputTensor;
use server::proto::inference::ModelInferRequest;
use server::proto::medmae_v1::segment_request::Payload;
use server::proto::medmae_v1::segmentation_client::SegmentationClient;
use server::proto::medmae_v1::{SegmentHeader, SegmentRequest, SegmentResponse, VolumeFormat};
use tonic::transport::Channel;

/// `$MEDMAE_PYTHON` (numpy, nibabel, onnx), or a panic saying how to get it.
pub fn python() -> String {
    std::env::var("MEDMAE_PYTHON").expect(
        "MEDMAE_PYTHON is not set: run scripts/setup (it writes .cargo/config.toml) or export MEDMAE_PYTHON=<venv python with numpy, nibabel, onnx>",
    )
}

/// The inference-server fixtures: `repo/demo` (Conv3d 1→3, roi 16³, input `input`, output `logits`), `slow_repo/slow`
/// (~1 s per call), `volume.nii.gz`, `corrupt.nii.gz`, `truncated.nii`.
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let script = repo_root().join("inference-server/tests/support/make_fixtures.py");
        let out = Command::new(python())
            .arg(&script)
            .arg(dir.path())
            .output()
            .expect("running make_fixtures.py");
        assert!(
            out.status.success(),
            "make_fixtures.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
    .path()
}

/// A `medmae-serve` process on ephemeral 127.0.0.1 ports with its stderr (the log) in a file; SIGTERM on drop.
pub struct Serve {
    child: Child,
    /// gRPC address `host:port`.
    pub grpc: String,
    /// Metrics address `host:port`.
    pub metrics: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Serve {
    /// Start with extra arguments (and extra environment) and wait for the `listening` line.
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serve.log");
        let mut child = Command::new(bin("medmae-serve"))
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .envs(envs.iter().copied())
            .current_dir(repo_root())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start medmae-serve");
        let mut reader = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        std::thread::spawn(move || for _ in reader.lines().map_while(Result::ok) {});
        let Some(rest) = line.strip_prefix("medmae-serve listening ") else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "medmae-serve did not start: stdout {line:?}; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let field = |k: &str| {
            rest.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .unwrap_or_default()
                .to_string()
        };
        Serve {
            grpc: field("grpc="),
            metrics: field("metrics="),
            child,
            log,
            _dir: dir,
        }
    }

    /// `http://host:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// The log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `(VmRSS, VmHWM)` in KiB from /proc: current and peak resident memory.
    pub fn rss_kib(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let get = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (get("VmRSS:"), get("VmHWM:"))
    }

    /// GET /metrics.
    pub fn metrics_text(&self) -> String {
        let mut s = std::net::TcpStream::connect(&self.metrics).expect("connect to /metrics");
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    /// Value of an unlabelled gauge or counter (the first sample whose name matches), if present.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics_text()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                (k == name || k.starts_with(&format!("{name}{{")))
                    .then(|| v.parse().ok())
                    .flatten()
            })
    }

    /// SIGTERM and wait (up to 60 s, then SIGKILL); returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.stop();
        }
    }
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
