//! Typed errors of the distributed crate.

use std::path::PathBuf;

/// Everything that can go wrong while reading the launch environment, talking to peers or running workers.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// An environment variable is missing or malformed.
    #[error("environment variable {var}: {problem}")]
    Env {
        /// Variable name, e.g. `WORLD_SIZE`.
        var: &'static str,
        /// What was found and what was expected.
        problem: String,
    },
    /// A SLURM node list (`SLURM_JOB_NODELIST`) could not be parsed.
    #[error("node list '{list}': {problem}")]
    NodeList {
        /// The list as given.
        list: String,
        /// What is wrong with it.
        problem: String,
    },
    /// An argument violates the API contract (bad rank, NUL byte in an address, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// c10d reported an error (rendezvous timeout, dead peer, shape mismatch, ...).
    #[error("{op} failed on rank {rank} of {world_size}: {message}")]
    Collective {
        /// The operation: `init`, `broadcast`, `allreduce`, `barrier`.
        op: &'static str,
        /// This process's rank.
        rank: usize,
        /// World size of the group.
        world_size: usize,
        /// The message from c10d / Gloo / NCCL.
        message: String,
    },
    /// A parameter that requires grad has no gradient (it took no part in the loss), which would make the
    /// ranks' gradient buckets disagree; PyTorch DDP reports the same situation as "unused parameters".
    #[error(
        "parameter '{name}' requires grad but has no gradient after backward (unused parameter)"
    )]
    MissingGradient {
        /// Parameter name (or its index in the list).
        name: String,
    },
    /// A local worker could not be started or waited for.
    #[error("worker {rank}: {what} ({exe}): {source}")]
    Spawn {
        /// Rank of the worker.
        rank: usize,
        /// What was attempted.
        what: &'static str,
        /// Executable that was run.
        exe: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A local worker exited unsuccessfully; the other workers were stopped.
    #[error("worker rank {rank} of {world_size} failed ({status}); stopped the other workers")]
    WorkerFailed {
        /// Rank of the first worker that failed.
        rank: usize,
        /// Number of workers.
        world_size: usize,
        /// Exit status as text (code or signal).
        status: String,
    },
}
