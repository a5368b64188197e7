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

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

pub use check::{check_file, check_model, CheckReport, SUPPORTED_OPS};
pub use error::{ExportError, Result};
pub use export::{build_model, export, write_model, ExportReport};
pub use graph::BATCH_DIM;
pub use metadata::{read_metadata, read_props, ExportMetadata};
pub use onnx_protobuf as onnx;
pub use weights::{WeightTensor, Weights};

/// Metadata keys written into every export.
pub mod keys {
    pub use crate::metadata::{
        KEY_CARD, KEY_CHECKPOINT_SHA256, KEY_INFERENCE, KEY_IN_CHANNELS, KEY_KIND, KEY_LABELS,
        KEY_OUT_CHANNELS, KEY_PREPROCESSING, KEY_ROI_SIZE, KEY_SPATIAL_DIMS, KEY_VERSION,
    };
}

/// Which graph to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportKind {
    /// UNETR segmentation: `input` `[N, C, *roi]` → `logits` `[N, K, *roi]`.
    Unetr,
    /// MAE encoder: `input` → `features` `[N, L, E]` (final-normed patch tokens, no masking).
    MaeEncoder,
    /// MAE reconstructor: `input` + `mask` `[N, L]` (float, 1 = removed) → `pred` `[N, L, head_dim]`.
    MaeReconstructor,
}

impl ExportKind {
    /// The CLI / metadata spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ExportKind::Unetr => "unetr",
            ExportKind::MaeEncoder => "mae-encoder",
            ExportKind::MaeReconstructor => "mae-reconstructor",
        }
    }

    /// Graph input names, in order.
    pub fn input_names(self) -> Vec<String> {
        match self {
            ExportKind::MaeReconstructor => vec!["input".into(), "mask".into()],
            _ => vec!["input".into()],
        }
    }

    /// Names of the main graph outputs (an encoder export may add `hidden_state_{i}` after them).
    pub fn output_names(self) -> Vec<String> {
        vec![match self {
            ExportKind::Unetr => "logits",
            ExportKind::MaeEncoder => "features",
            ExportKind::MaeReconstructor => "pred",
        }
        .into()]
    }
}

impl fmt::Display for ExportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExportKind {
    type Err = ExportError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "unetr" => Ok(ExportKind::Unetr),
            "mae-encoder" => Ok(ExportKind::MaeEncoder),
            "mae-reconstructor" => Ok(ExportKind::MaeReconstructor),
            other => Err(ExportError::Unsupported(format!(
                "kind {other:?} (expected unetr, mae-encoder or mae-reconstructor)"
            ))),
        }
    }
}

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
