//! Gathering the files of a DICOM input: a directory (walked recursively), a `.zip` archive, one file, or a list.
//!
//! Every file is read into memory with a size cap, so a zip bomb or a huge stray file fails with an error instead of
//! exhausting memory.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{ImagingError, Result};

use super::DicomOptions;

/// One candidate DICOM file: a display name (path, or `archive.zip!entry`) and its bytes.
pub(crate) struct SourceFile {
    /// Name used in errors and listings.
    pub name: PathBuf,
    /// The whole file.
    pub bytes: Vec<u8>,
}

/// True if a path names a zip archive (by extension).
fn is_zip(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("zip"))
}

/// True if the first bytes of a file carry the Part 10 `DICM` marker (after the 128-byte preamble, or at the start
/// when the preamble was stripped): what [`super::meta::parse`] accepts.
pub(crate) fn has_dicom_marker(head: &[u8]) -> bool {
    head.get(128..132) == Some(b"DICM") || head.get(..4) == Some(b"DICM")
}

/// The marker test on a file's first 132 bytes (false if it cannot be read).
pub(crate) fn is_dicom_file(path: &Path) -> bool {
    let mut head = Vec::with_capacity(132);
    std::fs::File::open(path)
        .and_then(|f| f.take(132).read_to_end(&mut head))
        .is_ok_and(|_| has_dicom_marker(&head))
}

/// True if a directory (searched like [`gather`] walks it, stopping at the first hit) holds a DICOM file: what tells
/// a series folder from a folder of other images.
pub(crate) fn dir_has_dicom(dir: &Path) -> bool {
    fn search(dir: &Path, depth: usize) -> bool {
        if depth > 8 {
            return false;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        entries.flatten().any(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            match entry.file_type() {
                _ if skip_in_dir(&name) => false,
                Ok(ft) if ft.is_dir() => search(&path, depth + 1),
                Ok(ft) if ft.is_file() => is_dicom_file(&path),
                _ => false,
            }
        })
    }
    search(dir, 0)
}

/// Files skipped when walking a directory: hidden files and the usual non-DICOM companions.
fn skip_in_dir(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    name.starts_with('.')
        || lower == "dicomdir"
        || lower.ends_with(".txt")
        || lower.ends_with(".json")
        || lower.ends_with(".md")
        || lower == "thumbs.db"
}

/// Collect the files of an input path (directory, zip, or single file).
pub(crate) fn gather(input: &Path, opts: &DicomOptions) -> Result<Vec<SourceFile>> {
    let meta = std::fs::metadata(input).map_err(|e| ImagingError::io(input, e))?;
    let mut out = Vec::new();
    let mut total = 0u64;
    if meta.is_dir() {
        let mut paths = Vec::new();
        walk(input, &mut paths, 0, opts)?;
        paths.sort();
        for p in paths {
            push_file(&p, &mut out, &mut total, opts)?;
        }
    } else if is_zip(input) {
        read_zip(input, &mut out, &mut total, opts)?;
    } else {
        push_file(input, &mut out, &mut total, opts)?;
    }
    if out.is_empty() {
        return Err(ImagingError::format(
            input,
            "no DICOM files found (expected a directory, a .zip or a file)",
        ));
    }
    Ok(out)
}

/// Collect an explicit list of files (each may also be a zip).
pub(crate) fn gather_list(files: &[PathBuf], opts: &DicomOptions) -> Result<Vec<SourceFile>> {
    let mut out = Vec::new();
    let mut total = 0u64;
    for f in files {
        if is_zip(f) {
            read_zip(f, &mut out, &mut total, opts)?;
        } else {
            push_file(f, &mut out, &mut total, opts)?;
        }
    }
    if out.is_empty() {
        return Err(ImagingError::config(
            "files",
            "an empty list of DICOM files",
        ));
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, depth: usize, opts: &DicomOptions) -> Result<()> {
    if depth > 8 {
        return Err(ImagingError::format(
            dir,
            "directories nested deeper than 8 levels",
        ));
    }
    let entries = std::fs::read_dir(dir).map_err(|e| ImagingError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ImagingError::io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if skip_in_dir(&name) {
            continue;
        }
        let ft = entry.file_type().map_err(|e| ImagingError::io(&path, e))?;
        if ft.is_dir() {
            walk(&path, out, depth + 1, opts)?;
        } else if ft.is_file() {
            // Every other file is read: a stray or broken file in a series folder is an error naming it, never
            // silently left out (a dropped end slice would shorten the volume unnoticed).
            out.push(path);
            if out.len() > opts.max_files {
                return Err(ImagingError::TooLarge {
                    path: dir.into(),
                    msg: format!(
                        "more than {} files (DicomOptions::max_files)",
                        opts.max_files
                    ),
                });
            }
        }
    }
    Ok(())
}

fn check_total(path: &Path, total: &mut u64, add: u64, opts: &DicomOptions) -> Result<()> {
    *total = total.saturating_add(add);
    if *total > opts.max_total_bytes {
        return Err(ImagingError::TooLarge {
            path: path.into(),
            msg: format!(
                "input exceeds {} bytes (DicomOptions::max_total_bytes)",
                opts.max_total_bytes
            ),
        });
    }
    Ok(())
}

fn push_file(
    path: &Path,
    out: &mut Vec<SourceFile>,
    total: &mut u64,
    opts: &DicomOptions,
) -> Result<()> {
    let len = std::fs::metadata(path)
        .map_err(|e| ImagingError::io(path, e))?
        .len();
    check_total(path, total, len, opts)?;
    let bytes = std::fs::read(path).map_err(|e| ImagingError::io(path, e))?;
    out.push(SourceFile {
        name: path.into(),
        bytes,
    });
    Ok(())
}

/// Collect files held in memory (e.g. streamed by a client); entries that are zip archives are expanded.
pub(crate) fn gather_memory(
    files: Vec<(PathBuf, Vec<u8>)>,
    opts: &DicomOptions,
) -> Result<Vec<SourceFile>> {
    if files.len() > opts.max_files {
        return Err(ImagingError::TooLarge {
            path: "files".into(),
            msg: format!(
                "{} files, more than {} (DicomOptions::max_files)",
                files.len(),
                opts.max_files
            ),
        });
    }
    let mut out = Vec::new();
    let mut total = 0u64;
    for (name, bytes) in files {
        if bytes.starts_with(b"PK\x03\x04") {
            read_zip_from(
                &name,
                std::io::Cursor::new(bytes),
                &mut out,
                &mut total,
                opts,
            )?;
        } else {
            check_total(&name, &mut total, bytes.len() as u64, opts)?;
            out.push(SourceFile { name, bytes });
        }
    }
    if out.is_empty() {
        return Err(ImagingError::config("files", "no DICOM files were given"));
    }
    Ok(out)
}

fn read_zip(
    path: &Path,
    out: &mut Vec<SourceFile>,
    total: &mut u64,
    opts: &DicomOptions,
) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| ImagingError::io(path, e))?;
    read_zip_from(path, file, out, total, opts)
}

fn read_zip_from<R: Read + std::io::Seek>(
    path: &Path,
    reader: R,
    out: &mut Vec<SourceFile>,
    total: &mut u64,
    opts: &DicomOptions,
) -> Result<()> {
    let mut archive = zip::ZipArchive::new(reader)
        .map_err(|e| ImagingError::format(path, format!("not a readable zip archive: {e}")))?;
    if archive.len() > opts.max_files {
        return Err(ImagingError::TooLarge {
            path: path.into(),
            msg: format!(
                "{} entries, more than {} (DicomOptions::max_files)",
                archive.len(),
                opts.max_files
            ),
        });
    }
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| ImagingError::format(path, format!("zip entry {i}: {e}")))?;
        let entry_name = entry
            .name()
            .map_err(|e| {
                ImagingError::format(path, format!("zip entry {}: unreadable name: {e}", i + 1))
            })?
            .to_string();
        let base = entry_name
            .rsplit('/')
            .next()
            .unwrap_or(&entry_name)
            .to_string();
        if entry.is_dir()
            || base.is_empty()
            || skip_in_dir(&base)
            || entry_name.starts_with("__MACOSX/")
        {
            continue;
        }
        let name = if opts.neutral_names {
            PathBuf::from(format!("{}!entry {}", path.display(), i + 1))
        } else {
            PathBuf::from(format!("{}!{}", path.display(), entry_name))
        };
        // The declared size may lie: cap the bytes actually inflated as well.
        let remaining = opts.max_total_bytes.saturating_sub(*total);
        let mut bytes = Vec::new();
        (&mut entry)
            .take(remaining.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| ImagingError::format(&name, format!("cannot inflate zip entry: {e}")))?;
        check_total(&name, total, bytes.len() as u64, opts)?;
        out.push(SourceFile { name, bytes });
    }
    Ok(())
}
