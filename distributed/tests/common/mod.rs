//! Helpers shared by the multi-process tests: launching `medmae-ddp-check` ranks on 127.0.0.1.

use std::process::{Child, Command, Stdio};

/// The helper binary built with this package.
pub const CHECK: &str = env!("CARGO_BIN_EXE_medmae-ddp-check");

/// Launcher variables removed from every child so the test machine's environment cannot leak in.
const LAUNCH_VARS: [&str; 9] = [
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "SLURM_LOCALID",
    "MEDMAE_DDP_WORKER",
];

/// A `medmae-ddp-check` command with a clean launch environment.
pub fn check_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(CHECK);
    cmd.args(args);
    for var in LAUNCH_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// Starts rank `rank` of `world` with the torchrun variables pointing at 127.0.0.1:`port`.
pub fn spawn_rank(rank: usize, world: usize, port: u16, args: &[&str]) -> Child {
    check_command(args)
        .env("RANK", rank.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn medmae-ddp-check")
}
