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
    /// A file that ends before the data its header promises.
    #[error("{path}: truncated: expected at least {expected} bytes of {what}, found {found}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What was being read (header, voxel data, ...).
        what: String,
        /// Bytes needed.
        expected: u64,
        /// Bytes available.
        found: u64,
    },
    /// A header field that is missing or has an invalid value.
    #[error("{path}: header field `{field}`: {msg}")]
    HeaderField {
        /// The file.
        path: PathBuf,
        /// The field name as spelled by the format.
        field: String,
        /// What is wrong and what was expected.
        msg: String,
    },
    /// A data file named by a header that does not exist or cannot be opened.
    #[error("{header}: data file {data} is missing: {source}")]
    MissingDataFile {
        /// The header file that names the data file.
        header: PathBuf,
        /// The data file.
        data: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A compressed (gzip/zlib) stream that cannot be decoded.
    #[error("{path}: corrupt {codec} stream: {msg}")]
    Compression {
        /// The file.
        path: PathBuf,
        /// `gzip` or `zlib`.
        codec: String,
        /// The decoder's message.
        msg: String,
    },
    /// A size implied by a header that overflows or exceeds a configured limit.
    #[error("{path}: {msg}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The size and the limit.
        msg: String,
    },
    /// Per-channel files that cannot be stacked (different shape or geometry).
    #[error("channel files {first} and {other} do not match: {msg}")]
    ChannelMismatch {
        /// The first file (the reference).
        first: PathBuf,
        /// The file that differs.
        other: PathBuf,
        /// What differs.
        msg: String,
    },
}

impl ImagingError {
    /// A format error for a file.
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Self::Format {
            path: path.into(),
            msg: msg.into(),
        }
    }
    /// A config error for a field.
    pub fn config(field: impl Into<String>, msg: impl Into<String>) -> Self {
        Self::Config {
            field: field.into(),
            msg: msg.into(),
        }
    }
    /// An I/O error for a file.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias for the imaging crate.
pub type Result<T> = std::result::Result<T, ImagingError>;
