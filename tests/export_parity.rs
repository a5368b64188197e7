//! The exporter's contract, checked across the three engines: a checkpoint written from the tch models is exported
//! to ONNX by `medmae-export`'s library (pure Rust), then run by ONNX Runtime and by tract through the server's
//! backends; both must equal the tch forward of the same weights within 1e-4 max-abs, for UNETR-2D, UNETR-3D and
//! the MAE-3D encoder (whose ONNX output is the final-normed patch tokens, `Mae::encode`).
//!
//! Weights are tch's initialisation plus seeded noise on every tensor (so LayerNorm/InstanceNorm affine parameters
//! and biases are not the trivial 1/0), the input is seeded noise; nothing here is compared against its own output.

use std::path::Path;

use ndarray::ArrayD;
use server::backend::{BackendKind, BackendOptions};
use server::model::Repository;
use spec::{InferenceSpec, ModelCard, ModelConfig, OutputActivation};
use tch::{nn::VarStore, Device, Kind, Tensor};

const TOL: f32 = 1e-4;

/// The `model:` section of a shipped config, as the trainer reads it.
fn model_config(config: &str) -> ModelConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(config);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: yaml_serde::Value = yaml_serde::from_str(&text).unwrap();
    yaml_serde::from_value(doc["model"].clone())
        .unwrap_or_else(|e| panic!("{config}: model section: {e}"))
}

fn to_array(t: &Tensor) -> ArrayD<f32> {
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    let data = Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
    ArrayD::from_shape_vec(shape, data).unwrap()
}

/// Build the tch model for `cfg` with perturbed weights, save its checkpoint (model.safetensors + model.json) under
/// `ckpt`, export it to `<repo>/<name>/model.onnx`, and return (input, tch output).
fn write_model(
    cfg: &ModelConfig,
    name: &str,
    ckpt: &Path,
    repo: &Path,
    seed: i64,
) -> (ArrayD<f32>, ArrayD<f32>) {
    tch::manual_seed(seed);
    let vs = VarStore::new(Device::Cpu);
    let model = models::Model::new(&vs.root(), cfg).unwrap();
    tch::no_grad(|| {
        for (_, mut t) in vs.variables() {
            let noise = Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 0.05;
            let _ = t.f_add_(&noise).unwrap();
        }
    });
    let (enc, card) = match cfg {
        ModelConfig::Unetr(u) => {
            let labels: Vec<String> = (0..u.out_channels).map(|i| format!("class{i}")).collect();
            let inf = InferenceSpec {
                sw_batch_size: 2,
                ..InferenceSpec::new(u.encoder.img_size.clone(), OutputActivation::Softmax)
            };
            (
                &u.encoder,
                ModelCard::new(cfg.clone(), vec![], labels, Some(inf)),
            )
        }
        ModelConfig::Mae(m) => (
            &m.encoder,
            ModelCard::new(cfg.clone(), vec![], vec![], None),
        ),
    };
    let mut shape = vec![2i64, enc.in_channels as i64];
    shape.extend(enc.img_size.iter().map(|&s| s as i64));
    let x = Tensor::randn(&shape[..], (Kind::Float, Device::Cpu));
    let y = tch::no_grad(|| match &model {
        models::Model::Unetr(u) => u.forward(&x, false).unwrap(),
        models::Model::Mae(m) => m.encode(&x).unwrap(),
    });

    std::fs::create_dir_all(ckpt).unwrap();
    models::save(&vs, &ckpt.join("model.safetensors")).unwrap();
    std::fs::write(
        ckpt.join("model.json"),
        serde_json::to_string_pretty(&card).unwrap(),
    )
    .unwrap();
    let opts = exporter::ExportOptions {
        output: Some(repo.join(name).join("model.onnx")),
        check: true,
        ..Default::default()
    };
    exporter::export(ckpt, &opts).unwrap_or_else(|e| panic!("export {name}: {e}"));
    (to_array(&x), to_array(&y))
}

fn max_abs_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn ort_and_tract_equal_the_tch_forward() {
    tch::set_num_threads(2);
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let cases = [
        ("unetr2d", "configs/demo_unetr2d.yaml"),
        ("unetr3d", "configs/demo_unetr3d.yaml"),
        ("mae3d_encoder", "configs/demo_mae3d.yaml"),
    ];
    let mut expected = Vec::new();
    for (i, (name, config)) in cases.iter().enumerate() {
        let cfg = model_config(config);
        let (x, y) = write_model(
            &cfg,
            name,
            &tmp.path().join("ckpt").join(name),
            &repo,
            7 + i as i64,
        );
        assert!(
            y.iter().all(|v| v.is_finite()) && y.iter().any(|&v| v != 0.0),
            "{name}: degenerate tch output"
        );
        expected.push((name.to_string(), x, y));
    }
    for kind in [BackendKind::Ort, BackendKind::Tract] {
        let opts = BackendOptions {
            kind,
            threads: 2,
            use_gpu: false,
            ort_library: std::env::var_os("ORT_DYLIB_PATH").map(Into::into),
        };
        let loaded = Repository::load(&repo, &opts).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        for (name, x, y) in &expected {
            let model = loaded
                .get(name, "")
                .unwrap_or_else(|e| panic!("{kind:?} {name}: {e}"));
            let got = model
                .backend
                .run(x.clone())
                .unwrap_or_else(|e| panic!("{kind:?} {name}: {e}"));
            let d = max_abs_diff(&got, y);
            println!(
                "{kind:?} {name}: output {:?}, max abs diff vs tch {d:.2e}",
                got.shape()
            );
            assert!(
                d <= TOL,
                "{kind:?} {name}: max abs diff {d:e} > {TOL:e} vs the tch forward"
            );
        }
    }
}
