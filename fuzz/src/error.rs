//! Shim of `trainer::error` for compiling the trainer's config module without libtorch: the same variants and
//! constructors the config code uses (the libtorch and model-crate variants are left out).

use std::path::PathBuf;

/// Errors of the trainer's config code.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A config key that is unknown, missing or out of range.
    #[error("config key `{key}`: {msg}")]
    Config {
        /// Dotted key path.
        key: String,
        /// What was expected.
        msg: String,
    },
    /// An I/O failure on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file whose content is not what was expected.
    #[error("{path}: {msg}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// Data that does not fit the model.
    #[error("data: {0}")]
    Data(String),
    /// An error from the imaging crate.
    #[error(transparent)]
    Imaging(#[from] imaging::ImagingError),
    /// An invalid model config or card.
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
}

/// Result with [`TrainError`].
pub type Result<T> = std::result::Result<T, TrainError>;

impl TrainError {
    /// A config error for a dotted key path.
    pub fn config(key: impl Into<String>, msg: impl Into<String>) -> Self {
        Self::Config {
            key: key.into(),
            msg: msg.into(),
        }
    }
    /// An I/O error for a path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
    /// A format error for a file.
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Self::Format {
            path: path.into(),
            msg: msg.into(),
        }
    }
}
