//! Dataset descriptions and datalists: Medical Segmentation Decathlon `dataset.json` ([`decathlon`]), BTCV
//! ([`btcv`]), BraTS / Task01_BrainTumour ([`brats`]), deterministic k-fold splits, and loading a case into a
//! [`Sample`].

pub mod audit;
pub mod brats;
pub mod btcv;
pub mod decathlon;
pub mod folders;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use spec::dataset::{DatasetKind, DatasetSource};

use crate::error::{ImagingError, Result};
use crate::loader::SampleSource;
use crate::Sample;

/// One case: its image file(s) and optional label map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    /// Case id (the first image's file name without `.nii.gz`/`.nii`/`.mha`/… extensions).
    pub id: String,
    /// One file per modality, or a single (possibly 4-D) file; absolute or relative to the working directory.
    pub images: Vec<PathBuf>,
    /// Label map, if the case is labelled.
    pub label: Option<PathBuf>,
}

impl Case {
    /// A case with the id taken from the first image's file name.
    pub fn new(images: Vec<PathBuf>, label: Option<PathBuf>) -> Self {
        let id = images.first().map(|p| case_id(p)).unwrap_or_default();
        Self { id, images, label }
    }

    /// Load the image (modalities stacked as channels) and label into a [`Sample`].
    ///
    /// Errors name the missing file, or the files whose shapes differ.
    pub fn load(&self) -> Result<Sample> {
        let image = match self.images.as_slice() {
            [] => {
                return Err(ImagingError::config(
                    "image",
                    format!("case {} lists no image file", self.id),
                ))
            }
            [one] => crate::io::load(one)?,
            many => crate::io::load_channels(many)?,
        };
        let label = match &self.label {
            Some(p) => {
                let l = crate::io::load(p)?;
                if l.spatial_shape() != image.spatial_shape() {
                    return Err(ImagingError::Shape(format!(
                        "case {}: label {} has spatial shape {:?} but the image has {:?}",
                        self.id,
                        p.display(),
                        l.spatial_shape(),
                        image.spatial_shape()
                    )));
                }
                Some(l)
            }
            None => None,
        };
        Ok(Sample { image, label })
    }
}

/// A file name without its imaging extensions (`img0001.nii.gz` → `img0001`).
pub fn case_id(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for ext in [".nii.gz", ".nii", ".mha", ".mhd", ".npy", ".png"] {
        if let Some(stem) = name.strip_suffix(ext) {
            return stem.to_string();
        }
    }
    name
}

/// NIfTI/MetaImage cases of a datalist.
#[derive(Debug, Clone)]
pub struct CaseSource(pub Vec<Case>);

impl SampleSource for CaseSource {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn load(&self, index: usize) -> Result<Sample> {
        crate::loader::item(&self.0, index)?.load()
    }
    fn identity(&self, index: usize) -> Option<String> {
        let c = self.0.get(index)?;
        Some(
            c.images
                .iter()
                .chain(&c.label)
                .map(|p| crate::loader::file_identity(p))
                .collect::<Vec<_>>()
                .join(";"),
        )
    }
}

/// Training / validation / test case lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Datalist {
    /// Labelled training cases.
    pub training: Vec<Case>,
    /// Labelled validation cases (empty for MSD; use [`kfold`] to split `training`).
    pub validation: Vec<Case>,
    /// Test cases (usually unlabelled).
    pub test: Vec<Case>,
}

impl Datalist {
    /// The named section: `training`, `validation` or `test`.
    pub fn section(&self, name: &str) -> Result<&[Case]> {
        match name {
            "training" => Ok(&self.training),
            "validation" => Ok(&self.validation),
            "test" => Ok(&self.test),
            other => Err(ImagingError::config(
                "section",
                format!("expected training, validation or test, got `{other}`"),
            )),
        }
    }

    /// Write as a decathlon-style JSON datalist (paths made relative to the file's folder when possible).
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let root = path.parent().unwrap_or(Path::new(""));
        let rel = |p: &Path| {
            p.strip_prefix(root)
                .unwrap_or(p)
                .to_string_lossy()
                .into_owned()
        };
        let entry = |c: &Case| {
            let image = match c.images.as_slice() {
                [one] => serde_json::Value::from(rel(one)),
                many => many.iter().map(|p| rel(p)).collect::<Vec<_>>().into(),
            };
            let mut m = serde_json::Map::new();
            m.insert("image".into(), image);
            if let Some(l) = &c.label {
                m.insert("label".into(), rel(l).into());
            }
            serde_json::Value::Object(m)
        };
        let v = serde_json::json!({
            "training": self.training.iter().map(entry).collect::<Vec<_>>(),
            "validation": self.validation.iter().map(entry).collect::<Vec<_>>(),
            "test": self.test.iter().map(entry).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&v)
            .map_err(|e| ImagingError::format(path, e.to_string()))?;
        std::fs::write(path, text).map_err(|e| ImagingError::io(path, e))
    }
}

/// A parsed dataset: its datalist plus the metadata of `dataset.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    /// Dataset name (`name` field, or the folder name).
    pub name: String,
    /// The folder relative paths were resolved against.
    pub root: PathBuf,
    /// Modality names by channel index (`modality`).
    pub modality: BTreeMap<usize, String>,
    /// Label names by class id (`labels`).
    pub labels: BTreeMap<u32, String>,
    /// The cases.
    pub datalist: Datalist,
}

impl Dataset {
    /// Number of image channels: the modality map's size, or 1 when it is absent.
    pub fn channels(&self) -> usize {
        self.modality.len().max(1)
    }

    /// Number of classes including background: `max label id + 1` (0 when there is no label map).
    pub fn num_classes(&self) -> usize {
        self.labels
            .keys()
            .next_back()
            .map_or(0, |&k| k as usize + 1)
    }
}

/// Read the dataset a config selects (`data.dataset` of training and `prepare` configs). A synthetic dataset is
/// generated first when its `dataset.json` is missing; the flag says whether this call generated it.
pub fn load_source(source: &DatasetSource) -> Result<(Dataset, bool)> {
    source
        .validate("data.dataset")
        .map_err(|e| ImagingError::config(e.field, e.msg))?;
    let mut generated = false;
    if let Some(syn) = &source.synthetic {
        if !source.dataset_json().is_file() {
            let dir = source.dataset_dir();
            tracing::info!(
                "generating {} synthetic phantoms in {}",
                syn.num_training + syn.num_test,
                dir.display()
            );
            crate::synthetic::write_msd_dataset(&dir, syn)?;
            generated = true;
        }
    }
    let dataset = match source.kind {
        DatasetKind::Decathlon => decathlon::load_dir_or_file(&source.path)?,
        DatasetKind::Btcv => btcv::transunet_split(&source.path)?,
        DatasetKind::Brats => brats::load_task01(&source.path)?,
    };
    Ok((dataset, generated))
}

/// One fold of a k-fold split: indices into the case list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fold {
    /// Training indices (sorted).
    pub train: Vec<usize>,
    /// Validation indices (sorted).
    pub val: Vec<usize>,
}

/// Deterministic k-fold split of `n` items: a seeded shuffle, then item `perm[i]` goes to fold `i % k`. The
/// validation sets partition `0..n` and each fold's train set is the complement.
pub fn kfold(n: usize, k: usize, seed: u64) -> Result<Vec<Fold>> {
    if k < 2 {
        return Err(ImagingError::config(
            "folds",
            format!("need at least 2 folds, got {k}"),
        ));
    }
    if n < k {
        return Err(ImagingError::config(
            "folds",
            format!("{k} folds need at least {k} cases, got {n}"),
        ));
    }
    let mut perm: Vec<usize> = (0..n).collect();
    perm.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    Ok((0..k)
        .map(|f| {
            let mut val: Vec<usize> = perm
                .iter()
                .enumerate()
                .filter(|(i, _)| i % k == f)
                .map(|(_, &c)| c)
                .collect();
            val.sort_unstable();
            let train = (0..n).filter(|i| val.binary_search(i).is_err()).collect();
            Fold { train, val }
        })
        .collect())
}

/// Split a case list into (train, validation) by fold `fold` of a k-fold split.
pub fn split_fold(
    cases: &[Case],
    k: usize,
    fold: usize,
    seed: u64,
) -> Result<(Vec<Case>, Vec<Case>)> {
    let folds = kfold(cases.len(), k, seed)?;
    let f = folds
        .get(fold)
        .ok_or_else(|| ImagingError::config("fold", format!("must be < {k}, got {fold}")))?;
    let pick = |idx: &[usize]| idx.iter().filter_map(|&i| cases.get(i).cloned()).collect();
    Ok((pick(&f.train), pick(&f.val)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_partition_the_cases() {
        for (n, k) in [(10, 5), (7, 3), (30, 4), (2, 2)] {
            let folds = kfold(n, k, 42).unwrap();
            assert_eq!(folds.len(), k);
            let mut all: Vec<usize> = folds.iter().flat_map(|f| f.val.clone()).collect();
            all.sort_unstable();
            assert_eq!(
                all,
                (0..n).collect::<Vec<_>>(),
                "validation sets partition 0..{n}"
            );
            for f in &folds {
                assert_eq!(f.train.len() + f.val.len(), n);
                assert!(f.train.iter().all(|i| !f.val.contains(i)));
                assert!(f.val.len() == n / k || f.val.len() == n / k + 1, "balanced");
            }
            assert_eq!(folds, kfold(n, k, 42).unwrap(), "deterministic");
        }
        assert_ne!(kfold(30, 5, 1).unwrap(), kfold(30, 5, 2).unwrap());
        assert!(kfold(3, 1, 0).is_err());
        assert!(kfold(3, 4, 0)
            .unwrap_err()
            .to_string()
            .contains("at least 4 cases"));
    }

    #[test]
    fn split_and_ids() {
        let cases: Vec<Case> = (0..6)
            .map(|i| Case::new(vec![PathBuf::from(format!("d/img{i}.nii.gz"))], None))
            .collect();
        assert_eq!(cases[3].id, "img3");
        let (tr, va) = split_fold(&cases, 3, 1, 0).unwrap();
        assert_eq!((tr.len(), va.len()), (4, 2));
        assert!(split_fold(&cases, 3, 3, 0).is_err());
        assert_eq!(case_id(Path::new("a/BRATS_001.nii")), "BRATS_001");
    }
}
