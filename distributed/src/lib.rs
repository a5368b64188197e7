//! medmae-distributed: PyTorch-DDP-style data parallelism for tch models, driving PyTorch's own c10d
//! (TCPStore rendezvous, ProcessGroupGloo on CPU, ProcessGroupNCCL behind the `nccl` feature) through a
//! small C++ shim, plus the launch conventions (torchrun and SLURM environments, `--nproc-per-node`).
//!
//! A training step looks like PyTorch DDP without the autograd hooks:
//! Build: `build.rs` compiles `csrc/shim.cpp` against `$LIBTORCH/include` (the same torch 2.13 that tch
//! links) and gloo's headers (`/usr/include` from Debian `libgloo-dev`, or `GLOO_INCLUDE_DIR`). The `nccl`
//! feature adds ProcessGroupNCCL: it needs a CUDA libtorch (the full PyPI wheel), `CUDA_INCLUDE_DIR` and
//! `NCCL_INCLUDE_DIR`, and links `libtorch_cuda`/`libc10_cuda`; without it `Backend::Nccl` fails at
//! [`ProcessGroup::init`] with a message saying so. Cluster use: `scripts/slurm/README.md`.
//!
//! ```no_run
//! # fn main() -> Result<(), distributed::DistError> {
//! use distributed::{Backend, DistEnv, ProcessGroup};
//! use std::time::Duration;
//! let env = DistEnv::from_env()?;
//! let pg = ProcessGroup::init(&env, Backend::Gloo, Duration::from_secs(60))?;
//! let vs = tch::nn::VarStore::new(tch::Device::Cpu);
//! // ... build the model in `vs` ...
//! pg.broadcast_var_store(&vs)?; // identical initial parameters and buffers everywhere
//! // per step: zero_grad, forward on this rank's shard, backward, then
//! pg.allreduce_var_store_gradients(&vs, true)?; // averaged, bucketed gradients
//! // ... optimizer.step(): identical on every rank ...
//! # Ok(()) }
//! ```

mod env;
mod error;
mod ffi;
mod group;
pub mod launch;

pub use env::{first_host, DistEnv, Launcher};
pub use error::DistError;
pub use group::{Backend, ProcessGroup, ReduceOp, DEFAULT_BUCKET_BYTES};

/// Result type of this crate.
pub type Result<T, E = DistError> = std::result::Result<T, E>;
