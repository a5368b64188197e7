//! Formats beyond the golden set, checked against the reference libraries at test time: NIfTI-2 read (files nibabel
//! wrote) and write (read back by nibabel), the MetaImage pattern form (read by SimpleITK/MetaIO), the stored axes (a
//! 4-D time axis with its step and unit, vector components, 2-D files), `-0.0` kept bit for bit, and loading from
//! bytes in memory (NIfTI, .nii.gz, .mha, a DICOM zip) without temporary files.

#[path = "golden/io/support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use imaging::io::{
    self, FileFormat, LoadOptions, NiftiDtype, NiftiVersion, SaveOptions, StoredAxes, TimeUnit,
};
use imaging::Volume;
use ndarray::Array4;
use support::{assert_affine_close, assert_same_array, golden_dir, mat4, python, reference};

/// The fixtures of `make_formats.py`, written into a fresh temporary folder.
fn fixtures() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(python())
        .arg(golden_dir().join("make_formats.py"))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "make_formats.py failed: {status}");
    dir
}

#[test]
fn nifti2_written_by_nibabel_reads_like_nibabel() {
    let dir = fixtures();
    let names = [
        "nifti2_oblique.nii",
        "nifti2_time.nii.gz",
        "nifti2_be.nii",
        "nifti1_time_ms.nii.gz",
        "nifti1_vector.nii",
    ];
    let paths: Vec<PathBuf> = names.iter().map(|n| dir.path().join(n)).collect();
    let facts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("expected.json")).unwrap())
            .unwrap();
    for ((name, path), r) in names.iter().zip(&paths).zip(reference(&paths)) {
        let v = io::load(path).unwrap_or_else(|e| panic!("{e}"));
        // nibabel's get_fdata adds the intercept, turning -0.0 into 0.0: compare numerically here; the sign bit is
        // checked below.
        let nib = r.nib.as_ref().unwrap();
        assert_eq!(v.data.shape(), nib.shape(), "{name}");
        assert!(
            v.data.iter().zip(nib.iter()).all(|(a, b)| a == b),
            "{name}: nibabel values"
        );
        assert_affine_close(&v.affine, &mat4(&r.info["nib_affine"]), 1e-5, name);
        let h = io::probe(path).unwrap();
        let want_version = if name.starts_with("nifti2") { 540 } else { 348 };
        assert_eq!(r.info["sizeof_hdr"], want_version, "{name}");
        assert_eq!(
            h.nifti_version,
            Some(if want_version == 540 {
                NiftiVersion::Two
            } else {
                NiftiVersion::One
            })
        );
        let f = &facts[name];
        let dims: Vec<usize> = serde_json::from_value(f["dims"].clone()).unwrap();
        assert_eq!(h.dims, dims, "{name}: stored dims");
        assert_eq!(h.axes.spatial, dims.len().min(3), "{name}");
        if let Some(step) = f["time_step"].as_f64() {
            assert_eq!(h.axes.time, dims[3], "{name}");
            assert!((h.axes.time_step.unwrap() - step).abs() < 1e-6, "{name}");
            let unit = serde_json::to_value(h.axes.time_unit).unwrap();
            assert_eq!(unit, f["time_unit"], "{name}");
        }
    }
    // The vector image: dim[5] = 3 components, no time axis; the big-endian file is flagged.
    let vector = io::probe(&paths[4]).unwrap();
    assert_eq!((vector.axes.time, vector.axes.components), (1, 3));
    assert!(io::probe(&paths[2]).unwrap().big_endian);
    // -0.0 at voxel (0, 0, 0) of the oblique file is read as -0.0.
    let v = io::load(&paths[0]).unwrap();
    assert_eq!(v.data[[0, 0, 0, 0]].to_bits(), (-0.0f32).to_bits());
}

#[test]
fn nifti2_and_stored_axes_written_by_medmae_read_back_in_nibabel_and_simpleitk() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = Array4::from_shape_fn((6, 4, 3, 2), |(c, x, y, z)| {
        (c * 100 + x * 10 + y) as f32 - 2.5 * z as f32
    });
    let affine = Volume::affine_from(
        [0.8, 1.2, 2.0],
        [5.0, -6.0, 7.0],
        [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
    );
    let vol = Volume::new(data, affine);
    let time = StoredAxes {
        time_step: Some(2.5),
        time_unit: TimeUnit::Sec,
        ..StoredAxes::time_series(6)
    };
    let both = StoredAxes {
        time: 2,
        components: 3,
        ..time
    };
    let cases: Vec<(&str, SaveOptions)> = vec![
        (
            "v2.nii",
            SaveOptions {
                nifti_version: NiftiVersion::Two,
                axes: Some(time),
                ..SaveOptions::default()
            },
        ),
        (
            "v2.nii.gz",
            SaveOptions {
                nifti_version: NiftiVersion::Two,
                ..SaveOptions::default()
            },
        ),
        (
            "time.nii.gz",
            SaveOptions {
                axes: Some(time),
                ..SaveOptions::default()
            },
        ),
        (
            "vector.nii",
            SaveOptions {
                axes: Some(both),
                ..SaveOptions::default()
            },
        ),
        (
            "time.mha",
            SaveOptions {
                axes: Some(time),
                ..SaveOptions::default()
            },
        ),
        ("vector.mhd", SaveOptions::default()),
    ];
    let paths: Vec<PathBuf> = cases.iter().map(|(n, _)| d.join(n)).collect();
    for ((name, opts), p) in cases.iter().zip(&paths) {
        io::save_with(&vol, p, opts).unwrap();
        let back = io::load(p).unwrap();
        assert_same_array(&back.data, &vol.data, &format!("{name}: Rust round trip"));
        let h = io::probe(p).unwrap();
        if let Some(axes) = opts.axes {
            assert_eq!(
                (h.axes.time, h.axes.components),
                (axes.time, axes.components),
                "{name}"
            );
        }
    }
    let refs = reference(&paths);
    for ((name, opts), r) in cases.iter().zip(&refs) {
        let info = &r.info;
        if name.ends_with(".nii") || name.ends_with(".nii.gz") {
            assert_same_array(
                r.nib.as_ref().unwrap(),
                &vol.data,
                &format!("{name}: nibabel values"),
            );
            assert_affine_close(&mat4(&info["nib_affine"]), &vol.affine, 1e-5, name);
            let v2 = opts.nifti_version == NiftiVersion::Two;
            assert_eq!(info["sizeof_hdr"], if v2 { 540 } else { 348 }, "{name}");
            let shape: Vec<usize> = serde_json::from_value(info["shape"].clone()).unwrap();
            match opts.axes {
                Some(a) if a.components > 1 => {
                    assert_eq!(shape, vec![4, 3, 2, 2, 3], "{name}");
                    assert_eq!(info["intent"], "vector", "{name}");
                }
                _ => assert_eq!(shape, vec![4, 3, 2, 6], "{name}"),
            }
            if opts.axes == Some(time) {
                let pixdim: Vec<f64> = serde_json::from_value(info["pixdim"].clone()).unwrap();
                assert_eq!(pixdim[4], 2.5, "{name}: pixdim[4]");
                assert_eq!(
                    info["xyzt_units"],
                    serde_json::json!(["mm", "sec"]),
                    "{name}"
                );
            }
        } else {
            // SimpleITK: a 4-D image for the time axis, a 3-D vector image otherwise; same values and geometry.
            let want_dim = if opts.axes.is_some() { 4 } else { 3 };
            assert_eq!(info["sitk_dimension"], want_dim, "{name}");
            assert_same_array(
                r.sitk.as_ref().unwrap(),
                &vol.data,
                &format!("{name}: SimpleITK values"),
            );
            assert_affine_close(&mat4(&info["sitk_affine"]), &vol.affine, 1e-9, name);
        }
    }
    // NIfTI-1 cannot hold a dimension above 32767; NIfTI-2 can (checked without writing gigabytes: 1 x 40000 x 1).
    let long = Volume::new(
        Array4::zeros((1, 1, 40000, 1)),
        Volume::diag_affine([1.0; 3]),
    );
    let err = io::save_nifti(&long, &d.join("long.nii"), NiftiDtype::U8).unwrap_err();
    assert!(err.to_string().contains("write NIfTI-2 instead"), "{err}");
    let v2 = SaveOptions {
        dtype: NiftiDtype::U8,
        nifti_version: NiftiVersion::Two,
        axes: None,
    };
    io::save_with(&long, &d.join("long.nii"), &v2).unwrap();
    assert_eq!(
        io::probe(&d.join("long.nii")).unwrap().dims,
        vec![1, 40000, 1]
    );
}

#[test]
fn two_d_files_stay_two_d_and_negative_zero_survives() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut data = Array4::from_shape_fn((1, 3, 2, 1), |(_, x, y, _)| (x + 3 * y) as f32);
    data[[0, 1, 1, 0]] = -0.0;
    let vol = Volume::new(data, Volume::diag_affine([0.5, 0.25, 1.0]));
    let flat = StoredAxes {
        spatial: 2,
        ..StoredAxes::time_series(1)
    };
    for name in ["flat.nii", "flat.nii.gz", "flat.mha", "flat.mhd"] {
        let p = d.join(name);
        let opts = SaveOptions {
            axes: Some(flat),
            ..SaveOptions::default()
        };
        io::save_with(&vol, &p, &opts).unwrap();
        let h = io::probe(&p).unwrap();
        assert_eq!(h.dims, vec![3, 2], "{name}: a 2-D file reports 2 dims");
        let back = io::load(&p).unwrap();
        assert_eq!(
            back.checksum(),
            vol.checksum(),
            "{name}: values bit for bit"
        );
        assert_eq!(
            back.data[[0, 1, 1, 0]].to_bits(),
            (-0.0f32).to_bits(),
            "{name}"
        );
    }
    // A 2-D flag that does not fit the grid is refused.
    let thick = Volume::new(Array4::zeros((1, 2, 2, 2)), Volume::diag_affine([1.0; 3]));
    let opts = SaveOptions {
        axes: Some(flat),
        ..SaveOptions::default()
    };
    assert!(io::save_with(&thick, &d.join("t.nii"), &opts).is_err());
}

#[test]
fn metaimage_pattern_form_reads_like_simpleitk() {
    let dir = fixtures();
    let p = dir.path().join("pattern.mhd");
    let v = io::load(&p).unwrap();
    let h = io::probe(&p).unwrap();
    assert_eq!(h.data_files.len(), 4);
    assert!(h.data_files[3].ends_with("slice_004.raw"));
    let r = &reference(std::slice::from_ref(&p))[0];
    assert_same_array(
        &v.data,
        r.sitk.as_ref().unwrap(),
        "pattern: SimpleITK values",
    );
    assert_affine_close(&v.affine, &mat4(&r.info["sitk_affine"]), 1e-12, "pattern");
    // A missing slice file is named, with the header.
    std::fs::remove_file(dir.path().join("slice_003.raw")).unwrap();
    let err = io::load(&p).unwrap_err().to_string();
    assert!(
        err.contains("slice_003.raw") && err.starts_with(&p.display().to_string()),
        "{err}"
    );
}

/// Every bytes loader gives what the path loader gives, for each format.
#[test]
fn bytes_in_memory_load_like_files() {
    let dir = fixtures();
    let golden = golden_dir().join("files");
    let opts = LoadOptions::default();
    for (path, format) in [
        (dir.path().join("nifti2_oblique.nii"), FileFormat::Nii),
        (dir.path().join("nifti2_time.nii.gz"), FileFormat::NiiGz),
        (golden.join("i16_lpi.nii.gz"), FileFormat::NiiGz),
        (golden.join("sitk_f32_zlib.mha"), FileFormat::Mha),
        (golden.join("local.mhd"), FileFormat::Mhd),
    ] {
        let bytes = std::fs::read(&path).unwrap();
        let want = io::load(&path).unwrap();
        let got = io::load_bytes(&bytes, format, "upload", &opts).unwrap();
        assert_eq!(got, want, "{}", path.display());
        let got = io::load_reader(&bytes[..], format, "upload", &opts).unwrap();
        assert_eq!(got, want, "{}", path.display());
        let h = io::probe_bytes(&bytes, format, "upload", &opts).unwrap();
        assert_eq!(h.path, Path::new("upload"));
        assert_eq!(h.dims, io::probe(&path).unwrap().dims);
        // Errors name the given label, once; a truncated upload is a typed error.
        let err = io::load_bytes(&bytes[..bytes.len() / 2], format, "upload", &opts).unwrap_err();
        assert!(err.to_string().starts_with("upload: "), "{err}");
        assert_eq!(err.to_string().matches("upload").count(), 1, "{err}");
    }
    // The limits apply to bytes as to files.
    let tight = LoadOptions {
        max_voxels: 10,
        ..LoadOptions::default()
    };
    let bytes = std::fs::read(golden.join("i16_lpi.nii.gz")).unwrap();
    assert!(matches!(
        io::load_bytes(&bytes, FileFormat::NiiGz, "upload", &tight),
        Err(imaging::ImagingError::TooLarge { .. })
    ));
}

#[test]
fn a_dicom_zip_in_memory_reads_like_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let script = golden_dir().join("../dicom/make_series.py");
    let src = Path::new(
        "/usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz",
    );
    let status = Command::new(python())
        .arg(script)
        .arg(src)
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let zip = dir.path().join("series.zip");
    let want = imaging::dicom::read_series(&zip, None).unwrap();
    let bytes = std::fs::read(&zip).unwrap();
    let got = imaging::dicom::read_series_memory(
        vec![(PathBuf::from("upload.zip"), bytes)],
        None,
        &imaging::dicom::DicomOptions::default(),
    )
    .unwrap();
    assert_eq!(got.volume, want);
}
