//! Errors of the exporter: each names the file, tensor or field at fault and what was expected.

use std::path::PathBuf;

/// Everything that can go wrong between a checkpoint directory and a written `.onnx` file.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `model.json` is not valid JSON, does not match `spec::ModelCard`, or fails validation.
    #[error("bad model card {path}: {source}")]
    Card {
        /// The `model.json` path.
        path: PathBuf,
        /// The field and what was expected.
        source: spec::SpecError,
    },
    /// `model.safetensors` is not a readable safetensors file.
    #[error("bad checkpoint {path}: {msg}")]
    Safetensors {
        /// The checkpoint path.
        path: PathBuf,
        /// What the safetensors reader said.
        msg: String,
    },
    /// A tensor has a dtype the exporter cannot widen to f32.
    #[error(
        "checkpoint {path}: tensor `{name}` has dtype {dtype}; expected F32, F16, BF16 or F64"
    )]
    Dtype {
        /// The checkpoint path.
        path: PathBuf,
        /// Tensor name.
        name: String,
        /// The dtype found.
        dtype: String,
    },
    /// The checkpoint's tensors differ from `spec::expected_weights` of its model card.
    #[error("checkpoint {path} does not match its model card: {}", mismatch_summary(.missing, .unexpected, .misshaped))]
    Mismatch {
        /// The checkpoint path.
        path: PathBuf,
        /// Expected tensors that are absent.
        missing: Vec<String>,
        /// Tensors the model config does not have (known-unused keys excluded).
        unexpected: Vec<String>,
        /// Tensors whose shape differs: (name, expected, got).
        misshaped: Vec<(String, Vec<usize>, Vec<usize>)>,
    },
    /// The requested export does not exist for this model, or an option is out of range.
    #[error("unsupported export: {0}")]
    Unsupported(String),
    /// The graph builder was asked for something inconsistent (a bug in the exporter, not in the input).
    #[error("internal graph construction error: {0}")]
    Graph(String),
    /// Protobuf encoding or decoding failed.
    #[error("{path}: protobuf: {msg}")]
    Protobuf {
        /// The `.onnx` path.
        path: PathBuf,
        /// What the protobuf library said.
        msg: String,
    },
    /// A written or loaded model failed structural validation.
    #[error("invalid ONNX model {path}: {msg}")]
    Check {
        /// The `.onnx` path.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// `metadata_props` of an `.onnx` file are missing or malformed.
    #[error("medmae metadata of {path}: {msg}")]
    Metadata {
        /// The `.onnx` path.
        path: PathBuf,
        /// Which key and what was expected.
        msg: String,
    },
}

/// Result with [`ExportError`].
pub type Result<T, E = ExportError> = std::result::Result<T, E>;

impl ExportError {
    /// An I/O error on `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ExportError::Io {
            path: path.into(),
            source,
        }
    }
}

const LIST_LIMIT: usize = 8;

fn list(names: &[String]) -> String {
    let mut s = names
        .iter()
        .take(LIST_LIMIT)
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > LIST_LIMIT {
        s.push_str(&format!(" and {} more", names.len() - LIST_LIMIT));
    }
    s
}

fn mismatch_summary(
    missing: &[String],
    unexpected: &[String],
    misshaped: &[(String, Vec<usize>, Vec<usize>)],
) -> String {
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!(
            "{} missing tensor(s): {}",
            missing.len(),
            list(missing)
        ));
    }
    if !unexpected.is_empty() {
        parts.push(format!(
            "{} unexpected tensor(s): {}",
            unexpected.len(),
            list(unexpected)
        ));
    }
    if !misshaped.is_empty() {
        let shown: Vec<String> = misshaped
            .iter()
            .take(LIST_LIMIT)
            .map(|(n, e, g)| format!("`{n}` expected shape {e:?}, got {g:?}"))
            .collect();
        let more = if misshaped.len() > LIST_LIMIT {
            format!(" and {} more", misshaped.len() - LIST_LIMIT)
        } else {
            String::new()
        };
        parts.push(format!(
            "{} tensor(s) with the wrong shape: {}{more}",
            misshaped.len(),
            shown.join("; ")
        ));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatch_message_names_everything_and_truncates() {
        let missing: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
        let e = ExportError::Mismatch {
            path: "ck/model.safetensors".into(),
            missing,
            unexpected: vec!["extra.weight".into()],
            misshaped: vec![("a.weight".into(), vec![2, 3], vec![3, 2])],
        };
        let s = e.to_string();
        assert!(
            s.starts_with("checkpoint ck/model.safetensors does not match its model card"),
            "{s}"
        );
        assert!(s.contains("10 missing tensor(s): `m0`, `m1`"), "{s}");
        assert!(s.contains("`m7` and 2 more"), "{s}");
        assert!(!s.contains("`m8`"), "{s}");
        assert!(s.contains("1 unexpected tensor(s): `extra.weight`"), "{s}");
        assert!(
            s.contains("`a.weight` expected shape [2, 3], got [3, 2]"),
            "{s}"
        );
    }
}
