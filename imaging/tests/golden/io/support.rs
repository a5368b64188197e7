//! Shared helpers of the `imaging::io` integration tests: running the Python reference reader
//! (`ref_read.py`) through `$MEDMAE_PYTHON` and comparing affines.

#![allow(dead_code)] // each test crate uses a subset

use std::path::{Path, PathBuf};
use std::process::Command;

use ndarray::Array4;
use ndarray_npy::read_npy;

/// What the Python references report for one file.
pub struct Reference {
    /// SimpleITK's array, channel-first, if it could read the file.
    pub sitk: Option<Array4<f32>>,
    /// nibabel's array, channel-first (NIfTI only).
    pub nib: Option<Array4<f32>>,
    /// The JSON facts (`sitk_affine`, `nib_affine`, `nib_qform`, `sform_code`, ...).
    pub info: serde_json::Value,
}

/// The golden directory of the io tests.
pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/io")
}

pub use medmae_test_support::python;

/// A file of the golden set (`golden/io/files/<name>`).
pub fn golden(name: &str) -> PathBuf {
    golden_dir().join("files").join(name)
}

/// Copy golden `name` into `dir` under `new_name`, patched by `f`.
pub fn patched(dir: &Path, name: &str, new_name: &str, f: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(golden(name)).unwrap();
    f(&mut bytes);
    let p = dir.join(new_name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Overwrite the little-endian i16 at byte `at`.
pub fn put_i16(b: &mut [u8], at: usize, v: i16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

/// Overwrite the little-endian f32 at byte `at`.
pub fn put_f32(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Run `ref_read.py` on `files` (one Python process for all of them).
pub fn reference(files: &[PathBuf]) -> Vec<Reference> {
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(python())
        .arg(golden_dir().join("ref_read.py"))
        .arg(out.path())
        .args(files)
        .status()
        .unwrap_or_else(|e| panic!("cannot run $MEDMAE_PYTHON: {e}"));
    assert!(
        status.success(),
        "ref_read.py failed ({status}) on {files:?}"
    );
    (0..files.len())
        .map(|i| {
            let json = std::fs::read_to_string(out.path().join(format!("{i}.json"))).unwrap();
            let load = |kind: &str| {
                let p = out.path().join(format!("{i}.{kind}.npy"));
                p.exists().then(|| read_npy::<_, Array4<f32>>(&p).unwrap())
            };
            Reference {
                sitk: load("sitk"),
                nib: load("nib"),
                info: serde_json::from_str(&json).unwrap(),
            }
        })
        .collect()
}

/// A 4x4 matrix from JSON.
pub fn mat4(v: &serde_json::Value) -> [[f64; 4]; 4] {
    let rows: Vec<Vec<f64>> = serde_json::from_value(v.clone()).unwrap();
    let mut m = [[0.0; 4]; 4];
    for (r, row) in rows.iter().enumerate() {
        for (c, &x) in row.iter().enumerate() {
            m[r][c] = x;
        }
    }
    m
}

/// Assert two affines agree within `tol` per entry.
pub fn assert_affine_close(got: &[[f64; 4]; 4], want: &[[f64; 4]; 4], tol: f64, what: &str) {
    for r in 0..4 {
        for c in 0..4 {
            let (g, w) = (got[r][c], want[r][c]);
            assert!(
                (g - w).abs() <= tol,
                "{what}: affine[{r}][{c}] = {g}, expected {w} (tol {tol})\n{got:?}\n{want:?}"
            );
        }
    }
}

/// Assert two arrays are identical (shape and every value bit for bit).
pub fn assert_same_array(got: &Array4<f32>, want: &Array4<f32>, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let bad = got
        .iter()
        .zip(want.iter())
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(bad, 0, "{what}: {bad} of {} values differ", got.len());
}

/// The style every message follows: `name` exactly once, no debug values, the message complete on its own.
pub fn check_style(err: &imaging::ImagingError, name: &str) {
    let msg = err.to_string();
    assert_eq!(
        msg.matches(name).count(),
        1,
        "the error must name {name} exactly once: {msg}"
    );
    assert!(
        !msg.contains("Some(") && !msg.contains("None)"),
        "debug value in: {msg}"
    );
    assert!(
        msg.matches("(os error").count() <= 1,
        "repeated OS error: {msg}"
    );
    // No `source()`: an anyhow chain (`{:#}`) would print the cause a second time.
    assert!(std::error::Error::source(err).is_none(), "{msg}");
}

/// Load must fail, with a message naming `path` exactly once; returns the error.
pub fn fails(path: &Path) -> imaging::ImagingError {
    let err = imaging::io::load(path).expect_err("malformed input must not load");
    check_style(&err, &path.display().to_string());
    err
}

/// The error message of [`fails`], which must contain every fragment of `want`.
pub fn fails_with(path: &Path, want: &[&str]) -> imaging::ImagingError {
    let err = fails(path);
    let msg = err.to_string();
    for w in want {
        assert!(msg.contains(w), "expected {w:?} in: {msg}");
    }
    err
}
