//! Round trips: `save_nifti` / `save_metaimage` -> Rust `load` gives the same volume, and nibabel / SimpleITK (run
//! at test time) read the same values and geometry (sform and qform for NIfTI).

#[path = "golden/io/support.rs"]
mod support;

use std::path::PathBuf;

use imaging::io::{self, NiftiDtype};
use imaging::{ImagingError, Volume};
use ndarray::Array4;
use support::{assert_affine_close, assert_same_array, mat4, reference};

/// Rotation about a unit axis (Rodrigues).
fn rotation(axis: [f64; 3], angle: f64) -> [[f64; 3]; 3] {
    let n = (axis[0] * axis[0] + axis[1] * axis[1] + axis[2] * axis[2]).sqrt();
    let [x, y, z] = axis.map(|v| v / n);
    let (s, c) = angle.sin_cos();
    let t = 1.0 - c;
    [
        [c + x * x * t, x * y * t - z * s, x * z * t + y * s],
        [y * x * t + z * s, c + y * y * t, y * z * t - x * s],
        [z * x * t - y * s, z * y * t + x * s, c + z * z * t],
    ]
}

/// Deterministic test volumes: oblique float, left-handed multi-channel labels, 2-D.
fn volumes() -> Vec<(&'static str, Volume, NiftiDtype)> {
    let oblique = Volume::affine_from(
        [0.9, 1.1, 2.5],
        [-12.25, 30.5, 7.0],
        rotation([1.0, -2.0, 0.5], 0.6),
    );
    let f = Array4::from_shape_fn((1, 5, 4, 3), |(_, x, y, z)| {
        ((x * 7 + y * 13 + z * 29) as f32).sin() * 100.0
    });
    let mut lpi = rotation([0.0, 0.0, 1.0], 0.2);
    for row in lpi.iter_mut() {
        row[2] = -row[2]; // left-handed grid: qfac = -1
    }
    let labels = Array4::from_shape_fn((3, 4, 3, 2), |(c, x, y, z)| {
        ((c * 5 + x + 2 * y + 3 * z) % 7) as f32 - 2.0
    });
    let flat = Array4::from_shape_fn((1, 6, 5, 1), |(_, x, y, _)| (x * 10 + y) as f32);
    vec![
        ("oblique_f32", Volume::new(f, oblique), NiftiDtype::F32),
        (
            "lpi_labels_i16",
            Volume::new(
                labels.clone(),
                Volume::affine_from([2.0, 2.0, 3.0], [1.0, 2.0, 3.0], lpi),
            ),
            NiftiDtype::I16,
        ),
        (
            "labels_i32",
            Volume::new(
                labels.mapv(|v| v * 1000.0),
                Volume::diag_affine([1.0, 1.0, 1.0]),
            ),
            NiftiDtype::I32,
        ),
        (
            "flat_u8",
            Volume::new(flat, Volume::diag_affine([0.5, 0.25, 1.0])),
            NiftiDtype::U8,
        ),
    ]
}

#[test]
fn nifti_round_trip_in_rust_and_nibabel() {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    let mut expected = Vec::new();
    for (name, vol, dtype) in volumes() {
        for ext in [".nii", ".nii.gz"] {
            let path = dir.path().join(format!("{name}{ext}"));
            io::save_nifti(&vol, &path, dtype).unwrap();
            let back = io::load(&path).unwrap();
            assert_same_array(
                &back.data,
                &vol.data,
                &format!("{name}{ext} Rust round trip"),
            );
            // The sform is stored as float32.
            assert_affine_close(
                &back.affine,
                &vol.affine,
                1e-5,
                &format!("{name}{ext} Rust round trip"),
            );
            let h = io::probe(&path).unwrap();
            assert_eq!(h.affine_source, io::AffineSource::Sform { code: 1 });
            paths.push(path);
            expected.push(vol.clone());
        }
    }
    // Overwriting works and leaves no temporary files behind.
    io::save_nifti(&expected[0], &paths[0], NiftiDtype::F32).unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names.iter().all(|n| !n.to_string_lossy().starts_with('.')),
        "{names:?}"
    );

    for ((path, vol), r) in paths.iter().zip(&expected).zip(reference(&paths)) {
        let what = path.file_name().unwrap().to_string_lossy().into_owned();
        assert_same_array(
            r.nib.as_ref().unwrap(),
            &vol.data,
            &format!("{what}: nibabel values"),
        );
        let info = &r.info;
        assert_affine_close(
            &mat4(&info["nib_affine"]),
            &vol.affine,
            1e-5,
            &format!("{what}: nibabel affine"),
        );
        // The qform (quaternion, qfac, pixdim) describes the same rigid geometry.
        assert_affine_close(
            &mat4(&info["nib_qform"]),
            &vol.affine,
            1e-4,
            &format!("{what}: nibabel qform"),
        );
        assert_eq!(
            (info["sform_code"].as_i64(), info["qform_code"].as_i64()),
            (Some(1), Some(1)),
            "{what}"
        );
        let pixdim: Vec<f64> = serde_json::from_value(info["pixdim"].clone()).unwrap();
        for (p, s) in pixdim[1..4].iter().zip(vol.spacing()) {
            assert!(
                (p - s).abs() < 1e-5,
                "{what}: pixdim {pixdim:?} vs spacing {:?}",
                vol.spacing()
            );
        }
        assert_eq!(info["xyzt_units"][0], "mm", "{what}");
        let shape: Vec<usize> = serde_json::from_value(info["shape"].clone()).unwrap();
        let [c, x, y, z] = [
            vol.channels(),
            vol.spatial_shape()[0],
            vol.spatial_shape()[1],
            vol.spatial_shape()[2],
        ];
        assert_eq!(
            shape,
            if c == 1 {
                vec![x, y, z]
            } else {
                vec![x, y, z, c]
            },
            "{what}: nibabel shape"
        );
        // SimpleITK reads the same values too.
        assert_same_array(
            r.sitk.as_ref().unwrap(),
            &vol.data,
            &format!("{what}: SimpleITK values"),
        );
    }
}

#[test]
fn metaimage_round_trip_in_rust_and_simpleitk() {
    let dir = tempfile::tempdir().unwrap();
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut expected = Vec::new();
    for (name, vol, _) in volumes() {
        for ext in [".mha", ".mhd"] {
            let path = dir.path().join(format!("{name}{ext}"));
            io::save_metaimage(&vol, &path).unwrap();
            let back = io::load(&path).unwrap();
            assert_same_array(
                &back.data,
                &vol.data,
                &format!("{name}{ext} Rust round trip"),
            );
            assert_affine_close(
                &back.affine,
                &vol.affine,
                1e-12,
                &format!("{name}{ext} Rust round trip"),
            );
            paths.push(path);
            expected.push(vol.clone());
        }
    }
    assert!(dir.path().join("flat_u8.raw").exists());
    for ((path, vol), r) in paths.iter().zip(&expected).zip(reference(&paths)) {
        let what = path.file_name().unwrap().to_string_lossy().into_owned();
        let sitk = r
            .sitk
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: {}", r.info["sitk_error"]));
        assert_same_array(sitk, &vol.data, &format!("{what}: SimpleITK values"));
        assert_affine_close(
            &mat4(&r.info["sitk_affine"]),
            &vol.affine,
            1e-9,
            &format!("{what}: SimpleITK affine"),
        );
    }
}

#[test]
fn integer_outputs_round_half_to_even_and_check_range() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.nii");
    let data = Array4::from_shape_vec((1, 4, 1, 1), vec![0.5, 1.5, 2.5, -0.4]).unwrap();
    io::save_nifti(
        &Volume::new(data, Volume::diag_affine([1.0; 3])),
        &path,
        NiftiDtype::I16,
    )
    .unwrap();
    assert_eq!(
        io::load(&path)
            .unwrap()
            .data
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        vec![0.0, 2.0, 2.0, 0.0]
    );

    for (v, dtype) in [
        (300.0, NiftiDtype::U8),
        (-1.0, NiftiDtype::U8),
        (40000.0, NiftiDtype::I16),
        (f32::NAN, NiftiDtype::I32),
    ] {
        let vol = Volume::new(
            Array4::from_elem((1, 2, 2, 2), v),
            Volume::diag_affine([1.0; 3]),
        );
        let err = io::save_nifti(&vol, &path, dtype).unwrap_err();
        assert!(matches!(err, ImagingError::Format { .. }), "{err}");
        assert!(err.to_string().contains("r.nii"), "{err}");
    }
    // The failed saves left the earlier file intact.
    assert_eq!(io::load(&path).unwrap().data.len(), 4);

    let singular = Volume::new(Array4::zeros((1, 2, 2, 2)), [[0.0; 4]; 4]);
    assert!(io::save_nifti(&singular, &path, NiftiDtype::F32).is_err());
    assert!(io::save_metaimage(&singular, &dir.path().join("s.mha")).is_err());
    let vol = Volume::new(Array4::zeros((1, 2, 2, 2)), Volume::diag_affine([1.0; 3]));
    assert!(matches!(
        io::save_nifti(&vol, &dir.path().join("x.img"), NiftiDtype::F32),
        Err(ImagingError::Unsupported { .. })
    ));
    assert!(matches!(
        io::save_metaimage(&vol, &dir.path().join("x.nii")),
        Err(ImagingError::Unsupported { .. })
    ));
    io::save(&vol, &dir.path().join("generic.nii.gz")).unwrap();
    io::save(&vol, &dir.path().join("generic.mha")).unwrap();
}
