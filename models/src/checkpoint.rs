//! Checkpoint I/O on a `nn::VarStore`: atomic safetensors save, name-checked load with a report, and initialising a
//! UNETR encoder from a pretrained MAE (medmae / SelfMedMAE) or MONAI ViT checkpoint.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use spec::weights::{block_names, encoder_prefix, patch_embed_name, pos_embed_name};
use spec::{ModelCard, ModelConfig, UnetrConfig, VitStyle};
use tch::nn::VarStore;
use tch::{Kind, Tensor};

use crate::error::{ModelError, Result};
use crate::pos_embed::resize_grid;

/// What a load did besides copying matching tensors.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LoadReport {
    /// Model variables the file did not provide (left as initialised).
    pub missing: Vec<String>,
    /// File tensors the model has no variable for.
    pub unexpected: Vec<String>,
    /// `(name, file shape, model shape)` for tensors present on both sides with different shapes (not copied).
    pub mismatched: Vec<(String, Vec<i64>, Vec<i64>)>,
    /// File tensors known to be unused and skipped on purpose (MONAI cross-attention, MAE decoder…).
    pub ignored: Vec<String>,
    /// Position tables that were resampled to the model's grid: `(name, file grid, model grid)`.
    pub interpolated: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl LoadReport {
    /// True when every model variable was loaded and every file tensor was used or deliberately ignored.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }
}

fn file_err(path: &Path, msg: impl std::fmt::Display) -> ModelError {
    ModelError::CheckpointFile {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

/// Flush a file's data and size to the device (`fsync`), so a rename that publishes it cannot outlive its content.
pub fn sync_file(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// Flush a directory's entries (`fsync` on the directory), making renames and creations inside it durable.
pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    std::fs::File::open(dir)?.sync_all()
}

/// Save every variable of `vs` (trainable or not) to `path` as safetensors, atomically and durably: write
/// `path.tmp`, fsync it, rename it over `path`, fsync the directory.
pub fn save(vs: &VarStore, path: &Path) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let named: Vec<(&str, Tensor)> = vars
        .iter()
        .map(|(k, v)| Ok((k.as_str(), v.f_detach()?.f_contiguous()?)))
        .collect::<Result<_>>()?;
    Tensor::write_safetensors(&named, &tmp).map_err(|e| file_err(&tmp, e))?;
    sync_file(&tmp).map_err(|e| file_err(&tmp, format!("fsync: {e}")))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| file_err(path, format!("rename from {}: {e}", tmp.display())))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    sync_dir(dir).map_err(|e| file_err(dir, format!("fsync: {e}")))
}

/// Read all tensors of a checkpoint: safetensors by extension, otherwise a `torch.save` file (its state dict, also
/// when wrapped as `{"state_dict": …}` / `{"model": …}`, see [`crate::import::read_state_dict`]). A leading `module.`
/// (DistributedDataParallel) is stripped from every name.
pub fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let sd = crate::import::read_state_dict(path, None)?;
    Ok(sd
        .tensors
        .into_iter()
        .map(|(k, v)| {
            (
                k.strip_prefix("module.").map(str::to_string).unwrap_or(k),
                v,
            )
        })
        .collect())
}

/// MONAI checkpoints carry cross-attention tensors its UNETR never uses.
fn is_known_unused(name: &str) -> bool {
    name.contains(".norm_cross_attn.") || name.contains(".cross_attn.")
}

fn copy_into(var: &Tensor, src: &Tensor, path: &Path, key: &str) -> Result<()> {
    tch::no_grad(|| -> Result<()> {
        let src = src.f_to_kind(Kind::Float)?.f_to_device(var.device())?;
        let mut dst = var.shallow_clone();
        dst.f_copy_(&src).map_err(|e| ModelError::CheckpointKey {
            path: path.to_path_buf(),
            key: key.to_string(),
            msg: e.to_string(),
        })?;
        Ok(())
    })
}

/// Load `path` into `vs` by name, converting dtypes (f16/bf16/f64 files load into f32 variables).
///
/// Known-unused MONAI tensors (`*.norm_cross_attn.*`, `*.cross_attn.*`) are ignored. With `strict`, any missing,
/// unexpected or mis-shaped tensor is an error naming it (nothing is copied then); otherwise the report lists them.
pub fn load(vs: &VarStore, path: &Path, strict: bool) -> Result<LoadReport> {
    let file: HashMap<String, Tensor> = read_tensors(path)?.into_iter().collect();
    let vars = vs.variables();
    let mut report = LoadReport::default();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        match file.get(name) {
            None => report.missing.push(name.clone()),
            Some(src) if src.size() != vars[name].size() => {
                report
                    .mismatched
                    .push((name.clone(), src.size(), vars[name].size()))
            }
            Some(_) => {}
        }
    }
    let mut extra: Vec<&String> = file.keys().filter(|k| !vars.contains_key(*k)).collect();
    extra.sort();
    for k in extra {
        if is_known_unused(k) {
            &mut report.ignored
        } else {
            &mut report.unexpected
        }
        .push(k.clone());
    }
    if strict {
        let key_err = |key: &str, msg: String| ModelError::CheckpointKey {
            path: path.to_path_buf(),
            key: key.to_string(),
            msg,
        };
        if let Some(k) = report.missing.first() {
            return Err(key_err(
                k,
                format!(
                    "missing from the file ({} missing in all)",
                    report.missing.len()
                ),
            ));
        }
        if let Some((k, got, want)) = report.mismatched.first() {
            return Err(key_err(
                k,
                format!("shape {got:?} in the file, the model expects {want:?}"),
            ));
        }
        if let Some(k) = report.unexpected.first() {
            return Err(key_err(
                k,
                format!(
                    "not a parameter of this model ({} unexpected in all)",
                    report.unexpected.len()
                ),
            ));
        }
    }
    for (name, var) in &vars {
        if let Some(src) = file.get(name) {
            if src.size() == var.size() {
                copy_into(var, src, path, name)?;
            }
        }
    }
    Ok(report)
}

/// Canonical, style-free name of an encoder tensor: `patch.weight`, `cls`, `pos`, `blocks.{i}.{qkv|proj|fc1|fc2|
/// norm1|norm2}.{weight|bias}`, `norm.{weight|bias}`.
fn canonical(name: &str) -> Option<String> {
    let stripped = ["encoder.", "vit.", "backbone."]
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .unwrap_or(name);
    match name {
        "encoder_pos_embed"
        | "encoder.pos_embed"
        | "vit.patch_embedding.position_embeddings"
        | "patch_embedding.position_embeddings" => return Some("pos".into()),
        "encoder.cls_token" | "vit.cls_token" | "cls_token" => return Some("cls".into()),
        _ => {}
    }
    for pe in ["patch_embed.proj.", "patch_embedding.patch_embeddings."] {
        if let Some(rest) = stripped.strip_prefix(pe) {
            return Some(format!("patch.{rest}"));
        }
    }
    if let Some(rest) = stripped.strip_prefix("norm.") {
        return Some(format!("norm.{rest}"));
    }
    let rest = stripped.strip_prefix("blocks.")?;
    let (idx, layer) = rest.split_once('.')?;
    idx.parse::<usize>().ok()?;
    let (module, param) = layer.rsplit_once('.')?;
    let canon = match module {
        "norm1" | "norm2" => module,
        "attn.qkv" => "qkv",
        "attn.proj" | "attn.out_proj" => "proj",
        "mlp.fc1" | "mlp.linear1" => "fc1",
        "mlp.fc2" | "mlp.linear2" => "fc2",
        _ => return None,
    };
    Some(format!("blocks.{idx}.{canon}.{param}"))
}

/// The UNETR variable name for a canonical encoder name.
fn unetr_name(style: VitStyle, canon: &str) -> String {
    let prefix = encoder_prefix(style);
    match canon {
        "pos" => pos_embed_name(style).to_string(),
        "cls" => format!("{prefix}.cls_token"),
        _ => {
            if let Some(p) = canon.strip_prefix("patch.") {
                return format!("{}.{p}", patch_embed_name(style));
            }
            let n = block_names(style);
            let mut parts = canon.splitn(4, '.');
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some("blocks"), Some(i), Some(layer), Some(param)) => {
                    let module = match layer {
                        "qkv" => "attn.qkv",
                        "proj" => n.attn_proj,
                        "fc1" => n.fc1,
                        "fc2" => n.fc2,
                        other => other,
                    };
                    format!("{prefix}.blocks.{i}.{module}.{param}")
                }
                _ => format!("{prefix}.{canon}"),
            }
        }
    }
}

/// The patch grid a source position table was laid out on: from a `model.json` beside the checkpoint when there is
/// one, else the UNETR grid when the token count matches, else an isotropic grid with that many tokens.
fn source_grid(ckpt: &Path, tokens: usize, target: &[usize]) -> Option<Vec<usize>> {
    let card = ckpt
        .parent()
        .map(|d| d.join("model.json"))
        .and_then(|p| std::fs::read_to_string(p).ok());
    if let Some(card) = card.and_then(|t| serde_json::from_str::<ModelCard>(&t).ok()) {
        let grid = card.model.encoder().grid();
        if grid.iter().product::<usize>() == tokens && grid.len() == target.len() {
            return Some(grid);
        }
    }
    if target.iter().product::<usize>() == tokens {
        return Some(target.to_vec());
    }
    let side = (tokens as f64).powf(1.0 / target.len() as f64).round() as usize;
    (side.pow(target.len() as u32) == tokens).then(|| vec![side; target.len()])
}

/// Initialise the encoder of a UNETR (variables of `unetr_vs`, built from `cfg`) from a pretrained checkpoint.
///
/// Accepted layouts: medmae / SelfMedMAE MAE (`encoder.*` + `encoder_pos_embed`, no cls row), SelfMedMAE or medmae
/// UNETR (`encoder.pos_embed` with a cls row), MONAI ViT/UNETR (`vit.*`), each optionally under `module.`. Decoder
/// tensors (`decoder.*`, `encoder_to_decoder.*`, `mask_token`, `decoder_pos_embed`, UNETR CNN decoder) and MONAI's
/// cross-attention tensors are ignored. The position table gains or loses its cls row as the model needs (a zero
/// row, as SelfMedMAE's cls token has a zero position embedding) and is resampled (trilinear 3-D / bicubic 2-D,
/// listed in `interpolated`) when the grids differ. Mis-shaped tensors are listed in `mismatched` (by file name) and
/// skipped. `missing` lists every UNETR variable left as initialised: always the CNN decoder (trained from scratch),
/// plus encoder variables the file lacks or could not fill.
pub fn init_unetr_from_mae(
    unetr_vs: &VarStore,
    mae_checkpoint: &Path,
    cfg: &UnetrConfig,
) -> Result<LoadReport> {
    cfg.validate()?;
    let style = cfg.encoder.style;
    let vars = unetr_vs.variables();
    let mut report = LoadReport::default();
    let mut loaded: Vec<String> = Vec::new();
    let mut tensors = read_tensors(mae_checkpoint)?;
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, src) in tensors {
        let Some(canon) = canonical(&name) else {
            if is_known_unused(&name) || !name.starts_with("encoder.") {
                report.ignored.push(name);
            } else {
                report.unexpected.push(name);
            }
            continue;
        };
        let target = unetr_name(style, &canon);
        let Some(var) = vars.get(&target) else {
            // A cls token has no place in a MONAI-style encoder; anything else is a real surprise.
            if canon == "cls" {
                &mut report.ignored
            } else {
                &mut report.unexpected
            }
            .push(name);
            continue;
        };
        let src = if canon == "pos" {
            fit_pos_embed(&src, mae_checkpoint, &name, cfg, &mut report)?
        } else {
            Some(src)
        };
        match src {
            Some(src) if src.size() == var.size() => {
                copy_into(var, &src, mae_checkpoint, &name)?;
                loaded.push(target);
            }
            Some(src) => report.mismatched.push((name, src.size(), var.size())),
            None => report.mismatched.push((name, vec![], var.size())),
        }
    }
    let mut missing: Vec<String> = vars.into_keys().filter(|k| !loaded.contains(k)).collect();
    missing.sort();
    report.missing = missing;
    Ok(report)
}

/// Turn a source position table into the model's: cls row added/removed, grid resampled. `None` when the token
/// count fits no grid of the model's dimensionality.
fn fit_pos_embed(
    src: &Tensor,
    path: &Path,
    name: &str,
    cfg: &UnetrConfig,
    report: &mut LoadReport,
) -> Result<Option<Tensor>> {
    let v = &cfg.encoder;
    let s = src.size();
    if s.len() != 3 || s[0] != 1 {
        return Err(ModelError::CheckpointKey {
            path: path.to_path_buf(),
            key: name.into(),
            msg: format!("expected a [1, N, E] position table, got {s:?}"),
        });
    }
    // Timm-style UNETR tables (`encoder.pos_embed`) carry a cls row; MAE (`encoder_pos_embed`) and MONAI ones do not.
    let has_cls = name == "encoder.pos_embed";
    let patches = if has_cls {
        src.f_narrow(1, 1, s[1] - 1)?
    } else {
        src.shallow_clone()
    };
    let n = patches.size()[1] as usize;
    let target = v.grid();
    let Some(from) = source_grid(path, n, &target) else {
        return Ok(None);
    };
    let patches = if from != target {
        report
            .interpolated
            .push((name.to_string(), from.clone(), target.clone()));
        resize_grid(&patches.f_to_kind(Kind::Float)?, &from, &target)?
    } else {
        patches
    };
    Ok(Some(if v.cls_token {
        let zero = Tensor::f_zeros([1, 1, s[2]], (patches.kind(), patches.device()))?;
        Tensor::f_cat(&[zero, patches], 1)?
    } else {
        patches
    }))
}

/// The full name → shape map of the variables of `vs`, for comparing against `spec::expected_weights`.
pub fn variable_shapes(vs: &VarStore) -> BTreeMap<String, Vec<usize>> {
    vs.variables()
        .into_iter()
        .map(|(k, v)| (k, v.size().into_iter().map(|d| d as usize).collect()))
        .collect()
}

/// The same map from the spec contract.
pub fn expected_shapes(cfg: &ModelConfig) -> BTreeMap<String, Vec<usize>> {
    spec::expected_weights(cfg)
        .into_iter()
        .map(|t| (t.name, t.shape))
        .collect()
}
