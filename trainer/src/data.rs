//! Training data: the dataset and its train/validation split, synthetic generation, the loader, and batches turned
//! into tensors with shape and label-value checks that name the offending file.

use std::path::Path;

use imaging::datasets::{split_fold, Case, Dataset};
use imaging::loader::{Batch, CaseSource, Loader, LoaderConfig, SampleSource, Shard};
use imaging::{Sample, Volume};
use spec::OutputActivation;
use tch::{Device, Kind, Tensor};

use crate::config::{DatasetSource, ExperimentConfig};
use crate::error::{Result, TrainError};

/// The cases used for training and for validation.
#[derive(Debug, Clone)]
pub struct Split {
    /// Dataset name.
    pub name: String,
    /// Training cases.
    pub train: Vec<Case>,
    /// Validation cases (the dataset's validation list, or a fold of its training list).
    pub val: Vec<Case>,
    /// The dataset's label names by class id (`dataset.json` `labels`; empty when it declares none).
    pub labels: std::collections::BTreeMap<u32, String>,
}

/// Load (and for synthetic data, first generate) the dataset of a config.
pub fn load_dataset(source: &DatasetSource) -> Result<Dataset> {
    Ok(imaging::datasets::load_source(source)?.0)
}

/// The train/validation split of a config: the dataset's own validation list when it has one, else fold
/// `data.fold` of a seeded `data.num_folds`-fold split of its training list.
pub fn split(cfg: &ExperimentConfig) -> Result<Split> {
    let ds = load_dataset(&cfg.data.dataset)?;
    let list = ds.datalist;
    if list.training.is_empty() {
        return Err(TrainError::config(
            "data.dataset",
            format!("dataset `{}` has no training cases", ds.name),
        ));
    }
    let (train, val) = if list.validation.is_empty() {
        split_fold(&list.training, cfg.data.num_folds, cfg.data.fold, cfg.seed)
            .map_err(|e| TrainError::config("data.num_folds", e.to_string()))?
    } else {
        (list.training, list.validation)
    };
    Ok(Split {
        name: ds.name,
        train,
        val,
        labels: ds.labels,
    })
}

/// [`split`] for one rank of a data-parallel run: rank 0 loads (and for synthetic data, generates) the dataset
/// first while the others wait, so that no two processes write the same files.
pub fn split_ranked(cfg: &ExperimentConfig, dist: &crate::dist::Dist) -> Result<Split> {
    if dist.is_main() {
        let s = split(cfg)?;
        dist.barrier("dataset preparation on rank 0")?;
        Ok(s)
    } else {
        dist.barrier("dataset preparation on rank 0")?;
        split(cfg)
    }
}

/// A case source visited `times` times per epoch; every visit is its own loader item (own random crops), and all
/// visits share one cache entry.
#[derive(Debug, Clone)]
pub struct RepeatSource {
    inner: CaseSource,
    times: usize,
}

impl RepeatSource {
    /// Repeat `cases` `times` times.
    pub fn new(cases: Vec<Case>, times: usize) -> Self {
        Self {
            inner: CaseSource(cases),
            times: times.max(1),
        }
    }

    /// The case behind loader item `index`.
    pub fn case(&self, index: usize) -> Option<&Case> {
        self.inner.0.get(index % self.inner.0.len().max(1))
    }
}

impl SampleSource for RepeatSource {
    fn len(&self) -> usize {
        self.inner.len() * self.times
    }
    fn load(&self, index: usize) -> imaging::Result<Sample> {
        self.inner.load(index % self.inner.len().max(1))
    }
    fn identity(&self, index: usize) -> Option<String> {
        self.inner.identity(index % self.inner.len().max(1))
    }
}

/// The shuffling, cached, multi-threaded training loader (last incomplete batch dropped), and a copy of its source
/// to name the cases of a batch. `shard` is this rank's `DistributedSampler` shard; the trainer uses
/// `drop_last: true`, so every rank gets `floor(n / world)` items per epoch and the ranks together see exactly the
/// items (and batches) of one process whose batch is `world` times larger.
pub fn train_loader(
    cfg: &ExperimentConfig,
    cases: Vec<Case>,
    shard: Shard,
) -> Result<(Loader<RepeatSource>, RepeatSource)> {
    let lcfg = LoaderConfig {
        batch_size: cfg.data.batch_size,
        num_workers: cfg.data.workers,
        prefetch: 2,
        shuffle: true,
        seed: cfg.seed,
        shard,
        drop_last_batch: true,
        cache_dir: Some(cfg.cache_dir()),
    };
    let source = RepeatSource::new(cases, cfg.data.samples_per_volume);
    Ok((
        Loader::new(source.clone(), &cfg.data.train_transforms, lcfg)?,
        source,
    ))
}

/// What the model expects of a batch.
#[derive(Debug, Clone)]
pub struct InputSpec {
    /// 2 or 3.
    pub spatial_dims: usize,
    /// Image channels.
    pub in_channels: usize,
    /// Model input size per spatial axis.
    pub img_size: Vec<usize>,
    /// Segmentation targets: (activation, number of output channels); `None` for MAE.
    pub target: Option<(OutputActivation, usize)>,
}

impl InputSpec {
    /// The input of a model built on `encoder`, with segmentation `target` (`None` for MAE).
    pub fn for_encoder(
        encoder: &spec::VitConfig,
        target: Option<(OutputActivation, usize)>,
    ) -> Self {
        InputSpec {
            spatial_dims: encoder.spatial_dims,
            in_channels: encoder.in_channels,
            img_size: encoder.img_size.clone(),
            target,
        }
    }
}

/// A batch on the device.
pub struct TensorBatch {
    /// `[B, C, spatial…]`.
    pub images: Tensor,
    /// Softmax: `[B, 1, spatial…]` class ids; sigmoid: `[B, K, spatial…]` 0/1; `None` without targets.
    pub labels: Option<Tensor>,
    /// Row of each sample in the global micro-batch (all ranks together, as one process would see it); `0..B` in a
    /// single process. Per-sample randomness (MAE masks) is drawn for the global batch and these rows taken, so a
    /// data-parallel run equals a single process on the concatenated batch.
    pub rows: Vec<usize>,
    /// Samples in the global micro-batch (`B` × world size).
    pub global_len: usize,
}

/// A sample volume's spatial shape as the model sees it: 3-D as is, 2-D needs Z = 1 and drops it.
fn model_shape(vol: &Volume, dims: usize, what: &dyn Fn() -> String) -> Result<Vec<usize>> {
    let s = vol.spatial_shape();
    match dims {
        3 => Ok(s.to_vec()),
        _ if s[2] == 1 => Ok(s[..2].to_vec()),
        _ => Err(TrainError::Data(format!(
            "{}: a 2-D model needs single-slice samples (Z = 1), got spatial shape {s:?}",
            what()
        ))),
    }
}

/// Check label values: softmax labels are integers in `0..K`; sigmoid labels are K channels of 0/1.
pub fn check_labels(
    label: &Volume,
    activation: OutputActivation,
    k: usize,
    file: &dyn Fn() -> String,
) -> Result<()> {
    match activation {
        OutputActivation::Softmax => {
            if label.channels() != 1 {
                return Err(TrainError::Data(format!(
                    "{}: a softmax label map has 1 channel, got {}",
                    file(),
                    label.channels()
                )));
            }
            if let Some(&v) = label
                .data
                .iter()
                .find(|&&v| !(v >= 0.0 && v.fract() == 0.0 && (v as usize) < k))
            {
                return Err(TrainError::Data(format!(
                    "{}: label value {v} is not a class id in 0..{k} (model.out_channels = {k})",
                    file()
                )));
            }
        }
        OutputActivation::Sigmoid => {
            if label.channels() != k {
                return Err(TrainError::Data(format!(
                    "{}: a sigmoid target needs {k} channels (model.out_channels), got {}",
                    file(),
                    label.channels()
                )));
            }
            if let Some(&v) = label.data.iter().find(|&&v| v != 0.0 && v != 1.0) {
                return Err(TrainError::Data(format!(
                    "{}: multi-label target value {v} is not 0 or 1",
                    file()
                )));
            }
        }
    }
    Ok(())
}

/// Stack a loader batch into tensors on `device`, checking every sample against `spec`.
pub fn to_tensors(
    batch: &Batch,
    source: &RepeatSource,
    spec: &InputSpec,
    device: Device,
) -> Result<TensorBatch> {
    let n = batch.samples.len();
    if n == 0 {
        return Err(TrainError::Data("an empty batch".into()));
    }
    let per_item = n / batch.items.len().max(1);
    let case_of = |i: usize| -> String {
        batch
            .items
            .get(i / per_item.max(1))
            .and_then(|&it| source.case(it))
            .map_or_else(|| format!("batch sample {i}"), |c| c.id.clone())
    };
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for (i, s) in batch.samples.iter().enumerate() {
        let what = || format!("case {}", case_of(i));
        let shape = model_shape(&s.image, spec.spatial_dims, &what)?;
        if shape != spec.img_size || s.image.channels() != spec.in_channels {
            return Err(TrainError::Data(format!(
                "{}: sample is {} channel(s) × {shape:?}, the model expects {} × {:?} (check the crop transform)",
                what(),
                s.image.channels(),
                spec.in_channels,
                spec.img_size
            )));
        }
        images.extend(s.image.data.iter().copied());
        if let Some((act, k)) = spec.target {
            let label = s
                .label
                .as_ref()
                .ok_or_else(|| TrainError::Data(format!("{}: no label map", what())))?;
            let file = || {
                let item = batch
                    .items
                    .get(i / per_item.max(1))
                    .and_then(|&it| source.case(it));
                item.and_then(|c| c.label.as_ref())
                    .map_or_else(what, |p| format!("label file {}", p.display()))
            };
            check_labels(label, act, k, &file)?;
            labels.extend(label.data.iter().copied());
        }
    }
    let mut shape = vec![n as i64, spec.in_channels as i64];
    shape.extend(spec.img_size.iter().map(|&v| v as i64));
    let images = Tensor::f_from_slice(&images)?
        .f_view(shape.as_slice())?
        .f_to_device(device)?;
    let labels = match spec.target {
        Some((act, k)) => {
            shape[1] = if act == OutputActivation::Softmax {
                1
            } else {
                k as i64
            };
            Some(
                Tensor::f_from_slice(&labels)?
                    .f_view(shape.as_slice())?
                    .f_to_kind(Kind::Float)?
                    .f_to_device(device)?,
            )
        }
        None => None,
    };
    Ok(TensorBatch {
        images,
        labels,
        rows: (0..n).collect(),
        global_len: n,
    })
}

/// Load one validation case through the (deterministic) validation transforms.
pub fn load_val_case(case: &Case, transforms: &[spec::TransformSpec]) -> Result<Sample> {
    use rand::SeedableRng;
    let compose = imaging::transforms::Compose::new(transforms)?;
    let mut rng = imaging::Rng::seed_from_u64(0);
    let mut out = compose.apply(case.load()?, &mut rng)?;
    match (out.len(), out.pop()) {
        (1, Some(s)) => Ok(s),
        (n, _) => Err(TrainError::Data(format!(
            "case {}: validation transforms produced {n} samples, expected 1",
            case.id
        ))),
    }
}

/// The label path of a case, for messages.
pub fn label_name(case: &Case) -> String {
    case.label.as_deref().map_or_else(
        || format!("case {}", case.id),
        |p: &Path| format!("label file {}", p.display()),
    )
}
