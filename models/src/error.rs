//! The crate's error type: config, input-shape, checkpoint and libtorch errors, each naming what was expected.

use std::path::PathBuf;

/// Everything that can go wrong building, running or loading a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The architecture config is invalid.
    #[error(transparent)]
    Config(#[from] spec::SpecError),
    /// A tensor handed to the model has the wrong shape or type.
    #[error("{what}: expected {expected}, got {got}")]
    Shape {
        /// Which input or argument.
        what: String,
        /// The expected shape or type.
        expected: String,
        /// The actual shape or type.
        got: String,
    },
    /// A checkpoint file cannot be read or written.
    #[error("checkpoint {path}: {msg}")]
    CheckpointFile {
        /// The file.
        path: PathBuf,
        /// What failed.
        msg: String,
    },
    /// A tensor of a checkpoint does not fit the model.
    #[error("checkpoint {path}: tensor `{key}`: {msg}")]
    CheckpointKey {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        key: String,
        /// What was expected.
        msg: String,
    },
    /// An import needs an option the checkpoint cannot provide, or an option contradicts the checkpoint.
    #[error("import option `{option}`: {msg}")]
    ImportOption {
        /// The option (`img_size`, `num_heads`, …).
        option: String,
        /// What is needed or wrong.
        msg: String,
    },
    /// A libtorch operation failed.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// Result with [`ModelError`].
pub type Result<T> = std::result::Result<T, ModelError>;

/// A shape error for `what`, formatting the expected and actual values with `Debug`.
pub(crate) fn shape_err(
    what: &str,
    expected: impl std::fmt::Debug,
    got: impl std::fmt::Debug,
) -> ModelError {
    ModelError::Shape {
        what: what.to_string(),
        expected: format!("{expected:?}"),
        got: format!("{got:?}"),
    }
}
