//! The typed error of the imaging crate: every variant names the file or field and what was expected.

use std::path::PathBuf;

/// Errors from reading, writing and transforming volumes.
#[derive(Debug, thiserror::Error)]
pub enum ImagingError {
    /// An I/O failure on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file whose content does not match its format.
    #[error("{path}: {msg}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong and what was expected.
        msg: String,
    },
    /// A file format or element type that is not supported.
    #[error("{path}: unsupported {what}")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What is unsupported.
        what: String,
    },
    /// A configuration value that is missing or out of range.
    #[error("config field `{field}`: {msg}")]
    Config {
        /// The field (dotted path).
        field: String,
        /// What was expected.
        msg: String,
    },
    /// Arrays whose shapes do not fit together.
    #[error("shape mismatch: {0}")]
    Shape(String),
}

impl ImagingError {
    /// A format error for a file.
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Self::Format { path: path.into(), msg: msg.into() }
    }
    /// A config error for a field.
    pub fn config(field: impl Into<String>, msg: impl Into<String>) -> Self {
        Self::Config { field: field.into(), msg: msg.into() }
    }
    /// An I/O error for a file.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}

/// Result alias for the imaging crate.
pub type Result<T> = std::result::Result<T, ImagingError>;
