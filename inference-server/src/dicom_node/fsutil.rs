//! Durable file operations for the spool (write to a temp file, fsync, rename, fsync the directory) and the
//! neutral identifiers that name series and instances on disk and in logs (hashes, never UIDs).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// Extension of spooled instances.
pub const INSTANCE_EXT: &str = "dcm";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The spool's name for a series: 16 hex digits of SHA-256 of its SeriesInstanceUID.
pub fn series_id(series_uid: &str) -> String {
    hex(&Sha256::digest(series_uid.as_bytes())[..8])
}

/// The spool's name for an instance: 32 hex digits of SHA-256 of its SOPInstanceUID.
pub fn instance_id(sop_instance_uid: &str) -> String {
    hex(&Sha256::digest(sop_instance_uid.as_bytes())[..16])
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A suffix unique within this spool: time in nanoseconds plus a process counter.
pub fn nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}{:x}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// fsync a directory so that renames and creations in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Create `dir` (and parents) and fsync its parent.
pub fn create_dir_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    match dir.parent() {
        Some(p) => sync_dir(p),
        None => Ok(()),
    }
}

/// Write `bytes` to `path` atomically and durably: temp file in the same directory, fsync, rename, fsync the dir.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", nonce()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Rename `from` to `to` and fsync both parent directories.
pub fn rename_durable(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    if let Some(p) = to.parent() {
        sync_dir(p)?;
    }
    match from.parent() {
        Some(p) if Some(p) != to.parent() => sync_dir(p),
        _ => Ok(()),
    }
}

/// True for a leftover temp file of [`write_atomic`].
pub fn is_temp(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.') && n.ends_with(".tmp"))
}

/// The spooled instance files of a directory (sorted), removing leftover temp files.
pub fn instance_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if is_temp(&p) {
            let _ = fs::remove_file(&p);
        } else if p.extension().is_some_and(|x| x == INSTANCE_EXT) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Total size of the regular files under `dir` (recursively; 0 if it does not exist).
pub fn tree_bytes(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_bytes(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// The subdirectories of `dir` by name (sorted; none if it does not exist).
pub fn subdirs(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_hashes() {
        // `printf 1.2.3 | sha256sum` = c47f5b18b8a430e6…
        assert_eq!(series_id("1.2.3"), "c47f5b18b8a430e6");
        assert_eq!(instance_id("1.2.3").len(), 32);
        assert_ne!(nonce(), nonce());
    }

    #[test]
    fn atomic_writes_leave_no_temp_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.dcm");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        fs::write(d.path().join(".b.dcm.x.tmp"), b"half").unwrap();
        assert_eq!(instance_files(d.path()).unwrap(), vec![p]);
        assert!(!d.path().join(".b.dcm.x.tmp").exists());
        assert_eq!(tree_bytes(d.path()), 3);
        create_dir_durable(&d.path().join("x/y")).unwrap();
        assert_eq!(subdirs(d.path()), vec!["x"]);
    }
}
