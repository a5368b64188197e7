//! Durable, atomic file writes: a temporary file in the target's directory is filled, flushed to disk (fsync), then
//! renamed over the target, and the directory is synced so that the rename itself survives a power loss. A reader
//! sees either the old file or the complete new one.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{ImagingError, Result};

/// Write a file atomically: `write` fills a temporary path in the same directory (ending in `suffix`, which some
/// writers use to pick compression), which is then synced and renamed over `path`.
pub(crate) fn write_atomic(
    path: &Path,
    suffix: &str,
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = spec::file::parent_dir(path);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".medmae-tmp-{}-{n}{suffix}", std::process::id()));
    let res = write(&tmp)
        .and_then(|()| sync(&tmp))
        .map_err(|e| name_target(e, &tmp, path))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| ImagingError::io(path, e)))
        .and_then(|()| spec::file::sync_dir(dir).map_err(|e| ImagingError::io(dir, e)));
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Errors about the temporary file name the target instead (the temporary name means nothing to a user).
fn name_target(e: ImagingError, tmp: &Path, target: &Path) -> ImagingError {
    match e {
        ImagingError::Io { path, error } if path == tmp => ImagingError::Io {
            path: target.into(),
            error,
        },
        ImagingError::Format { path, msg } if path == tmp => ImagingError::Format {
            path: target.into(),
            msg,
        },
        other => other,
    }
}

/// Write `bytes` to `path` durably and atomically (temporary file in the same folder, fsync, rename, folder sync):
/// a reader sees the old file or the complete new one.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(spec::file::write_atomic(path, bytes)?)
}

fn sync(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| ImagingError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_atomically_and_cleans_up_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_file_atomic(&p, b"one").unwrap();
        write_file_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let err = write_atomic(&p, ".bin", |tmp| {
            std::fs::write(tmp, b"partial").unwrap();
            Err(ImagingError::format(tmp, "failed on purpose"))
        });
        assert_eq!(
            err.unwrap_err().to_string(),
            format!("{}: failed on purpose", p.display())
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let missing = dir.path().join("no/such/dir.bin");
        let err = write_file_atomic(&missing, b"x").unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}: ", missing.display())),
            "{err}"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
