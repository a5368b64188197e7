//! The DICOM series fixture shared by `dicom_serve.rs` and `dicom_node.rs`: a real NIfTI volume written as a CT
//! series by SimpleITK (`tests/support/make_dicom_series.py`), made once per test binary.

use std::path::Path;
use std::sync::OnceLock;

use ndarray_npy::ReadNpyExt;

/// The source volume (ITK's `KmeansTest_T1UCharRaw.nii.gz`, Debian `insighttoolkit5-examples`).
pub const NIFTI: &str =
    "/usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz";

/// The generated DICOM fixtures (see `tests/support/make_dicom_series.py`).
pub fn dicom_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        assert!(
            Path::new(NIFTI).is_file(),
            "{NIFTI} is missing: install insighttoolkit5-examples (scripts/setup)"
        );
        let dir = tempfile::Builder::new()
            .prefix("dicomserve-")
            .tempdir()
            .unwrap();
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/make_dicom_series.py");
        medmae_test_support::run_python(&script, &[Path::new(NIFTI), dir.path()]);
        dir
    })
    .path()
}

/// Read a SEG with highdicom (`medmae_test_support::read_seg`): per-segment masks `(slices, rows, columns, segments)` for
/// the instances of `source` in SimpleITK's order, and the facts JSON.
pub fn read_seg(seg: &Path, source: &Path) -> (ndarray::Array4<u8>, serde_json::Value) {
    let out = seg.with_extension("read");
    std::fs::create_dir_all(&out).unwrap();
    medmae_test_support::read_seg(seg, source, &out);
    let masks =
        ndarray::Array4::<u8>::read_npy(std::fs::File::open(out.join("segments.npy")).unwrap())
            .unwrap();
    let j = serde_json::from_str(&std::fs::read_to_string(out.join("seg.json")).unwrap()).unwrap();
    (masks, j)
}
