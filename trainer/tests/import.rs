//! `medmae-train import` end to end: a MONAI UNETR `.pth` written by MONAI itself becomes a checkpoint directory whose
//! `model.json` and weights, loaded the way `predict`/`evaluate` load them, reproduce MONAI's logits; an He et al.
//! MAE becomes a directory the MAE loads strictly; refusals name the option or the file.

mod common;

use std::path::{Path, PathBuf};

use spec::{ModelConfig, PixVariance};
use tch::{Device, Kind, Tensor};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/import_fixtures")
        .join(name)
}

fn import(args: &[&str]) -> std::process::Output {
    let mut full = vec!["import"];
    full.extend_from_slice(args);
    common::train_output(&full, &[])
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn monai_unetr_import_predicts_like_monai() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("monai");
    let pre = dir.path().join("pre.yaml");
    std::fs::write(
        &pre,
        "- {name: ScaleIntensityRange, a_min: -100.0, a_max: 200.0, b_min: 0.0, b_max: 1.0, clip: true}\n",
    )
    .unwrap();
    let src = fixture("monai_unetr_conv.pth");
    let args = [
        src.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--img-size",
        "32,16,16",
        "--num-heads",
        "2",
        "--labels",
        "background,organ",
        "--preprocessing",
        pre.to_str().unwrap(),
    ];
    let o = import(&args);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout.contains("imported a monai-unetr checkpoint") && stdout.contains("cross-attention"),
        "{stdout}"
    );
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );

    let m = trainer::evaluate::load_unetr(&out, Device::Cpu).unwrap();
    assert_eq!(m.card.labels, vec!["background", "organ"]);
    assert_eq!(m.card.preprocessing.len(), 1);
    assert_eq!(m.segmenter.inference().roi_size, vec![32, 16, 16]);
    assert_eq!(m.cfg.encoder.layer_norm_eps, 1e-5);
    let io: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(fixture("monai_unetr_conv.io.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let x = io["x"].to_kind(Kind::Float);
    let logits = tch::no_grad(|| m.net.forward(&x, false)).unwrap();
    let d = (logits - &io["logits"]).abs().max().double_value(&[]);
    assert!(d < 1e-4, "logits differ from MONAI's by {d}");

    // An existing output is kept unless --force; with --force it is replaced in one rename.
    let o = import(&args);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    std::fs::write(out.join("stale.txt"), "old").unwrap();
    let mut forced = args.to_vec();
    forced.push("--force");
    assert!(import(&forced).status.success());
    assert!(!out.join("stale.txt").exists());
    assert!(out.join("model.json").is_file());
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );
}

#[test]
fn he_mae2d_import_writes_the_unbiased_loss_and_loads_strictly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("he");
    let src = fixture("he_mae2d.pth");
    let o = import(&[
        src.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--num-heads",
        "2",
        "--decoder-num-heads",
        "2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let card = trainer::checkpoint::read_card(&out).unwrap();
    let ModelConfig::Mae(m) = &card.model else {
        panic!("not an MAE")
    };
    assert_eq!(m.pix_variance(), PixVariance::Unbiased);
    let text = std::fs::read_to_string(out.join("model.json")).unwrap();
    assert!(
        text.contains("\"norm_pix_variance\": \"unbiased\""),
        "{text}"
    );
    let vs = tch::nn::VarStore::new(Device::Cpu);
    models::Mae::new(&vs.root(), m).unwrap();
    let report = models::load(&vs, &out.join("model.safetensors"), true).unwrap();
    assert!(report.is_clean(), "{report:?}");
}

#[test]
fn import_errors_name_the_option_or_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x");
    let src = fixture("monai_unetr_conv.pth");
    let o = import(&[
        src.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--img-size",
        "32,16,16",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("monai_unetr_conv.pth") && err.contains("`num_heads`"),
        "{err}"
    );
    let o = import(&[
        src.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--img-size",
        "32,16,16",
        "--num-heads",
        "2",
        "--labels",
        "a,b,c",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("labels")
            && err.contains("3 names for 2 output channels"),
        "{err}"
    );
    let o = import(&[
        src.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--from",
        "timm",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("monai-unetr, selfmedmae-mae3d, he-mae2d"),
        "{err}"
    );
    assert!(!out.exists(), "nothing is written on failure");
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );
}
