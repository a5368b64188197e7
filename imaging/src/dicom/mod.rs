//! DICOM series input: a directory, a `.zip` or a list of files → one [`Volume`] in RAS, like NIfTI.
//!
//! Files are grouped by SeriesInstanceUID, sorted along the slice normal by ImagePositionPatient (never by file name
//! or InstanceNumber), checked to form one regular grid (size, orientation, spacing, no gaps or duplicates), decoded
//! with `dicom-pixeldata` (uncompressed transfer syntaxes; compressed ones are refused by name) and rescaled with
//! RescaleSlope/Intercept. Patient-identifying attributes are never read.

mod bounds;
mod geometry;
mod meta;
mod patient;
mod seg;
mod seg_read;
mod source;
mod uid;

use std::path::{Path, PathBuf};

use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder};
use ndarray::Array4;

use crate::error::{ImagingError, Result};
use crate::volume::Volume;

use meta::SliceMeta;
use source::SourceFile;

pub use patient::PatientContext;
pub use seg::{encode_seg, write_seg, Code, MaskLayout, SegOptions, Segment, SEGMENTATION_STORAGE};
pub use seg_read::{is_seg_file, read_seg_summary, SegSummary, SegmentSummary};
pub use uid::new_uid;

/// Limits for reading DICOM input from untrusted sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DicomOptions {
    /// Most files (directory entries or zip entries) considered.
    pub max_files: usize,
    /// Most bytes read in total (after zip inflation).
    pub max_total_bytes: u64,
    /// Most voxels in the resulting volume.
    pub max_voxels: u64,
    /// Name zip entries by their position (`archive!entry 3`) instead of their stored path, so that errors carry no
    /// file names from untrusted input (the server sets this).
    pub neutral_names: bool,
}

impl Default for DicomOptions {
    fn default() -> Self {
        Self {
            max_files: 20_000,
            max_total_bytes: 8 << 30,
            max_voxels: crate::io::DEFAULT_MAX_VOXELS,
            neutral_names: false,
        }
    }
}

/// A summary of one series found in the input (no patient-identifying attributes).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SeriesInfo {
    /// SeriesInstanceUID.
    pub series_uid: String,
    /// SeriesNumber, if present.
    pub series_number: Option<i64>,
    /// Modality (CT, MR, SEG, ...).
    pub modality: String,
    /// SeriesDescription.
    pub description: String,
    /// Number of files in the series.
    pub files: usize,
    /// Number of files holding image pixels.
    pub images: usize,
    /// Image size `(columns, rows)` of the first image, if any.
    pub size: Option<(u16, u16)>,
    /// Transfer syntax of the first file, with its name.
    pub transfer_syntax: String,
}

/// A source image of a series, in slice order (what a DICOM SEG references).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SourceInstance {
    /// SOPClassUID.
    pub sop_class_uid: String,
    /// SOPInstanceUID.
    pub sop_instance_uid: String,
}

/// A decoded series: the volume plus the identifiers a derived object (DICOM SEG) must reference.
#[derive(Debug, Clone)]
pub struct DicomSeries {
    /// Voxel data `(1, columns, rows, slices)` with the RAS affine; slice `k` is `instances[k]`.
    pub volume: Volume,
    /// The series summary.
    pub info: SeriesInfo,
    /// StudyInstanceUID.
    pub study_uid: String,
    /// FrameOfReferenceUID, if present.
    pub frame_of_reference: Option<String>,
    /// The source images in slice order.
    pub instances: Vec<SourceInstance>,
    /// Patient/study identification, only for copying into derived objects (redacted in `Debug`).
    pub patient: PatientContext,
}

/// True if a path looks like DICOM input: a directory holding at least one file with the `DICM` marker (a folder of
/// NIfTI files is not a series), a `.zip`, a `.dcm` file, or a file with the marker.
pub fn looks_like_dicom(path: &Path) -> bool {
    if path.is_dir() {
        return source::dir_has_dicom(path);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name.ends_with(".zip") || name.ends_with(".dcm") {
        return true;
    }
    source::is_dicom_file(path)
}

/// List the series in a directory, zip or file.
pub fn list_series(input: &Path) -> Result<Vec<SeriesInfo>> {
    let files = source::gather(input, &DicomOptions::default())?;
    Ok(group(&scan(&files)?)
        .into_iter()
        .map(|(info, _)| info)
        .collect())
}

/// The series of a directory or file with the files that hold each, in order of first appearance (for a zip input
/// the names are `archive!entry`, not paths). DICOMDIR objects are left out.
pub fn series_files(input: &Path) -> Result<Vec<(SeriesInfo, Vec<PathBuf>)>> {
    let files = source::gather(input, &DicomOptions::default())?;
    Ok(group(&scan(&files)?)
        .into_iter()
        .map(|(info, members)| {
            let names = members
                .iter()
                .filter_map(|m| files.get(m.source).map(|f| f.name.clone()))
                .collect();
            (info, names)
        })
        .collect())
}

/// Read one series as a volume; `series` picks a SeriesInstanceUID (or SeriesNumber) when the input holds several.
pub fn read_series(input: &Path, series: Option<&str>) -> Result<Volume> {
    Ok(read_series_with(input, series, &DicomOptions::default())?.volume)
}

/// Read one series with explicit limits, keeping the identifiers of its source images.
pub fn read_series_with(
    input: &Path,
    series: Option<&str>,
    opts: &DicomOptions,
) -> Result<DicomSeries> {
    let files = source::gather(input, opts)?;
    decode_series(input, &files, series, opts)
}

/// Read one series from an explicit list of files (each may be a `.zip`).
pub fn read_series_files(
    files: &[PathBuf],
    series: Option<&str>,
    opts: &DicomOptions,
) -> Result<DicomSeries> {
    let gathered = source::gather_list(files, opts)?;
    let label = files.first().cloned().unwrap_or_default();
    decode_series(&label, &gathered, series, opts)
}

/// Read one series from files held in memory (name, bytes), e.g. streamed by a client; zip archives are expanded.
pub fn read_series_memory(
    files: Vec<(PathBuf, Vec<u8>)>,
    series: Option<&str>,
    opts: &DicomOptions,
) -> Result<DicomSeries> {
    let label = files.first().map(|f| f.0.clone()).unwrap_or_default();
    let gathered = source::gather_memory(files, opts)?;
    decode_series(&label, &gathered, series, opts)
}

/// Parse the headers of all files; DICOMDIR objects are dropped.
fn scan(files: &[SourceFile]) -> Result<Vec<SliceMeta>> {
    let mut out = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let obj = meta::parse(&f.name, &f.bytes, true)?;
        let m = meta::extract(&f.name, i, &obj)?;
        if !m.is_directory() {
            out.push(m);
        }
    }
    Ok(out)
}

/// Group slices by SeriesInstanceUID, in order of first appearance.
fn group(slices: &[SliceMeta]) -> Vec<(SeriesInfo, Vec<SliceMeta>)> {
    let mut groups: Vec<(SeriesInfo, Vec<SliceMeta>)> = Vec::new();
    for s in slices {
        let pos = match groups
            .iter()
            .position(|(i, _)| i.series_uid == s.series_uid)
        {
            Some(p) => p,
            None => {
                groups.push((
                    SeriesInfo {
                        series_uid: s.series_uid.clone(),
                        series_number: s.series_number,
                        modality: s.modality.clone(),
                        description: s.series_description.clone(),
                        files: 0,
                        images: 0,
                        size: None,
                        transfer_syntax: meta::syntax_name(&s.transfer_syntax),
                    },
                    Vec::new(),
                ));
                groups.len() - 1
            }
        };
        let (info, members) = &mut groups[pos];
        info.files += 1;
        if s.has_pixels {
            info.images += 1;
            info.size.get_or_insert((s.cols, s.rows));
        }
        members.push(s.clone());
    }
    groups
}

/// Choose the requested series (by UID or SeriesNumber), or the only one.
fn choose(
    input: &Path,
    mut groups: Vec<(SeriesInfo, Vec<SliceMeta>)>,
    series: Option<&str>,
) -> Result<(SeriesInfo, Vec<SliceMeta>)> {
    let listing = |gs: &[(SeriesInfo, Vec<SliceMeta>)]| {
        gs.iter()
            .map(|(i, _)| {
                let num = i
                    .series_number
                    .map(|n| format!(" #{n}"))
                    .unwrap_or_default();
                format!("{}{num} ({} {} files)", i.series_uid, i.modality, i.files)
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let pos = match series {
        Some(want) => groups
            .iter()
            .position(|(i, _)| {
                i.series_uid == want || i.series_number.is_some_and(|n| n.to_string() == want)
            })
            .ok_or_else(|| {
                ImagingError::format(
                    input,
                    format!("no series `{want}`; the input holds: {}", listing(&groups)),
                )
            })?,
        None if groups.len() == 1 => 0,
        None => {
            return Err(ImagingError::format(
                input,
                format!(
                    "{} series found; pick one with --series: {}",
                    groups.len(),
                    listing(&groups)
                ),
            ))
        }
    };
    Ok(groups.swap_remove(pos))
}

fn decode_series(
    input: &Path,
    files: &[SourceFile],
    series: Option<&str>,
    opts: &DicomOptions,
) -> Result<DicomSeries> {
    let (info, slices) = choose(input, group(&scan(files)?), series)?;
    if let Some(s) = slices.iter().find(|s| !s.has_pixels) {
        return Err(ImagingError::format(
            &s.name,
            format!(
                "non-image object (SOPClassUID {}) in series {}; expected image slices only",
                s.sop_class_uid, info.series_uid
            ),
        ));
    }
    let g = geometry::grid(&slices)?;
    let first = &slices[g.order[0]];
    let (nx, ny, nz) = (first.cols as usize, first.rows as usize, g.order.len());
    let voxels = (nx as u64) * (ny as u64) * (nz as u64);
    if voxels == 0 || voxels > opts.max_voxels {
        return Err(ImagingError::TooLarge {
            path: input.into(),
            msg: format!(
                "{nx}x{ny}x{nz} voxels; expected 1..={} (DicomOptions::max_voxels)",
                opts.max_voxels
            ),
        });
    }
    if first.samples != 1 {
        return Err(ImagingError::Unsupported {
            path: first.name.clone(),
            what: format!(
                "SamplesPerPixel {} (colour images); expected 1",
                first.samples
            ),
        });
    }
    for &i in &g.order {
        check_slice(&slices[i], &files[slices[i].source])?;
    }
    let patient =
        PatientContext::from_object(&meta::parse(&first.name, &files[first.source].bytes, true)?);
    let mut data = Array4::<f32>::zeros((1, nx, ny, nz));
    let mut instances = Vec::with_capacity(nz);
    for (k, &i) in g.order.iter().enumerate() {
        let s = &slices[i];
        let values = decode_slice(s, &files[s.source])?;
        for r in 0..ny {
            for c in 0..nx {
                data[[0, c, r, k]] = (values[r * nx + c] * s.slope + s.intercept) as f32;
            }
        }
        instances.push(SourceInstance {
            sop_class_uid: s.sop_class_uid.clone(),
            sop_instance_uid: s.sop_instance_uid.clone(),
        });
    }
    Ok(DicomSeries {
        volume: Volume::new(data, g.affine),
        study_uid: first.study_uid.clone(),
        frame_of_reference: first.frame_of_reference.clone(),
        info,
        instances,
        patient,
    })
}

/// Only uncompressed transfer syntaxes are decoded.
fn check_syntax(s: &SliceMeta) -> Result<()> {
    if !meta::NATIVE_SYNTAXES.contains(&s.transfer_syntax.as_str()) {
        return Err(ImagingError::Unsupported {
            path: s.name.clone(),
            what: format!(
                "transfer syntax {}; only uncompressed syntaxes are decoded (convert with e.g. `gdcmconv --raw`)",
                meta::syntax_name(&s.transfer_syntax)
            ),
        });
    }
    Ok(())
}

/// What a slice must pass before the volume is allocated from the header sizes: a decodable transfer syntax and a
/// file long enough for one frame of the declared rows x columns x samples x bits allocated (a short file must not
/// make the reader allocate the volume its header merely declares).
fn check_slice(s: &SliceMeta, file: &SourceFile) -> Result<()> {
    check_syntax(s)?;
    if s.bits_allocated == 0 {
        return Err(ImagingError::HeaderField {
            path: s.name.clone(),
            field: "BitsAllocated".into(),
            msg: "missing or 0 in an image; expected 1, 8, 16, 32 or 64".into(),
        });
    }
    let bits =
        u64::from(s.rows) * u64::from(s.cols) * u64::from(s.samples) * u64::from(s.bits_allocated);
    let (needed, found) = (bits.div_ceil(8), file.bytes.len() as u64);
    if found < needed {
        return Err(ImagingError::Truncated {
            path: s.name.clone(),
            what: format!(
                "pixel data ({} x {} pixels, {} bits allocated)",
                s.cols, s.rows, s.bits_allocated
            ),
            expected: needed,
            found,
        });
    }
    Ok(())
}

/// Decode one slice's stored values (before rescaling), checking the transfer syntax and the value count.
fn decode_slice(s: &SliceMeta, file: &SourceFile) -> Result<Vec<f64>> {
    check_syntax(s)?;
    let obj = meta::parse(&s.name, &file.bytes, false)?;
    let decoded = obj
        .decode_pixel_data()
        .map_err(|e| ImagingError::format(&s.name, format!("cannot decode pixel data: {e}")))?;
    let raw = ConvertOptions::new().with_modality_lut(ModalityLutOption::None);
    let values: Vec<f64> = decoded
        .to_vec_with_options(&raw)
        .map_err(|e| ImagingError::format(&s.name, format!("cannot convert pixel data: {e}")))?;
    let expected = s.rows as usize * s.cols as usize;
    if values.len() < expected {
        return Err(ImagingError::Truncated {
            path: s.name.clone(),
            what: "pixel data".into(),
            expected: expected as u64,
            found: values.len() as u64,
        });
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_file_declaring_a_large_image_is_refused_before_allocating_the_volume() {
        // Found by the libFuzzer `dicom` target: a 686-byte file declaring 1785 rows x 65408 columns and no Pixel Data
        // made the reader allocate the 445 MiB float volume before decoding (and rejecting) the pixels. Its
        // BitsAllocated sits after an element (FFFF,00FF) that ends the header scan, so it reads as absent.
        let bytes = include_bytes!("testdata/huge_rows_no_pixels.bin").to_vec();
        let read = |bytes: Vec<u8>| {
            read_series_memory(
                vec![(PathBuf::from("upload.dcm"), bytes)],
                None,
                &DicomOptions::default(),
            )
        };
        match read(bytes.clone()) {
            Err(ImagingError::HeaderField { field, .. }) => assert_eq!(field, "BitsAllocated"),
            other => panic!(
                "expected a BitsAllocated error, got {:?}",
                other.map(|s| s.info)
            ),
        }
        // The same file with that element renamed to Pixel Spacing and the cut-off last element dropped:
        // BitsAllocated = 16 is read, and the 680 bytes cannot hold 1785 x 65408 16-bit pixels.
        let at = bytes
            .windows(4)
            .position(|w| w == [0xFF, 0xFF, 0xFF, 0x00])
            .unwrap();
        let mut patched = bytes;
        patched[at..at + 4].copy_from_slice(&[0x28, 0x00, 0x30, 0x00]);
        patched.truncate(680);
        match read(patched) {
            Err(ImagingError::Truncated {
                expected, found, ..
            }) => {
                assert_eq!(expected, 1785 * 65408 * 2);
                assert_eq!(found, 680);
            }
            other => panic!(
                "expected a truncation error, got {:?}",
                other.map(|s| s.info)
            ),
        }
    }

    #[test]
    fn syntax_names_are_readable() {
        assert!(meta::syntax_name("1.2.840.10008.1.2.4.90").starts_with("JPEG 2000 Lossless"));
        assert!(meta::syntax_name("9.9").contains("unknown"));
    }

    #[test]
    fn non_dicom_bytes_are_a_clear_error() {
        let e = meta::parse(Path::new("x.dcm"), b"hello", true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a DICOM Part 10 file"), "{e}");
    }
}
