//! The trainer library's typed error: every variant names the file, field or tensor and what was expected.

use std::path::PathBuf;

/// Errors from configuring, running and checkpointing training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A config key that is unknown, missing or out of range (`key` is the dotted path).
    #[error("config key `{key}`: {msg}")]
    Config {
        /// Dotted key path, e.g. `optim.base_lr`.
        key: String,
        /// What was expected.
        msg: String,
    },
    /// An I/O failure on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
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
    /// Data that does not fit the model (shapes, label values, channels).
    #[error("data: {0}")]
    Data(String),
    /// A libtorch failure.
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
    /// An error from the model crate.
    #[error(transparent)]
    Model(#[from] models::ModelError),
    /// An error from the imaging crate.
    #[error(transparent)]
    Imaging(#[from] imaging::ImagingError),
    /// A data-parallel failure: rendezvous, a collective (dead or missing peer, timeout), or ranks that disagree.
    /// The message names this process's rank and the phase.
    #[error("distributed: {0}")]
    Dist(String),
    /// An invalid model config or card.
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
}

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

impl From<config::ConfigError> for TrainError {
    fn from(e: config::ConfigError) -> Self {
        match e {
            config::ConfigError::Key { key, msg } => Self::Config { key, msg },
            config::ConfigError::Io { path, source } => Self::Io { path, source },
            config::ConfigError::Format { path, msg } => Self::Format { path, msg },
        }
    }
}

/// Result alias for the trainer library.
pub type Result<T> = std::result::Result<T, TrainError>;
