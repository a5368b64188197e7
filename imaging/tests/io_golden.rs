//! Golden test of `imaging::io`: every file written by `tests/golden/io/gen_io.py` (nibabel / SimpleITK) loads to
//! exactly the array and (within 1e-5) the RAS affine the Python references report, and `probe` agrees with `load`.

use std::path::{Path, PathBuf};

use imaging::io;
use ndarray::Array4;
use ndarray_npy::read_npy;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/io")
}

#[test]
fn golden_files_match_nibabel_and_simpleitk() {
    let dir = golden_dir();
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let cases = cases.as_array().unwrap();
    assert!(
        cases.len() >= 25,
        "expected the full fixture set, found {}",
        cases.len()
    );
    for case in cases {
        let file = case["file"].as_str().unwrap();
        let path = dir.join("files").join(file);
        let vol = io::load(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        let want: Array4<f32> = read_npy(
            dir.join("expected")
                .join(case["expected"].as_str().unwrap()),
        )
        .unwrap();
        assert_eq!(vol.data.shape(), want.shape(), "{file}: shape");
        let mismatches = vol
            .data
            .iter()
            .zip(want.iter())
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(mismatches, 0, "{file}: {mismatches} values differ");

        let aff: Vec<Vec<f64>> = serde_json::from_value(case["affine"].clone()).unwrap();
        for (r, row) in aff.iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                let got = vol.affine[r][c];
                assert!(
                    (got - v).abs() <= 1e-5,
                    "{file}: affine[{r}][{c}] = {got}, expected {v}"
                );
            }
        }

        let h = io::probe(&path).unwrap();
        assert_eq!(h.affine, vol.affine, "{file}: probe affine");
        assert_eq!(h.shape, vol.spatial_shape(), "{file}: probe shape");
        assert_eq!(h.channels, vol.channels(), "{file}: probe channels");
        assert_eq!(
            h.dtype.name(),
            case["dtype"].as_str().unwrap(),
            "{file}: dtype"
        );
        assert_eq!(h.spacing, vol.spacing(), "{file}: spacing");
    }
}

#[test]
fn golden_channel_stacking_and_mismatch() {
    let files = golden_dir().join("files");
    // Two single-channel files with the same grid stack into two channels, in order.
    let a = files.join("msb_i16.mhd");
    let b = files.join("gz.mhd");
    let v = io::load_channels(&[a.clone(), b.clone()]).unwrap();
    assert_eq!(v.channels(), 2);
    assert_eq!(
        v.data.index_axis(ndarray::Axis(0), 0),
        io::load(&a).unwrap().data.index_axis(ndarray::Axis(0), 0)
    );
    assert_eq!(
        v.data.index_axis(ndarray::Axis(0), 1),
        io::load(&b).unwrap().data.index_axis(ndarray::Axis(0), 0)
    );
    // Different shapes: an error naming both files.
    let c = files.join("u8_ras.nii");
    let err = io::load_channels(&[a.clone(), c.clone()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("msb_i16.mhd") && err.contains("u8_ras.nii"),
        "{err}"
    );
    assert!(io::load_channels(&[]).is_err());
}
