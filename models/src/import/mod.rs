//! Importing checkpoints of other projects: MONAI `UNETR` (conv or perceptron patch embedding), SelfMedMAE `MAE3D`
//! and He et al.'s 2-D `MaskedAutoencoderViT`, from `torch.save` files (`.pt`, `.pth`, `.pth.tar`, plain state dicts
//! or wrapped in `{"state_dict": …}` / `{"model": …}` with optimiser state, `args` and the like) or `.safetensors`.
//!
//! The architecture is read off the tensor shapes (widths, depths, channels, patch size, MLP ratio, qkv bias, output
//! classes) and, where the sincos position tables allow it, the patch grid; what shapes cannot tell (attention heads,
//! a MONAI image size) comes from [`ImportOptions`]. The per-family conventions (LayerNorm eps, cls token, norm-pix
//! variance) are set from the family. Every tensor is checked against `spec::expected_weights` of the resulting
//! config; a mismatch names the source tensor, the expected and the found shape.

mod archive;
mod families;
pub mod pickle;
mod source;
mod value;

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use spec::ModelConfig;
use tch::nn::VarStore;
use tch::{Device, Tensor};

pub use archive::TorchArchive;
use pickle::Value;

use crate::error::{ModelError, Result};
use crate::Model;

/// A checkpoint family medmae can import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// MONAI `monai.networks.nets.UNETR` (2-D or 3-D, conv or perceptron patch embedding).
    MonaiUnetr,
    /// SelfMedMAE `lib.models.mae3d.MAE3D`.
    SelfMedMaeMae3d,
    /// He et al. `models_mae.MaskedAutoencoderViT` (2-D).
    HeMae2d,
}

impl Family {
    /// Every family, in the order of [`Family::name`].
    pub const ALL: [Family; 3] = [Family::MonaiUnetr, Family::SelfMedMaeMae3d, Family::HeMae2d];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Family::MonaiUnetr => "monai-unetr",
            Family::SelfMedMaeMae3d => "selfmedmae-mae3d",
            Family::HeMae2d => "he-mae2d",
        }
    }

    /// Recognise a family from the tensor names of a state dict.
    pub fn detect(names: &[&str]) -> Option<Self> {
        let has = |n: &str| names.contains(&n);
        if names.iter().any(|k| k.starts_with("vit.patch_embedding.")) {
            Some(Family::MonaiUnetr)
        } else if has("encoder_to_decoder.weight") && has("encoder.patch_embed.proj.weight") {
            Some(Family::SelfMedMaeMae3d)
        } else if has("patch_embed.proj.weight")
            && (has("decoder_embed.weight") || has("pos_embed"))
        {
            Some(Family::HeMae2d)
        } else {
            None
        }
    }
}

impl FromStr for Family {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Family::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Family::ALL.iter().map(|f| f.name()).collect();
                format!(
                    "unknown checkpoint family `{s}` (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the tensor shapes cannot tell, and overrides of the per-family defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportOptions {
    /// The family (default: recognised from the tensor names).
    pub family: Option<Family>,
    /// Where the state dict sits in a `torch.save` object, `/`-separated (default: the object itself if it is a
    /// state dict, else the first of `state_dict`, `model`, `model_state_dict`, `module`, `net`, `network`).
    pub key: Option<String>,
    /// Input size per spatial axis. Required for MONAI UNETR (its learned position table does not encode the grid);
    /// for the MAEs it is read off the sincos tables when omitted.
    pub img_size: Option<Vec<usize>>,
    /// Encoder attention heads (required: heads do not show in any shape).
    pub num_heads: Option<usize>,
    /// MAE decoder attention heads (required for the MAEs).
    pub decoder_num_heads: Option<usize>,
    /// LayerNorm eps (default: 1e-5 for MONAI, 1e-6 for SelfMedMAE and He et al., as their code builds them).
    pub layer_norm_eps: Option<f64>,
    /// MAE mask ratio (default 0.75; it is a training setting, not in the weights).
    pub mask_ratio: Option<f64>,
    /// MAE per-patch normalised targets (default true, as both references were trained).
    pub norm_pix_loss: Option<bool>,
}

/// An imported checkpoint: a medmae config and its tensors under medmae's names.
#[derive(Debug)]
pub struct Imported {
    /// The family it came from.
    pub family: Family,
    /// The architecture.
    pub config: ModelConfig,
    /// `(medmae name, f32 tensor)` in `spec::expected_weights` order.
    pub tensors: Vec<(String, Tensor)>,
    /// Source tensors skipped on purpose (MONAI's unused cross-attention tensors).
    pub ignored: Vec<String>,
    /// Decisions taken on the way (grid read off a sincos table, rows dropped or folded, …), for the user.
    pub notes: Vec<String>,
}

impl Imported {
    /// Build the medmae model on a fresh CPU `VarStore` and copy every tensor into it (names and shapes must match
    /// the model's variables exactly).
    pub fn build(&self) -> Result<(VarStore, Model)> {
        let vs = VarStore::new(Device::Cpu);
        let model = Model::new(&vs.root(), &self.config)?;
        let vars = vs.variables();
        let given: BTreeMap<&str, &Tensor> =
            self.tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let internal = |key: &str, msg: String| ModelError::CheckpointKey {
            path: "import".into(),
            key: key.to_string(),
            msg,
        };
        if let Some(k) = vars.keys().find(|k| !given.contains_key(k.as_str())) {
            return Err(internal(
                k,
                "the model has this variable but the import produced no tensor for it".into(),
            ));
        }
        if let Some(k) = given.keys().find(|k| !vars.contains_key(**k)) {
            return Err(internal(
                k,
                "the import produced a tensor the model does not have".into(),
            ));
        }
        tch::no_grad(|| -> Result<()> {
            for (name, var) in &vars {
                let src = given[name.as_str()];
                if src.size() != var.size() {
                    return Err(internal(
                        name,
                        format!("shape {:?}, the model expects {:?}", src.size(), var.size()),
                    ));
                }
                var.shallow_clone().f_copy_(src)?;
            }
            Ok(())
        })?;
        Ok((vs, model))
    }
}

/// The tensors of a checkpoint's state dict, in file order, with where they were found.
#[derive(Debug)]
pub struct StateDict {
    /// `(name, tensor)` in the file's dtype.
    pub tensors: Vec<(String, Tensor)>,
    /// `/`-separated path of the state dict inside the saved object (empty: the object itself).
    pub location: String,
    /// Non-tensor entries of the state dict that were skipped (`*_extra_state`).
    pub skipped: Vec<String>,
}

/// Keys under which training scripts commonly store the model's state dict, tried in this order.
pub const WRAPPER_KEYS: [&str; 6] = [
    "state_dict",
    "model",
    "model_state_dict",
    "module",
    "net",
    "network",
];

fn file_err(path: &Path, msg: impl std::fmt::Display) -> ModelError {
    ModelError::CheckpointFile {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

/// Read the state dict of a checkpoint: `.safetensors` by extension, otherwise a `torch.save` zip archive (`key`
/// selects where the state dict sits, see [`ImportOptions::key`]) or a libtorch archive (what tch's `VarStore::save`
/// writes for other extensions, read by libtorch itself).
pub fn read_state_dict(path: &Path, key: Option<&str>) -> Result<StateDict> {
    if path.extension().is_some_and(|e| e == "safetensors") {
        if let Some(k) = key {
            return Err(file_err(
                path,
                format!(
                    "a safetensors file is a flat tensor map; there is no entry `{k}` to select"
                ),
            ));
        }
        let tensors = Tensor::read_safetensors(path).map_err(|e| file_err(path, e))?;
        return Ok(StateDict {
            tensors,
            location: String::new(),
            skipped: Vec::new(),
        });
    }
    if !archive::is_zip(path)? {
        return Err(file_err(
            path,
            "not a zip-format torch.save file (PyTorch ≥ 1.6) or .safetensors; re-save a legacy checkpoint with a current PyTorch: torch.save(torch.load(old), new)",
        ));
    }
    if archive::is_torchscript(path)? {
        // libtorch's own archives (tch `VarStore::save`, `torch.jit.save` of parameters) are read by libtorch.
        if let Some(k) = key {
            return Err(file_err(
                path,
                format!(
                    "a libtorch archive is a flat tensor map; there is no entry `{k}` to select"
                ),
            ));
        }
        let tensors = Tensor::load_multi(path).map_err(|e| file_err(path, e))?;
        return Ok(StateDict {
            tensors,
            location: String::new(),
            skipped: Vec::new(),
        });
    }
    let (mut arc, root) = TorchArchive::open(path)?;
    let (location, entries) = locate(&root, key).map_err(|m| file_err(path, m))?;
    let mut tensors = Vec::with_capacity(entries.len());
    let mut skipped = Vec::new();
    for (name, v) in entries {
        match &v {
            Value::Tensor(t) => tensors.push((name.clone(), arc.tensor(t, &name)?)),
            _ => skipped.push(name),
        }
    }
    Ok(StateDict {
        tensors,
        location,
        skipped,
    })
}

/// Entries of `v` if it is a state dict: a dict of string keys whose values are tensors (entries named
/// `*_extra_state` may hold anything), or a pickled `nn.Module` (its `_parameters`, `_buffers` and `_modules`).
fn state_entries(v: &Value) -> Option<Vec<(String, Value)>> {
    match v {
        Value::Dict(d) => {
            let d = d.borrow();
            let mut out = Vec::with_capacity(d.len());
            for (k, val) in d.iter() {
                let k = k.as_str()?;
                if !matches!(val, Value::Tensor(_)) && !k.ends_with("_extra_state") {
                    return None;
                }
                out.push((k.to_string(), val.clone()));
            }
            out.iter()
                .any(|(_, v)| matches!(v, Value::Tensor(_)))
                .then_some(out)
        }
        Value::Object(_) => {
            let mut out = Vec::new();
            module_entries(v, "", 0, &mut out);
            (!out.is_empty()).then_some(out)
        }
        _ => None,
    }
}

fn dict_get(v: &Value, key: &str) -> Option<Value> {
    match v {
        Value::Dict(d) => d
            .borrow()
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v.clone()),
        _ => None,
    }
}

/// Flatten a pickled `nn.Module` (`torch.save(model)`) into `prefix.name` entries, without running any code.
fn module_entries(v: &Value, prefix: &str, depth: usize, out: &mut Vec<(String, Value)>) {
    let Value::Object(o) = v else { return };
    if depth > 64 {
        return;
    }
    let Some(state) = o.borrow().state.clone() else {
        return;
    };
    // Buffers registered with persistent=False are not part of a state dict.
    let transient = non_persistent(&state);
    for table in ["_parameters", "_buffers"] {
        if let Some(Value::Dict(ref d)) = dict_get(&state, table) {
            for (k, t) in d.borrow().iter() {
                match (k.as_str(), t) {
                    (Some(k), Value::Tensor(_)) if !transient.iter().any(|n| n == k) => {
                        out.push((format!("{prefix}{k}"), t.clone()))
                    }
                    _ => {}
                }
            }
        }
    }
    if let Some(Value::Dict(ref d)) = dict_get(&state, "_modules") {
        for (k, m) in d.borrow().iter() {
            if let Some(k) = k.as_str() {
                module_entries(m, &format!("{prefix}{k}."), depth + 1, out);
            }
        }
    }
}

/// Names in a module's `_non_persistent_buffers_set` (pickled as `builtins.set([names])`).
fn non_persistent(state: &Value) -> Vec<String> {
    let Some(Value::Object(ref set)) = dict_get(state, "_non_persistent_buffers_set") else {
        return Vec::new();
    };
    let set = set.borrow();
    let Value::Tuple(ref args) = set.args else {
        return Vec::new();
    };
    match args.first() {
        Some(Value::List(names)) => names
            .borrow()
            .iter()
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

fn top_keys(v: &Value) -> String {
    match v {
        Value::Dict(d) => {
            let keys: Vec<String> = d
                .borrow()
                .iter()
                .take(20)
                .map(|(k, v)| match k.as_str() {
                    Some(s) => format!("{s:?} ({})", v.kind()),
                    None => format!("<{}>", k.kind()),
                })
                .collect();
            format!("a dict with keys {}", keys.join(", "))
        }
        other => format!("a {}", other.kind()),
    }
}

/// Find the state dict in the saved object: returns its location and entries.
fn locate(
    root: &Value,
    key: Option<&str>,
) -> std::result::Result<(String, Vec<(String, Value)>), String> {
    if let Some(key) = key {
        let mut v = root.clone();
        for part in key.split('/') {
            v = dict_get(&v, part)
                .ok_or_else(|| format!("no entry `{part}` (of --key {key}) in {}", top_keys(&v)))?;
        }
        return state_entries(&v)
            .map(|e| (key.to_string(), e))
            .ok_or_else(|| {
                format!(
                    "entry `{key}` is {}, not a state dict of tensors",
                    top_keys(&v)
                )
            });
    }
    if let Some(e) = state_entries(root) {
        return Ok((String::new(), e));
    }
    for w in WRAPPER_KEYS {
        let Some(inner) = dict_get(root, w) else {
            continue;
        };
        if let Some(e) = state_entries(&inner) {
            return Ok((w.to_string(), e));
        }
        for w2 in WRAPPER_KEYS {
            if let Some(e) = dict_get(&inner, w2).as_ref().and_then(state_entries) {
                return Ok((format!("{w}/{w2}"), e));
            }
        }
    }
    Err(format!(
        "found no state dict of tensors: the file holds {}; name the entry with --key",
        top_keys(root)
    ))
}

/// Import a checkpoint of a known family (see the module docs).
pub fn import_checkpoint(path: &Path, opts: &ImportOptions) -> Result<Imported> {
    let sd = read_state_dict(path, opts.key.as_deref())?;
    families::import(path, sd, opts)
}
