//! `medmae-train` command line: plan | prepare | pretrain | finetune | evaluate | predict | import.
//!
//! `pretrain` and `finetune` train data-parallel when launched by torchrun (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
//! `MASTER_ADDR`, `MASTER_PORT`) or srun (`SLURM_PROCID`, …), or with `--nproc-per-node N`, which re-executes this
//! binary N times on this machine with the torchrun variables set.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use distributed::{launch, Backend, DistEnv};
use trainer::config::ExperimentConfig;
use trainer::dist::Dist;
use trainer::engine::RunOptions;

/// Train, evaluate and apply medmae models (MAE pretraining, UNETR fine-tuning).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fingerprint a dataset and write a commented MAE + UNETR config pair for a device and memory budget.
    Plan(PlanArgs),
    /// Prepare a dataset: preprocess volumes into the cache, write 2-D slices + manifest (imaging::prepare).
    Prepare {
        /// Prepare config (YAML), e.g. configs/data/demo.yaml.
        #[arg(value_name = "CONFIG", required_unless_present = "config")]
        path: Option<PathBuf>,
        /// The same, as a flag.
        #[arg(long, short, conflicts_with = "path")]
        config: Option<PathBuf>,
        /// Override a prepare-config key, as for training: `--set data.dataset.path=/data/Task09_Spleen`
        /// (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// MAE pretraining.
    Pretrain(TrainArgs),
    /// UNETR fine-tuning, optionally initialised from an MAE checkpoint.
    Finetune {
        #[command(flatten)]
        args: TrainArgs,
        /// MAE (or UNETR) checkpoint directory or .safetensors file to initialise the encoder from.
        #[arg(long)]
        init: Option<PathBuf>,
    },
    /// Sliding-window Dice of a UNETR checkpoint on the validation cases of a config's dataset.
    Evaluate {
        /// Experiment config (YAML); default: the config.yaml the run saved next to --checkpoint.
        #[arg(long, short, required_unless_present = "checkpoint")]
        config: Option<PathBuf>,
        #[command(flatten)]
        over: Overrides,
        /// Checkpoint directory (default: <output_dir>/checkpoints/best).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Where eval.json and eval_overlay.png go (default: <output_dir>/eval).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Segment one volume; the label NIfTI has the input's grid and geometry.
    Predict {
        /// Checkpoint directory (model.json + model.safetensors).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Input image (.nii, .nii.gz, .mha, .mhd).
        #[arg(long)]
        input: PathBuf,
        /// Output label map (.nii or .nii.gz).
        #[arg(long)]
        output: PathBuf,
        /// Also write the class probabilities here (.nii or .nii.gz, float32, one channel per class).
        #[arg(long, value_name = "FILE")]
        probabilities: Option<PathBuf>,
        /// Experiment config for `device` and `threads`; default: the config.yaml the run saved next to
        /// --checkpoint, if any (else the CPU).
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[command(flatten)]
        over: Overrides,
    },
    /// Convert a MONAI UNETR, SelfMedMAE MAE-3D or He et al. MAE-2D checkpoint into a medmae checkpoint directory.
    Import(ImportArgs),
}

/// `medmae-train import`: what the checkpoint's tensor shapes cannot tell comes from these flags.
#[derive(Args)]
struct ImportArgs {
    /// The checkpoint: a torch.save file (.pt, .pth, .pth.tar; a state dict, optionally wrapped in
    /// {"state_dict": …} / {"model": …}) or .safetensors.
    input: PathBuf,
    /// The medmae checkpoint directory to write (model.json + model.safetensors).
    #[arg(long, short)]
    output: PathBuf,
    /// Checkpoint family: monai-unetr, selfmedmae-mae3d or he-mae2d (default: recognised from tensor names).
    #[arg(long = "from", value_name = "FAMILY")]
    family: Option<models::import::Family>,
    /// Where the state dict sits in the saved object, `/`-separated (default: the object, else state_dict, model, …).
    #[arg(long)]
    key: Option<String>,
    /// Input size per spatial axis, comma-separated (required for MONAI UNETR; MAEs: read off their sincos tables).
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    img_size: Option<Vec<usize>>,
    /// Encoder attention heads (they do not show in the weights; ViT-B: 12).
    #[arg(long)]
    num_heads: Option<usize>,
    /// MAE decoder attention heads.
    #[arg(long)]
    decoder_num_heads: Option<usize>,
    /// LayerNorm eps (default: 1e-5 for MONAI, 1e-6 for SelfMedMAE and He et al.).
    #[arg(long)]
    layer_norm_eps: Option<f64>,
    /// MAE mask ratio for continued pretraining (default 0.75).
    #[arg(long)]
    mask_ratio: Option<f64>,
    /// MAE per-patch normalised targets for continued pretraining (default true).
    #[arg(long)]
    norm_pix_loss: Option<bool>,
    /// Label names of a segmentation model, comma-separated, one per output channel.
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// YAML list of the deterministic preprocessing the model expects (written to model.json; default: none).
    #[arg(long, value_name = "FILE")]
    preprocessing: Option<PathBuf>,
    /// Logit activation of a segmentation model.
    #[arg(long, default_value = "softmax", value_parser = parse_activation)]
    activation: spec::OutputActivation,
    /// Replace the output directory if it exists.
    #[arg(long)]
    force: bool,
}

fn parse_activation(s: &str) -> Result<spec::OutputActivation, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("expected softmax or sigmoid, got `{s}`"))
}

#[derive(Args)]
struct PlanArgs {
    /// MSD/decathlon dataset folder (with dataset.json), or a dataset.json / datalist file.
    #[arg(long, conflicts_with = "images", required_unless_present = "images")]
    dataset: Option<PathBuf>,
    /// Folder of images, matched by file name with the label maps of --labels.
    #[arg(long, requires = "labels")]
    images: Option<PathBuf>,
    /// Folder of label maps (with --images).
    #[arg(long, requires = "images")]
    labels: Option<PathBuf>,
    /// Output folder: mae.yaml, unetr.yaml, fingerprint.json (and datalist.json); the planned runs go under it.
    #[arg(long, short)]
    out: PathBuf,
    /// `cpu` or `cuda[:N]`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Model size: tiny (quick CPU check, roi 32³), small, base (ViT-B, GPU). Default: tiny on cpu, base on cuda.
    #[arg(long, value_name = "tiny|small|base")]
    preset: Option<trainer::plan::rules::Preset>,
    /// Training memory budget in GiB (default 4 on cpu, 16 on cuda): the roi and crops are sized to fit it.
    #[arg(long, value_name = "GIB")]
    budget_gib: Option<f64>,
    /// Modality per image channel, comma-separated (e.g. CT), overriding dataset.json.
    #[arg(long, value_delimiter = ',')]
    modality: Vec<String>,
    /// Seed written into the configs (also seeds the fold split).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
struct CommonArgs {
    /// Experiment config (YAML).
    #[arg(long, short)]
    config: PathBuf,
    #[command(flatten)]
    over: Overrides,
}

#[derive(Args)]
struct Overrides {
    /// Override a config key, YAML value syntax: `--set optim.base_lr=1e-3`; list elements by index or by
    /// transform name: `--set data.train_transforms.Spacing.pixdim=[2,2,5]` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// `cpu` or `cuda:N` (overrides the config's `device`).
    #[arg(long)]
    device: Option<String>,
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Resume from a checkpoint directory (default with no value: <output_dir>/checkpoints/last).
    #[arg(long, num_args = 0..=1, value_name = "CHECKPOINT")]
    resume: Option<Option<PathBuf>>,
    /// Stop after this many optimiser steps in total, writing a checkpoint (resume later with --resume).
    #[arg(long)]
    max_steps: Option<u64>,
    /// Also write an offline wandb run (only when the Python wandb client is importable).
    #[arg(long)]
    wandb: bool,
    #[command(flatten)]
    dist: DistArgs,
}

#[derive(Args)]
struct DistArgs {
    /// Start this many local worker processes (one per GPU, or CPU processes with Gloo) with the torchrun
    /// environment on 127.0.0.1 and wait for them; `data.batch_size` is per process.
    #[arg(long, default_value_t = 1, value_name = "N")]
    nproc_per_node: usize,
    /// Communication backend when several processes train (default: nccl on CUDA, gloo on CPU).
    #[arg(long, value_name = "gloo|nccl")]
    dist_backend: Option<Backend>,
    /// Timeout in seconds of the rendezvous (a missing peer) and of every collective.
    #[arg(
        long,
        env = "MEDMAE_DIST_TIMEOUT",
        default_value_t = 1800.0,
        value_name = "SECONDS"
    )]
    dist_timeout: f64,
    /// Debugging: every rank writes its final weights to DIR/rank<r>.safetensors.
    #[arg(long, hide = true, value_name = "DIR")]
    rank_weights_dir: Option<PathBuf>,
}

fn load_config(path: &Path, o: &Overrides) -> anyhow::Result<ExperimentConfig> {
    let mut sets = o.set.clone();
    if let Some(d) = &o.device {
        sets.push(format!("device={d}"));
    }
    ExperimentConfig::load(path, &sets).with_context(|| format!("config {}", path.display()))
}

/// `--config`, or else the config the run saved next to `checkpoint`.
fn config_or_saved(config: Option<PathBuf>, checkpoint: &Path) -> anyhow::Result<PathBuf> {
    if let Some(c) = config {
        return Ok(c);
    }
    let saved = config::saved_config_for_checkpoint(checkpoint)?;
    tracing::info!("config: {} (saved by the run)", saved.display());
    Ok(saved)
}

/// The device of `predict`: from `--config` or the run's saved config when there is one (which also sets the
/// thread count), else `--device` or the CPU.
fn predict_device(
    config: Option<PathBuf>,
    over: &Overrides,
    checkpoint: &Path,
) -> anyhow::Result<tch::Device> {
    let explicit = config.is_some() || !over.set.is_empty();
    let cfg = match config_or_saved(config, checkpoint) {
        Ok(path) => match load_config(&path, over) {
            Ok(cfg) => Some(cfg),
            Err(e) if !explicit => {
                tracing::warn!("not using the run's saved config: {e:#}");
                None
            }
            Err(e) => return Err(e),
        },
        Err(e) if explicit => return Err(e.context("--set needs a config")),
        Err(_) => None,
    };
    match cfg {
        Some(cfg) => Ok(trainer::engine::setup_device(&cfg, &Dist::single()?)?),
        None => trainer::device::parse_device(over.device.as_deref().unwrap_or("cpu"))
            .and_then(trainer::device::available)
            .map_err(anyhow::Error::msg),
    }
}

fn run_options(cfg: &ExperimentConfig, a: &TrainArgs) -> RunOptions {
    let last = cfg.output_dir.join("checkpoints").join("last");
    let resume = a.resume.clone().map(|p| p.unwrap_or(last));
    RunOptions {
        resume,
        max_steps: a.max_steps,
        wandb: a.wandb,
        rank_weights_dir: a.dist.rank_weights_dir.clone(),
    }
}

/// `--nproc-per-node N` in the launching process: re-run this command line N times as workers. Returns false when
/// this process should train itself.
fn spawn_workers(d: &DistArgs, env: &distributed::Result<DistEnv>) -> anyhow::Result<bool> {
    if !launch::should_spawn(d.nproc_per_node) {
        return Ok(false);
    }
    if let Some(e) = env
        .as_ref()
        .ok()
        .filter(|e| e.launcher != distributed::Launcher::Single)
    {
        anyhow::bail!(
            "--nproc-per-node {} inside a {:?} launch (rank {} of {}): let the launcher start the processes, or drop its variables",
            d.nproc_per_node,
            e.launcher,
            e.rank,
            e.world_size
        );
    }
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    launch::spawn_local_workers(d.nproc_per_node, &args).context("--nproc-per-node")?;
    Ok(true)
}

/// Join the process group of this launch (a single process when no launcher variables are set).
fn join(env: DistEnv, cfg: &ExperimentConfig, d: &DistArgs) -> anyhow::Result<Dist> {
    if launch::is_spawned_worker() && env.world_size != d.nproc_per_node {
        anyhow::bail!(
            "worker of --nproc-per-node {} sees WORLD_SIZE={}",
            d.nproc_per_node,
            env.world_size
        );
    }
    let timeout = Duration::try_from_secs_f64(d.dist_timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .context("--dist-timeout must be a positive number of seconds")?;
    let device = trainer::device::parse_device(&cfg.device).map_err(anyhow::Error::msg)?;
    if let tch::Device::Cuda(index) = device {
        // Before the rendezvous: without a GPU every rank fails the same way, and says why (CPU-only build, no device).
        let probe = if env.is_distributed() { 0 } else { index };
        trainer::device::available(tch::Device::Cuda(probe)).map_err(anyhow::Error::msg)?;
    }
    let backend = d
        .dist_backend
        .unwrap_or_else(|| trainer::dist::backend_for(device));
    if env.is_distributed() && env.is_main() {
        tracing::info!(
            "data-parallel: {} processes, {backend} via {}:{}, {} items per step",
            env.world_size,
            env.master_addr,
            env.master_port,
            env.world_size * cfg.data.batch_size * cfg.optim.accum_steps
        );
    }
    Ok(Dist::init(env, backend, timeout)?)
}

fn main() -> ExitCode {
    // Which rank this is decides the default log level (only rank 0 logs at info, but every rank logs its threads and
    // CPU affinity); errors are reported below.
    let env = DistEnv::from_env();
    let (rank, world) = env.as_ref().map_or((0, 1), |e| (e.rank, e.world_size));
    let default_level = if rank == 0 {
        "info"
    } else {
        "warn,trainer::threads=info"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(env) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if world > 1 {
                eprintln!("Error (rank {rank} of {world}): {e:?}");
            } else {
                eprintln!("Error: {e:?}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(env: distributed::Result<DistEnv>) -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Plan(a) => plan(a),
        Command::Prepare { path, config, set } => {
            let file = path.or(config).context("prepare needs a config file")?;
            let cfg: imaging::prepare::PrepareConfig =
                config::load(&file, &set).with_context(|| format!("config {}", file.display()))?;
            let summary = imaging::prepare::run(&cfg).context("prepare")?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
            Ok(())
        }
        Command::Pretrain(a) => pretrain(a, env),
        Command::Finetune { args, init } => finetune(args, init, env),
        Command::Evaluate {
            config,
            over,
            checkpoint,
            output,
        } => evaluate(config, &over, checkpoint, output),
        Command::Predict {
            checkpoint,
            input,
            output,
            probabilities,
            config,
            over,
        } => {
            let dev = predict_device(config, &over, &checkpoint)?;
            let p = trainer::evaluate::predict(
                &checkpoint,
                &input,
                &output,
                probabilities.as_deref(),
                dev,
            )
            .context("predict")?;
            println!(
                "wrote {} (voxels per label: {:?})",
                output.display(),
                p.counts
            );
            Ok(())
        }
        Command::Import(a) => import(a),
    }
}

/// `medmae-train plan`: fingerprint the dataset, write the planned configs, print what was decided.
fn plan(a: PlanArgs) -> anyhow::Result<()> {
    let p = trainer::plan::run(&trainer::plan::PlanOptions {
        dataset: a.dataset,
        images: a.images,
        labels: a.labels,
        out: a.out,
        device: a.device,
        preset: a.preset,
        budget_gib: a.budget_gib,
        modality: a.modality,
        seed: a.seed,
    })
    .context("plan")?;
    print!("{}", p.fingerprint.table());
    for line in &p.planned.notes {
        println!("{line}");
    }
    println!(
        "wrote {}, {} and {}\nnext: medmae-train pretrain --config {}\n      medmae-train finetune --config {}",
        p.mae_config.display(),
        p.unetr_config.display(),
        p.fingerprint_json.display(),
        p.mae_config.display(),
        p.unetr_config.display()
    );
    Ok(())
}

/// `medmae-train pretrain` (as one rank when data-parallel).
fn pretrain(a: TrainArgs, env: distributed::Result<DistEnv>) -> anyhow::Result<()> {
    let cfg = load_config(&a.common.config, &a.common.over)?;
    if spawn_workers(&a.dist, &env)? {
        return Ok(());
    }
    let dist = join(env?, &cfg, &a.dist)?;
    let s = trainer::pretrain::run(&cfg, &run_options(&cfg, &a), &dist).context("pretrain")?;
    if dist.is_main() {
        println!(
            "pretrained {} steps, last loss {:.5}; checkpoint {}",
            s.steps,
            s.last_loss,
            s.last_checkpoint.display()
        );
    }
    Ok(())
}

/// `medmae-train finetune` (as one rank when data-parallel); `init` overrides the config's `init`.
fn finetune(
    args: TrainArgs,
    init: Option<PathBuf>,
    env: distributed::Result<DistEnv>,
) -> anyhow::Result<()> {
    let mut cfg = load_config(&args.common.config, &args.common.over)?;
    if init.is_some() {
        cfg.init = init;
    }
    if spawn_workers(&args.dist, &env)? {
        return Ok(());
    }
    let dist = join(env?, &cfg, &args.dist)?;
    let s = trainer::finetune::run(&cfg, &run_options(&cfg, &args), &dist).context("finetune")?;
    if dist.is_main() {
        let best = s.best.map_or_else(
            || "none".to_string(),
            |(d, step)| format!("{d:.4} at step {step}"),
        );
        println!(
            "fine-tuned {} steps, last loss {:.5}, best mean Dice {best}; checkpoints in {}",
            s.steps,
            s.last_loss,
            cfg.output_dir.join("checkpoints").display()
        );
    }
    Ok(())
}

/// `medmae-train evaluate`: Dice of a checkpoint on the validation cases of `--config` (default: the run's saved
/// config next to `--checkpoint`).
fn evaluate(
    config: Option<PathBuf>,
    over: &Overrides,
    checkpoint: Option<PathBuf>,
    output: Option<PathBuf>,
) -> anyhow::Result<()> {
    let path = match (config, &checkpoint) {
        (Some(c), _) => c,
        (None, Some(ck)) => config_or_saved(None, ck)?,
        (None, None) => anyhow::bail!("evaluate needs --config or --checkpoint"),
    };
    let cfg = load_config(&path, over)?;
    let ckpt = checkpoint.unwrap_or_else(|| cfg.output_dir.join("checkpoints").join("best"));
    let out = output.unwrap_or_else(|| cfg.output_dir.join("eval"));
    let s = trainer::evaluate::evaluate(&cfg, &ckpt, &out).context("evaluate")?;
    for (name, d) in &s.per_class {
        println!("{name:>24}  {d:.4}");
    }
    println!(
        "{:>24}  {:.4}  ({} cases; {})",
        "mean Dice",
        s.mean_dice,
        s.cases.len(),
        out.join("eval.json").display()
    );
    Ok(())
}

/// `medmae-train import`: another project's checkpoint → a medmae checkpoint directory.
fn import(a: ImportArgs) -> anyhow::Result<()> {
    let req = trainer::import::ImportRequest {
        input: a.input,
        output: a.output,
        options: models::import::ImportOptions {
            family: a.family,
            key: a.key,
            img_size: a.img_size,
            num_heads: a.num_heads,
            decoder_num_heads: a.decoder_num_heads,
            layer_norm_eps: a.layer_norm_eps,
            mask_ratio: a.mask_ratio,
            norm_pix_loss: a.norm_pix_loss,
        },
        labels: a.labels,
        preprocessing: a.preprocessing,
        activation: a.activation,
        force: a.force,
    };
    let s =
        trainer::import::run(&req).with_context(|| format!("import {}", req.input.display()))?;
    for note in &s.notes {
        println!("note: {note}");
    }
    println!(
        "imported a {} checkpoint ({} tensors) into {}",
        s.family,
        s.tensors,
        s.output.display()
    );
    Ok(())
}
