//! `evaluate` (sliding-window Dice of a UNETR checkpoint on the validation cases) and `predict` (one volume → a
//! label NIfTI in the input's original geometry), both through the checkpoint's own `model.json` preprocessing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use imaging::inference::{SegmentOptions, Segmenter};
use imaging::io::NiftiDtype;
use imaging::Volume;
use models::Unetr;
use serde::Serialize;
use spec::{ModelCard, ModelConfig, UnetrConfig};
use tch::{nn::VarStore, Device};

use crate::checkpoint::{load_weights, read_card};
use crate::config::ExperimentConfig;
use crate::data::{check_labels, label_name, load_val_case};
use crate::error::{Result, TrainError};
use crate::finetune::{aggregate, dice_names, evaluate_case, overlay_picture, overlay_row};
use crate::infer::{inference_error, TchPredictor};
use crate::tracking::images::{encode_png, save_png};

/// A UNETR loaded from a checkpoint directory.
pub struct LoadedUnetr {
    /// Its variables.
    pub vs: VarStore,
    /// The network.
    pub net: Unetr,
    /// Its architecture.
    pub cfg: UnetrConfig,
    /// Its `model.json`.
    pub card: ModelCard,
    /// Its inference (preprocessing, sliding window, activation), as `model.json` specifies it.
    pub segmenter: Segmenter,
}

/// Load `model.json` + `model.safetensors` of a UNETR checkpoint onto `device`.
pub fn load_unetr(dir: &Path, device: Device) -> Result<LoadedUnetr> {
    let card = read_card(dir)?;
    let ModelConfig::Unetr(cfg) = card.model.clone() else {
        return Err(TrainError::format(
            dir.join("model.json"),
            "this is not a segmentation (UNETR) checkpoint",
        ));
    };
    let segmenter = Segmenter::from_card(&card)
        .map_err(|e| TrainError::format(dir.join("model.json"), e.to_string()))?;
    let mut vs = VarStore::new(device);
    let net = Unetr::new(&vs.root(), &cfg)?;
    load_weights(&mut vs, dir)?;
    Ok(LoadedUnetr {
        vs,
        net,
        cfg,
        card,
        segmenter,
    })
}

/// Dice of one evaluated case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseDice {
    /// Case id.
    pub id: String,
    /// Dice per reported class (NaN → null when the class is absent from the ground truth).
    pub dice: BTreeMap<String, f64>,
}

/// `eval.json`.
#[derive(Debug, Clone, Serialize)]
pub struct EvalSummary {
    /// The checkpoint evaluated.
    pub checkpoint: PathBuf,
    /// Per-case Dice.
    pub cases: Vec<CaseDice>,
    /// Mean Dice per class over cases.
    pub per_class: BTreeMap<String, f64>,
    /// Mean over classes.
    pub mean_dice: f64,
}

/// Evaluate a UNETR checkpoint on the validation cases of `cfg`'s dataset; writes `<out>/eval.json` and
/// `<out>/eval_overlay.png`.
pub fn evaluate(cfg: &ExperimentConfig, checkpoint: &Path, out: &Path) -> Result<EvalSummary> {
    let device = crate::engine::setup_device(cfg, &crate::dist::Dist::single()?)?;
    let m = load_unetr(checkpoint, device)?;
    let split = crate::data::split(cfg)?;
    if split.val.is_empty() {
        return Err(TrainError::config(
            "data.dataset",
            "no validation cases to evaluate",
        ));
    }
    let activation = m.segmenter.inference().activation;
    let names = dice_names(&m.card.labels, activation);
    let mut cases = Vec::new();
    let mut per_case = Vec::new();
    let mut rows = Vec::new();
    for case in split
        .val
        .iter()
        .take(cfg.validation.max_volumes.unwrap_or(usize::MAX))
    {
        let sample = load_val_case(case, &m.card.preprocessing)?;
        let label = sample.label.as_ref().ok_or_else(|| {
            TrainError::Data(format!("validation case {} has no label map", case.id))
        })?;
        check_labels(label, activation, m.cfg.out_channels, &|| label_name(case))?;
        let (d, pred) = evaluate_case(&m.net, &m.segmenter, &case.id, &sample, device)?;
        if rows.len() < 4 {
            rows.extend(overlay_row(&case.id, &sample, &pred));
        }
        tracing::info!(
            "{}: mean Dice {:.4}",
            case.id,
            imaging::metrics::nan_mean(&d)
        );
        cases.push(CaseDice {
            id: case.id.clone(),
            dice: names.iter().cloned().zip(d.iter().copied()).collect(),
        });
        per_case.push(d);
    }
    let (per_class, mean_dice) = aggregate(&per_case);
    let summary = EvalSummary {
        checkpoint: checkpoint.to_path_buf(),
        cases,
        per_class: names.into_iter().zip(per_class).collect(),
        mean_dice,
    };
    std::fs::create_dir_all(out).map_err(|e| TrainError::io(out, e))?;
    let path = out.join("eval.json");
    let text = serde_json::to_string_pretty(&summary)
        .map_err(|e| TrainError::format(&path, e.to_string()))?;
    std::fs::write(&path, text).map_err(|e| TrainError::io(&path, e))?;
    if !rows.is_empty() {
        save_png(
            &encode_png(&overlay_picture(
                &rows,
                &m.card.labels,
                m.segmenter.inference().activation,
            )?)?,
            &out.join("eval_overlay.png"),
        )?;
    }
    Ok(summary)
}

/// What `predict` wrote.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// The label volume in the input's geometry (class ids, or one 0/1 channel per sigmoid output).
    pub labels: Volume,
    /// Voxels per class id (softmax) or per channel (sigmoid).
    pub counts: Vec<u64>,
}

/// Segment one image file with a UNETR checkpoint and write the label map (same grid and affine as the input) to
/// `output` (`.nii`/`.nii.gz`), and the class probabilities (float32, one channel per class) to `probabilities`.
pub fn predict(
    checkpoint: &Path,
    input: &Path,
    output: &Path,
    probabilities: Option<&Path>,
    device: Device,
) -> Result<Prediction> {
    let m = load_unetr(checkpoint, device)?;
    let image = imaging::io::load(input)?;
    let opts = SegmentOptions {
        overlap: None,
        probabilities: probabilities.is_some(),
        ..Default::default()
    };
    let seg = m
        .segmenter
        .segment(image, &opts, &mut TchPredictor::new(&m.net, device))
        .map_err(|e| inference_error(e, &input.display().to_string()))?;
    let dtype = if m.cfg.out_channels <= 256 {
        NiftiDtype::U8
    } else {
        NiftiDtype::I16
    };
    imaging::io::save_nifti(&seg.mask, output, dtype)?;
    if let (Some(path), Some(p)) = (probabilities, &seg.probabilities) {
        imaging::io::save_nifti(p, path, NiftiDtype::F32)?;
    }
    Ok(Prediction {
        counts: seg.labels.iter().map(|l| l.voxels).collect(),
        labels: seg.mask,
    })
}
