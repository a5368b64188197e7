//! `medmae-train` command line: plan | prepare | pretrain | finetune | evaluate | predict.
//!
//! `pretrain` and `finetune` train data-parallel when launched by torchrun (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
//! `MASTER_ADDR`, `MASTER_PORT`) or srun (`SLURM_PROCID`, …), or with `--nproc-per-node N`, which re-executes this
//! binary N times on this machine with the torchrun variables set.

use std::ffi::OsString;
use std::path::PathBuf;
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
        #[command(flatten)]
        common: CommonArgs,
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
        /// `cpu` or `cuda:N`.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
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
    /// Override a config key, YAML value syntax: `--set optim.base_lr=1e-3` (repeatable).
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

fn load_config(c: &CommonArgs) -> anyhow::Result<ExperimentConfig> {
    let mut sets = c.set.clone();
    if let Some(d) = &c.device {
        sets.push(format!("device={d}"));
    }
    ExperimentConfig::load(&c.config, &sets)
        .with_context(|| format!("config {}", c.config.display()))
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
    // Which rank this is decides the default log level (only rank 0 logs at info); errors are reported below.
    let env = DistEnv::from_env();
    let (rank, world) = env.as_ref().map_or((0, 1), |e| (e.rank, e.world_size));
    let default_level = if rank == 0 { "info" } else { "warn" };
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
        Command::Plan(a) => {
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
        }
        Command::Prepare { path, config } => {
            let file = path.or(config).context("prepare needs a config file")?;
            let cfg = imaging::prepare::PrepareConfig::from_file(&file)?;
            let summary = imaging::prepare::run(&cfg).context("prepare")?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
        Command::Pretrain(a) => {
            let cfg = load_config(&a.common)?;
            if spawn_workers(&a.dist, &env)? {
                return Ok(());
            }
            let dist = join(env?, &cfg, &a.dist)?;
            let s =
                trainer::pretrain::run(&cfg, &run_options(&cfg, &a), &dist).context("pretrain")?;
            if !dist.is_main() {
                return Ok(());
            }
            println!(
                "pretrained {} steps, last loss {:.5}; checkpoint {}",
                s.steps,
                s.last_loss,
                s.last_checkpoint.display()
            );
        }
        Command::Finetune { args, init } => {
            let mut cfg = load_config(&args.common)?;
            if init.is_some() {
                cfg.init = init;
            }
            if spawn_workers(&args.dist, &env)? {
                return Ok(());
            }
            let dist = join(env?, &cfg, &args.dist)?;
            let s = trainer::finetune::run(&cfg, &run_options(&cfg, &args), &dist)
                .context("finetune")?;
            if !dist.is_main() {
                return Ok(());
            }
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
        Command::Evaluate {
            common,
            checkpoint,
            output,
        } => {
            let cfg = load_config(&common)?;
            let ckpt =
                checkpoint.unwrap_or_else(|| cfg.output_dir.join("checkpoints").join("best"));
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
        }
        Command::Predict {
            checkpoint,
            input,
            output,
            device,
        } => {
            let dev = trainer::device::parse_device(&device)
                .and_then(trainer::device::available)
                .map_err(anyhow::Error::msg)?;
            let p =
                trainer::evaluate::predict(&checkpoint, &input, &output, dev).context("predict")?;
            println!(
                "wrote {} (voxels per label: {:?})",
                output.display(),
                p.counts
            );
        }
    }
    Ok(())
}
