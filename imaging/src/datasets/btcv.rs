//! BTCV (Beyond the Cranial Vault, 13 abdominal organs): the TransUNet 18 training / 12 validation split, as a
//! datalist over the usual folder layouts, and the organ label names.
//!
//! Layouts recognised under the root: `imagesTr/img0001.nii.gz` + `labelsTr/label0001.nii.gz` (MONAI/UNETR), and
//! the raw download `Training/img/img0001.nii.gz` + `Training/label/label0001.nii.gz` (also under `RawData/`).
//! A transunet.json-style datalist (written with [`Datalist::write_json`]) is read with [`super::decathlon::load`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Case, Datalist, Dataset};
use crate::error::{ImagingError, Result};

/// Case numbers of the TransUNet validation ("test_vol") split.
pub const TRANSUNET_VALIDATION: [u32; 12] = [1, 2, 3, 4, 8, 22, 25, 29, 32, 35, 36, 38];
/// Case numbers of the TransUNet training split.
pub const TRANSUNET_TRAINING: [u32; 18] = [
    5, 6, 7, 9, 10, 21, 23, 24, 26, 27, 28, 30, 31, 33, 34, 37, 39, 40,
];

/// BTCV label names by class id (0 = background, 13 organs).
pub const LABELS: [&str; 14] = [
    "background",
    "spleen",
    "right kidney",
    "left kidney",
    "gallbladder",
    "esophagus",
    "liver",
    "stomach",
    "aorta",
    "inferior vena cava",
    "portal vein and splenic vein",
    "pancreas",
    "right adrenal gland",
    "left adrenal gland",
];

/// The (image, label) folders of the first layout found under `root`.
fn layout(root: &Path) -> Result<(PathBuf, PathBuf)> {
    let candidates = [
        (root.join("imagesTr"), root.join("labelsTr")),
        (root.join("Training/img"), root.join("Training/label")),
        (
            root.join("RawData/Training/img"),
            root.join("RawData/Training/label"),
        ),
    ];
    candidates.iter().find(|(i, l)| i.is_dir() && l.is_dir()).cloned().ok_or_else(|| {
        ImagingError::format(root, "no BTCV layout found: expected imagesTr/+labelsTr/ or Training/img/+Training/label/")
    })
}

/// The TransUNet split of the BTCV cases under `root` (18 training, 12 validation); every file must exist.
pub fn transunet_split(root: &Path) -> Result<Dataset> {
    let (img_dir, lab_dir) = layout(root)?;
    let case = |n: u32| -> Result<Case> {
        let img = img_dir.join(format!("img{n:04}.nii.gz"));
        let lab = lab_dir.join(format!("label{n:04}.nii.gz"));
        for p in [&img, &lab] {
            if !p.is_file() {
                return Err(ImagingError::format(
                    root,
                    format!("BTCV case {n}: file {} does not exist", p.display()),
                ));
            }
        }
        Ok(Case::new(vec![img], Some(lab)))
    };
    let datalist = Datalist {
        training: TRANSUNET_TRAINING
            .iter()
            .map(|&n| case(n))
            .collect::<Result<_>>()?,
        validation: TRANSUNET_VALIDATION
            .iter()
            .map(|&n| case(n))
            .collect::<Result<_>>()?,
        test: Vec::new(),
    };
    Ok(Dataset {
        name: "BTCV".into(),
        root: root.to_path_buf(),
        modality: BTreeMap::from([(0, "CT".to_string())]),
        labels: LABELS
            .iter()
            .enumerate()
            .map(|(i, n)| (i as u32, n.to_string()))
            .collect(),
        datalist,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_disjoint_and_covers_the_30_training_cases() {
        let mut all: Vec<u32> = TRANSUNET_TRAINING
            .iter()
            .chain(&TRANSUNET_VALIDATION)
            .copied()
            .collect();
        all.sort_unstable();
        let expected: Vec<u32> = (1..=10).chain(21..=40).collect();
        assert_eq!(all, expected);
    }

    #[test]
    fn builds_the_datalist_from_either_layout() {
        let dir = tempfile::tempdir().unwrap();
        assert!(transunet_split(dir.path())
            .unwrap_err()
            .to_string()
            .contains("no BTCV layout"));
        let (i, l) = (
            dir.path().join("Training/img"),
            dir.path().join("Training/label"),
        );
        std::fs::create_dir_all(&i).unwrap();
        std::fs::create_dir_all(&l).unwrap();
        for n in TRANSUNET_TRAINING.iter().chain(&TRANSUNET_VALIDATION) {
            std::fs::write(i.join(format!("img{n:04}.nii.gz")), b"").unwrap();
            if *n != 38 {
                std::fs::write(l.join(format!("label{n:04}.nii.gz")), b"").unwrap();
            }
        }
        let e = transunet_split(dir.path()).unwrap_err().to_string();
        assert!(e.contains("label0038.nii.gz"), "{e}");
        std::fs::write(l.join("label0038.nii.gz"), b"").unwrap();
        let ds = transunet_split(dir.path()).unwrap();
        assert_eq!(
            (ds.datalist.training.len(), ds.datalist.validation.len()),
            (18, 12)
        );
        assert_eq!(ds.datalist.validation[0].id, "img0001");
        assert_eq!(ds.num_classes(), 14);
        // Round trip through a transunet.json-style datalist.
        let json = dir.path().join("transunet.json");
        ds.datalist.write_json(&json).unwrap();
        let back = super::super::decathlon::load(&json).unwrap();
        assert_eq!(back.datalist, ds.datalist);
    }
}
