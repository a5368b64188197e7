//! The trainer library's typed error: every variant names the file, field or tensor and what was expected.

use std::path::PathBuf;

/// Errors from configuring, running and checkpointing training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A config key that is unknown, missing or out of range (named by its dotted path), or an unreadable config.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// An I/O failure on a named file or directory, or a file whose content is not what was expected.
    #[error(transparent)]
    File(#[from] spec::FileError),
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
        Self::Config(config::ConfigError::key(key, msg))
    }
    /// An I/O error for a path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::File(spec::FileError::io(path, source))
    }
    /// A format error for a file.
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Self::File(spec::FileError::format(path, msg))
    }
}

/// Result alias for the trainer library.
pub type Result<T> = std::result::Result<T, TrainError>;
