//! Helpers shared by the multi-process tests: launching `medmae-ddp-check` ranks on 127.0.0.1.

use std::process::{Child, Command, Stdio};

/// The helper binary built with this package.
pub const CHECK: &str = env!("CARGO_BIN_EXE_medmae-ddp-check");

/// A `medmae-ddp-check` command with a clean launch environment.
pub fn check_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(CHECK);
    cmd.args(args);
    distributed::launch::clear_launch_env(&mut cmd);
    cmd
}

/// Starts rank `rank` of `world` with the torchrun variables pointing at 127.0.0.1:`port`.
pub fn spawn_rank(rank: usize, world: usize, port: u16, args: &[&str]) -> Child {
    distributed::launch::set_local_rank_env(&mut check_command(args), rank, world, port)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn medmae-ddp-check")
}
