//! End to end on the demo's synthetic phantoms, with the shipped demo configs (the MAE stage shortened):
//! - 3-D: MAE pretrain → UNETR fine-tune (from the MAE) → evaluate (mean Dice ≥ 0.9 on held-out phantoms) → ONNX
//!   export → medmae-serve → medmae-client segment, whose mask must equal the offline `medmae-train predict` result
//!   voxel for voxel, on the input's grid and geometry.
//! - 2-D: MAE-2D pretrain → UNETR-2D fine-tune on single-slice crops → evaluate slice by slice (mean Dice ≥ 0.9).
//!
//! The two tests run concurrently, so each trainer gets one libtorch thread (2 cores in CI).

use std::path::Path;
use std::process::Command;

use medmae_tests::{bin, run, serve};

/// `--set key=path`.
fn set(c: &mut Command, key: &str, v: &Path) {
    c.arg("--set").arg(format!("{key}={}", v.display()));
}

/// `medmae-train <sub> --config <config> --set output_dir=<out> --set data.dataset.path=<data> --set threads=1`.
fn train(sub: &str, config: &str, out: &Path, data: &Path) -> Command {
    let mut c = Command::new(bin("medmae-train"));
    c.args([sub, "--config", config]);
    set(&mut c, "output_dir", out);
    set(&mut c, "data.dataset.path", data);
    c.args(["--set", "threads=1"]);
    c
}

/// Pretrain (shortened), fine-tune from it under `t/unetr`, evaluate; returns (mean Dice, eval.json).
fn pretrain_finetune_evaluate(
    t: &Path,
    mae_config: &str,
    unetr_config: &str,
) -> (f64, serde_json::Value) {
    let data = t.join("data");
    run(train("pretrain", mae_config, &t.join("mae"), &data).args(["--set", "schedule.epochs=4"]));
    let mae_ckpt = t.join("mae/checkpoints/last");
    assert!(
        mae_ckpt.join("model.safetensors").is_file(),
        "the MAE wrote its checkpoint"
    );

    let unetr = t.join("unetr");
    run(train("finetune", unetr_config, &unetr, &data)
        .arg("--init")
        .arg(&mae_ckpt));
    run(train("evaluate", unetr_config, &unetr, &data)
        .arg("--output")
        .arg(t.join("eval")));
    let text = std::fs::read_to_string(t.join("eval/eval.json")).unwrap();
    let eval: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mean = eval["mean_dice"].as_f64().expect("eval.json has mean_dice");
    (mean, eval)
}

#[test]
fn e2e_3d_pretrain_finetune_export_serve_matches_offline_prediction() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (mean, eval) =
        pretrain_finetune_evaluate(t, "configs/demo_mae3d.yaml", "configs/demo_unetr3d.yaml");
    println!("3-D mean Dice {mean:.4}");
    assert!(
        mean >= 0.9,
        "3-D mean Dice {mean} < 0.9 on the held-out phantoms: {eval}"
    );

    let best = t.join("unetr/checkpoints/best");
    let onnx = t.join("repo/phantoms/model.onnx");
    run(Command::new(bin("medmae-export"))
        .arg("--checkpoint")
        .arg(&best)
        .arg("--output")
        .arg(&onnx)
        .arg("--check"));

    let test_img = std::fs::read_dir(t.join("data/imagesTs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".nii.gz"))
        .min()
        .expect("a held-out volume");
    let offline = t.join("offline.nii.gz");
    run(Command::new(bin("medmae-train"))
        .arg("predict")
        .arg("--checkpoint")
        .arg(&best)
        .arg("--input")
        .arg(&test_img)
        .arg("--output")
        .arg(&offline));

    let mut server = serve(
        &["--model-repository", t.join("repo").to_str().unwrap()],
        &[],
    );
    let served = t.join("served.nii.gz");
    let url = server.url();
    run(Command::new(bin("medmae-client"))
        .args(["--server", &url, "segment"])
        .arg(&test_img)
        .arg("-o")
        .arg(&served)
        .arg("--quiet"));
    let status = server.stop().expect("medmae-serve exit status");
    assert!(
        status.success(),
        "medmae-serve exited with {status} after SIGTERM"
    );

    let a = imaging::io::load(&served).unwrap();
    let b = imaging::io::load(&offline).unwrap();
    let input = imaging::io::load(&test_img).unwrap();
    assert_eq!(
        a.spatial_shape(),
        input.spatial_shape(),
        "mask is on the input grid"
    );
    assert_eq!(
        a.count_differing(&b),
        Some(0),
        "served and offline masks differ (or have different shapes)"
    );
    assert!(
        a.max_affine_difference(&input) < 1e-4,
        "mask affine differs from the input's"
    );
    let fg = a.data.iter().filter(|&&v| v > 0.0).count();
    assert!(fg > 100, "the served mask has foreground ({fg} voxels)");
}

#[test]
fn e2e_2d_pretrain_finetune_reaches_dice() {
    let tmp = tempfile::tempdir().unwrap();
    let (mean, eval) = pretrain_finetune_evaluate(
        tmp.path(),
        "configs/demo_mae2d.yaml",
        "configs/demo_unetr2d.yaml",
    );
    println!("2-D mean Dice {mean:.4}");
    assert!(
        mean >= 0.9,
        "2-D mean Dice {mean} < 0.9 on the held-out phantoms: {eval}"
    );
}
