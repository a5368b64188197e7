//! The DICOM series fixture shared by `dicom_serve.rs` and `dicom_node.rs`: a real NIfTI volume written as a CT
//! series by SimpleITK (`tests/support/make_dicom_series.py`), made once per test binary.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use crate::common::python;
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
        let out = Command::new(python())
            .arg(&script)
            .arg(NIFTI)
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "make_dicom_series.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
    .path()
}

/// Read a SEG with highdicom (`tests/support/read_seg.py`): per-segment masks `(slices, rows, columns, segments)` for
/// the instances of `source` in SimpleITK's order, and the facts JSON.
pub fn read_seg(seg: &Path, source: &Path) -> (ndarray::Array4<u8>, serde_json::Value) {
    let out = seg.with_extension("read");
    std::fs::create_dir_all(&out).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/read_seg.py");
    let run = Command::new(python())
        .arg(&script)
        .arg(seg)
        .arg(source)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "read_seg.py failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let masks =
        ndarray::Array4::<u8>::read_npy(std::fs::File::open(out.join("segments.npy")).unwrap())
            .unwrap();
    let j = serde_json::from_str(&std::fs::read_to_string(out.join("seg.json")).unwrap()).unwrap();
    (masks, j)
}
