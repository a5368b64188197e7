//! Shared set-up: fixtures made once per test binary with `$MEDMAE_PYTHON`, the server process (from
//! `medmae-test-support`), clients, certs.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub use medmae_test_support::{python, ServeProcess};
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
