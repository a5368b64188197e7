//! `medmae-train plan`: nnU-Net's "plan and preprocess" in medmae's terms. Read a dataset (an MSD/decathlon folder
//! with `dataset.json`, or an images folder and a labels folder), fingerprint it ([`imaging::fingerprint`]), apply the
//! planning [`rules`] for the chosen device, preset and memory budget, and write a complete, commented pair of
//! configs — MAE pretraining and UNETR fine-tuning from it — plus `fingerprint.json` (and `datalist.json` when the
//! split or the input needs one). Both configs are parsed and validated before they are written.

pub mod rules;
mod yaml;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use imaging::datasets::{decathlon, folders, Case};
use imaging::fingerprint::{DatasetFingerprint, FingerprintOptions};
use serde_json::json;
use spec::TransformSpec;

use crate::config::ExperimentConfig;
use crate::error::{Result, TrainError};
use rules::{Arch, Preset, Schedule, SplitPlan, GIB};

/// Default memory budgets (GiB) when `--budget-gib` is not given.
pub const DEFAULT_BUDGET_GIB: [(&str, f64); 2] = [("cpu", 4.0), ("cuda", 16.0)];

/// What to plan for.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// An MSD/decathlon folder (or its `dataset.json`, or a decathlon-style datalist).
    pub dataset: Option<PathBuf>,
    /// A folder of images (with `labels`), matched by file name.
    pub images: Option<PathBuf>,
    /// The folder of label maps for `images`.
    pub labels: Option<PathBuf>,
    /// Where the configs, `fingerprint.json`, `datalist.json` and (by the planned configs) the runs go.
    pub out: PathBuf,
    /// `cpu` or `cuda[:N]`.
    pub device: String,
    /// Model size (default: tiny on CPU, base on CUDA).
    pub preset: Option<Preset>,
    /// Training memory budget in GiB (default 4 on CPU, 16 on CUDA).
    pub budget_gib: Option<f64>,
    /// Modality names per channel, overriding `dataset.json` (e.g. `["CT"]`).
    pub modality: Vec<String>,
    /// Seed of the configs (and of the fold split).
    pub seed: u64,
}

/// Everything the configs are written from.
#[derive(Debug, Clone)]
pub struct Planned {
    /// Dataset name.
    pub name: String,
    /// Header comment lines shared by both configs.
    pub notes: Vec<String>,
    /// Seed.
    pub seed: u64,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// libtorch threads.
    pub threads: usize,
    /// Loader workers.
    pub workers: usize,
    /// Mixed precision (CUDA).
    pub amp: bool,
    /// The preset's sizes.
    pub arch: Arch,
    /// Image channels.
    pub in_channels: usize,
    /// Model input size (RAS voxels).
    pub roi: [usize; 3],
    /// Fine-tuning crops per step.
    pub crops: usize,
    /// MAE volumes per step.
    pub mae_batch: usize,
    /// MAE visits per volume and epoch.
    pub mae_spv: usize,
    /// UNETR visits per volume and epoch.
    pub unetr_spv: usize,
    /// Target spacing (mm, RAS axes).
    pub spacing: [f64; 3],
    /// Why that spacing.
    pub spacing_note: String,
    /// Intensity normalisation.
    pub norm: TransformSpec,
    /// Why that normalisation.
    pub norm_note: String,
    /// Class names, index = class id (`out_channels` = their number).
    pub labels: Vec<String>,
    /// `data.dataset.path`.
    pub dataset_path: PathBuf,
    /// The split.
    pub split: SplitPlan,
    /// The split in words.
    pub split_note: String,
    /// MAE schedule.
    pub mae_sched: Schedule,
    /// UNETR schedule.
    pub unetr_sched: Schedule,
    /// MAE `optim.base_lr`.
    pub mae_base_lr: f64,
    /// UNETR `optim.base_lr`.
    pub unetr_base_lr: f64,
    /// MAE run directory.
    pub mae_out: PathBuf,
    /// UNETR run directory.
    pub unetr_out: PathBuf,
    /// Shared preprocessing cache.
    pub cache_dir: PathBuf,
}

/// What `plan` wrote.
#[derive(Debug, Clone)]
pub struct PlanOutput {
    /// The fingerprint (also in `fingerprint.json`).
    pub fingerprint: DatasetFingerprint,
    /// The decisions.
    pub planned: Planned,
    /// `<out>/mae.yaml`.
    pub mae_config: PathBuf,
    /// `<out>/unetr.yaml`.
    pub unetr_config: PathBuf,
    /// `<out>/fingerprint.json`.
    pub fingerprint_json: PathBuf,
}

/// A labelled dataset to plan from.
struct Source {
    name: String,
    labelled: Vec<Case>,
    validation: Vec<Case>,
    declared: BTreeMap<u32, String>,
    modality: Vec<String>,
    /// The decathlon JSON to point the configs at when no datalist is written.
    json: Option<PathBuf>,
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(|e| TrainError::io(p, e))
}

fn read_source(opts: &PlanOptions) -> Result<Source> {
    match (&opts.dataset, &opts.images) {
        (Some(d), None) => {
            let ds = decathlon::load_dir_or_file(d)?;
            let json = if d.is_dir() {
                d.join("dataset.json")
            } else {
                d.clone()
            };
            Ok(Source {
                name: ds.name.clone(),
                labelled: ds.datalist.training.clone(),
                validation: ds.datalist.validation.clone(),
                modality: ds.modality.values().cloned().collect(),
                declared: ds.labels,
                json: Some(absolute(&json)?),
            })
        }
        (None, Some(images)) => {
            let labels = opts.labels.as_deref().ok_or_else(|| {
                TrainError::config(
                    "--labels",
                    "--images needs --labels (the label maps' folder)",
                )
            })?;
            let m = folders::match_folders(images, Some(labels))?;
            let name = absolute(images)?
                .parent()
                .and_then(Path::file_name)
                .map_or_else(|| "dataset".into(), |n| n.to_string_lossy().into_owned());
            Ok(Source {
                name,
                labelled: m.labelled,
                validation: Vec::new(),
                declared: BTreeMap::new(),
                modality: Vec::new(),
                json: None,
            })
        }
        _ => Err(TrainError::config(
            "--dataset",
            "give either --dataset DIR (with dataset.json) or --images DIR --labels DIR",
        )),
    }
}

/// Write a decathlon-style JSON (name, modality, labels, training, validation; absolute paths) atomically.
fn write_datalist(
    path: &Path,
    src: &Source,
    modality: &[String],
    train: &[Case],
    val: &[Case],
) -> Result<()> {
    let entry = |c: &Case| -> Result<serde_json::Value> {
        let images: Vec<String> = c
            .images
            .iter()
            .map(|p| absolute(p).map(|p| p.to_string_lossy().into_owned()))
            .collect::<Result<_>>()?;
        let label = c
            .label
            .as_deref()
            .map(absolute)
            .transpose()?
            .map(|p| p.to_string_lossy().into_owned());
        Ok(
            json!({"image": if images.len() == 1 { json!(images[0]) } else { json!(images) }, "label": label}),
        )
    };
    let v = json!({
        "name": src.name,
        "description": "written by medmae-train plan",
        "modality": modality.iter().enumerate().map(|(i, m)| (i.to_string(), json!(m))).collect::<serde_json::Map<_, _>>(),
        "labels": src.declared.iter().map(|(k, n)| (k.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "training": train.iter().map(entry).collect::<Result<Vec<_>>>()?,
        "validation": val.iter().map(entry).collect::<Result<Vec<_>>>()?,
    });
    write_atomic(path, &serde_json::to_string_pretty(&v).unwrap_or_default())
}

fn write_atomic(path: &Path, text: &str) -> Result<()> {
    Ok(spec::file::write_atomic(path, text.as_bytes())?)
}

/// The default `--budget-gib` of a device.
pub fn default_budget(device: tch::Device) -> f64 {
    if device.is_cuda() {
        DEFAULT_BUDGET_GIB[1].1
    } else {
        DEFAULT_BUDGET_GIB[0].1
    }
}

/// Plan: fingerprint the dataset, decide, and write `mae.yaml`, `unetr.yaml`, `fingerprint.json` (and
/// `datalist.json`) into `opts.out`.
pub fn run(opts: &PlanOptions) -> Result<PlanOutput> {
    let dev =
        crate::device::parse_device(&opts.device).map_err(|m| TrainError::config("--device", m))?;
    let preset = opts.preset.unwrap_or(if dev.is_cuda() {
        Preset::Base
    } else {
        Preset::Tiny
    });
    let budget_gib = opts.budget_gib.unwrap_or_else(|| default_budget(dev));
    if !(budget_gib > 0.0 && budget_gib.is_finite()) {
        return Err(TrainError::config(
            "--budget-gib",
            format!("must be positive, got {budget_gib}"),
        ));
    }
    let mut src = read_source(opts)?;
    src.labelled.sort_by(|a, b| a.id.cmp(&b.id));
    let modality = if opts.modality.is_empty() {
        src.modality.clone()
    } else {
        opts.modality.clone()
    };
    let all: Vec<Case> = src
        .labelled
        .iter()
        .chain(&src.validation)
        .cloned()
        .collect();
    let mut fp = imaging::fingerprint::fingerprint(
        &src.name,
        &all,
        &src.declared,
        &modality,
        &FingerprintOptions::default(),
    )?;
    if !opts.modality.is_empty() {
        fp.modality_source = "--modality".into();
    }
    if let Some(c) = fp.cases.iter().find(|c| c.shape.contains(&1)) {
        return Err(TrainError::config(
            "dataset",
            format!("case {} is 2-D ({:?}); plan writes 3-D configs (see configs/*2d.yaml for 2-D models)", c.id, c.shape),
        ));
    }
    std::fs::create_dir_all(&opts.out).map_err(|e| TrainError::io(&opts.out, e))?;
    let out = absolute(&opts.out)?;
    let planned = decide(opts, preset, budget_gib, dev, &src, &fp, &out)?;
    // The split decides the case lists the configs read.
    let datalist = out.join("datalist.json");
    let write_list =
        |train: &[Case], val: &[Case]| write_datalist(&datalist, &src, &modality, train, val);
    match (&planned.split, &src.json) {
        (SplitPlan::Folds { .. } | SplitPlan::Given, Some(_)) => {}
        (SplitPlan::Folds { .. }, None) => write_list(&src.labelled, &[])?,
        (SplitPlan::HeldOut(i), _) => {
            let val: Vec<Case> = src.labelled.get(*i).cloned().into_iter().collect();
            let train: Vec<Case> = src
                .labelled
                .iter()
                .enumerate()
                .filter(|(j, _)| j != i)
                .map(|(_, c)| c.clone())
                .collect();
            write_list(&train, &val)?;
        }
        (SplitPlan::SameCase, _) => write_list(&all[..1], &all[..1])?,
        (SplitPlan::Given, None) => write_list(&src.labelled, &src.validation)?,
    }
    let mae_config = out.join("mae.yaml");
    let unetr_config = out.join("unetr.yaml");
    for (path, text) in [
        (&mae_config, yaml::mae(&planned)),
        (&unetr_config, yaml::unetr(&planned)),
    ] {
        let value: yaml_serde::Value = yaml_serde::from_str(&text)
            .map_err(|e| TrainError::format(path, format!("planned YAML does not parse: {e}")))?;
        ExperimentConfig::from_value(value)
            .map_err(|e| TrainError::format(path, format!("the planned config is invalid: {e}")))?;
        write_atomic(path, &text)?;
    }
    let fingerprint_json = out.join("fingerprint.json");
    let text = serde_json::to_string_pretty(&fp)
        .map_err(|e| TrainError::format(&fingerprint_json, e.to_string()))?;
    write_atomic(&fingerprint_json, &text)?;
    Ok(PlanOutput {
        fingerprint: fp,
        planned,
        mae_config,
        unetr_config,
        fingerprint_json,
    })
}

/// Apply the rules.
fn decide(
    opts: &PlanOptions,
    preset: Preset,
    budget_gib: f64,
    dev: tch::Device,
    src: &Source,
    fp: &DatasetFingerprint,
    out: &Path,
) -> Result<Planned> {
    let arch = preset.arch();
    let spacings: Vec<[f64; 3]> = fp.cases.iter().map(|c| c.ras_spacing).collect();
    let shapes: Vec<[usize; 3]> = fp.cases.iter().map(|c| c.ras_shape).collect();
    let median_target = rules::target_spacing(&spacings, &shapes);
    let resampled = rules::resampled_shape(fp.median_shape, fp.median_spacing, median_target);
    let (spacing, factor) = rules::coarsen_for_preset(&arch, median_target, resampled);
    let spacing_note = if factor > 1.0 {
        format!(
            "median spacing {median_target:.3?} × {factor} (preset {preset} caps the median image)"
        )
    } else if median_target != fp.median_spacing {
        format!(
            "anisotropic: the coarse axis uses its 10th percentile (median {:.3?})",
            fp.median_spacing
        )
    } else {
        "the median spacing of the cases".into()
    };
    let image = rules::resampled_shape(fp.median_shape, fp.median_spacing, spacing);
    let (norm, norm_note) = rules::normalization(&fp.modality, &fp.foreground, &fp.intensity);
    let (out_channels, labels) = rules::classes(&fp.labels, &src.declared)?;
    let in_channels = fp.channels();
    let budget = budget_gib * GIB;
    let roi = rules::fit_roi(&arch, image, budget, in_channels, out_channels)?;
    let n = src.labelled.len();
    let (split, train_cases, split_note) = if !src.validation.is_empty() {
        (
            SplitPlan::Given,
            n,
            format!(
                "dataset.json's validation list ({} cases)",
                src.validation.len()
            ),
        )
    } else {
        match rules::split(n)? {
            s @ SplitPlan::Folds { num_folds, fold } => {
                let val = n.div_ceil(num_folds);
                (s, n - val, format!("{num_folds} folds of {n} cases, fold {fold} validates ({val} cases)"))
            }
            SplitPlan::HeldOut(i) => (
                SplitPlan::HeldOut(i),
                n - 1,
                format!("{n} cases are too few for 5 folds: case {} is held out for validation (datalist.json)", src.labelled[i].id),
            ),
            s @ (SplitPlan::SameCase | SplitPlan::Given) => (
                s,
                1,
                "a single labelled case trains and validates: the Dice measures fit, not generalisation".into(),
            ),
        }
    };
    // An epoch visits every volume `samples_per_volume` times, sized for about a tenth of the run (nnU-Net's fixed-
    // length epochs): few cases do not mean thousands of tiny epochs, each with its checkpoint.
    let mae_batch = rules::mae_batch(&arch, roi.roi, budget, usize::MAX);
    let mae_spv = rules::visits_per_epoch(arch.steps[0], train_cases, mae_batch);
    let mae_batch = mae_batch.min(train_cases * mae_spv);
    let mae_sched = rules::schedule(arch.steps[0], train_cases * mae_spv / mae_batch);
    let unetr_spv = rules::visits_per_epoch(arch.steps[1], train_cases, 1);
    let unetr_sched = rules::schedule(arch.steps[1], train_cases * unetr_spv);
    let cuda = dev.is_cuda();
    let threads = if cuda {
        0
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    };
    let table_line = format!(
        "fingerprint: {} labelled case(s), modality {} ({}), median RAS spacing {:.3?} mm, median RAS shape {:.0?}",
        fp.cases.len(),
        fp.modality.iter().map(|m| m.name().to_string()).collect::<Vec<_>>().join("/"),
        fp.modality_source,
        fp.median_spacing,
        fp.median_shape
    );
    let notes = vec![
        table_line,
        format!(
            "plan: preset {preset} on {}, budget {budget_gib} GiB (estimated {:.2} GiB for roi {:?} × {} crops); spacing {:.3?} mm",
            opts.device,
            roi.bytes / GIB,
            roi.roi,
            roi.crops,
            spacing
        ),
        format!("labels: {} classes {:?}; {norm_note}", labels.len(), labels),
        format!("split: {split_note}"),
        "Re-run `medmae-train plan` after changing the data; fingerprint.json holds the measured statistics.".into(),
    ];
    Ok(Planned {
        name: src.name.clone(),
        notes,
        seed: opts.seed,
        device: if cuda {
            opts.device.clone()
        } else {
            "cpu".into()
        },
        threads,
        workers: if cuda { 4 } else { 2 },
        amp: cuda,
        arch,
        in_channels,
        roi: roi.roi,
        crops: roi.crops,
        mae_batch,
        mae_spv,
        unetr_spv,
        spacing,
        spacing_note,
        norm,
        norm_note,
        labels,
        dataset_path: match (&split, &src.json) {
            (SplitPlan::Folds { .. } | SplitPlan::Given, Some(j)) => j.clone(),
            _ => out.join("datalist.json"),
        },
        split,
        split_note,
        mae_base_lr: arch.peak_lr[0] * 256.0 / mae_batch as f64,
        unetr_base_lr: arch.peak_lr[1] * 256.0 / roi.crops as f64,
        mae_sched,
        unetr_sched,
        mae_out: out.join("runs").join("mae"),
        unetr_out: out.join("runs").join("unetr"),
        cache_dir: out.join("cache"),
    })
}
