//! Inference engines behind one trait: ONNX Runtime (CPU, or CUDA with the `cuda` feature) and tract (pure Rust).
//!
//! A backend runs the model's single input → first output on a batch of windows `[N, C, roi...]`. Engines use their
//! own ndarray versions, so data crosses the trait as the workspace's `ArrayD<f32>` and is converted through slices.

pub mod ort_backend;
pub mod tract_backend;
pub mod tract_ops;

use std::path::PathBuf;
use std::str::FromStr;

use ndarray::ArrayD;

use crate::error::ServeError;
use crate::model::ModelInfo;

/// One loaded model in one engine.
pub trait Backend: Send + Sync {
    /// Engine name for logs and metrics, e.g. "ort-cpu", "ort-cuda", "tract".
    fn name(&self) -> &'static str;
    /// The KServe/Triton `platform` string reported in model metadata and configuration ("onnxruntime_onnx" for
    /// ONNX Runtime; "tract_onnx" for tract, which has no Triton name of its own).
    fn platform(&self) -> &'static str;
    /// Run the model on `[N, C, roi...]` and return its output `[N, K, roi...]`.
    fn run(&self, input: ArrayD<f32>) -> Result<ArrayD<f32>, ServeError>;
}

/// Which engine to use (`--backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// ONNX Runtime (CUDA execution provider when built with `cuda` and `use_gpu` is set, else CPU).
    Ort,
    /// tract, pure-Rust CPU.
    Tract,
}

impl FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ort" => Ok(BackendKind::Ort),
            "tract" => Ok(BackendKind::Tract),
            other => Err(format!(
                "unknown backend {other:?}; expected \"ort\" or \"tract\""
            )),
        }
    }
}

/// Engine settings shared by every model.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendOptions {
    /// Engine.
    pub kind: BackendKind,
    /// Intra-op threads (0 = engine default).
    pub threads: usize,
    /// Try the CUDA execution provider (ORT only; needs the `cuda` feature).
    pub use_gpu: bool,
    /// The ONNX Runtime shared library (`ORT_DYLIB_PATH`); `None` = the loader's default search.
    pub ort_library: Option<PathBuf>,
}

/// Load `info.path` into the chosen engine.
pub fn load(info: &ModelInfo, opts: &BackendOptions) -> Result<Box<dyn Backend>, ServeError> {
    match opts.kind {
        BackendKind::Ort => Ok(Box::new(ort_backend::OrtBackend::load(info, opts)?)),
        BackendKind::Tract => Ok(Box::new(tract_backend::TractBackend::load(
            info,
            opts.threads,
        )?)),
    }
}

/// Check an engine's output shape against [`ModelInfo::output_dims`] before it goes anywhere.
pub(crate) fn check_output(
    backend: &'static str,
    info: &ModelInfo,
    n: usize,
    shape: &[usize],
) -> Result<(), ServeError> {
    let want = info.output_dims(n as i64);
    let fits = shape.len() == want.len()
        && shape
            .iter()
            .zip(&want)
            .all(|(&s, &w)| w < 0 || s as i64 == w);
    if !fits {
        return Err(ServeError::Backend {
            backend,
            msg: format!(
                "output {:?} has shape {shape:?}, expected {want:?}",
                info.output.name
            ),
        });
    }
    Ok(())
}
