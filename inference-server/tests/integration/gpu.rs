//! `--gpu` on a machine without a usable GPU: medmae-serve must refuse to start and say why, never serve on the CPU
//! behind the operator's back. GPUs are hidden (`CUDA_VISIBLE_DEVICES=""`) so the test means the same on a GPU
//! machine. The normal suite runs it on the CPU build; `scripts/gpu-build` runs it on the `cuda` build with
//! onnxruntime-gpu (`ORT_DYLIB_PATH` from its env-gpu.sh).

use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::common::fixtures;

/// Run medmae-serve on the demo repository with `extra` flags and GPUs hidden; it must exit within a minute. Output
/// goes to a file (a pipe nobody reads could block the server).
fn serve_until_exit(extra: &[&str], ort_library: Option<&str>) -> (ExitStatus, String) {
    let repo = fixtures().join("repo");
    let dir = tempfile::tempdir().expect("temporary directory");
    let log = dir.path().join("serve.log");
    let file = std::fs::File::create(&log).expect("log file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_medmae-serve"));
    cmd.arg("--model-repository")
        .arg(&repo)
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "off"])
        .args(extra)
        .env("CUDA_VISIBLE_DEVICES", "")
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .stdout(file.try_clone().expect("log file handle"))
        .stderr(file);
    if let Some(lib) = ort_library {
        cmd.env("ORT_DYLIB_PATH", lib);
    }
    let mut child = cmd.spawn().expect("medmae-serve starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for medmae-serve") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "medmae-serve {extra:?} is still running after 60 s: it should have refused to start:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (status, std::fs::read_to_string(&log).expect("server log"))
}

fn assert_refused(status: ExitStatus, text: &str) {
    assert!(!status.success(), "medmae-serve must not start:\n{text}");
    assert!(!text.contains("listening"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    assert!(
        text.contains("--gpu"),
        "the message names the setting:\n{text}"
    );
}

#[cfg(not(feature = "cuda"))]
#[test]
fn gpu_without_the_cuda_feature_is_refused() {
    let (status, text) = serve_until_exit(&["--gpu", "true"], None);
    assert_refused(status, &text);
    assert!(text.contains("built without the `cuda` feature"), "{text}");
}

/// The CPU onnxruntime of the venv (the path `scripts/setup` writes into `.cargo/config.toml`) has no CUDA provider.
#[cfg(feature = "cuda")]
#[test]
fn gpu_with_a_cpu_onnxruntime_is_refused() {
    let cpu_lib = std::env::var("MEDMAE_CPU_ORT_DYLIB_PATH").expect(
        "MEDMAE_CPU_ORT_DYLIB_PATH: the venv's CPU onnxruntime library (source env-gpu.sh)",
    );
    let cpu_lib = cpu_lib.as_str();
    assert!(!cpu_lib.contains("onnxruntime-gpu"), "{cpu_lib}");
    let (status, text) = serve_until_exit(&["--gpu", "true"], Some(cpu_lib));
    assert_refused(status, &text);
    assert!(text.contains("has no CUDA execution provider"), "{text}");
}

/// onnxruntime-gpu (from scripts/gpu-build's env-gpu.sh) without a visible GPU.
#[cfg(feature = "cuda")]
#[test]
fn gpu_without_a_visible_device_is_refused() {
    let gpu_lib = std::env::var("ORT_DYLIB_PATH").expect("ORT_DYLIB_PATH (source env-gpu.sh)");
    assert!(
        gpu_lib.contains("onnxruntime-gpu"),
        "ORT_DYLIB_PATH should be onnxruntime-gpu's: {gpu_lib}"
    );
    let (status, text) = serve_until_exit(&["--gpu", "true"], Some(&gpu_lib));
    assert_refused(status, &text);
    assert!(
        text.contains("CUDA execution provider could not be started")
            || text.contains("creating the session on the CUDA execution provider"),
        "{text}"
    );
    assert!(
        text.contains("nvidia-smi") || text.contains("libcuda.so.1"),
        "{text}"
    );
}
