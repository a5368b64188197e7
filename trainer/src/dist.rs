//! Data-parallel training glue: which rank this process is (torchrun / SLURM / `--nproc-per-node` environment),
//! its process group (Gloo on CPU, NCCL on CUDA) and the few collectives the engine needs, with errors that say
//! which rank failed in which phase.
//!
//! Semantics (PyTorch DDP): rank 0's initial (or resumed) parameters and optimiser moments are broadcast, each rank
//! trains on its `DistributedSampler`-style shard, gradients are averaged with a bucketed all-reduce before
//! clipping and the optimiser step (so every rank steps identically), metrics are reduced, and only rank 0 logs
//! and writes files. A world of size 1 ([`Dist::single`]) makes every collective a no-op.

use std::time::Duration;

use distributed::{Backend, DistEnv, ProcessGroup, ReduceOp};
use tch::{nn::VarStore, Device, Tensor};

use crate::error::{Result, TrainError};

/// Default timeout of the rendezvous and of every collective (PyTorch's default process-group timeout).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// This process's place in a (possibly single-process) data-parallel run.
pub struct Dist {
    env: DistEnv,
    pg: ProcessGroup,
}

impl std::fmt::Debug for Dist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dist")
            .field("rank", &self.env.rank)
            .field("world_size", &self.env.world_size)
            .field("backend", &self.pg.backend())
            .finish()
    }
}

/// The backend for a training device: Gloo for CPU tensors, NCCL for CUDA tensors.
pub fn backend_for(device: Device) -> Backend {
    if device.is_cuda() {
        Backend::Nccl
    } else {
        Backend::Gloo
    }
}

impl Dist {
    /// A lone process: rank 0 of 1, no sockets.
    pub fn single() -> Result<Self> {
        Self::init(DistEnv::single(), Backend::Gloo, DEFAULT_TIMEOUT)
    }

    /// Joins the group described by `env` (rank 0 hosts the TCPStore); `timeout` bounds the rendezvous and every
    /// later collective. A world of size 1 opens nothing.
    pub fn init(env: DistEnv, backend: Backend, timeout: Duration) -> Result<Self> {
        let pg = ProcessGroup::init(&env, backend, timeout).map_err(|e| {
            TrainError::Dist(format!(
                "joining the {backend} group of {} process(es) via {}:{}: {e}",
                env.world_size, env.master_addr, env.master_port
            ))
        })?;
        Ok(Self { env, pg })
    }

    /// Global rank.
    pub fn rank(&self) -> usize {
        self.env.rank
    }

    /// Number of processes.
    pub fn world_size(&self) -> usize {
        self.env.world_size
    }

    /// True on rank 0, which logs, shows progress and writes metrics, pictures and checkpoints.
    pub fn is_main(&self) -> bool {
        self.env.rank == 0
    }

    /// True when more than one process trains.
    pub fn is_distributed(&self) -> bool {
        self.env.world_size > 1
    }

    /// The launch environment.
    pub fn env(&self) -> &DistEnv {
        &self.env
    }

    /// The device of this rank given the configured one: with several processes, a CUDA config uses the GPU of
    /// the local rank (`cuda:LOCAL_RANK`, or `cuda:0` when the launcher exposes one GPU per task).
    pub fn device(&self, configured: Device) -> Result<Device> {
        match configured {
            Device::Cuda(_) if self.is_distributed() => {
                let visible = tch::Cuda::device_count().max(0) as usize;
                let index = self
                    .env
                    .local_device(visible)
                    .map_err(|e| TrainError::config("device", e.to_string()))?;
                Ok(Device::Cuda(index))
            }
            other => Ok(other),
        }
    }

    fn fail(&self, what: &str, e: distributed::DistError) -> TrainError {
        TrainError::Dist(format!(
            "rank {} of {}: {what} failed (a peer process probably exited or was killed; see its log): {e}",
            self.env.rank, self.env.world_size
        ))
    }

    /// Give every rank rank 0's variables (parameters and buffers, in name order) and, when given, optimiser
    /// tensors (in the given order, which must be the same on every rank).
    pub fn broadcast_state(&self, vs: &VarStore, extra: &[Tensor]) -> Result<()> {
        if !self.is_distributed() {
            return Ok(());
        }
        let _guard = tch::no_grad_guard();
        self.pg
            .broadcast_var_store(vs)
            .map_err(|e| self.fail("broadcasting the initial parameters", e))?;
        if !extra.is_empty() {
            self.pg
                .broadcast_parameters(extra)
                .map_err(|e| self.fail("broadcasting the optimiser state", e))?;
        }
        Ok(())
    }

    /// Average the gradients of `vs`'s trainable variables over the ranks (bucketed, in name order).
    pub fn average_gradients(&self, vs: &VarStore, step: u64) -> Result<()> {
        if !self.is_distributed() {
            return Ok(());
        }
        let _guard = tch::no_grad_guard();
        self.pg
            .allreduce_var_store_gradients(vs, true)
            .map_err(|e| self.fail(&format!("gradient all-reduce at step {step}"), e))
    }

    /// The mean of a scalar over the ranks.
    pub fn mean(&self, value: f64, what: &str) -> Result<f64> {
        if !self.is_distributed() {
            return Ok(value);
        }
        self.pg
            .allreduce_scalar(value, ReduceOp::Avg)
            .map_err(|e| self.fail(&format!("all-reduce of {what}"), e))
    }

    /// Element-wise sum of `values` over the ranks (f64, exact for integers and for one non-zero contribution).
    pub fn sum(&self, values: &[f64], what: &str) -> Result<Vec<f64>> {
        if !self.is_distributed() || values.is_empty() {
            return Ok(values.to_vec());
        }
        self.pg
            .allreduce_scalars(values, ReduceOp::Sum)
            .map_err(|e| self.fail(&format!("all-reduce of {what}"), e))
    }

    /// Wait for every rank.
    pub fn barrier(&self, what: &str) -> Result<()> {
        if !self.is_distributed() {
            return Ok(());
        }
        self.pg
            .barrier()
            .map_err(|e| self.fail(&format!("barrier ({what})"), e))
    }

    /// Check that every rank holds the same `values` (e.g. the resumed step): a mismatch means the ranks read
    /// different checkpoints.
    pub fn check_agree(&self, values: &[f64], what: &str) -> Result<()> {
        let total = self.sum(values, what)?;
        let w = self.world_size() as f64;
        if total.iter().zip(values).any(|(t, v)| *t != v * w) {
            return Err(TrainError::Dist(format!(
                "rank {} of {}: the ranks disagree about {what} (this rank has {values:?}; do all ranks read the same checkpoint?)",
                self.rank(),
                self.world_size()
            )));
        }
        Ok(())
    }

    /// The rows this rank's micro-batch of `local` samples (`per_item` samples per loader item) occupies in the
    /// global micro-batch that a single process with a `world_size` times larger batch would see: local item `j`
    /// of rank `r` is item `r + world·j` of that batch (`DistributedSampler` interleaving).
    pub fn global_rows(&self, local: usize, per_item: usize) -> (Vec<usize>, usize) {
        global_rows(self.rank(), self.world_size(), local, per_item)
    }

    /// This rank's contiguous block `start..end` of `n` items (validation sharding): sizes differ by at most one.
    pub fn block(&self, n: usize) -> (usize, usize) {
        block(self.rank(), self.world_size(), n)
    }
}

/// See [`Dist::global_rows`].
pub fn global_rows(
    rank: usize,
    world: usize,
    local: usize,
    per_item: usize,
) -> (Vec<usize>, usize) {
    let per_item = per_item.max(1);
    let rows = (0..local)
        .map(|i| (rank + world * (i / per_item)) * per_item + i % per_item)
        .collect();
    (rows, local * world)
}

/// See [`Dist::block`].
pub fn block(rank: usize, world: usize, n: usize) -> (usize, usize) {
    let world = world.max(1);
    (rank * n / world, (rank + 1) * n / world)
}

/// The seed of torch's generator for rank `rank`: rank 0 keeps the run seed (so a single process is unchanged),
/// other ranks get a SplitMix64-mixed one so dropout / stochastic depth draws differ between ranks.
pub fn rank_seed(seed: u64, rank: usize) -> u64 {
    if rank == 0 {
        return seed;
    }
    let mut z = seed ^ (rank as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_rows_interleave_like_a_distributed_sampler() {
        // One process with batch 4 sees items [a0 b0 a1 b1] of ranks a=0, b=1 with batch 2 each.
        assert_eq!(global_rows(0, 2, 2, 1), (vec![0, 2], 4));
        assert_eq!(global_rows(1, 2, 2, 1), (vec![1, 3], 4));
        // Two samples per item keep their item's pair of rows.
        assert_eq!(global_rows(1, 2, 4, 2), (vec![2, 3, 6, 7], 8));
        assert_eq!(global_rows(0, 1, 3, 1), (vec![0, 1, 2], 3));
        // Every global row is taken by exactly one rank.
        let mut all: Vec<usize> = (0..3).flat_map(|r| global_rows(r, 3, 4, 2).0).collect();
        all.sort_unstable();
        assert_eq!(all, (0..12).collect::<Vec<_>>());
    }

    #[test]
    fn blocks_cover_the_items_once() {
        assert_eq!(block(0, 1, 5), (0, 5));
        let blocks: Vec<_> = (0..3).map(|r| block(r, 3, 7)).collect();
        assert_eq!(blocks, vec![(0, 2), (2, 4), (4, 7)]);
        assert_eq!(block(1, 4, 2), (0, 1));
        assert_eq!(block(0, 4, 2), (0, 0));
    }

    /// Runs `body(dist)` as ranks 0 and 1 of a real Gloo group on 127.0.0.1 (two threads).
    fn two_ranks<T: Send + 'static>(body: fn(&Dist) -> T) -> Vec<T> {
        let port = distributed::launch::free_local_port().unwrap();
        let threads: Vec<_> = (0..2)
            .map(|rank| {
                std::thread::spawn(move || {
                    let env = DistEnv {
                        rank,
                        world_size: 2,
                        local_rank: rank,
                        master_addr: "127.0.0.1".into(),
                        master_port: port,
                        launcher: distributed::Launcher::Torchrun,
                    };
                    let d = Dist::init(env, Backend::Gloo, Duration::from_secs(20)).unwrap();
                    body(&d)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    }

    #[test]
    fn two_ranks_reduce_metrics_and_detect_disagreement() {
        let out = two_ranks(|d| {
            let r = d.rank() as f64;
            let mean = d.mean(r + 1.0, "loss").unwrap();
            // Each row filled by one rank: the sum is that rank's value, NaN included.
            let mut table = vec![0.0; 4];
            table[2 * d.rank()] = 0.25 + r;
            table[2 * d.rank() + 1] = if d.rank() == 1 { f64::NAN } else { 0.5 };
            let table = d.sum(&table, "dice").unwrap();
            d.check_agree(&[7.0, 3.0], "step").unwrap();
            let disagree = d.check_agree(&[r], "the step").unwrap_err().to_string();
            d.barrier("end").unwrap();
            (mean, table, disagree)
        });
        for (mean, table, disagree) in out {
            assert_eq!(mean, 1.5);
            assert_eq!(&table[..3], &[0.25, 0.5, 1.25]);
            assert!(table[3].is_nan());
            assert!(disagree.contains("disagree about the step"), "{disagree}");
        }
    }

    #[test]
    fn single_process_collectives_are_identities() {
        let d = Dist::single().unwrap();
        assert!(d.is_main() && !d.is_distributed());
        assert_eq!(d.mean(2.5, "x").unwrap(), 2.5);
        assert_eq!(d.sum(&[1.0, f64::NAN], "x").unwrap()[0], 1.0);
        d.check_agree(&[3.0], "step").unwrap();
        d.barrier("end").unwrap();
        assert_eq!(rank_seed(7, 0), 7);
        assert_ne!(rank_seed(7, 1), rank_seed(7, 2));
        assert_eq!(d.device(Device::Cpu).unwrap(), Device::Cpu);
    }
}
