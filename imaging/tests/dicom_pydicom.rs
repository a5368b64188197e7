//! Real DICOM files shipped by PyPI's `pydicom` (its `data/test_files`): uncompressed CT/MR in every native transfer
//! syntax read to pydicom's modality values and to the RAS affine computed with numpy; compressed syntaxes, truncated
//! files and non-image objects give clear errors.

use std::path::{Path, PathBuf};
use std::process::Command;

use imaging::dicom;
use ndarray::Array2;
use ndarray_npy::ReadNpyExt;

const READABLE: [&str; 6] = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_implicit.dcm",
    "MR_small_expb.dcm",
    "MR_small_padded.dcm",
];

/// Copy the named pydicom test files into a fresh directory, with pydicom's reference values.
fn fetch(tag: &str, names: &[&str]) -> PathBuf {
    let python = std::env::var("MEDMAE_PYTHON")
        .expect("MEDMAE_PYTHON is unset: run scripts/setup and use cargo (.cargo/config.toml sets it), or source env.sh");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("dicom_pydicom_{tag}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/dicom/pydicom_reference.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(&dir)
        .args(names)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pydicom_reference.py failed (is pydicom installed? scripts/requirements.txt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

#[test]
fn native_syntaxes_match_pydicom() {
    let dir = fetch("native", &READABLE);
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    for name in READABLE {
        let vol =
            dicom::read_series(&dir.join(name), None).unwrap_or_else(|e| panic!("{name}: {e}"));
        let values =
            Array2::<f64>::read_npy(std::fs::File::open(dir.join(format!("{name}.npy"))).unwrap())
                .unwrap();
        let (rows, cols) = values.dim();
        assert_eq!(vol.data.shape(), &[1, cols, rows, 1], "{name}");
        for ((r, c), &v) in values.indexed_iter() {
            assert_eq!(
                vol.data[[0, c, r, 0]] as f64,
                v,
                "{name} pixel (row {r}, column {c})"
            );
        }
        let want = &reference[name]["affine"];
        for r in 0..4 {
            for c in 0..4 {
                let w = want[r][c].as_f64().unwrap();
                assert!(
                    (vol.affine[r][c] - w).abs() < 1e-6,
                    "{name} affine[{r}][{c}]: {} vs {w}",
                    vol.affine[r][c]
                );
            }
        }
    }
    // A directory of several single-slice series: listed, and a choice is required.
    let only = dir.join("dicom_only");
    std::fs::create_dir_all(&only).unwrap();
    for name in READABLE {
        std::fs::copy(dir.join(name), only.join(name)).unwrap();
    }
    let list = dicom::list_series(&only).unwrap();
    assert!(list.len() >= 2, "{list:?}");
    let e = dicom::read_series(&only, None).unwrap_err().to_string();
    assert!(e.contains("pick one with --series"), "{e}");
}

#[test]
fn compressed_truncated_and_non_image_files_are_clear_errors() {
    let cases = [
        ("MR_small_RLE.dcm", "RLE Lossless"),
        ("MR_small_jp2klossless.dcm", "JPEG 2000 Lossless"),
        ("JPEG-lossy.dcm", "JPEG Extended"),
        ("MR_small_jpeg_ls_lossless.dcm", "JPEG-LS Lossless"),
        ("MR_truncated.dcm", "MR_truncated.dcm"),
        ("rtplan.dcm", "non-image object"),
        ("no_meta.dcm", "not a DICOM Part 10 file"),
    ];
    let names: Vec<String> = cases.iter().map(|c| format!("-{}", c.0)).collect();
    let dir = fetch("bad", &names.iter().map(String::as_str).collect::<Vec<_>>());
    for (name, want) in cases {
        let e = dicom::read_series(&dir.join(name), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{name}: expected `{want}` in: {e}");
    }
}
