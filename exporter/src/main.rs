//! `medmae-export` command line: a checkpoint directory to an ONNX file.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use exporter::{export, ExportKind, ExportOptions};

/// Export a medmae checkpoint (model.safetensors + model.json) to ONNX, without libtorch.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Checkpoint directory holding model.safetensors and model.json.
    #[arg(long, value_name = "DIR")]
    checkpoint: PathBuf,
    /// Graph to export: unetr, mae-encoder or mae-reconstructor (default: unetr for UNETR, mae-encoder for MAE).
    #[arg(long, value_parser = parse_kind)]
    kind: Option<ExportKind>,
    /// ONNX opset: 17 or 18.
    #[arg(long, default_value_t = 17, value_parser = clap::value_parser!(i64).range(17..=18))]
    opset: i64,
    /// Output file (default: <checkpoint>/model.onnx); written to a temporary file and renamed.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// MAE encoder only: also output every block's patch tokens as hidden_state_{i}.
    #[arg(long)]
    hidden_states: bool,
    /// Re-load the written file and validate its structure and metadata.
    #[arg(long)]
    check: bool,
}

fn parse_kind(s: &str) -> Result<ExportKind, String> {
    s.parse().map_err(|e: spec::UnknownKind| e.to_string())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let opts = ExportOptions {
        kind: cli.kind,
        opset: cli.opset,
        hidden_states: cli.hidden_states,
        output: cli.output,
        check: cli.check,
    };
    let r = export(&cli.checkpoint, &opts)
        .with_context(|| format!("exporting {}", cli.checkpoint.display()))?;
    println!(
        "wrote {} ({}, opset {}, {} nodes, {} initializers, {:.1} MB) in {:.2} s",
        r.output.display(),
        r.kind,
        r.opset,
        r.nodes,
        r.initializers,
        r.file_bytes as f64 / 1e6,
        r.seconds
    );
    if !r.ignored_tensors.is_empty() {
        println!(
            "ignored {} known-unused checkpoint tensors (e.g. {})",
            r.ignored_tensors.len(),
            r.ignored_tensors[0]
        );
    }
    if let Some(c) = &r.check {
        println!(
            "check ok: {} parameters, inputs {:?}, outputs {:?}",
            c.parameters, c.inputs, c.outputs
        );
    }
    Ok(())
}
