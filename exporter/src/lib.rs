//! ONNX export of medmae models without libtorch: a checkpoint directory (`model.safetensors` + `model.json`) becomes
//! a standard ONNX file (opset 17 or 18, f32, dynamic batch axis `N`, weights as initializers under their checkpoint
//! names) with the model card in `metadata_props`.
//!
//! Graphs: UNETR segmentation (`input` → `logits`), the MAE encoder (`input` → `features`, optionally
//! `hidden_state_{i}`) and the masked MAE reconstructor (`input` + `mask` → `pred`); see [`ExportKind`].

mod check;
mod error;
mod export;
mod graph;
mod layers;
mod mae;
mod metadata;
mod unetr;
mod vit;
mod weights;

#[cfg(test)]
mod testing;

use std::path::PathBuf;

pub use check::{check_file, check_model, CheckReport, SUPPORTED_OPS};
pub use error::{ExportError, Result};
pub use export::{build_model, export, write_model, ExportReport};
pub use graph::BATCH_DIM;
pub use metadata::{metadata_from_props, read_metadata, read_props};
pub use onnx_protobuf as onnx;
pub use weights::{WeightTensor, Weights};

/// Metadata keys written into every export (the contract lives in `spec`).
pub use spec::onnx::keys;
pub use spec::{ExportKind, OnnxMetadata};

/// Options of [`export`] and [`build_model`].
#[derive(Debug, Clone, PartialEq)]
pub struct ExportOptions {
    /// Graph to build; `None` = the model's natural export (UNETR → `Unetr`, MAE → `MaeEncoder`).
    pub kind: Option<ExportKind>,
    /// ONNX opset, 17 (default) or 18.
    pub opset: i64,
    /// MAE encoder only: also output every block's patch tokens as `hidden_state_{i}`.
    pub hidden_states: bool,
    /// Output file; `None` = `<checkpoint>/model.onnx`.
    pub output: Option<PathBuf>,
    /// Re-load the written file and validate it ([`check_file`]).
    pub check: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            kind: None,
            opset: 17,
            hidden_states: false,
            output: None,
            check: false,
        }
    }
}
