//! `medmae-train` command line.
use clap::Parser;

/// Train medmae models.
#[derive(Parser)]
#[command(version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _ = Cli::parse();
    anyhow::bail!("medmae-train: no subcommand is implemented yet")
}
