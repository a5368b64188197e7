//! A dataset given as two folders, one of images and one of label maps, matched into cases by file name.
//!
//! Matching: a file's case key is its name without the imaging extension (`.nii.gz`, `.nii`, `.mha`, `.mhd`) and
//! without one trailing role suffix — `_img`/`_image` on images, `_seg`/`_label`/`_labels`/`_mask`/`_gt`/
//! `_segmentation` on labels (case-insensitive). When every image name ends in nnU-Net's channel suffix `_NNNN`
//! (`case_0000.nii.gz`, `case_0001.nii.gz`), the suffix numbers the channels of one case. Two files with one key,
//! a label without an image, and (with nnU-Net suffixes) a case with a gap in its channel numbers are errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{case_id, Case};
use crate::error::{ImagingError, Result};
use crate::io::FileFormat;

const IMAGE_SUFFIXES: [&str; 2] = ["_image", "_img"];
const LABEL_SUFFIXES: [&str; 6] = ["_segmentation", "_labels", "_label", "_seg", "_mask", "_gt"];

/// The cases found in an images folder and an optional labels folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FolderCases {
    /// Cases with a label map, ordered by key.
    pub labelled: Vec<Case>,
    /// Images without a label map, ordered by key.
    pub unlabelled: Vec<Case>,
}

/// The image files (by extension) directly inside `dir`, sorted by name.
pub fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| ImagingError::io(dir, e))?;
    let mut files = Vec::new();
    for e in entries {
        let p = e.map_err(|e| ImagingError::io(dir, e))?.path();
        if p.is_file() && FileFormat::from_path(&p).is_some() {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

fn strip_suffix_ci<'a>(s: &'a str, suffixes: &[&str]) -> &'a str {
    let lower = s.to_ascii_lowercase();
    for suf in suffixes {
        if lower.ends_with(suf) && lower.len() > suf.len() {
            return &s[..s.len() - suf.len()];
        }
    }
    s
}

/// `case_0003` → (`case`, 3) for nnU-Net's four-digit channel suffix.
fn channel_suffix(id: &str) -> Option<(&str, usize)> {
    let (base, digits) = id.rsplit_once('_')?;
    if digits.len() == 4 && digits.bytes().all(|b| b.is_ascii_digit()) && !base.is_empty() {
        Some((base, digits.parse().ok()?))
    } else {
        None
    }
}

/// Group the image files of `images` into cases (one file each, or nnU-Net channel files), keyed by case key.
fn image_cases(images: &Path) -> Result<BTreeMap<String, Vec<PathBuf>>> {
    let files = image_files(images)?;
    if files.is_empty() {
        return Err(ImagingError::config(
            "images",
            format!(
                "{} holds no image files (.nii, .nii.gz, .mha, .mhd)",
                images.display()
            ),
        ));
    }
    let ids: Vec<String> = files.iter().map(|p| case_id(p)).collect();
    let nnunet = ids.iter().all(|id| channel_suffix(id).is_some());
    let mut cases: BTreeMap<String, BTreeMap<usize, PathBuf>> = BTreeMap::new();
    for (p, id) in files.iter().zip(&ids) {
        let (key, channel) = if nnunet {
            channel_suffix(id).map_or((id.as_str(), 0), |(b, c)| (b, c))
        } else {
            (strip_suffix_ci(id, &IMAGE_SUFFIXES), 0)
        };
        let slot = cases.entry(key.to_string()).or_default();
        if let Some(other) = slot.insert(channel, p.clone()) {
            return Err(ImagingError::config(
                "images",
                format!(
                    "{} and {} both give case `{key}`{}",
                    other.display(),
                    p.display(),
                    if nnunet {
                        format!(" channel {channel}")
                    } else {
                        String::new()
                    }
                ),
            ));
        }
    }
    cases
        .into_iter()
        .map(|(key, chans)| {
            if let Some((i, _)) = chans.keys().enumerate().find(|(i, c)| i != *c) {
                return Err(ImagingError::config(
                    "images",
                    format!(
                        "case `{key}` has no channel file _{i:04} (found {:?})",
                        chans.keys().collect::<Vec<_>>()
                    ),
                ));
            }
            Ok((key, chans.into_values().collect()))
        })
        .collect()
}

/// Match the images of `images` with the label maps of `labels` (see the module docs).
pub fn match_folders(images: &Path, labels: Option<&Path>) -> Result<FolderCases> {
    let cases = image_cases(images)?;
    let mut label_of: BTreeMap<String, PathBuf> = BTreeMap::new();
    if let Some(dir) = labels {
        for p in image_files(dir)? {
            let id = case_id(&p);
            let key = strip_suffix_ci(&id, &LABEL_SUFFIXES).to_string();
            if let Some(other) = label_of.insert(key.clone(), p.clone()) {
                return Err(ImagingError::config(
                    "labels",
                    format!(
                        "{} and {} both give the label of case `{key}`",
                        other.display(),
                        p.display()
                    ),
                ));
            }
        }
        if let Some((key, p)) = label_of.iter().find(|(k, _)| !cases.contains_key(*k)) {
            return Err(ImagingError::config(
                "labels",
                format!(
                    "label map {} (case `{key}`) has no image in {}",
                    p.display(),
                    images.display()
                ),
            ));
        }
    }
    let mut out = FolderCases::default();
    for (key, files) in cases {
        let label = label_of.remove(&key);
        let case = Case {
            id: key,
            images: files,
            label,
        };
        if case.label.is_some() {
            out.labelled.push(case);
        } else {
            out.unlabelled.push(case);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, names: &[&str]) {
        std::fs::create_dir_all(dir).unwrap();
        for n in names {
            std::fs::write(dir.join(n), b"").unwrap();
        }
    }

    #[test]
    fn matches_by_name_with_role_suffixes() {
        let t = tempfile::tempdir().unwrap();
        let (img, lab) = (t.path().join("img"), t.path().join("lab"));
        touch(
            &img,
            &[
                "a.nii.gz",
                "b_img.mha",
                "c.nii",
                "notes.txt",
                "d_image.nii.gz",
            ],
        );
        touch(&lab, &["a_seg.nii.gz", "b.nii.gz", "d_Mask.nii"]);
        let m = match_folders(&img, Some(&lab)).unwrap();
        let ids: Vec<_> = m.labelled.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "d"]);
        assert_eq!(m.labelled[1].images, vec![img.join("b_img.mha")]);
        assert_eq!(m.labelled[1].label, Some(lab.join("b.nii.gz")));
        assert_eq!(m.unlabelled.len(), 1);
        assert_eq!(m.unlabelled[0].id, "c");
    }

    #[test]
    fn nnunet_channel_files_form_one_case() {
        let t = tempfile::tempdir().unwrap();
        let (img, lab) = (t.path().join("img"), t.path().join("lab"));
        touch(
            &img,
            &[
                "p1_0000.nii.gz",
                "p1_0001.nii.gz",
                "p2_0000.nii.gz",
                "p2_0001.nii.gz",
            ],
        );
        touch(&lab, &["p1.nii.gz", "p2.nii.gz"]);
        let m = match_folders(&img, Some(&lab)).unwrap();
        assert_eq!(m.labelled.len(), 2);
        assert_eq!(m.labelled[0].images.len(), 2);
        assert_eq!(m.labelled[0].images[1], img.join("p1_0001.nii.gz"));
        std::fs::remove_file(img.join("p2_0000.nii.gz")).unwrap();
        let e = match_folders(&img, Some(&lab)).unwrap_err().to_string();
        assert!(e.contains("case `p2` has no channel file _0000"), "{e}");
    }

    #[test]
    fn orphans_and_duplicates_are_errors() {
        let t = tempfile::tempdir().unwrap();
        let (img, lab) = (t.path().join("img"), t.path().join("lab"));
        touch(&img, &["a.nii.gz"]);
        touch(&lab, &["a.nii.gz", "z.nii.gz"]);
        let e = match_folders(&img, Some(&lab)).unwrap_err().to_string();
        assert!(e.contains("z.nii.gz") && e.contains("has no image"), "{e}");
        std::fs::remove_file(lab.join("z.nii.gz")).unwrap();
        touch(&lab, &["a_seg.nii.gz"]);
        let e = match_folders(&img, Some(&lab)).unwrap_err().to_string();
        assert!(e.contains("both give the label of case `a`"), "{e}");
        touch(&img, &["a.mha"]);
        let e = match_folders(&img, None).unwrap_err().to_string();
        assert!(e.contains("both give case `a`"), "{e}");
        let empty = t.path().join("empty");
        touch(&empty, &[]);
        assert!(match_folders(&empty, None)
            .unwrap_err()
            .to_string()
            .contains("holds no image files"));
    }
}
