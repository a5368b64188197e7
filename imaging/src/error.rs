//! The typed error of the imaging crate: every variant names the file or field and what was expected.
//!
//! One message style everywhere: `FILE: what is wrong[, field]; expected …`. Each message names its file exactly
//! once and is complete on its own: no variant exposes an underlying error through `source()` *and* prints it, so
//! an `anyhow` chain (`{:#}`) never repeats an OS error, and callers must not wrap these errors in a context that
//! repeats the path.

use std::path::PathBuf;

/// Errors from reading, writing and transforming volumes.
#[derive(Debug, thiserror::Error)]
pub enum ImagingError {
    /// An I/O failure on a named file (the OS error is part of the message, not a `source()`).
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A file that is not of the format its name or caller says (e.g. a text file named `.nii.gz`).
    #[error("{path}: not a {format} file ({found})")]
    NotFormat {
        /// The file.
        path: PathBuf,
        /// The expected format, e.g. `NIfTI`.
        format: String,
        /// What was found instead.
        found: String,
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
    /// A size limit of a transform or of the inference path (values an array would hold), checked before
    /// allocating.
    #[error("{0}")]
    Limit(String),
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
    #[error("{header}: cannot open the data file {data} named by `ElementDataFile`: {error}")]
    MissingDataFile {
        /// The header file that names the data file.
        header: PathBuf,
        /// The data file.
        data: PathBuf,
        /// The underlying error.
        error: std::io::Error,
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

impl From<spec::FileError> for ImagingError {
    fn from(e: spec::FileError) -> Self {
        match e {
            spec::FileError::Io { path, source } => Self::Io {
                path,
                error: source,
            },
            spec::FileError::Format { path, msg } => Self::Format { path, msg },
        }
    }
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
    pub fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            error,
        }
    }
    /// A header field error for a file.
    pub fn field(
        path: impl Into<PathBuf>,
        field: impl Into<String>,
        msg: impl Into<String>,
    ) -> Self {
        Self::HeaderField {
            path: path.into(),
            field: field.into(),
            msg: msg.into(),
        }
    }
}

/// Result alias for the imaging crate.
pub type Result<T> = std::result::Result<T, ImagingError>;
