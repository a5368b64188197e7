//! Training checkpoints: `<out>/checkpoints/{last,best}/` each holding `model.safetensors`, `model.json`
//! (`spec::ModelCard`), `train_state.safetensors` (AdamW moments) and `train_state.json` (step, epoch, data position,
//! RNG states).
//!
//! Atomicity and durability: a checkpoint is written into a fresh `<name>-<step>.tmp` directory, every file is
//! fsynced and then the directory itself, it is renamed to `<name>-<step>` (parent fsynced), and then the `<name>`
//! symlink is switched to it with an atomic rename of a temporary link (parent fsynced again); only then are older
//! `<name>-*` directories removed. A crash or power loss at any point leaves `<name>` pointing at a complete
//! checkpoint whose files are on the device.

use std::path::{Path, PathBuf};

use models::checkpoint::{sync_dir, sync_file};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use spec::ModelCard;
use tch::{nn::VarStore, Tensor};

use crate::error::{Result, TrainError};

/// Format version of `train_state.json`.
pub const TRAIN_STATE_VERSION: u32 = 1;

/// The exact state of our ChaCha data RNG.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// 32-byte key, hex.
    pub seed: String,
    /// Stream id.
    pub stream: u64,
    /// Position in the stream (u128 as a decimal string; JSON numbers cannot hold it).
    pub word_pos: String,
}

impl RngState {
    /// Capture the state of an RNG.
    pub fn capture(rng: &ChaCha8Rng) -> Self {
        Self {
            seed: rng.get_seed().iter().map(|b| format!("{b:02x}")).collect(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos().to_string(),
        }
    }

    /// Rebuild the RNG at exactly the captured position.
    pub fn restore(&self) -> std::result::Result<ChaCha8Rng, String> {
        use rand::SeedableRng;
        if self.seed.len() != 64 {
            return Err(format!(
                "rng.seed: expected 64 hex digits, got {}",
                self.seed.len()
            ));
        }
        let mut key = [0u8; 32];
        for (i, k) in key.iter_mut().enumerate() {
            *k = u8::from_str_radix(&self.seed[2 * i..2 * i + 2], 16)
                .map_err(|e| format!("rng.seed: {e}"))?;
        }
        let pos: u128 = self
            .word_pos
            .parse()
            .map_err(|e| format!("rng.word_pos: {e}"))?;
        let mut rng = ChaCha8Rng::from_seed(key);
        rng.set_stream(self.stream);
        rng.set_word_pos(pos);
        Ok(rng)
    }
}

/// `train_state.json`: everything besides tensors needed to continue a run exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainState {
    /// Format version.
    pub format_version: u32,
    /// `pretrain` or `finetune`.
    pub command: String,
    /// Optimiser steps done.
    pub step: u64,
    /// Epoch in progress (0-based).
    pub epoch: usize,
    /// Micro-batches of `epoch` already consumed (the data order is a pure function of seed and epoch).
    pub batch_in_epoch: usize,
    /// The experiment seed.
    pub seed: u64,
    /// Our ChaCha RNG (MAE masking noise).
    pub rng: RngState,
    /// How torch's generator is driven: it is re-seeded before every optimiser step with `torch_seed(seed, step)`,
    /// so its state at any step boundary is a function of (seed, step).
    pub torch_rng: String,
    /// Best validation metric so far (mean Dice) and its step.
    #[serde(default)]
    pub best: Option<(f64, u64)>,
    /// Dynamic loss scale of AMP runs.
    #[serde(default)]
    pub loss_scale: Option<f64>,
    /// Overflow-free steps since the loss scale last changed (AMP runs; the scale doubles at 2000), so a resumed
    /// run grows the scale at the same step. Absent in older files (then 0).
    #[serde(default)]
    pub loss_scale_growth_tracker: Option<u32>,
    /// Items per micro-batch over all processes (world size × `data.batch_size`): `batch_in_epoch` counts
    /// micro-batches of this size, so a resume must use the same value (any world size). Absent in older files.
    #[serde(default)]
    pub global_batch: Option<usize>,
}

/// The torch seed used for optimiser step `step`: SplitMix64 of (seed, step), kept in i64 range.
pub fn torch_seed(seed: u64, step: u64) -> i64 {
    let mut z = seed
        .wrapping_add(step.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 1) as i64
}

/// Torch RNG policy string stored in `train_state.json`.
pub const TORCH_RNG_POLICY: &str =
    "manual_seed(splitmix64(seed, step)) before every optimiser step";

/// What one checkpoint holds.
pub struct CheckpointData<'a> {
    /// Model weights.
    pub vs: &'a VarStore,
    /// `model.json`.
    pub card: &'a ModelCard,
    /// Optimiser tensors for `train_state.safetensors`.
    pub optim_state: Vec<(String, Tensor)>,
    /// `train_state.json`.
    pub state: &'a TrainState,
}

fn io<T>(path: &Path, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|e| TrainError::io(path, e))
}

/// Write `bytes` to `path` and fsync it.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = io(path, std::fs::File::create(path))?;
    io(path, f.write_all(bytes))?;
    io(path, f.sync_all())
}

fn synced(path: &Path) -> Result<()> {
    io(path, sync_file(path))
}

/// Write the files of a checkpoint into `tmp`, each fsynced.
fn write_files(tmp: &Path, data: &CheckpointData) -> Result<()> {
    let weights = tmp.join("model.safetensors");
    data.vs.save(&weights)?;
    synced(&weights)?;
    let card = serde_json::to_string_pretty(data.card)
        .map_err(|e| TrainError::format(tmp.join("model.json"), e.to_string()))?;
    write_synced(&tmp.join("model.json"), card.as_bytes())?;
    let state_path = tmp.join("train_state.safetensors");
    if data.optim_state.is_empty() {
        Tensor::write_safetensors(
            &[(
                "empty",
                Tensor::zeros([0], (tch::Kind::Float, tch::Device::Cpu)),
            )],
            &state_path,
        )?;
    } else {
        let on_cpu: Vec<(String, Tensor)> = data
            .optim_state
            .iter()
            .map(|(n, t)| (n.clone(), t.to_device(tch::Device::Cpu)))
            .collect();
        Tensor::write_safetensors(&on_cpu, &state_path)?;
    }
    synced(&state_path)?;
    let state = serde_json::to_string_pretty(data.state)
        .map_err(|e| TrainError::format(tmp.join("train_state.json"), e.to_string()))?;
    write_synced(&tmp.join("train_state.json"), state.as_bytes())?;
    io(tmp, sync_dir(tmp))
}

/// Write checkpoint `name` (`last`, `best`) under `root` atomically and durably (see the module docs); returns the
/// stable path `root/name`.
pub fn write_checkpoint(root: &Path, name: &str, data: &CheckpointData) -> Result<PathBuf> {
    io(root, std::fs::create_dir_all(root))?;
    let version = format!("{name}-{:08}", data.state.step);
    let tmp = root.join(format!("{version}.tmp"));
    if tmp.exists() {
        io(&tmp, std::fs::remove_dir_all(&tmp))?;
    }
    io(&tmp, std::fs::create_dir_all(&tmp))?;
    // A failed write (full disk, I/O error) removes the partial directory instead of leaving it behind.
    if let Err(e) = write_files(&tmp, data) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let dir = root.join(&version);
    if dir.exists() {
        io(&dir, std::fs::remove_dir_all(&dir))?;
    }
    io(&dir, std::fs::rename(&tmp, &dir))?;
    io(root, sync_dir(root))?;
    let link = root.join(name);
    let tmp_link = root.join(format!(".{name}.link.tmp"));
    let _ = std::fs::remove_file(&tmp_link);
    io(&tmp_link, std::os::unix::fs::symlink(&version, &tmp_link))?;
    io(&link, std::fs::rename(&tmp_link, &link))?;
    // The switch must be on the device before the version it replaces is deleted.
    io(root, sync_dir(root))?;
    let prefix = format!("{name}-");
    for entry in io(root, std::fs::read_dir(root))? {
        let entry = io(root, entry)?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if file_name.starts_with(&prefix) && file_name != version {
            io(&entry.path(), std::fs::remove_dir_all(entry.path()))?;
        }
    }
    Ok(link)
}

/// Create directory `dest` atomically and durably: `fill` writes (and fsyncs) its files into a temporary sibling,
/// which is fsynced and renamed to `dest`, and the parent is fsynced. An existing `dest` is an error unless `replace`,
/// in which case it is moved aside first and deleted once the new directory is in place.
pub fn publish_dir(
    dest: &Path,
    replace: bool,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let name = dest
        .file_name()
        .ok_or_else(|| TrainError::format(dest, "expected a directory name, not a root or `..`"))?
        .to_string_lossy()
        .into_owned();
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    io(&parent, std::fs::create_dir_all(&parent))?;
    let pid = std::process::id();
    let tmp = parent.join(format!(".{name}.tmp-{pid}"));
    if tmp.exists() {
        io(&tmp, std::fs::remove_dir_all(&tmp))?;
    }
    io(&tmp, std::fs::create_dir(&tmp))?;
    if let Err(e) = fill(&tmp).and_then(|()| io(&tmp, sync_dir(&tmp))) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let old = if dest.symlink_metadata().is_ok() {
        if !replace {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(TrainError::format(dest, "already exists"));
        }
        let old = parent.join(format!(".{name}.old-{pid}"));
        io(dest, std::fs::rename(dest, &old))?;
        Some(old)
    } else {
        None
    };
    io(dest, std::fs::rename(&tmp, dest))?;
    io(&parent, sync_dir(&parent))?;
    if let Some(old) = old {
        let removed = if old.is_dir() {
            std::fs::remove_dir_all(&old)
        } else {
            std::fs::remove_file(&old)
        };
        io(&old, removed)?;
    }
    Ok(())
}

/// Read `train_state.json` and `train_state.safetensors` of a checkpoint directory.
pub fn read_train_state(dir: &Path) -> Result<(TrainState, Vec<(String, Tensor)>)> {
    let json_path = dir.join("train_state.json");
    let text = io(&json_path, std::fs::read_to_string(&json_path))?;
    let state: TrainState =
        serde_json::from_str(&text).map_err(|e| TrainError::format(&json_path, e.to_string()))?;
    if state.format_version != TRAIN_STATE_VERSION {
        return Err(TrainError::format(
            &json_path,
            format!(
                "format_version {} (expected {TRAIN_STATE_VERSION})",
                state.format_version
            ),
        ));
    }
    let st_path = dir.join("train_state.safetensors");
    if !st_path.exists() {
        return Err(TrainError::format(dir, "missing train_state.safetensors"));
    }
    let tensors = Tensor::read_safetensors(&st_path)?
        .into_iter()
        .filter(|(n, _)| n != "empty")
        .collect();
    Ok((state, tensors))
}

/// Read and validate `model.json` of a checkpoint directory.
pub fn read_card(dir: &Path) -> Result<ModelCard> {
    let path = dir.join("model.json");
    let text = io(&path, std::fs::read_to_string(&path))?;
    ModelCard::from_json(&text).map_err(|e| TrainError::format(&path, e.to_string()))
}

/// Load `model.safetensors` of a checkpoint into `vs` (every variable must be present with its shape).
pub fn load_weights(vs: &mut VarStore, dir: &Path) -> Result<()> {
    let path = dir.join("model.safetensors");
    if !path.exists() {
        return Err(TrainError::format(dir, "missing model.safetensors"));
    }
    vs.load(&path)
        .map_err(|e| TrainError::format(&path, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn publish_dir_is_all_or_nothing() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("out");
        // a failing fill leaves nothing behind
        let e = publish_dir(&dest, false, |tmp| {
            write_synced(&tmp.join("a"), b"partial")?;
            Err(TrainError::Data("disk full".into()))
        })
        .unwrap_err();
        assert!(e.to_string().contains("disk full"));
        assert!(names(root.path()).is_empty(), "{:?}", names(root.path()));
        // a successful one publishes every file
        publish_dir(&dest, false, |tmp| write_synced(&tmp.join("a"), b"one")).unwrap();
        assert_eq!(std::fs::read(dest.join("a")).unwrap(), b"one");
        // an existing destination is kept unless replacing
        assert!(publish_dir(&dest, false, |tmp| write_synced(&tmp.join("a"), b"two")).is_err());
        assert_eq!(std::fs::read(dest.join("a")).unwrap(), b"one");
        assert_eq!(names(root.path()), vec!["out"]);
        publish_dir(&dest, true, |tmp| write_synced(&tmp.join("b"), b"two")).unwrap();
        assert_eq!(names(&dest), vec!["b"]);
        assert_eq!(names(root.path()), vec!["out"], "the old directory is gone");
    }
}
