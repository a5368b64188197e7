//! `--nproc-per-node N`: re-executes the current binary N times on this machine with the torchrun
//! environment set (store on 127.0.0.1, a free port), waits, and fails fast when a worker dies.
//!
//! ```no_run
//! # fn main() -> Result<(), distributed::DistError> {
//! # let nproc_per_node = 2;
//! use distributed::launch;
//! if launch::should_spawn(nproc_per_node) {
//!     // the workers see RANK/WORLD_SIZE and MEDMAE_DDP_WORKER, so they train instead of spawning again
//!     let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
//!     return launch::spawn_local_workers(nproc_per_node, &args);
//! }
//! // ... DistEnv::from_env(), ProcessGroup::init(...), train ...
//! # Ok(()) }
//! ```

use std::ffi::OsString;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use crate::error::DistError;
use crate::Result;

/// Set in every spawned worker so that the CLI does not spawn again.
pub const WORKER_MARKER: &str = "MEDMAE_DDP_WORKER";

/// Every variable the launch conventions read or set ([`crate::DistEnv::from_env`], [`spawn_local_workers`]): a
/// child started without them runs as a single process.
pub const LAUNCH_VARS: [&str; 13] = [
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "SLURM_LOCALID",
    "SLURM_JOB_NODELIST",
    "SLURM_NODELIST",
    "SLURM_JOB_ID",
    WORKER_MARKER,
];

/// Removes [`LAUNCH_VARS`] from `cmd`'s environment, so the launcher of the machine running `cmd` cannot leak
/// into a child that gets its rank explicitly (or should run alone).
pub fn clear_launch_env(cmd: &mut Command) -> &mut Command {
    for var in LAUNCH_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// Sets the torchrun variables of rank `rank` of a one-machine job of `world` processes whose store listens on
/// 127.0.0.1:`port` (`RANK = LOCAL_RANK`, `WORLD_SIZE = LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`).
pub fn set_local_rank_env(cmd: &mut Command, rank: usize, world: usize, port: u16) -> &mut Command {
    cmd.env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("RANK", rank.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("LOCAL_WORLD_SIZE", world.to_string())
}

/// True inside a process started by [`spawn_local_workers`].
pub fn is_spawned_worker() -> bool {
    std::env::var_os(WORKER_MARKER).is_some()
}

/// True when a CLI given `--nproc-per-node nproc` should spawn workers rather than train itself.
pub fn should_spawn(nproc_per_node: usize) -> bool {
    nproc_per_node > 1 && !is_spawned_worker()
}

/// Picks a TCP port that is free on 127.0.0.1 right now.
pub fn free_local_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// Runs `nproc_per_node` copies of the current executable with `args` and returns once all succeeded.
/// Worker `r` gets `RANK=LOCAL_RANK=r`, `WORLD_SIZE=LOCAL_WORLD_SIZE=nproc_per_node`,
/// `MASTER_ADDR=127.0.0.1`, a free `MASTER_PORT` and [`WORKER_MARKER`]; stdout/stderr are inherited. When a
/// worker exits unsuccessfully the others are killed and [`DistError::WorkerFailed`] names it.
pub fn spawn_local_workers(nproc_per_node: usize, args: &[OsString]) -> Result<()> {
    let exe = std::env::current_exe().map_err(|source| DistError::Spawn {
        rank: 0,
        what: "locating the current executable",
        exe: PathBuf::from("<current exe>"),
        source,
    })?;
    spawn_workers(&exe, nproc_per_node, args)
}

/// [`spawn_local_workers`] for an explicit executable.
pub fn spawn_workers(exe: &Path, nproc_per_node: usize, args: &[OsString]) -> Result<()> {
    if nproc_per_node == 0 {
        return Err(DistError::InvalidArgument(
            "--nproc-per-node must be at least 1".to_owned(),
        ));
    }
    if is_spawned_worker() {
        return Err(DistError::InvalidArgument(format!(
            "already a spawned worker ({WORKER_MARKER} is set); refusing to spawn workers recursively"
        )));
    }
    let port = free_local_port().map_err(|source| DistError::Spawn {
        rank: 0,
        what: "finding a free port on 127.0.0.1",
        exe: exe.to_path_buf(),
        source,
    })?;
    let mut children: Vec<Child> = Vec::with_capacity(nproc_per_node);
    for rank in 0..nproc_per_node {
        let spawned = set_local_rank_env(Command::new(exe).args(args), rank, nproc_per_node, port)
            .env(WORKER_MARKER, "1")
            .spawn();
        match spawned {
            Ok(child) => children.push(child),
            Err(source) => {
                kill_all(&mut children);
                return Err(DistError::Spawn {
                    rank,
                    what: "spawning",
                    exe: exe.to_path_buf(),
                    source,
                });
            }
        }
    }
    wait_all(exe, children)
}

/// Polls the workers; the first failure kills the rest.
fn wait_all(exe: &Path, mut children: Vec<Child>) -> Result<()> {
    let world_size = children.len();
    let mut done = vec![false; world_size];
    while done.iter().any(|d| !d) {
        for rank in 0..world_size {
            if done[rank] {
                continue;
            }
            let polled = children[rank].try_wait();
            match polled {
                Ok(None) => {}
                Ok(Some(status)) if status.success() => done[rank] = true,
                Ok(Some(status)) => {
                    kill_all(&mut children);
                    return Err(DistError::WorkerFailed {
                        rank,
                        world_size,
                        status: describe(status),
                    });
                }
                Err(source) => {
                    kill_all(&mut children);
                    return Err(DistError::Spawn {
                        rank,
                        what: "waiting for",
                        exe: exe.to_path_buf(),
                        source,
                    });
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn kill_all(children: &mut [Child]) {
    for child in children.iter_mut() {
        // A worker that already exited makes kill fail harmlessly; wait reaps it either way.
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("killed by signal {signal}");
        }
    }
    match status.code() {
        Some(code) => format!("exit code {code}"),
        None => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<OsString> {
        vec!["-c".into(), script.into()]
    }

    #[test]
    fn workers_get_the_torchrun_environment() {
        let script = r#"test "$RANK" = "$LOCAL_RANK" && test "$RANK" -lt "$WORLD_SIZE" && test "$WORLD_SIZE" = 3 \
            && test "$MASTER_ADDR" = 127.0.0.1 && test "$MASTER_PORT" -gt 0 && test "$MEDMAE_DDP_WORKER" = 1"#;
        spawn_workers(Path::new("/bin/sh"), 3, &sh(script)).unwrap();
    }

    #[test]
    fn a_failing_worker_is_named_and_the_others_are_stopped() {
        let start = std::time::Instant::now();
        // rank 1 fails at once; ranks 0 and 2 would sleep for a minute unless killed
        let script = r#"if [ "$RANK" = 1 ]; then exit 7; fi; sleep 60"#;
        let err = spawn_workers(Path::new("/bin/sh"), 3, &sh(script)).unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the sleeping workers were not killed"
        );
        match err {
            DistError::WorkerFailed {
                rank,
                world_size,
                status,
            } => {
                assert_eq!((rank, world_size, status.as_str()), (1, 3, "exit code 7"));
            }
            other => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn bad_requests_are_refused() {
        assert!(spawn_workers(Path::new("/bin/sh"), 0, &[]).is_err());
        let missing = spawn_workers(Path::new("/nonexistent/medmae-binary"), 2, &[]).unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/medmae-binary"),
            "{missing}"
        );
        assert!(!should_spawn(1));
    }
}
