//! The file conventions every medmae crate shares: an error that names the file (an I/O failure or content that is
//! not what was expected), and durable, atomic writes (a temporary file in the target's folder, fsync, rename, fsync
//! of the folder), so a reader sees either the old file or the complete new one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A failure on a named file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// An I/O failure on a named file or folder.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
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
}

impl FileError {
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

/// Write `bytes` to `path` atomically and durably: a temporary `.NAME.PID-N.tmp` in the same folder is written and
/// fsynced, renamed over `path`, and the folder is fsynced. On failure the temporary file is removed and the error
/// names `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .ok_or_else(|| FileError::format(path, "not a file path"))?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(
        ".{}.{}-{n}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        FileError::io(path, e)
    })?;
    sync_dir(dir).map_err(|e| FileError::io(dir, e))
}

/// The folder holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Flush a folder's entries (fsync on the folder), making renames and creations inside it durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_atomically_and_names_the_target_on_failure() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let p = dir.join("a.txt");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.txt")]);
        let missing = dir.join("no/such/dir.txt");
        let err = write_atomic(&missing, b"x").unwrap_err();
        assert!(matches!(&err, FileError::Io { path, .. } if *path == missing));
        assert!(
            err.to_string()
                .starts_with(&format!("{}: ", missing.display())),
            "{err}"
        );
        let err = write_atomic(Path::new("/"), b"x").unwrap_err();
        assert_eq!(err.to_string(), "/: not a file path");
    }

    #[test]
    fn parent_of_a_bare_name_is_the_current_folder() {
        assert_eq!(parent_dir(Path::new("x.json")), Path::new("."));
        assert_eq!(parent_dir(Path::new("a/x.json")), Path::new("a"));
    }
}
