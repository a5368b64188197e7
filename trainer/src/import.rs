//! `medmae-train import`: turn a MONAI UNETR, SelfMedMAE MAE-3D or He et al. MAE-2D checkpoint (`.pt`/`.pth`/
//! `.pth.tar` or `.safetensors`) into a medmae checkpoint directory (`model.json` + `model.safetensors`) that
//! `finetune --init`, `evaluate`, `predict` and the exporter read like any other. The conversion itself is
//! `models::import`; this module adds the card (labels, preprocessing, inference defaults) and writes the directory
//! atomically and durably.

use std::path::{Path, PathBuf};

use models::import::{import_checkpoint, Family, ImportOptions};
use spec::{InferenceSpec, ModelCard, ModelConfig, OutputActivation, TransformSpec};

use crate::checkpoint::publish_dir;
use crate::error::{Result, TrainError};

/// What `import` needs besides the checkpoint's own tensors.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    /// The checkpoint to import.
    pub input: PathBuf,
    /// The medmae checkpoint directory to write.
    pub output: PathBuf,
    /// Architecture facts the shapes cannot tell, family, and overrides.
    pub options: ImportOptions,
    /// Label names of a segmentation model (one per output channel), or none.
    pub labels: Vec<String>,
    /// A YAML/JSON list of deterministic transforms for `model.json` (the preprocessing the model was trained with).
    pub preprocessing: Option<PathBuf>,
    /// Logit activation of a segmentation model.
    pub activation: OutputActivation,
    /// Replace `output` if it exists.
    pub force: bool,
}

/// What an import produced.
#[derive(Debug)]
pub struct ImportSummary {
    /// The family the checkpoint was read as.
    pub family: Family,
    /// The written directory.
    pub output: PathBuf,
    /// The card written to `model.json`.
    pub card: ModelCard,
    /// Tensors written.
    pub tensors: usize,
    /// Source tensors deliberately skipped.
    pub ignored: Vec<String>,
    /// Decisions taken during the conversion.
    pub notes: Vec<String>,
}

fn read_preprocessing(path: &Path) -> Result<Vec<TransformSpec>> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    let de = yaml_serde::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        TrainError::format(
            path,
            format!(
                "expected a list of transforms: at `{}`: {}",
                e.path(),
                e.inner()
            ),
        )
    })
}

/// Import `req.input` into `req.output` (see the module docs).
pub fn run(req: &ImportRequest) -> Result<ImportSummary> {
    if req.output.exists() && !req.force {
        return Err(TrainError::format(
            &req.output,
            "already exists (pass --force to replace it)",
        ));
    }
    let imported = import_checkpoint(&req.input, &req.options)?;
    let preprocessing = match &req.preprocessing {
        Some(p) => read_preprocessing(p)?,
        None => Vec::new(),
    };
    let inference = match &imported.config {
        ModelConfig::Unetr(u) => Some(InferenceSpec::new(
            u.encoder.img_size.clone(),
            req.activation,
        )),
        ModelConfig::Mae(_) => {
            if !req.labels.is_empty() {
                return Err(TrainError::config(
                    "labels",
                    "an MAE has no output classes to name",
                ));
            }
            None
        }
    };
    let card = ModelCard::new(
        imported.config.clone(),
        preprocessing,
        req.labels.clone(),
        inference,
    );
    card.validate()?;
    let (vs, _model) = imported.build()?;
    let text = serde_json::to_string_pretty(&card)
        .map_err(|e| TrainError::format(&req.output, e.to_string()))?;
    publish_dir(&req.output, req.force, |tmp| {
        models::save(&vs, &tmp.join("model.safetensors"))?;
        crate::checkpoint::write_synced(&tmp.join("model.json"), text.as_bytes())
    })?;
    Ok(ImportSummary {
        family: imported.family,
        output: req.output.clone(),
        card,
        tensors: imported.tensors.len(),
        ignored: imported.ignored,
        notes: imported.notes,
    })
}
