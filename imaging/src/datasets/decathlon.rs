//! Medical Segmentation Decathlon `dataset.json` (and MONAI-style JSON datalists with the same sections).
//!
//! Recognised fields: `name`, `modality` (`{"0": "FLAIR", …}`), `labels` (`{"0": "background", …}`), `numTraining`,
//! and the case lists `training`, `validation`, `test`. A training/validation entry is `{"image": …, "label": …}`;
//! a test entry is a path or `{"image": …}`. `image` is a path or a list of per-modality paths. Relative paths are
//! resolved against the folder of the JSON file. Errors name the JSON field (`training[3].image`) and the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{Case, Datalist, Dataset};
use crate::error::{ImagingError, Result};

/// Read and parse a `dataset.json`, checking that every listed file exists.
pub fn load(json_path: &Path) -> Result<Dataset> {
    let text = std::fs::read_to_string(json_path).map_err(|e| ImagingError::io(json_path, e))?;
    let root = json_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let ds = parse(&text, json_path, &root)?;
    check_files(&ds, json_path)?;
    Ok(ds)
}

/// Load the dataset of a folder: its `dataset.json`, or (when the path is a file) that JSON file.
pub fn load_dir_or_file(path: &Path) -> Result<Dataset> {
    if path.is_dir() {
        load(&path.join("dataset.json"))
    } else {
        load(path)
    }
}

/// Parse the JSON text of `json_path` with relative paths resolved against `root` (no file checks).
pub fn parse(text: &str, json_path: &Path, root: &Path) -> Result<Dataset> {
    let err = |field: &str, msg: String| {
        ImagingError::format(json_path, format!("field `{field}`: {msg}"))
    };
    let v: Value = serde_json::from_str(text)
        .map_err(|e| ImagingError::format(json_path, format!("invalid JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| err("<root>", "expected a JSON object".into()))?;
    let name = match obj.get("name") {
        None => root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(err("name", format!("expected a string, got {other}"))),
    };
    let modality: BTreeMap<usize, String> = id_map(obj.get("modality"), "modality", &err)?;
    let labels: BTreeMap<u32, String> = id_map(obj.get("labels"), "labels", &err)?;
    let num_modalities = modality.len();
    let section = |key: &str, labelled: bool| -> Result<Vec<Case>> {
        let Some(list) = obj.get(key) else {
            return Ok(Vec::new());
        };
        let arr = list
            .as_array()
            .ok_or_else(|| err(key, format!("expected a list, got {list}")))?;
        arr.iter()
            .enumerate()
            .map(|(i, e)| {
                entry(
                    e,
                    &format!("{key}[{i}]"),
                    labelled,
                    root,
                    num_modalities,
                    &err,
                )
            })
            .collect()
    };
    let datalist = Datalist {
        training: section("training", true)?,
        validation: section("validation", true)?,
        test: section("test", false)?,
    };
    if datalist.training.is_empty() && datalist.validation.is_empty() && datalist.test.is_empty() {
        return Err(err(
            "training",
            "no cases: `training`, `validation` and `test` are all missing or empty".into(),
        ));
    }
    match obj.get("numTraining") {
        None => {}
        Some(n) => {
            let n = n.as_u64().ok_or_else(|| {
                err(
                    "numTraining",
                    format!("expected a non-negative integer, got {n}"),
                )
            })?;
            if n as usize != datalist.training.len() {
                tracing::warn!(file = %json_path.display(), "numTraining is {n} but `training` lists {} cases", datalist.training.len());
            }
        }
    }
    Ok(Dataset {
        name,
        root: root.to_path_buf(),
        modality,
        labels,
        datalist,
    })
}

/// `{"0": "name", …}` → map from integer id.
fn id_map<K: std::str::FromStr + Ord>(
    v: Option<&Value>,
    field: &str,
    err: &impl Fn(&str, String) -> ImagingError,
) -> Result<BTreeMap<K, String>> {
    let Some(v) = v else {
        return Ok(BTreeMap::new());
    };
    let obj = v.as_object().ok_or_else(|| {
        err(
            field,
            format!("expected an object like {{\"0\": \"…\"}}, got {v}"),
        )
    })?;
    obj.iter()
        .map(|(k, name)| {
            let id = k.trim().parse::<K>().map_err(|_| {
                err(
                    &format!("{field}.{k}"),
                    "key must be a non-negative integer".into(),
                )
            })?;
            let name = name.as_str().ok_or_else(|| {
                err(
                    &format!("{field}.{k}"),
                    format!("expected a string, got {name}"),
                )
            })?;
            Ok((id, name.to_string()))
        })
        .collect()
}

fn resolve(root: &Path, s: &str) -> PathBuf {
    let p = Path::new(s);
    let p = p.strip_prefix("./").unwrap_or(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    }
}

fn path_of(
    v: &Value,
    field: &str,
    root: &Path,
    err: &impl Fn(&str, String) -> ImagingError,
) -> Result<PathBuf> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Ok(resolve(root, s)),
        other => Err(err(
            field,
            format!("expected a file path string, got {other}"),
        )),
    }
}

fn images_of(
    v: &Value,
    field: &str,
    root: &Path,
    num_modalities: usize,
    err: &impl Fn(&str, String) -> ImagingError,
) -> Result<Vec<PathBuf>> {
    let images = match v {
        Value::Array(list) => {
            if list.is_empty() {
                return Err(err(field, "empty list of modality files".into()));
            }
            if num_modalities > 0 && list.len() != num_modalities {
                return Err(err(
                    field,
                    format!(
                        "lists {} modality files but `modality` has {num_modalities}",
                        list.len()
                    ),
                ));
            }
            list.iter()
                .enumerate()
                .map(|(m, p)| path_of(p, &format!("{field}[{m}]"), root, err))
                .collect::<Result<_>>()?
        }
        other => vec![path_of(other, field, root, err)?],
    };
    Ok(images)
}

fn entry(
    e: &Value,
    field: &str,
    labelled: bool,
    root: &Path,
    num_modalities: usize,
    err: &impl Fn(&str, String) -> ImagingError,
) -> Result<Case> {
    match e {
        Value::Object(o) => {
            let image = o
                .get("image")
                .ok_or_else(|| err(&format!("{field}.image"), "missing".into()))?;
            let images = images_of(image, &format!("{field}.image"), root, num_modalities, err)?;
            let label = match o.get("label") {
                Some(l) => Some(path_of(l, &format!("{field}.label"), root, err)?),
                None if labelled => {
                    return Err(err(
                        &format!("{field}.label"),
                        "missing (training and validation cases need a label)".into(),
                    ))
                }
                None => None,
            };
            Ok(Case::new(images, label))
        }
        Value::String(_) | Value::Array(_) if !labelled => Ok(Case::new(
            images_of(e, field, root, num_modalities, err)?,
            None,
        )),
        other => Err(err(
            field,
            format!("expected {{\"image\": …, \"label\": …}}, got {other}"),
        )),
    }
}

/// Check that every file of the datalist exists; the error names the file and the JSON field.
pub fn check_files(ds: &Dataset, json_path: &Path) -> Result<()> {
    let sections = [
        ("training", &ds.datalist.training),
        ("validation", &ds.datalist.validation),
        ("test", &ds.datalist.test),
    ];
    for (name, cases) in sections {
        for (i, c) in cases.iter().enumerate() {
            let files = c
                .images
                .iter()
                .map(|p| ("image", p))
                .chain(c.label.iter().map(|p| ("label", p)));
            for (what, p) in files {
                if !p.is_file() {
                    return Err(ImagingError::format(
                        json_path,
                        format!(
                            "field `{name}[{i}].{what}`: file {} does not exist",
                            p.display()
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSD: &str = r#"{
        "name": "BRATS", "tensorImageSize": "4D",
        "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
        "numTraining": 2, "numTest": 1,
        "training": [{"image": "./imagesTr/BRATS_001.nii.gz", "label": "./labelsTr/BRATS_001.nii.gz"},
                     {"image": ["m0/a.nii.gz", "m1/a.nii.gz", "m2/a.nii.gz", "/abs/m3/a.nii.gz"], "label": "labelsTr/a.nii.gz"}],
        "test": ["./imagesTs/BRATS_485.nii.gz", {"image": "imagesTs/BRATS_486.nii.gz"}]
    }"#;

    fn parse_str(s: &str) -> Result<Dataset> {
        parse(
            s,
            Path::new("/data/Task01/dataset.json"),
            Path::new("/data/Task01"),
        )
    }

    #[test]
    fn parses_msd_with_modality_lists() {
        let ds = parse_str(MSD).unwrap();
        assert_eq!(ds.name, "BRATS");
        assert_eq!((ds.channels(), ds.num_classes()), (4, 4));
        assert_eq!(ds.labels[&3], "enhancing tumour");
        let t = &ds.datalist.training;
        assert_eq!(
            t[0].images,
            vec![PathBuf::from("/data/Task01/imagesTr/BRATS_001.nii.gz")]
        );
        assert_eq!(t[0].id, "BRATS_001");
        assert_eq!(t[1].images.len(), 4);
        assert_eq!(t[1].images[3], PathBuf::from("/abs/m3/a.nii.gz"));
        assert_eq!(
            t[1].label.as_deref(),
            Some(Path::new("/data/Task01/labelsTr/a.nii.gz"))
        );
        assert_eq!(ds.datalist.test.len(), 2);
        assert!(ds.datalist.test[1].label.is_none());
        assert!(ds.datalist.validation.is_empty());
    }

    fn err_of(s: &str) -> String {
        parse_str(s).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err_of("[1]").contains("expected a JSON object"));
        assert!(err_of("{\"training\": [}").contains("invalid JSON"));
        assert!(err_of("{\"training\": []}").contains("no cases"));
        assert!(err_of("{\"training\": {}}").contains("field `training`: expected a list"));
        assert!(err_of(r#"{"training": [{"label": "l.nii"}]}"#)
            .contains("`training[0].image`: missing"));
        assert!(err_of(r#"{"training": [{"image": "a.nii"}]}"#)
            .contains("`training[0].label`: missing"));
        assert!(err_of(r#"{"training": [{"image": 3, "label": "l"}]}"#)
            .contains("`training[0].image`: expected a file path string"));
        assert!(
            err_of(r#"{"training": [{"image": ["a", 4], "label": "l"}]}"#)
                .contains("`training[0].image[1]`")
        );
        assert!(err_of(
            r#"{"modality": {"0": "a", "1": "b"}, "training": [{"image": ["a"], "label": "l"}]}"#
        )
        .contains("lists 1 modality files but `modality` has 2"));
        assert!(err_of(r#"{"modality": {"x": "CT"}, "test": ["a"]}"#)
            .contains("`modality.x`: key must be a non-negative integer"));
        assert!(err_of(r#"{"labels": ["bg"], "test": ["a"]}"#).contains("field `labels`"));
        assert!(err_of(r#"{"numTraining": "two", "test": ["a"]}"#).contains("field `numTraining`"));
        assert!(err_of(r#"{"name": 5, "test": ["a"]}"#).contains("field `name`"));
        assert!(err_of(r#"{"validation": ["a.nii"]}"#).contains("`validation[0]`: expected {"));
        assert!(err_of(r#"{"test": [""]}"#).contains("`test[0]`"));
        let e = err_of(r#"{"test": [""]}"#);
        assert!(e.starts_with("/data/Task01/dataset.json"), "{e}");
    }

    #[test]
    fn missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("imagesTr")).unwrap();
        std::fs::write(dir.path().join("imagesTr/a.nii.gz"), b"x").unwrap();
        let json = dir.path().join("dataset.json");
        std::fs::write(
            &json,
            r#"{"training": [{"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"}]}"#,
        )
        .unwrap();
        let e = load(&json).unwrap_err().to_string();
        assert!(
            e.contains("training[0].label")
                && e.contains("labelsTr/a.nii.gz")
                && e.contains("does not exist"),
            "{e}"
        );
        std::fs::create_dir(dir.path().join("labelsTr")).unwrap();
        std::fs::write(dir.path().join("labelsTr/a.nii.gz"), b"x").unwrap();
        let ds = load_dir_or_file(dir.path()).unwrap();
        assert_eq!(ds.datalist.training.len(), 1);
        assert!(load(&dir.path().join("nope.json"))
            .unwrap_err()
            .to_string()
            .contains("nope.json"));
    }
}
