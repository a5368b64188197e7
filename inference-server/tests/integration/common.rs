//! Shared set-up: fixtures made once per test run with `$MEDMAE_PYTHON`, a server process guard, clients, certs.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use server::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use tonic::transport::Channel;

/// `$MEDMAE_PYTHON`, or a panic saying how to get it.
pub fn python() -> String {
    std::env::var("MEDMAE_PYTHON").expect("MEDMAE_PYTHON is not set: run scripts/setup (it writes .cargo/config.toml) or export MEDMAE_PYTHON=<venv python with onnx, onnxruntime, nibabel, tritonclient>")
}

/// Fixture directory (models, volumes), generated once.
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/make_fixtures.py");
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

/// Path of the demo model file.
pub fn demo_onnx() -> PathBuf {
    fixtures().join("repo/demo/1/model.onnx")
}

/// A running `medmae-serve`, killed on drop if still alive.
pub struct ServerProc {
    /// The child.
    pub child: Child,
    /// gRPC address.
    pub grpc: SocketAddr,
    /// Metrics address.
    pub metrics: SocketAddr,
    stderr: PathBuf,
    _logdir: tempfile::TempDir,
}

impl ServerProc {
    /// Start on `repo` with extra flags; waits for the "listening" line.
    pub fn start(repo: &str, extra: &[&str]) -> Self {
        let logdir = tempfile::tempdir().unwrap();
        let stderr = logdir.path().join("stderr.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_medmae-serve"));
        cmd.arg("--model-repository")
            .arg(fixtures().join(repo))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--threads",
                "1",
            ])
            .args(extra);
        cmd.stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap());
        let mut child = cmd.spawn().expect("spawning medmae-serve");
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        let mut reader = BufReader::new(stdout);
        let _ = reader.read_line(&mut line);
        if !line.starts_with("medmae-serve listening") {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "server did not start; stdout {line:?}; stderr:\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .unwrap()
                .parse()
                .unwrap()
        };
        let (grpc, metrics) = (field("grpc="), field("metrics="));
        Self {
            child,
            grpc,
            metrics,
            stderr,
            _logdir: logdir,
        }
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// The server's stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Send SIGTERM to this child only.
    pub fn sigterm(&self) {
        let st = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Wait for exit up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                start.elapsed() < limit,
                "server did not exit within {limit:?}; logs:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// GET /metrics.
    pub fn metrics_text(&self) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.metrics).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
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
