//! Real data: every MetaImage and NIfTI file shipped by Debian's `insighttoolkit5-examples` (installed by
//! `scripts/setup`) loads to the array and RAS geometry SimpleITK reports at test time (and nibabel, for NIfTI).

#[path = "golden/io/support.rs"]
mod support;

use std::path::{Path, PathBuf};

use imaging::io;
use support::{assert_affine_close, assert_same_array, mat4, reference};

const ITK_DATA: &str = "/usr/share/doc/insighttoolkit5-examples/examples/Data";

fn itk_files() -> Vec<PathBuf> {
    let dir = Path::new(ITK_DATA);
    assert!(dir.is_dir(), "{ITK_DATA} is missing: install the Debian package insighttoolkit5-examples (scripts/setup)");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| io::FileFormat::from_path(p).is_some())
        .collect();
    files.sort();
    files
}

#[test]
fn itk_example_files_match_simpleitk_and_nibabel() {
    let files = itk_files();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    // The package's set as of insighttoolkit5-examples 5.x: fail loudly if it shrinks unexpectedly.
    for must in [
        "BrainProtonDensity3Slices.mha",
        "KmeansTest_T1UCharRaw.nii.gz",
        "BrainProtonDensitySliceBorder20.mhd",
    ] {
        assert!(
            names.iter().any(|n| n == must),
            "{must} not found in {ITK_DATA}"
        );
    }
    let refs = reference(&files);
    let mut compared = 0;
    for (path, r) in files.iter().zip(&refs) {
        let name = path.file_name().unwrap().to_string_lossy();
        let vol = io::load(path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let sitk = r
            .sitk
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: SimpleITK failed: {}", r.info["sitk_error"]));
        assert_same_array(&vol.data, sitk, &format!("{name} vs SimpleITK"));
        assert_affine_close(
            &vol.affine,
            &mat4(&r.info["sitk_affine"]),
            1e-5,
            &format!("{name} vs SimpleITK"),
        );
        if let Some(nib) = &r.nib {
            assert_same_array(&vol.data, nib, &format!("{name} vs nibabel"));
            assert_affine_close(
                &vol.affine,
                &mat4(&r.info["nib_affine"]),
                1e-5,
                &format!("{name} vs nibabel"),
            );
        }
        let h = io::probe(path).unwrap();
        assert_eq!(
            (h.shape, h.channels, h.affine),
            (vol.spatial_shape(), vol.channels(), vol.affine),
            "{name}: probe"
        );
        compared += 1;
    }
    assert!(compared >= 20, "only {compared} files compared");
    eprintln!("compared {compared} ITK example files with SimpleITK/nibabel");
}
