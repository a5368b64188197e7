//! Shared helpers for the workspace-level tests: locating the workspace's binaries, running them with
//! context, starting `medmae-serve`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Path of a workspace binary built by the same `cargo test` invocation (`target/<profile>/<name>`).
pub fn bin(name: &str) -> PathBuf {
    medmae_test_support::workspace_bin(name)
}

/// Run a command to completion from the repository root; panic with its output if it fails. Returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

pub use medmae_test_support::ServeProcess;

/// Start this build's `medmae-serve` from the repository root with `args` and `envs`, on ephemeral ports.
pub fn serve(args: &[&str], envs: &[(&str, &str)]) -> ServeProcess {
    ServeProcess::start(&bin("medmae-serve"), args, envs, &repo_root())
}
