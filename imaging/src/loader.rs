//! A multi-threaded prefetching data loader: item sources → deterministic transforms (cached on disk) → random
//! transforms with a per-(seed, epoch, item) RNG → batches in a deterministic order, sharded like PyTorch's
//! `DistributedSampler`.
//!
//! Determinism: the epoch order is a ChaCha8 shuffle seeded by (seed, epoch) and is the same on every rank; the
//! random transforms of item `i` in epoch `e` draw from an RNG seeded by (seed, e, i). Workers pick up whole batches
//! and the iterator hands batches out in order, so the result does not depend on the number of worker threads.
//! Items repeated to pad the last shard get the same augmentation as their first occurrence in that epoch.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::datasets::CaseSource;
use crate::error::{ImagingError, Result};
pub use crate::pseudo3d::SliceSource;
use crate::synthetic::case_seed;
use crate::transforms::Compose;
use crate::volume::Volume;
use crate::Sample;
use spec::TransformSpec;

/// Where the loader's items come from (before any transform).
pub trait SampleSource: Send + Sync + 'static {
    /// Number of items.
    fn len(&self) -> usize;
    /// True when there are no items.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Load item `index` without transforms.
    fn load(&self, index: usize) -> Result<Sample>;
    /// A string that changes whenever item `index`'s content may change (e.g. paths, sizes, modification times);
    /// `None` disables the disk cache for the item.
    fn identity(&self, index: usize) -> Option<String>;
}

/// The identity of a file for cache keys: canonical path, size and modification time.
pub fn file_identity(p: &Path) -> String {
    let meta = std::fs::metadata(p).ok();
    let size = meta.as_ref().map_or(0, |m| m.len());
    let mtime = meta
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let abs = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    format!("{}|{size}|{mtime}", abs.display())
}

/// `items[index]` or an error naming the index.
pub(crate) fn item<T>(items: &[T], index: usize) -> Result<&T> {
    items.get(index).ok_or_else(|| {
        ImagingError::config(
            "index",
            format!("item {index} is outside 0..{}", items.len()),
        )
    })
}

/// Rank and world size of a distributed run (PyTorch `DistributedSampler` semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// This process's rank.
    pub rank: usize,
    /// Number of processes.
    pub world_size: usize,
    /// Drop the tail so every rank gets `floor(n / world)` items; otherwise pad with items from the start.
    #[serde(default)]
    pub drop_last: bool,
}

impl Default for Shard {
    fn default() -> Self {
        Self {
            rank: 0,
            world_size: 1,
            drop_last: false,
        }
    }
}

fn two() -> usize {
    2
}
fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}

/// Loader settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoaderConfig {
    /// Items per batch (each item may yield several samples, e.g. `RandCropByPosNegLabel` with `num_samples`).
    #[serde(default = "one")]
    pub batch_size: usize,
    /// Worker threads; 0 loads on the calling thread.
    #[serde(default = "two")]
    pub num_workers: usize,
    /// Batches in flight per worker (PyTorch's `prefetch_factor`; at least 1).
    #[serde(default = "two")]
    pub prefetch: usize,
    /// Shuffle the items every epoch.
    #[serde(default = "yes")]
    pub shuffle: bool,
    /// Seed of the shuffles and of the random transforms.
    #[serde(default)]
    pub seed: u64,
    /// Distributed sharding.
    #[serde(default)]
    pub shard: Shard,
    /// Drop this rank's last batch when it is smaller than `batch_size`.
    #[serde(default)]
    pub drop_last_batch: bool,
    /// Folder of the cache of deterministic-transform outputs; `None` disables it.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_size: 1,
            num_workers: 2,
            prefetch: 2,
            shuffle: true,
            seed: 0,
            shard: Shard::default(),
            drop_last_batch: false,
            cache_dir: None,
        }
    }
}

/// One batch: the item indices it came from and the samples they produced, in item order.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Epoch.
    pub epoch: u64,
    /// Batch number within this rank's epoch.
    pub index: usize,
    /// Item (dataset) indices.
    pub items: Vec<usize>,
    /// Samples, item by item.
    pub samples: Vec<Sample>,
}

/// This rank's item order for an epoch: shuffle (or identity), then pad or drop to a multiple of `world_size`, then
/// take every `world_size`-th item starting at `rank`.
pub fn shard_indices(
    n: usize,
    shuffle: bool,
    seed: u64,
    epoch: u64,
    shard: &Shard,
) -> Result<Vec<usize>> {
    if shard.world_size == 0 || shard.rank >= shard.world_size {
        return Err(ImagingError::config(
            "shard",
            format!(
                "rank {} must be < world_size {} (>= 1)",
                shard.rank, shard.world_size
            ),
        ));
    }
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(case_seed(seed, epoch)));
    }
    let w = shard.world_size;
    if shard.drop_last {
        order.truncate(n / w * w);
    } else if n > 0 {
        let total = n.div_ceil(w) * w;
        let mut k = 0;
        while order.len() < total {
            order.push(order[k % n]);
            k += 1;
        }
    }
    Ok(order.into_iter().skip(shard.rank).step_by(w).collect())
}

/// The RNG of item `index` in `epoch`.
pub fn item_rng(seed: u64, epoch: u64, index: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(case_seed(case_seed(seed, epoch), index as u64))
}

/// On-disk cache of deterministic preprocessing results: `<key>.json` (metadata, written last) plus one `.npy` per
/// image and label.
#[derive(Debug, Clone)]
pub struct DiskCache {
    dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct CacheMeta {
    samples: Vec<CacheEntry>,
}

#[derive(Serialize, Deserialize)]
struct CacheEntry {
    image_affine: [[f64; 4]; 4],
    label_affine: Option<[[f64; 4]; 4]>,
}

const CACHE_VERSION: &str = "medmae-cache-v1";

impl DiskCache {
    /// A cache in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The key of an item: a SHA-256 of the format version, the item identity and the transform specs.
    pub fn key(identity: &str, specs: &[TransformSpec]) -> String {
        let mut h = Sha256::new();
        h.update(CACHE_VERSION.as_bytes());
        h.update(identity.as_bytes());
        h.update(serde_json::to_string(specs).unwrap_or_default().as_bytes());
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    fn file(&self, key: &str, i: usize, what: &str) -> PathBuf {
        self.dir.join(format!("{key}_{i}_{what}.npy"))
    }

    /// The cached samples of `key`, if complete. An unreadable entry is a miss (logged): the cache only saves time.
    pub fn get(&self, key: &str) -> Result<Option<Vec<Sample>>> {
        let meta_path = self.dir.join(format!("{key}.json"));
        let Ok(text) = std::fs::read_to_string(&meta_path) else {
            return Ok(None);
        };
        match self.read_entry(key, &meta_path, &text) {
            Ok(samples) => Ok(Some(samples)),
            Err(e) => {
                tracing::warn!("ignoring unreadable cache entry: {e}");
                Ok(None)
            }
        }
    }

    fn read_entry(&self, key: &str, meta_path: &Path, text: &str) -> Result<Vec<Sample>> {
        let meta: CacheMeta = serde_json::from_str(text)
            .map_err(|e| ImagingError::format(meta_path, e.to_string()))?;
        let read = |p: PathBuf| -> Result<ndarray::Array4<f32>> {
            ndarray_npy::read_npy(&p).map_err(|e| ImagingError::format(&p, e.to_string()))
        };
        let mut out = Vec::with_capacity(meta.samples.len());
        for (i, e) in meta.samples.iter().enumerate() {
            let image = Volume::new(read(self.file(key, i, "image"))?, e.image_affine);
            let label = match e.label_affine {
                Some(a) => Some(Volume::new(read(self.file(key, i, "label"))?, a)),
                None => None,
            };
            out.push(Sample::new(image, label)?);
        }
        Ok(out)
    }

    /// Store samples under `key` (files written to temporaries and renamed, metadata last).
    pub fn put(&self, key: &str, samples: &[Sample]) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| ImagingError::io(&self.dir, e))?;
        let tag = format!(
            "tmp{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        )
        .replace(['(', ')'], "");
        let write_atomic = |dst: PathBuf, write: &dyn Fn(&Path) -> Result<()>| -> Result<()> {
            let tmp = dst.with_extension(&tag);
            write(&tmp)?;
            std::fs::rename(&tmp, &dst).map_err(|e| ImagingError::io(&dst, e))
        };
        let mut entries = Vec::with_capacity(samples.len());
        for (i, s) in samples.iter().enumerate() {
            let arrays = std::iter::once(("image", &s.image.data))
                .chain(s.label.as_ref().map(|l| ("label", &l.data)));
            for (what, a) in arrays {
                write_atomic(self.file(key, i, what), &|p: &Path| {
                    ndarray_npy::write_npy(p, a).map_err(|e| ImagingError::format(p, e.to_string()))
                })?;
            }
            entries.push(CacheEntry {
                image_affine: s.image.affine,
                label_affine: s.label.as_ref().map(|l| l.affine),
            });
        }
        let meta_path = self.dir.join(format!("{key}.json"));
        let text = serde_json::to_string(&CacheMeta { samples: entries })
            .map_err(|e| ImagingError::format(&meta_path, e.to_string()))?;
        write_atomic(meta_path, &|p: &Path| {
            std::fs::write(p, &text).map_err(|e| ImagingError::io(p, e))
        })
    }
}

struct Shared<S> {
    source: S,
    deterministic: Vec<TransformSpec>,
    random: Vec<TransformSpec>,
    cfg: LoaderConfig,
}

/// Transforms built once per thread (a [`Compose`] is not assumed to be shareable).
struct Pipelines {
    deterministic: Compose,
    random: Compose,
}

impl<S: SampleSource> Shared<S> {
    fn pipelines(&self) -> Result<Pipelines> {
        Ok(Pipelines {
            deterministic: Compose::new(&self.deterministic)?,
            random: Compose::new(&self.random)?,
        })
    }

    fn preprocessed(&self, p: &Pipelines, index: usize) -> Result<Vec<Sample>> {
        let cache = self.cfg.cache_dir.as_ref().map(DiskCache::new);
        let key = match (&cache, self.source.identity(index)) {
            (Some(_), Some(id)) => Some(DiskCache::key(&id, &self.deterministic)),
            _ => None,
        };
        if let (Some(c), Some(k)) = (&cache, &key) {
            if let Some(hit) = c.get(k)? {
                return Ok(hit);
            }
        }
        // Deterministic transforms do not draw from the RNG; any fixed one will do.
        let out = p
            .deterministic
            .apply(self.source.load(index)?, &mut ChaCha8Rng::seed_from_u64(0))?;
        if let (Some(c), Some(k)) = (&cache, &key) {
            c.put(k, &out)?;
        }
        Ok(out)
    }

    fn batch(&self, p: &Pipelines, epoch: u64, index: usize, items: Vec<usize>) -> Result<Batch> {
        let mut samples = Vec::new();
        for &i in &items {
            let mut rng = item_rng(self.cfg.seed, epoch, i);
            for s in self.preprocessed(p, i)? {
                samples.extend(p.random.apply(s, &mut rng)?);
            }
        }
        Ok(Batch {
            epoch,
            index,
            items,
            samples,
        })
    }
}

/// The data loader over a [`SampleSource`].
pub struct Loader<S: SampleSource> {
    shared: Arc<Shared<S>>,
}

impl<S: SampleSource> std::fmt::Debug for Loader<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("items", &self.shared.source.len())
            .field("deterministic", &self.shared.deterministic)
            .field("random", &self.shared.random)
            .field("cfg", &self.shared.cfg)
            .finish()
    }
}

impl<S: SampleSource> Loader<S> {
    /// A loader applying `transforms`: the leading deterministic ones are cached, the rest run every epoch.
    pub fn new(source: S, transforms: &[TransformSpec], cfg: LoaderConfig) -> Result<Self> {
        if source.is_empty() {
            return Err(ImagingError::config(
                "datalist",
                "the loader needs at least one item",
            ));
        }
        if cfg.batch_size == 0 {
            return Err(ImagingError::config("batch_size", "must be >= 1"));
        }
        shard_indices(0, false, 0, 0, &cfg.shard)?;
        let split = transforms
            .iter()
            .position(TransformSpec::is_random)
            .unwrap_or(transforms.len());
        let shared = Shared {
            source,
            deterministic: transforms[..split].to_vec(),
            random: transforms[split..].to_vec(),
            cfg,
        };
        shared.pipelines()?;
        Ok(Self {
            shared: Arc::new(shared),
        })
    }

    /// This rank's item order in `epoch`.
    pub fn epoch_items(&self, epoch: u64) -> Vec<usize> {
        let c = &self.shared.cfg;
        shard_indices(self.shared.source.len(), c.shuffle, c.seed, epoch, &c.shard)
            .unwrap_or_default()
    }

    /// This rank's batches of `epoch` as item-index lists.
    pub fn epoch_batches(&self, epoch: u64) -> Vec<Vec<usize>> {
        let c = &self.shared.cfg;
        self.epoch_items(epoch)
            .chunks(c.batch_size)
            .filter(|b| !(c.drop_last_batch && b.len() < c.batch_size))
            .map(<[usize]>::to_vec)
            .collect()
    }

    /// Iterate over the batches of `epoch`, keeping up to `prefetch · num_workers` batches in flight.
    pub fn epoch(&self, epoch: u64) -> Result<EpochIter<S>> {
        let plan: VecDeque<(usize, Vec<usize>)> =
            self.epoch_batches(epoch).into_iter().enumerate().collect();
        let cfg = &self.shared.cfg;
        let mut it = EpochIter {
            shared: self.shared.clone(),
            epoch,
            plan,
            pending: VecDeque::new(),
            jobs: None,
            workers: Vec::new(),
            local: None,
            stop: Arc::new(AtomicBool::new(false)),
        };
        if cfg.num_workers == 0 {
            it.local = Some(self.shared.pipelines()?);
            return Ok(it);
        }
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for w in 0..cfg.num_workers {
            let (shared, rx, stop) = (self.shared.clone(), rx.clone(), it.stop.clone());
            let handle = std::thread::Builder::new()
                .name(format!("medmae-loader-{w}"))
                .spawn(move || worker(&shared, &rx, &stop))
                .map_err(|e| ImagingError::io("<loader thread>", e))?;
            it.workers.push(handle);
        }
        it.jobs = Some(tx);
        Ok(it)
    }
}

type Job = (u64, usize, Vec<usize>, SyncSender<Result<Batch>>);

fn worker<S: SampleSource>(shared: &Shared<S>, jobs: &Mutex<Receiver<Job>>, stop: &AtomicBool) {
    let pipelines = shared.pipelines();
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((epoch, index, items, reply)) = job else {
            return;
        };
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let result = match &pipelines {
            Ok(p) => shared.batch(p, epoch, index, items),
            Err(e) => Err(ImagingError::config("transforms", e.to_string())),
        };
        // The consumer may have stopped listening; that is not an error here.
        let _ = reply.send(result);
    }
}

/// Iterator over one epoch's batches (see [`Loader::epoch`]); dropping it stops and joins the workers.
pub struct EpochIter<S: SampleSource> {
    shared: Arc<Shared<S>>,
    epoch: u64,
    plan: VecDeque<(usize, Vec<usize>)>,
    pending: VecDeque<Receiver<Result<Batch>>>,
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
    local: Option<Pipelines>,
    stop: Arc<AtomicBool>,
}

impl<S: SampleSource> EpochIter<S> {
    fn submit(&mut self) {
        let Some(jobs) = &self.jobs else { return };
        let cfg = &self.shared.cfg;
        let in_flight = cfg.prefetch.max(1) * cfg.num_workers.max(1);
        while self.pending.len() < in_flight {
            let Some((index, items)) = self.plan.pop_front() else {
                return;
            };
            let (tx, rx) = sync_channel(1);
            if let Err(failed) = jobs.send((self.epoch, index, items, tx)) {
                // Every worker has exited: report it instead of ending the epoch early.
                let _ = failed.0 .3.send(Err(ImagingError::config(
                    "loader",
                    "all worker threads have stopped",
                )));
                self.plan.clear();
            }
            self.pending.push_back(rx);
        }
    }
}

impl<S: SampleSource> Iterator for EpochIter<S> {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(p) = &self.local {
            let (index, items) = self.plan.pop_front()?;
            return Some(self.shared.batch(p, self.epoch, index, items));
        }
        self.submit();
        let rx = self.pending.pop_front()?;
        let out = rx.recv().unwrap_or_else(|_| {
            Err(ImagingError::config(
                "loader",
                "a worker thread stopped (panicked) before finishing its batch",
            ))
        });
        self.submit();
        Some(out)
    }
}

impl<S: SampleSource> Drop for EpochIter<S> {
    fn drop(&mut self) {
        self.plan.clear();
        self.stop.store(true, Ordering::Relaxed);
        self.jobs = None;
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}
