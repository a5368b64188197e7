//! BraTS / MSD Task01_BrainTumour: 4-channel MRI (FLAIR, T1w, T1gd, T2w) with tumour labels.
//!
//! Two label numberings exist ([`BratsNumbering`]): the BraTS challenge's {1 necrotic/non-enhancing core, 2 oedema,
//! 4 enhancing} and MSD Task01's {1 oedema, 2 non-enhancing tumour, 3 enhancing tumour} (the names in its
//! `dataset.json`, which medmae follows; MONAI's BraTS tutorial reads MSD label 2 as enhancing instead). Models are
//! trained on the nested regions TC (tumour core = necrotic ∪ enhancing), WT (whole tumour = all) and ET
//! (enhancing), see [`regions`]; MONAI's `ConvertToMultiChannelBasedOnBratsClasses` expects BraTS numbering, so MSD
//! labels go through [`msd_to_brats`] first.

use std::path::Path;

use ndarray::{Array4, Axis};

use super::{decathlon, Dataset};
use crate::error::{ImagingError, Result};
pub use crate::synthetic::BratsNumbering;
use crate::volume::Volume;

/// Names of the three region channels produced by [`regions`].
pub const REGION_NAMES: [&str; 3] = ["TC", "WT", "ET"];

/// Load an MSD Task01-style dataset (folder or `dataset.json`) and check it is 4-channel with labels 0–3.
pub fn load_task01(path: &Path) -> Result<Dataset> {
    let ds = decathlon::load_dir_or_file(path)?;
    if !ds.modality.is_empty() && ds.modality.len() != 4 {
        return Err(ImagingError::config(
            "modality",
            format!(
                "BraTS needs 4 MRI modalities, the dataset lists {}",
                ds.modality.len()
            ),
        ));
    }
    if !ds.labels.is_empty() && ds.labels.keys().copied().collect::<Vec<_>>() != [0, 1, 2, 3] {
        return Err(ImagingError::config(
            "labels",
            format!(
                "MSD Task01 numbering has labels 0, 1, 2, 3; got {:?}",
                ds.labels.keys().collect::<Vec<_>>()
            ),
        ));
    }
    Ok(ds)
}

fn label_plane(label: &Volume) -> Result<ndarray::ArrayView3<'_, f32>> {
    if label.channels() != 1 {
        return Err(ImagingError::Shape(format!(
            "a BraTS label map has one channel, got {}",
            label.channels()
        )));
    }
    Ok(label.data.index_axis(Axis(0), 0))
}

/// Renumber an MSD Task01 label map to BraTS numbering (1 → 2, 2 → 1, 3 → 4); other values are an error.
pub fn msd_to_brats(label: &Volume) -> Result<Volume> {
    let plane = label_plane(label)?;
    let mut out = Array4::<f32>::zeros(label.data.raw_dim());
    for (dst, &v) in out.iter_mut().zip(plane.iter()) {
        const MAP: [f32; 4] = [0.0, 2.0, 1.0, 4.0];
        *dst = match MAP.get(v as usize) {
            Some(&m) if v.fract() == 0.0 && v >= 0.0 => m,
            _ => {
                return Err(ImagingError::config(
                    "label",
                    format!("MSD Task01 labels are 0..=3, found {v}"),
                ))
            }
        };
    }
    Ok(Volume::new(out, label.affine))
}

/// The TC / WT / ET channels (0/1) of a label map in the given numbering; unknown label values are an error.
pub fn regions(label: &Volume, numbering: BratsNumbering) -> Result<Volume> {
    let plane = label_plane(label)?;
    let [ncr, ed, et] = numbering.values();
    let [x, y, z] = label.spatial_shape();
    let mut out = Array4::<f32>::zeros((3, x, y, z));
    for ((i, j, k), &v) in plane.indexed_iter() {
        if v == 0.0 {
            continue;
        }
        if v != ncr && v != ed && v != et {
            return Err(ImagingError::config(
                "label",
                format!("value {v} is not a {numbering:?} tumour label"),
            ));
        }
        out[(0, i, j, k)] = f32::from(v == ncr || v == et);
        out[(1, i, j, k)] = 1.0;
        out[(2, i, j, k)] = f32::from(v == et);
    }
    Ok(Volume::new(out, label.affine))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab(values: &[f32]) -> Volume {
        let d = Array4::from_shape_vec((1, values.len(), 1, 1), values.to_vec()).unwrap();
        Volume::new(d, Volume::diag_affine([1.0; 3]))
    }

    #[test]
    fn msd_renumbering_and_regions_agree() {
        let msd = lab(&[0.0, 1.0, 2.0, 3.0]);
        let b = msd_to_brats(&msd).unwrap();
        assert_eq!(
            b.data.iter().copied().collect::<Vec<_>>(),
            vec![0.0, 2.0, 1.0, 4.0]
        );
        let r1 = regions(&msd, BratsNumbering::Msd).unwrap();
        let r2 = regions(&b, BratsNumbering::Brats).unwrap();
        assert_eq!(r1, r2);
        let ch = |c: usize| {
            r1.data
                .index_axis(Axis(0), c)
                .iter()
                .copied()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ch(0),
            vec![0.0, 0.0, 1.0, 1.0],
            "TC = non-enhancing + enhancing"
        );
        assert_eq!(ch(1), vec![0.0, 1.0, 1.0, 1.0], "WT = everything");
        assert_eq!(ch(2), vec![0.0, 0.0, 0.0, 1.0], "ET = enhancing");
        assert!(msd_to_brats(&lab(&[4.0]))
            .unwrap_err()
            .to_string()
            .contains("0..=3"));
        assert!(regions(&lab(&[3.0]), BratsNumbering::Brats).is_err());
    }

    #[test]
    fn task01_checks_modalities_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.nii.gz"), b"").unwrap();
        let write = |modality: &str, labels: &str| {
            let j = format!(
                r#"{{"modality": {modality}, "labels": {labels}, "training": [{{"image": "a.nii.gz", "label": "a.nii.gz"}}]}}"#
            );
            std::fs::write(dir.path().join("dataset.json"), j).unwrap();
        };
        let four = r#"{"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}"#;
        write(
            four,
            r#"{"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}"#,
        );
        assert_eq!(load_task01(dir.path()).unwrap().channels(), 4);
        write(r#"{"0": "CT"}"#, r#"{"0": "background"}"#);
        assert!(load_task01(dir.path())
            .unwrap_err()
            .to_string()
            .contains("4 MRI modalities"));
        write(four, r#"{"0": "background", "1": "a", "2": "b", "4": "c"}"#);
        assert!(load_task01(dir.path())
            .unwrap_err()
            .to_string()
            .contains("labels"));
    }
}
