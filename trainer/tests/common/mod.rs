//! Helpers for the CLI tests: run `medmae-train` on tiny synthetic data made from the demo configs.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's configs folder.
pub fn config(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../configs")
        .join(name)
}

/// Overrides that shrink a demo config to a few-second run in `dir` on 6 phantoms of 32³.
pub fn tiny(dir: &Path, run: &str, epochs: usize) -> Vec<String> {
    let data = dir.join("data");
    vec![
        format!("output_dir={}", dir.join(run).display()),
        format!("data.dataset.path={}", data.display()),
        "data.dataset.synthetic.phantom.shape=[32, 32, 32]".into(),
        "data.dataset.synthetic.num_training=6".into(),
        "data.dataset.synthetic.num_test=1".into(),
        "data.num_folds=3".into(),
        "data.workers=2".into(),
        "data.batch_size=2".into(),
        "data.samples_per_volume=1".into(),
        "model.encoder.embed_dim=24".into(),
        "model.encoder.depth=3".into(),
        "model.encoder.num_heads=2".into(),
        format!("schedule.epochs={epochs}"),
        "schedule.warmup_epochs=1".into(),
        "logging.log_every_steps=1".into(),
        "logging.png_every_epochs=1".into(),
        "threads=1".into(),
    ]
}

/// MAE extras on top of [`tiny`].
pub fn tiny_mae() -> Vec<String> {
    vec![
        "model.decoder_embed_dim=12".into(),
        "model.decoder_depth=1".into(),
        "model.decoder_num_heads=2".into(),
    ]
}

/// UNETR extras on top of [`tiny`].
pub fn tiny_unetr() -> Vec<String> {
    vec![
        "model.feature_size=4".into(),
        "model.skip_layers=[0, 1, 2]".into(),
        "data.train_transforms.1.num_samples=1".into(),
        "validation.sw_batch_size=2".into(),
        "validation.every_epochs=1".into(),
    ]
}

/// Run `medmae-train` and return stdout; panics with stderr on failure.
pub fn train(args: &[&str], sets: &[String]) -> String {
    let out = train_output(args, sets);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "medmae-train {args:?} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

/// Run `medmae-train` and return the raw output.
pub fn train_output(args: &[&str], sets: &[String]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_medmae-train"));
    cmd.args(args);
    for s in sets {
        cmd.arg("--set").arg(s);
    }
    cmd.output().expect("medmae-train runs")
}

/// Every JSON record of a metrics.jsonl file.
pub fn metrics(path: &Path) -> Vec<serde_json::Value> {
    trainer::tracking::jsonl::read_metrics(path).unwrap()
}

/// The training-loss records `(step, loss)`.
pub fn losses(path: &Path) -> Vec<(u64, f64)> {
    metrics(path)
        .iter()
        .filter_map(|r| Some((r.get("step")?.as_u64()?, r.get("loss")?.as_f64()?)))
        .collect()
}

/// A `medmae-train` command with `args` and `--set` overrides and a clean launch environment.
pub fn train_command(args: &[&str], sets: &[String]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_medmae-train"));
    cmd.args(args);
    for s in sets {
        cmd.arg("--set").arg(s);
    }
    distributed::launch::clear_launch_env(&mut cmd).env_remove("MEDMAE_DIST_TIMEOUT");
    cmd
}

/// Run a clean-environment `medmae-train`; panics with its output on failure.
pub fn train_clean(args: &[&str], sets: &[String]) -> String {
    let out = train_command(args, sets)
        .output()
        .expect("medmae-train runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "medmae-train {args:?} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

/// The tensors of a safetensors file by name.
pub fn tensors(path: &Path) -> std::collections::BTreeMap<String, tch::Tensor> {
    tch::Tensor::read_safetensors(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .collect()
}

/// Largest absolute difference between same-named tensors of two safetensors files (which must hold the same
/// names and shapes), and the name where it occurs.
pub fn max_abs_diff(a: &Path, b: &Path) -> (f64, String) {
    let (ta, tb) = (tensors(a), tensors(b));
    assert_eq!(
        ta.keys().collect::<Vec<_>>(),
        tb.keys().collect::<Vec<_>>(),
        "{} and {} hold different tensors",
        a.display(),
        b.display()
    );
    let mut worst = (0.0f64, String::new());
    for (name, x) in &ta {
        let y = &tb[name];
        assert_eq!(x.size(), y.size(), "{name}: shapes differ");
        let d = (x.to_kind(tch::Kind::Double) - y.to_kind(tch::Kind::Double))
            .abs()
            .max()
            .double_value(&[]);
        assert!(!d.is_nan(), "{name}: NaN difference");
        if d > worst.0 || worst.1.is_empty() {
            worst = (d, name.clone());
        }
    }
    worst
}
