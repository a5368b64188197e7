//! The inputs `medmae info` summarises without loading a volume: a DICOM SEG (its segments) and a folder of image
//! files (one header line per file). A folder is a DICOM series only when it holds DICOM files.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use imaging::io::{FileFormat, LoadOptions};
use serde::Serialize;

use crate::load::format_name;

/// Print the segments of a DICOM SEG file.
pub(crate) fn seg(path: &Path, json: bool) -> Result<()> {
    let s = imaging::dicom::read_seg_summary(path)?;
    if json {
        #[derive(Serialize)]
        struct Out<'a> {
            path: String,
            format: &'static str,
            seg: &'a imaging::dicom::SegSummary,
        }
        let out = Out {
            path: path.display().to_string(),
            format: "dicom-seg",
            seg: &s,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("path        {}", path.display());
    println!("format      dicom-seg ({})", s.segmentation_type);
    println!("frames      {} of {} x {}", s.frames, s.columns, s.rows);
    println!(
        "references  series {}",
        s.referenced_series.as_deref().unwrap_or("-")
    );
    for g in &s.segments {
        println!(
            "segment {:<3} {:?}: {} frame(s), {} voxel(s) ({} / {}, {})",
            g.number, g.label, g.frames, g.voxels, g.category, g.property_type, g.algorithm_type
        );
    }
    Ok(())
}

/// One file of a folder listing.
#[derive(Debug, Serialize)]
struct Entry {
    file: String,
    format: Option<&'static str>,
    dims: Option<Vec<usize>>,
    dtype: Option<String>,
    spacing: Option<[f64; 3]>,
    error: Option<String>,
}

/// The image files directly inside `dir` (by extension), sorted by name.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && FileFormat::from_path(p).is_some())
        .collect();
    files.sort();
    Ok(files)
}

/// Print one header line per image file of a folder that is not a DICOM series.
pub(crate) fn folder(dir: &Path, json: bool, opts: &LoadOptions) -> Result<()> {
    let files = image_files(dir)?;
    if files.is_empty() {
        bail!(
            "{}: neither a DICOM series folder (no file with the DICM marker) nor a folder of .nii, .nii.gz, .mha \
             or .mhd images",
            dir.display()
        );
    }
    let entries: Vec<Entry> = files
        .iter()
        .map(|p| {
            let file = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match imaging::io::probe_with(p, opts) {
                Ok(h) => Entry {
                    file,
                    format: Some(format_name(h.format)),
                    dims: Some(h.dims),
                    dtype: Some(h.dtype.name().into()),
                    spacing: Some(h.spacing),
                    error: None,
                },
                Err(e) => Entry {
                    file,
                    format: None,
                    dims: None,
                    dtype: None,
                    spacing: None,
                    error: Some(e.to_string()),
                },
            }
        })
        .collect();
    if json {
        #[derive(Serialize)]
        struct Out<'a> {
            path: String,
            format: &'static str,
            files: &'a [Entry],
        }
        let out = Out {
            path: dir.display().to_string(),
            format: "folder",
            files: &entries,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{}: a folder of {} image file(s), not a DICOM series",
        dir.display(),
        entries.len()
    );
    for e in &entries {
        match (&e.dims, &e.error) {
            (Some(d), _) => {
                let dims: Vec<String> = d.iter().map(|n| n.to_string()).collect();
                let sp = e.spacing.unwrap_or_default();
                println!(
                    "{}  {}  {}  {}  spacing {:.4} {:.4} {:.4}",
                    e.file,
                    e.format.unwrap_or("-"),
                    dims.join("x"),
                    e.dtype.as_deref().unwrap_or("-"),
                    sp[0],
                    sp[1],
                    sp[2]
                );
            }
            (None, Some(err)) => println!("error: {err}"),
            (None, None) => {}
        }
    }
    Ok(())
}
