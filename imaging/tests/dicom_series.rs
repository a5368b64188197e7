//! DICOM series made at test time from a real NIfTI volume (ITK's `KmeansTest_T1UCharRaw.nii.gz`, Debian
//! `insighttoolkit5-examples`): SimpleITK writes one file per slice with shuffled names, an oblique orientation and a
//! RescaleIntercept; `imaging::dicom` must equal SimpleITK's `ImageSeriesReader` (values and geometry), from the
//! directory and from a zip. Malformed series (missing slice, duplicated position, mixed series, non-image object,
//! truncated file, stray non-DICOM file) must give clear errors.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use dicom_dictionary_std::tags;
use imaging::dicom;
use ndarray::Array3;
use ndarray_npy::ReadNpyExt;

const NIFTI: &str =
    "/usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz";

/// Generate the series once per test binary.
fn generated() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        assert!(
            Path::new(NIFTI).is_file(),
            "{NIFTI} is missing: install insighttoolkit5-examples (scripts/setup)"
        );
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("dicom_series_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/dicom/make_series.py");
        medmae_test_support::run_python(&script, &[Path::new(NIFTI), &dir]);
        dir
    })
}

fn reference_json() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(generated().join("reference.json")).unwrap())
        .unwrap()
}

fn vec3(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// A fresh copy of the generated series, to damage.
fn copy_series(tag: &str) -> PathBuf {
    let src = generated().join("series");
    let dst = generated().join(format!("copy_{tag}"));
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
    }
    dst
}

/// SimpleITK's sorted file names (first = lowest position along the normal).
fn sorted_files() -> Vec<String> {
    reference_json()["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn check_against_simpleitk(input: &Path) {
    let series = dicom::read_series_with(input, None, &dicom::DicomOptions::default()).unwrap();
    let vol = &series.volume;
    let reference =
        Array3::<f32>::read_npy(std::fs::File::open(generated().join("reference.npy")).unwrap())
            .unwrap();
    let (nz, ny, nx) = reference.dim();
    assert_eq!(vol.data.shape(), &[1, nx, ny, nz]);
    for ((z, y, x), &r) in reference.indexed_iter() {
        assert_eq!(vol.data[[0, x, y, z]], r, "voxel ({x}, {y}, {z})");
    }
    // ITK geometry is LPS with a row-major direction matrix (columns = voxel axes): RAS negates world x and y.
    let j = reference_json();
    let (sp, org, dir) = (
        vec3(&j["spacing"]),
        vec3(&j["origin"]),
        vec3(&j["direction"]),
    );
    let flip = [-1.0, -1.0, 1.0];
    for r in 0..3 {
        for c in 0..3 {
            let want = flip[r] * dir[3 * r + c] * sp[c];
            assert!(
                (vol.affine[r][c] - want).abs() < 1e-5,
                "affine[{r}][{c}] {} vs {want}",
                vol.affine[r][c]
            );
        }
        assert!(
            (vol.affine[r][3] - flip[r] * org[r]).abs() < 1e-5,
            "origin[{r}]"
        );
    }
    // The pixels are the source NIfTI's (the intercept undoes the writer's shift), slice for slice.
    let nifti = imaging::io::load(Path::new(NIFTI)).unwrap();
    assert_eq!(nifti.data, vol.data);
    assert_eq!(series.instances.len(), nz);
    assert_eq!(series.info.modality, "CT");
    assert_eq!(
        series.frame_of_reference.as_deref(),
        Some("1.2.826.0.1.3680043.8.498.1.3")
    );
}

#[test]
fn oblique_shuffled_series_equals_simpleitk_from_dir_and_zip() {
    check_against_simpleitk(&generated().join("series"));
    check_against_simpleitk(&generated().join("series.zip"));
    // Streamed files (in memory): loose slices, and the zip as one blob.
    let dir_vol = dicom::read_series(&generated().join("series"), None).unwrap();
    let loose: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(generated().join("series"))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    let opts = dicom::DicomOptions::default();
    assert_eq!(
        dicom::read_series_memory(loose, None, &opts)
            .unwrap()
            .volume,
        dir_vol
    );
    let zip = std::fs::read(generated().join("series.zip")).unwrap();
    let from_zip =
        dicom::read_series_memory(vec![("upload.zip".into(), zip)], None, &opts).unwrap();
    assert_eq!(from_zip.volume, dir_vol);
    let list = dicom::list_series(&generated().join("series")).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].files, list[0].images, list[0].size),
        (62, 62, Some((128, 128)))
    );
    // No patient attributes can leak through the summary.
    let text = serde_json::to_string(&list).unwrap();
    for secret in ["Doe", "PAT-SECRET", "ACC-SECRET", "19700101"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
}

fn err_of(dir: &Path) -> String {
    let e = dicom::read_series(dir, None).unwrap_err().to_string();
    for secret in ["Doe", "PAT-SECRET", "ACC-SECRET"] {
        assert!(!e.contains(secret), "{secret} in {e}");
    }
    e
}

#[test]
fn missing_slice_is_a_gap_error() {
    let dir = copy_series("missing");
    let files = sorted_files();
    std::fs::remove_file(dir.join(&files[30])).unwrap();
    let e = err_of(&dir);
    assert!(e.contains("missing slice") && e.contains(&files[31]), "{e}");
}

#[test]
fn duplicated_position_is_an_error() {
    let dir = copy_series("dup");
    let files = sorted_files();
    std::fs::copy(dir.join(&files[10]), dir.join("zz_copy.dcm")).unwrap();
    let e = err_of(&dir);
    assert!(e.contains("duplicated slice position"), "{e}");
}

/// Rewrite one slice with changes made by `edit`, saved under a new name.
fn edited_copy(
    dir: &Path,
    from: &str,
    to: &str,
    edit: impl FnOnce(&mut dicom_object::DefaultDicomObject),
) {
    let mut obj = dicom_object::open_file(dir.join(from)).unwrap();
    edit(&mut obj);
    obj.write_to_file(dir.join(to)).unwrap();
}

#[test]
fn mixed_series_needs_a_choice() {
    let dir = copy_series("mixed");
    let files = sorted_files();
    edited_copy(&dir, &files[5], "other.dcm", |o| {
        o.put_str(
            tags::SERIES_INSTANCE_UID,
            dicom_core::VR::UI,
            "1.2.826.0.1.3680043.8.498.9",
        );
        o.put_str(tags::SERIES_NUMBER, dicom_core::VR::IS, "8");
    });
    let e = err_of(&dir);
    assert!(
        e.contains("2 series found; pick one with --series")
            && e.contains("1.2.826.0.1.3680043.8.498.9"),
        "{e}"
    );
    assert_eq!(dicom::list_series(&dir).unwrap().len(), 2);
    let main = dicom::read_series(&dir, Some("1.2.826.0.1.3680043.8.498.1.2")).unwrap();
    assert_eq!(main.spatial_shape(), [128, 128, 62]);
    let other = dicom::read_series(&dir, Some("8")).unwrap();
    assert_eq!(other.spatial_shape(), [128, 128, 1]);
    let e = dicom::read_series(&dir, Some("1.2.3"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no series `1.2.3`"), "{e}");
}

#[test]
fn non_image_object_in_series_is_an_error() {
    let dir = copy_series("nonimage");
    let files = sorted_files();
    edited_copy(&dir, &files[0], "report.dcm", |o| {
        for t in [tags::PIXEL_DATA, tags::ROWS, tags::COLUMNS] {
            o.remove_element(t);
        }
        o.put_str(
            tags::SOP_INSTANCE_UID,
            dicom_core::VR::UI,
            "1.2.826.0.1.3680043.8.498.77",
        );
    });
    let e = err_of(&dir);
    assert!(
        e.contains("non-image object") && e.contains("report.dcm"),
        "{e}"
    );
}

#[test]
fn truncated_and_stray_files_are_errors() {
    let dir = copy_series("truncated");
    let files = sorted_files();
    let path = dir.join(&files[20]);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = err_of(&dir);
    assert!(e.contains(&files[20]), "{e}");

    let dir = copy_series("stray");
    std::fs::write(dir.join("notes.bin"), b"not dicom at all").unwrap();
    let e = err_of(&dir);
    assert!(
        e.contains("notes.bin") && e.contains("not a DICOM Part 10 file"),
        "{e}"
    );
}

#[test]
fn limits_are_enforced_before_decoding() {
    let opts = dicom::DicomOptions {
        max_voxels: 1000,
        ..Default::default()
    };
    let e = dicom::read_series_with(&generated().join("series"), None, &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_voxels"), "{e}");
    let opts = dicom::DicomOptions {
        max_total_bytes: 10_000,
        ..Default::default()
    };
    let e = dicom::read_series_with(&generated().join("series.zip"), None, &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_total_bytes"), "{e}");
}

const SEGMENTATION: &str = "/usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1KmeansPrelimSegmentation.nii.gz";

/// Write ITK's real k-means label map (same voxel grid as the series) as DICOM SEG and read it back with highdicom.
#[test]
fn dicom_seg_reads_back_in_highdicom_voxel_for_voxel() {
    let series_dir = generated().join("series");
    let source =
        dicom::read_series_with(&series_dir, None, &dicom::DicomOptions::default()).unwrap();
    let seg_nifti = imaging::io::load(Path::new(SEGMENTATION)).unwrap();
    assert_eq!(seg_nifti.spatial_shape(), source.volume.spatial_shape());
    let labels = imaging::Volume::new(seg_nifti.data.clone(), source.volume.affine);
    let mut values: Vec<u16> = labels
        .data
        .iter()
        .filter(|v| **v > 0.0)
        .map(|v| *v as u16)
        .collect();
    values.sort_unstable();
    values.dedup();
    assert!(values.len() >= 2, "{values:?}");
    let segments: Vec<_> = values
        .iter()
        .map(|&l| dicom::Segment::generic(l, &format!("class {l}")))
        .collect();

    for anonymize in [true, false] {
        let out = generated().join(format!("seg_{anonymize}"));
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).unwrap();
        let seg_path = out.join("seg.dcm");
        let opts = dicom::SegOptions {
            anonymize,
            ..Default::default()
        };
        dicom::write_seg(&labels, &source, &segments, &opts, &seg_path).unwrap();
        medmae_test_support::read_seg(&seg_path, &series_dir, &out);

        let back = ndarray::Array3::<i32>::read_npy(
            std::fs::File::open(out.join("seg_labels.npy")).unwrap(),
        )
        .unwrap();
        let [nx, ny, nz] = labels.spatial_shape();
        assert_eq!(back.dim(), (nz, ny, nx));
        for ((z, y, x), &v) in back.indexed_iter() {
            assert_eq!(v as f32, labels.data[[0, x, y, z]], "voxel ({x}, {y}, {z})");
        }
        let j: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("seg.json")).unwrap()).unwrap();
        assert_eq!(j["modality"], "SEG");
        assert_eq!(j["segments"].as_array().unwrap().len(), values.len());
        assert_eq!(j["referenced_series"][0], "1.2.826.0.1.3680043.8.498.1.2");
        assert_eq!(j["referenced_instances"].as_array().unwrap().len(), 62);
        assert_eq!(j["frame_of_reference"], "1.2.826.0.1.3680043.8.498.1.3");
        assert_eq!(j["study_uid"], "1.2.826.0.1.3680043.8.498.1.1");
        // highdicom's volume axes are (slice, row, column) in LPS: columns are ours (column, row, slice) reversed,
        // with world x and y negated; highdicom may stack the slices in either direction along the normal.
        let flip = [-1.0, -1.0, 1.0];
        let hd = |r: usize, c: usize| j["volume_affine_lps"][r][c].as_f64().unwrap();
        let along: f64 = (0..3)
            .map(|r| hd(r, 0) * flip[r] * source.volume.affine[r][2])
            .sum();
        let sign = along.signum();
        for (r, f) in flip.iter().enumerate() {
            for c in 0..3 {
                let got = hd(r, c);
                let want = f * source.volume.affine[r][2 - c] * if c == 0 { sign } else { 1.0 };
                assert!(
                    (got - want).abs() < 1e-4,
                    "affine[{r}][{c}]: {got} vs {want}"
                );
            }
        }
        let bytes = std::fs::read(&seg_path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        if anonymize {
            assert_eq!(j["patient_name"], "Anonymous^");
            for secret in ["Doe", "PAT-SECRET", "ACC-SECRET", "19700101"] {
                assert!(
                    !text.contains(secret),
                    "{secret} left in the anonymised SEG"
                );
            }
        } else {
            assert_eq!(j["patient_id"], "PAT-SECRET-42");
        }
    }
}
