//! One contract from training to serving. A tiny UNETR-3D and UNETR-2D (tch initialisation plus seeded noise, saved
//! as checkpoints) are exported to ONNX once per blend mode (constant, gaussian) × activation (softmax, sigmoid);
//! the same oblique volume is then segmented offline by `medmae-train predict` (tch) and online by `medmae-serve`
//! with the ORT backend and with the tract backend (through `medmae-client`). All three run the one inference path
//! of `imaging::inference` from the spec carried by `model.json` / the ONNX metadata, so the probabilities must be
//! equal within 1e-4 on the input grid and the label maps identical — every decision, except one that is a tie
//! within that float tolerance (the engines sum in different orders; with untrained random weights a few of the
//! ~10^5 decisions per model sit that close, and either side of the tie is then correct). The demo test
//! (`tests/e2e.rs`) checks whole-map identity for a trained model. A model whose spec carries an unknown blend mode
//! is refused by the server (at load, naming the metadata key) and by the trainer (`predict` and `evaluate`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use exporter::onnx::{Message, ModelProto};
use imaging::io::NiftiDtype;
use imaging::Volume;
use medmae_tests::{bin, repo_root, run, serve};
use ndarray::{Array4, Axis};
use spec::{
    BlendMode, InferenceSpec, ModelCard, ModelConfig, OutputActivation, TransformSpec, UnetrConfig,
    VitConfig,
};
use tch::{nn::VarStore, Device, Kind, Tensor};

const TOL: f32 = 1e-4;
/// Decisions closer than this to a tie may legitimately differ between engines whose probabilities differ by up
/// to `TOL` (float summation order); every other decision must be identical.
const TIE: f32 = 2.0 * TOL;
const BLENDS: [BlendMode; 2] = [BlendMode::Constant, BlendMode::Gaussian];
const ACTIVATIONS: [OutputActivation; 2] = [OutputActivation::Softmax, OutputActivation::Sigmoid];
const CLASSES: usize = 3;

/// A UNETR small enough for CPU tests: roi 32 per axis (2 patches), width 24, 3 blocks.
fn unetr(spatial_dims: usize) -> UnetrConfig {
    UnetrConfig {
        encoder: VitConfig::timm(1, vec![32; spatial_dims], vec![16; spatial_dims], 24, 3, 2)
            .with_mlp_ratio(2.0),
        out_channels: CLASSES,
        feature_size: 4,
        skip_layers: [0, 1, 2],
    }
}

fn card(u: &UnetrConfig, blend: BlendMode, activation: OutputActivation) -> ModelCard {
    let preprocessing = vec![
        TransformSpec::Orientation {
            axcodes: "RAS".into(),
        },
        TransformSpec::ScaleIntensityRange {
            a_min: 0.0,
            a_max: 100.0,
            b_min: -1.0,
            b_max: 1.0,
            clip: true,
        },
    ];
    let labels = (0..CLASSES).map(|i| format!("class{i}")).collect();
    let inference = InferenceSpec {
        roi_size: u.encoder.img_size.clone(),
        overlap: 0.5,
        blend,
        sw_batch_size: 3,
        activation,
    };
    ModelCard::new(
        ModelConfig::Unetr(u.clone()),
        preprocessing,
        labels,
        Some(inference),
    )
}

/// tch's initialisation plus seeded noise on every tensor (so norms and biases are not trivially 1/0); then the
/// output bias is shifted so that every class's logit averages zero over windows of the test volume, so that each
/// class wins (softmax) or fires (sigmoid) somewhere instead of one bias deciding everywhere.
fn write_weights(cfg: &UnetrConfig, seed: i64, path: &Path) {
    tch::manual_seed(seed);
    let vs = VarStore::new(Device::Cpu);
    let net = models::Unetr::new(&vs.root(), cfg).unwrap();
    tch::no_grad(|| {
        for (_, mut t) in vs.variables() {
            let noise = Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 0.05;
            let _ = t.f_add_(&noise).unwrap();
        }
        // The first 32-voxel cube (3-D) or the 32 × 32 corner of every slice (2-D), scaled as the model's
        // preprocessing scales intensities.
        let data = volume_data();
        let crop = data.slice(ndarray::s![0, ..32, ..32, ..32]);
        let scaled: Vec<f32> = crop
            .iter()
            .map(|v| (v / 50.0 - 1.0).clamp(-1.0, 1.0))
            .collect();
        let x = Tensor::from_slice(&scaled).view([32, 32, 32]);
        let x = if cfg.encoder.spatial_dims == 3 {
            x.view([1, 1, 32, 32, 32])
        } else {
            x.permute([2, 0, 1]).contiguous().view([32, 1, 32, 32])
        };
        let logits = net.forward(&x, false).unwrap();
        let dims: Vec<i64> = (0..logits.dim() as i64).filter(|&d| d != 1).collect();
        let mean = logits.mean_dim(dims.as_slice(), false, Kind::Float);
        let mut bias = vs.variables()["out.conv.conv.bias"].shallow_clone();
        let _ = bias.f_sub_(&mean).unwrap();
    });
    models::save(&vs, path).unwrap();
}

/// A checkpoint directory (`model.safetensors` + `model.json`).
fn write_checkpoint(dir: &Path, weights: &Path, card: &ModelCard) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(weights, dir.join("model.safetensors")).unwrap();
    std::fs::write(
        dir.join("model.json"),
        serde_json::to_string_pretty(card).unwrap(),
    )
    .unwrap();
}

/// The test volume's voxels, 44 × 40 × 36: two overlapping bright ellipsoids on a ramp (intensities 10..110, so the
/// ScaleIntensityRange and its clipping matter).
fn volume_data() -> Array4<f32> {
    let (x, y, z) = (44, 40, 36);
    Array4::from_shape_fn((1, x, y, z), |(_, i, j, k)| {
        let (fi, fj, fk) = (i as f32, j as f32, k as f32);
        let e = |c: [f32; 3], r: [f32; 3]| {
            ((fi - c[0]) / r[0]).powi(2)
                + ((fj - c[1]) / r[1]).powi(2)
                + ((fk - c[2]) / r[2]).powi(2)
        };
        let mut v = 10.0 + 30.0 * fi / x as f32;
        if e([18.0, 20.0, 15.0], [12.0, 9.0, 8.0]) < 1.0 {
            v += 45.0;
        }
        if e([28.0, 17.0, 22.0], [8.0, 10.0, 6.0]) < 1.0 {
            v += 25.0;
        }
        v
    })
}

/// The test volume as NIfTI, stored left-right flipped with anisotropic voxels (so Orientation and its inverse run).
fn write_volume(path: &Path) {
    let affine = Volume::affine_from(
        [1.0, 1.1, 1.5],
        [30.0, -20.0, 5.0],
        [[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    );
    imaging::io::save_nifti(&Volume::new(volume_data(), affine), path, NiftiDtype::F32).unwrap();
}

fn model_name(sd: usize, blend: BlendMode, activation: OutputActivation) -> String {
    format!("unetr{sd}d_{blend:?}_{activation:?}").to_lowercase()
}

struct Case {
    name: String,
    checkpoint: PathBuf,
    activation: OutputActivation,
}

/// Checkpoints and exports of every (dims, blend, activation) under `t`; the exports form `t/repo`.
fn models(t: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    for (sd, seed) in [(3, 11), (2, 12)] {
        let u = unetr(sd);
        let weights = t.join(format!("weights{sd}d.safetensors"));
        write_weights(&u, seed, &weights);
        for blend in BLENDS {
            for activation in ACTIVATIONS {
                let name = model_name(sd, blend, activation);
                let checkpoint = t.join("ckpt").join(&name);
                write_checkpoint(&checkpoint, &weights, &card(&u, blend, activation));
                let opts = exporter::ExportOptions {
                    output: Some(t.join("repo").join(&name).join("model.onnx")),
                    check: true,
                    ..Default::default()
                };
                exporter::export(&checkpoint, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
                cases.push(Case {
                    name,
                    checkpoint,
                    activation,
                });
            }
        }
    }
    cases
}

/// `(mask, probabilities)` files of one run.
fn outputs(dir: &Path, who: &str, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{who}_{name}_mask.nii.gz")),
        dir.join(format!("{who}_{name}_probs.nii.gz")),
    )
}

fn max_abs_diff(a: &Volume, b: &Volume) -> f32 {
    assert_eq!(a.data.shape(), b.data.shape());
    a.data
        .iter()
        .zip(b.data.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The label map is not trivial: several classes (softmax) or a channel with both values (sigmoid).
fn assert_informative(mask: &Volume, activation: OutputActivation, what: &str) {
    let informative = match activation {
        OutputActivation::Softmax => {
            let first = mask.data[[0, 0, 0, 0]];
            mask.data.iter().any(|&v| v != first)
        }
        OutputActivation::Sigmoid => mask
            .data
            .axis_iter(Axis(0))
            .any(|ch| ch.iter().any(|&v| v > 0.5) && ch.iter().any(|&v| v < 0.5)),
    };
    assert!(informative, "{what}: the label map is constant");
}

/// How far the decision at mask index `at` is from a tie, in the probabilities `probs` it was taken from: the gap
/// between the two largest class probabilities (softmax), or the channel's distance from 0.5 (sigmoid).
fn margin(probs: &Volume, activation: OutputActivation, at: [usize; 4]) -> f32 {
    let [c, i, j, k] = at;
    match activation {
        OutputActivation::Softmax => {
            let mut v: Vec<f32> = (0..CLASSES).map(|c| probs.data[[c, i, j, k]]).collect();
            v.sort_by(|a, b| b.total_cmp(a));
            v[0] - v[1]
        }
        OutputActivation::Sigmoid => (probs.data[[c, i, j, k]] - 0.5).abs(),
    }
}

/// Mask indices whose decision is within `band` of a tie.
fn near_ties(mask: &Volume, probs: &Volume, activation: OutputActivation, band: f32) -> usize {
    mask.data
        .indexed_iter()
        .filter(|&((c, i, j, k), _)| margin(probs, activation, [c, i, j, k]) < band)
        .count()
}

#[test]
fn trainer_ort_and_tract_segment_identically_for_every_blend_and_activation() {
    tch::set_num_threads(2);
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let input = t.join("volume.nii.gz");
    write_volume(&input);
    let cases = models(t);

    for c in &cases {
        let (mask, probs) = outputs(t, "tch", &c.name);
        run(Command::new(bin("medmae-train"))
            .arg("predict")
            .arg("--checkpoint")
            .arg(&c.checkpoint)
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&mask)
            .arg("--probabilities")
            .arg(&probs));
    }
    for backend in ["ort", "tract"] {
        let repo = t.join("repo");
        let mut server = serve(
            &[
                "--model-repository",
                repo.to_str().unwrap(),
                "--backend",
                backend,
                "--threads",
                "2",
            ],
            &[],
        );
        for c in &cases {
            let (mask, probs) = outputs(t, backend, &c.name);
            run(Command::new(bin("medmae-client"))
                .args(["--server", &server.url(), "segment"])
                .arg(&input)
                .arg("-o")
                .arg(&mask)
                .args(["--model", &c.name, "--quiet", "--probabilities"])
                .arg(&probs));
        }
        let status = server.stop().expect("medmae-serve exit status");
        assert!(
            status.success(),
            "{backend}: medmae-serve exited with {status}"
        );
    }

    let load = |p: &Path| imaging::io::load(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    // The input as stored (NIfTI keeps its affine in f32).
    let source = load(&input);
    for c in &cases {
        let (mask, probs) = outputs(t, "tch", &c.name);
        let (want_mask, want_probs) = (load(&mask), load(&probs));
        assert_informative(&want_mask, c.activation, &c.name);
        assert_eq!(want_mask.spatial_shape(), source.spatial_shape());
        let affine_diff = (0..16)
            .map(|i| (want_mask.affine[i / 4][i % 4] - source.affine[i / 4][i % 4]).abs())
            .fold(0.0, f64::max);
        assert!(
            affine_diff < 1e-6,
            "{}: the mask's affine differs from the input's by {affine_diff:e}",
            c.name
        );
        assert_eq!(want_probs.channels(), CLASSES);
        let decisions = want_mask.data.len();
        let ties = near_ties(&want_mask, &want_probs, c.activation, TIE);
        println!(
            "{}: {ties} of {decisions} decisions within {TIE:e} of a tie",
            c.name
        );
        assert!(
            ties * 200 < decisions,
            "{}: more than 0.5 % of the decisions are ties; the model says too little for this test",
            c.name
        );
        for backend in ["ort", "tract"] {
            let (mask, probs) = outputs(t, backend, &c.name);
            let (got_mask, got_probs) = (load(&mask), load(&probs));
            assert_eq!(got_mask.affine, want_mask.affine);
            assert_eq!(got_mask.data.shape(), want_mask.data.shape());
            let d = max_abs_diff(&got_probs, &want_probs);
            let differing: Vec<[usize; 4]> = got_mask
                .data
                .indexed_iter()
                .filter(|&(at, &v)| v != want_mask.data[at])
                .map(|((c, i, j, k), _)| [c, i, j, k])
                .collect();
            println!(
                "{} {backend}: {} label decisions differ, probabilities max abs diff {d:.2e}",
                c.name,
                differing.len()
            );
            assert!(
                d <= TOL,
                "{} {backend} vs tch: probabilities differ by {d:e}",
                c.name
            );
            for &at in &differing {
                let m = margin(&want_probs, c.activation, at);
                assert!(
                    m < TIE,
                    "{} {backend} vs tch: the label at {at:?} differs although tch's decision margin is {m:e}",
                    c.name
                );
            }
        }
    }
    // The blend mode is honoured: overlapping windows blended with different weights give different probabilities.
    for sd in [3, 2] {
        let p =
            |blend| load(&outputs(t, "tch", &model_name(sd, blend, OutputActivation::Softmax)).1);
        let d = max_abs_diff(&p(BlendMode::Constant), &p(BlendMode::Gaussian));
        assert!(
            d > 1e-3,
            "{sd}-D: constant and gaussian blending agree ({d:e})"
        );
    }
}

/// Run `cmd` (which must exit by itself within two minutes) and return its output.
fn output_within_limit(cmd: &mut Command) -> Output {
    let mut child = cmd
        .current_dir(repo_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{cmd:?} did not exit within two minutes; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

/// The command fails and its stderr names all of `words`.
fn assert_refused(out: &Output, words: &[&str], what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{what} accepted an invalid blend mode"
    );
    for w in words {
        assert!(
            stderr.contains(w),
            "{what}: the error does not name {w:?}:\n{stderr}"
        );
    }
}

#[test]
fn an_invalid_blend_mode_is_refused_by_server_and_trainer() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let u = unetr(3);
    let weights = t.join("weights.safetensors");
    write_weights(&u, 5, &weights);
    let good = card(&u, BlendMode::Gaussian, OutputActivation::Softmax);
    let ckpt = t.join("good");
    write_checkpoint(&ckpt, &weights, &good);
    let onnx = t.join("export.onnx");
    let opts = exporter::ExportOptions {
        output: Some(onnx.clone()),
        ..Default::default()
    };
    exporter::export(&ckpt, &opts).unwrap();

    // The same export with "linear" (not a medmae blend mode) written into its metadata.
    let mut model = ModelProto::parse_from_bytes(&std::fs::read(&onnx).unwrap()).unwrap();
    let mut tampered = 0;
    for p in model.metadata_props.iter_mut() {
        if p.value.contains("\"gaussian\"") {
            p.value = p.value.replace("\"gaussian\"", "\"linear\"");
            tampered += 1;
        }
    }
    assert_eq!(
        tampered, 2,
        "medmae.inference and medmae.card carry the blend mode"
    );
    let repo = t.join("repo");
    std::fs::create_dir_all(repo.join("linear")).unwrap();
    std::fs::write(
        repo.join("linear/model.onnx"),
        model.write_to_bytes().unwrap(),
    )
    .unwrap();
    let out = output_within_limit(
        Command::new(bin("medmae-serve"))
            .arg("--model-repository")
            .arg(&repo)
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"]),
    );
    assert_refused(
        &out,
        &["medmae.inference", "linear", "blend"],
        "medmae-serve",
    );

    // A checkpoint whose model.json says "blend": "linear".
    let bad = t.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::copy(&weights, bad.join("model.safetensors")).unwrap();
    let text = serde_json::to_string_pretty(&good)
        .unwrap()
        .replace("\"gaussian\"", "\"linear\"");
    std::fs::write(bad.join("model.json"), text).unwrap();
    let input = t.join("volume.nii.gz");
    write_volume(&input);
    let out = output_within_limit(
        Command::new(bin("medmae-train"))
            .arg("predict")
            .arg("--checkpoint")
            .arg(&bad)
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(t.join("never.nii.gz")),
    );
    assert_refused(&out, &["inference.blend", "linear"], "medmae-train predict");
    assert!(!t.join("never.nii.gz").exists(), "predict wrote no output");
    let out = output_within_limit(
        Command::new(bin("medmae-train"))
            .args(["evaluate", "--config", "configs/demo_unetr3d.yaml"])
            .arg("--set")
            .arg(format!("output_dir={}", t.join("eval").display()))
            .arg("--set")
            .arg(format!("data.dataset.path={}", t.join("no-data").display()))
            .arg("--checkpoint")
            .arg(&bad),
    );
    assert_refused(
        &out,
        &["inference.blend", "linear"],
        "medmae-train evaluate",
    );
}
