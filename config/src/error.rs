//! The config crate's typed error: a dotted key and what was expected, or the config file that could not be read.

use std::path::PathBuf;

/// Errors from reading, overriding and validating a config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A config key that is unknown, missing or out of range (`key` is the dotted path).
    #[error("config key `{key}`: {msg}")]
    Key {
        /// Dotted key path, e.g. `optim.base_lr`.
        key: String,
        /// What was expected.
        msg: String,
    },
    /// An I/O failure on a named file, or a file whose content is not what was expected (invalid YAML, a value
    /// that cannot be written).
    #[error(transparent)]
    File(#[from] spec::FileError),
}

impl ConfigError {
    /// An error for a dotted key path.
    pub fn key(key: impl Into<String>, msg: impl Into<String>) -> Self {
        Self::Key {
            key: key.into(),
            msg: msg.into(),
        }
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

impl From<spec::SpecError> for ConfigError {
    fn from(e: spec::SpecError) -> Self {
        Self::key(e.field, e.msg)
    }
}

/// Result with [`ConfigError`].
pub type Result<T> = std::result::Result<T, ConfigError>;
