//! The fuzz targets: one per parser that takes outside bytes, each with its seeds (real files) and mutation hints.

mod dicom;
mod files;
mod grpc;
mod text;

pub use files::Bait;

use std::path::{Path, PathBuf};

use crate::mutate::{Hints, Rng};

/// Largest seed file read (larger example volumes only slow the loop down without reaching more code).
pub const MAX_SEED_BYTES: u64 = 128 << 10;

/// One parser under test.
pub trait Target {
    /// Short name (`nifti`, `kserve`, ...).
    fn name(&self) -> &'static str;
    /// Mutation hints.
    fn hints(&self) -> Hints;
    /// The seed inputs.
    fn seeds(&self) -> &[Vec<u8>];
    /// Parse one input: `Ok` if accepted, `Err(message)` if rejected; a panic is a failure.
    fn run(&mut self, input: &[u8]) -> Result<(), String>;
    /// Re-encode a mutant (e.g. gzip it) before it is run.
    fn post(&self, mutant: Vec<u8>, _rng: &mut Rng) -> Vec<u8> {
        mutant
    }
}

/// Where seeds and scratch files live.
#[derive(Debug, Clone)]
pub struct Env {
    /// `fuzz/seeds` (one folder per target).
    pub seeds: PathBuf,
    /// Extra folders of example images (e.g. ITK's example data) for the file targets.
    pub extra: Vec<PathBuf>,
    /// Scratch folder (a tmpfs like /dev/shm is fastest).
    pub work: PathBuf,
}

/// Names of every target, in run order.
pub const NAMES: [&str; 9] = [
    "nifti",
    "metaimage",
    "dataset_json",
    "yaml_config",
    "model_json",
    "onnx_meta",
    "kserve",
    "segment",
    "dicom",
];

/// Build a target by name.
pub fn make(name: &str, env: &Env) -> Result<Box<dyn Target>, String> {
    let work = env.work.join(name);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    Ok(match name {
        "nifti" => Box::new(files::Nifti::new(env, work)?),
        "metaimage" => Box::new(files::MetaImage::new(env, work)?),
        "dicom" => Box::new(dicom::Dicom::new(env, work)?),
        "dataset_json" => Box::new(text::DatasetJson::new(env)?),
        "yaml_config" => Box::new(text::YamlConfig::new(env)?),
        "model_json" => Box::new(text::ModelJson::new(env)?),
        "onnx_meta" => Box::new(grpc::OnnxMeta::new(env)?),
        "kserve" => Box::new(grpc::KServe::new(env)?),
        "segment" => Box::new(grpc::Segment::new(env, work)?),
        other => {
            return Err(format!(
                "unknown target {other:?}; targets: {}",
                NAMES.join(", ")
            ))
        }
    })
}

/// The limits `medmae-serve` applies when started with no limit flags or config file.
pub fn server_limits(env: &Env) -> Result<server::config::Limits, String> {
    let args = server::config::ServeArgs {
        model_repository: Some(env.seeds.clone()),
        ..Default::default()
    };
    server::config::ServerConfig::merge(args, server::config::FileConfig::default())
        .map(|c| c.limits)
        .map_err(|e| format!("server defaults: {e}"))
}

/// Every regular file of `dir` (sorted) up to [`MAX_SEED_BYTES`] with one of the name endings, as (path, bytes).
pub fn read_dir(dir: &Path, endings: &[&str]) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.to_string_lossy().to_ascii_lowercase();
            endings.iter().any(|e| n.ends_with(e))
        })
        .filter(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.len() <= MAX_SEED_BYTES)
                .unwrap_or(false)
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
        .collect()
}

/// `read_dir` of the target's seed folder, failing if it holds no seed.
pub fn seed_files(
    env: &Env,
    target: &str,
    endings: &[&str],
) -> Result<Vec<(PathBuf, Vec<u8>)>, String> {
    let dir = env.seeds.join(target);
    let s = read_dir(&dir, endings);
    if s.is_empty() {
        return Err(format!(
            "no seeds ({}) in {}",
            endings.join(" "),
            dir.display()
        ));
    }
    Ok(s)
}

/// The contents of [`seed_files`], without their paths.
pub fn seed_bytes(env: &Env, target: &str, endings: &[&str]) -> Result<Vec<Vec<u8>>, String> {
    Ok(seed_files(env, target, endings)?
        .into_iter()
        .map(|(_, b)| b)
        .collect())
}
