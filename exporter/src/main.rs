//! `medmae-export` command line.
use clap::Parser;

/// Export a medmae checkpoint to ONNX.
#[derive(Parser)]
#[command(version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _ = Cli::parse();
    anyhow::bail!("medmae-export: ONNX export is not implemented yet")
}
