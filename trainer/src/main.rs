//! `medmae-train` command line: prepare | pretrain | finetune | evaluate | predict.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use trainer::config::ExperimentConfig;
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
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Prepare { path, config } => {
            let file = path.or(config).context("prepare needs a config file")?;
            let cfg = imaging::prepare::PrepareConfig::from_file(&file)?;
            let summary = imaging::prepare::run(&cfg).context("prepare")?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
        Command::Pretrain(a) => {
            let cfg = load_config(&a.common)?;
            let s = trainer::pretrain::run(&cfg, &run_options(&cfg, &a)).context("pretrain")?;
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
            let s = trainer::finetune::run(&cfg, &run_options(&cfg, &args)).context("finetune")?;
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
