//! `--device cuda` and `--dist-backend nccl` on a machine without a usable GPU must fail at start-up with a message
//! that names the cause. GPUs are hidden (`CUDA_VISIBLE_DEVICES=""`), so the tests mean the same on a GPU machine.
//! The normal suite runs them on the CPU build; `scripts/gpu-build` runs them on the `nccl` build (CUDA libtorch).

mod common;

use std::time::{Duration, Instant};

use common::{config, tiny, tiny_mae, train_command};

/// Run `medmae-train pretrain` on the tiny MAE config with GPUs hidden; returns (success, stdout + stderr, seconds).
fn pretrain_hidden_gpus(extra: &[&str], sets: &[String]) -> (bool, String, Duration) {
    let cfg = config("demo_mae3d.yaml");
    let mut args = vec!["pretrain", "--config", cfg.to_str().unwrap()];
    args.extend_from_slice(extra);
    let start = Instant::now();
    let out = train_command(&args, sets)
        .env("CUDA_VISIBLE_DEVICES", "")
        .env("MEDMAE_DIST_TIMEOUT", "60")
        .output()
        .expect("medmae-train runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text, start.elapsed())
}

fn sets(dir: &std::path::Path) -> Vec<String> {
    let mut s = tiny(dir, "run", 1);
    s.extend(tiny_mae());
    s
}

/// The message of a CUDA device request this build cannot serve: a CPU-only libtorch, or (a CUDA build, which the
/// `nccl` feature implies) no visible device.
fn assert_cuda_reported(text: &str) {
    let cpu_only = text.contains("linked against a CPU-only libtorch");
    let no_device = text.contains("no CUDA device is visible to this process")
        && text.contains("CUDA_VISIBLE_DEVICES=\"\"");
    if cfg!(feature = "nccl") {
        assert!(
            no_device,
            "expected the no-device message of a CUDA build:\n{text}"
        );
    } else {
        assert!(
            cpu_only || no_device,
            "expected a clear CUDA message:\n{text}"
        );
    }
    assert!(
        text.contains("--device cpu"),
        "the message should say what to do:\n{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
}

#[test]
fn cuda_device_without_a_gpu_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, text, took) = pretrain_hidden_gpus(&["--device", "cuda"], &sets(dir.path()));
    assert!(!ok, "--device cuda must fail without a GPU:\n{text}");
    assert!(text.contains("cuda:0: "), "{text}");
    assert_cuda_reported(&text);
    // Reported before any data is generated or a model is built.
    assert!(!dir.path().join("data").exists(), "{text}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

#[test]
fn cuda_data_parallel_without_a_gpu_is_reported_by_every_rank() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, text, _) = pretrain_hidden_gpus(
        &["--device", "cuda", "--nproc-per-node", "2"],
        &sets(dir.path()),
    );
    assert!(!ok, "{text}");
    assert!(
        text.contains("of 2): cuda:0: "),
        "the failing rank is named:\n{text}"
    );
    assert_cuda_reported(&text);
}

#[cfg(not(feature = "nccl"))]
#[test]
fn nccl_backend_without_the_feature_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, text, _) = pretrain_hidden_gpus(
        &["--nproc-per-node", "2", "--dist-backend", "nccl"],
        &sets(dir.path()),
    );
    assert!(!ok, "{text}");
    assert!(
        text.contains("backend 'nccl' needs medmae-distributed built with the `nccl` feature"),
        "{text}"
    );
}

#[cfg(feature = "nccl")]
#[test]
fn nccl_backend_without_a_gpu_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, text, _) = pretrain_hidden_gpus(
        &["--nproc-per-node", "2", "--dist-backend", "nccl"],
        &sets(dir.path()),
    );
    assert!(!ok, "{text}");
    assert!(text.contains("joining the nccl group"), "{text}");
    assert!(
        text.contains("no GPUs found"),
        "NCCL should say it found no GPU:\n{text}"
    );
}
