//! Shared helpers of the exporter's integration tests: golden case discovery, `.npy` I/O, the ONNX Runtime runner
//! (through `$MEDMAE_PYTHON`), and max-abs comparison.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use exporter::ExportKind;
use ndarray::ArrayD;

/// Parity tolerance (max abs difference) against the PyTorch/MONAI references.
pub const TOL: f32 = 1e-4;

/// `exporter/tests/golden`.
pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("golden")
}

/// One golden export: checkpoint case, graph kind, input files, reference output names.
pub struct Case {
    /// Directory name under `golden/`.
    pub dir: &'static str,
    /// Graph to export.
    pub kind: ExportKind,
    /// Graph inputs: (input name, npy file stem).
    pub inputs: &'static [(&'static str, &'static str)],
    /// Outputs compared with the reference npy of the same name.
    pub outputs: &'static [&'static str],
    /// Export the encoder's hidden states too.
    pub hidden_states: bool,
}

const IMG: &[(&str, &str)] = &[("input", "input")];
const IMG_MASK: &[(&str, &str)] = &[("input", "input"), ("mask", "mask")];

/// Every golden case.
pub fn cases() -> Vec<Case> {
    vec![
        Case {
            dir: "unetr3d_timm",
            kind: ExportKind::Unetr,
            inputs: IMG,
            outputs: &["logits"],
            hidden_states: false,
        },
        Case {
            dir: "unetr2d_timm",
            kind: ExportKind::Unetr,
            inputs: IMG,
            outputs: &["logits"],
            hidden_states: false,
        },
        Case {
            dir: "unetr2d_monai",
            kind: ExportKind::Unetr,
            inputs: IMG,
            outputs: &["logits"],
            hidden_states: false,
        },
        Case {
            dir: "mae3d",
            kind: ExportKind::MaeEncoder,
            inputs: IMG,
            outputs: &["features", "hidden_state_0", "hidden_state_1"],
            hidden_states: true,
        },
        Case {
            dir: "mae3d",
            kind: ExportKind::MaeReconstructor,
            inputs: IMG_MASK,
            outputs: &["pred"],
            hidden_states: false,
        },
        Case {
            dir: "mae2d",
            kind: ExportKind::MaeEncoder,
            inputs: IMG,
            outputs: &["features", "hidden_state_0", "hidden_state_1"],
            hidden_states: true,
        },
        Case {
            dir: "mae2d",
            kind: ExportKind::MaeReconstructor,
            inputs: IMG_MASK,
            outputs: &["pred"],
            hidden_states: false,
        },
    ]
}

/// Read an f32 `.npy`.
pub fn read_npy(path: &Path) -> ArrayD<f32> {
    ndarray_npy::read_npy(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Max |a − b| after checking the shapes agree.
pub fn max_abs_diff(a: &ArrayD<f32>, b: &ArrayD<f32>, what: &str) -> f32 {
    assert_eq!(a.shape(), b.shape(), "{what}: shape");
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub use medmae_test_support::python;

/// Run `ort_run.py` on `model` with `feeds` (name, npy path); returns the directory holding the outputs.
pub fn run_ort(model: &Path, feeds: &[(String, PathBuf)], out_dir: &Path) -> PathBuf {
    let script = golden_dir().join("ort_run.py");
    let mut cmd = Command::new(python());
    cmd.arg(&script).arg(model).arg(out_dir);
    for (name, path) in feeds {
        cmd.arg(format!("{name}={}", path.display()));
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "ort_run.py failed on {}:\n{}\n{}",
        model.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out_dir.to_path_buf()
}
