//! The model repository: `DIR/<name>/model.onnx` or `DIR/<name>/<version>/model.onnx` (the highest numeric
//! version is served), each loaded into the configured backend at start-up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{onnx, ModelInfo};
use crate::backend::{self, Backend, BackendOptions};
use crate::error::ServeError;
use imaging::inference::Segmenter;

/// A model ready to serve.
pub struct Model {
    /// What it is.
    pub info: ModelInfo,
    /// Where it runs.
    pub backend: Box<dyn Backend>,
    /// How it segments whole volumes (segmentation models only): preprocessing, sliding window, activation.
    pub segmenter: Option<Segmenter>,
}

impl Model {
    /// A model served by `backend`; a segmentation model's preprocessing and inference spec are checked here, so
    /// one that cannot be applied refuses the model at load rather than failing requests.
    pub fn new(info: ModelInfo, backend: Box<dyn Backend>) -> Result<Self, ServeError> {
        let segmenter = info
            .inference()
            .cloned()
            .map(|inf| {
                Segmenter::new(
                    info.spatial_dims,
                    info.in_channels,
                    info.out_channels,
                    info.labels().to_vec(),
                    info.preprocessing(),
                    inf,
                )
                .map(|s| s.named(&info.name))
            })
            .transpose()
            .map_err(|e| ServeError::Model {
                path: info.path.clone(),
                msg: format!("medmae metadata: {e}"),
            })?;
        Ok(Self {
            info,
            backend,
            segmenter,
        })
    }
}

/// Every model the server has, by name.
#[derive(Default)]
pub struct Repository {
    models: BTreeMap<String, Arc<Model>>,
}

/// The model file of one model folder: (version, path).
fn model_file(dir: &Path) -> Result<Option<(String, PathBuf)>, ServeError> {
    let direct = dir.join("model.onnx");
    let mut best: Option<(u64, PathBuf)> = None;
    let entries = std::fs::read_dir(dir).map_err(|e| ServeError::Model {
        path: dir.into(),
        msg: e.to_string(),
    })?;
    for entry in entries.flatten() {
        let Some(v) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        let p = entry.path().join("model.onnx");
        if p.is_file() && best.as_ref().is_none_or(|(b, _)| v > *b) {
            best = Some((v, p));
        }
    }
    Ok(match best {
        Some((v, p)) => Some((v.to_string(), p)),
        None if direct.is_file() => Some(("1".to_string(), direct)),
        None => None,
    })
}

impl Repository {
    /// Scan `dir` and load every model into the backend; a folder without a model file is skipped with a warning,
    /// a broken model file is an error (the server should not start half-configured).
    pub fn load(dir: &Path, opts: &BackendOptions) -> Result<Self, ServeError> {
        let entries = std::fs::read_dir(dir).map_err(|e| ServeError::Model {
            path: dir.into(),
            msg: format!("model repository: {e}"),
        })?;
        let mut folders: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        folders.sort();
        let mut repo = Repository::default();
        for folder in folders {
            let Some(name) = folder
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            let Some((version, path)) = model_file(&folder)? else {
                tracing::warn!(folder = %folder.display(), "no model.onnx in model folder; skipped");
                continue;
            };
            let bytes = std::fs::read(&path).map_err(|e| ServeError::Model {
                path: path.clone(),
                msg: e.to_string(),
            })?;
            let info =
                ModelInfo::from_summary(&name, &version, &path, onnx::summarize(&bytes, &path)?)?;
            drop(bytes);
            let backend = backend::load(&info, opts)?;
            tracing::info!(model = %name, version = %version, kind = %info.kind(), backend = backend.name(), roi = ?info.roi_size, "model loaded");
            repo.insert(Model::new(info, backend)?);
        }
        if repo.models.is_empty() {
            return Err(ServeError::Model { path: dir.into(), msg: "model repository has no model (expected <name>/model.onnx or <name>/<version>/model.onnx)".into() });
        }
        Ok(repo)
    }

    /// Add a model (replacing one of the same name).
    pub fn insert(&mut self, model: Model) {
        self.models.insert(model.info.name.clone(), Arc::new(model));
    }

    /// All models, sorted by name.
    pub fn models(&self) -> impl Iterator<Item = &Arc<Model>> {
        self.models.values()
    }

    /// A model by name and optional version ("" = the loaded one).
    pub fn get(&self, name: &str, version: &str) -> Result<Arc<Model>, ServeError> {
        let m = self
            .models
            .get(name)
            .ok_or_else(|| ServeError::ModelNotFound {
                name: name.into(),
                available: self.names(),
            })?;
        if !version.is_empty() && version != m.info.version {
            return Err(ServeError::VersionNotFound {
                name: name.into(),
                version: version.into(),
                loaded: m.info.version.clone(),
            });
        }
        Ok(m.clone())
    }

    /// The segmentation model for `name`, or the only segmentation model when `name` is empty.
    pub fn segmentation_model(&self, name: &str) -> Result<Arc<Model>, ServeError> {
        if !name.is_empty() {
            let m = self.get(name, "")?;
            if m.info.inference().is_none() {
                return Err(ServeError::invalid(format!("model {name:?} (kind {}) is not a segmentation model (no medmae.inference metadata)", m.info.kind())));
            }
            return Ok(m);
        }
        let segs: Vec<&Arc<Model>> = self
            .models
            .values()
            .filter(|m| m.info.inference().is_some())
            .collect();
        match segs.as_slice() {
            [only] => Ok((*only).clone()),
            [] => Err(ServeError::invalid("this server has no segmentation model")),
            _ => Err(ServeError::invalid(format!(
                "several segmentation models are served; name one of: {}",
                segs.iter()
                    .map(|m| m.info.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Comma-separated model names.
    pub fn names(&self) -> String {
        self.models.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highest_numeric_version_wins() {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("m");
        for v in ["1", "10", "2"] {
            std::fs::create_dir_all(m.join(v)).unwrap();
            std::fs::write(m.join(v).join("model.onnx"), b"x").unwrap();
        }
        std::fs::create_dir_all(m.join("notes")).unwrap();
        let (v, p) = model_file(&m).unwrap().unwrap();
        assert_eq!(v, "10");
        assert!(p.ends_with("10/model.onnx"));
        let e = model_file(&d.path().join("missing")).unwrap_err();
        assert!(e.to_string().contains("missing"));
    }

    #[test]
    fn empty_repository_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let opts = BackendOptions {
            kind: crate::backend::BackendKind::Tract,
            threads: 0,
            use_gpu: false,
            ort_library: None,
        };
        let e = Repository::load(d.path(), &opts).err().unwrap().to_string();
        assert!(e.contains("has no model"), "{e}");
    }
}
