//! Process groups and the DDP building blocks on top of them: parameter broadcast, bucketed gradient
//! all-reduce, metric reduction, barrier.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::env::DistEnv;
use crate::error::DistError;
use crate::ffi;
use crate::Result;

/// Gradient bucket size, as PyTorch DDP's default `bucket_cap_mb=25`.
pub const DEFAULT_BUCKET_BYTES: usize = 25 * 1024 * 1024;

/// Communication backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Gloo over TCP: CPU tensors; always available.
    Gloo,
    /// NCCL: CUDA tensors; needs the `nccl` feature and a CUDA libtorch.
    Nccl,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = DistError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "gloo" => Ok(Backend::Gloo),
            "nccl" => Ok(Backend::Nccl),
            other => Err(DistError::InvalidArgument(format!(
                "backend '{other}': expected gloo or nccl"
            ))),
        }
    }
}

/// Reduction applied by all-reduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// Sum over ranks.
    Sum,
    /// Mean over ranks (sum, then divide by the world size; floating-point tensors only).
    Avg,
}

enum Inner {
    /// World size 1: every collective is the identity, no sockets are opened.
    Local,
    /// A c10d store + backend.
    C10d(ffi::Group),
}

/// A group of processes that run collectives together. Every rank must issue the same collectives in the
/// same order with tensors of matching shapes and dtypes (as in PyTorch). Not `Sync`: use it from one thread.
pub struct ProcessGroup {
    inner: Inner,
    rank: usize,
    world_size: usize,
    backend: Backend,
    /// Where scalar reductions build their tensor: the CPU for Gloo, this rank's GPU for NCCL.
    scalar_device: Device,
}

impl fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessGroup")
            .field("rank", &self.rank)
            .field("world_size", &self.world_size)
            .field("backend", &self.backend)
            .finish()
    }
}

impl ProcessGroup {
    /// Joins the group described by `env`: rank 0 hosts a TCPStore on `master_addr:master_port`, every rank
    /// connects and waits for the others (up to `timeout`, which also bounds every later collective), then
    /// the backend connects all pairs. A world of size 1 needs no peers and makes collectives no-ops.
    /// Errors name the rank, the store address and, for a rendezvous timeout, the ranks that never joined.
    pub fn init(env: &DistEnv, backend: Backend, timeout: Duration) -> Result<Self> {
        if env.world_size == 0 || env.rank >= env.world_size {
            return Err(DistError::InvalidArgument(format!(
                "rank {} is outside world size {}",
                env.rank, env.world_size
            )));
        }
        if env.world_size == 1 {
            return Ok(ProcessGroup {
                inner: Inner::Local,
                rank: 0,
                world_size: 1,
                backend,
                scalar_device: Device::Cpu,
            });
        }
        Self::init_c10d(env, backend, timeout)
    }

    /// [`ProcessGroup::init`] without the shortcut for one process: the store and the c10d backend are created even
    /// for a world of size 1, so a smoke test on one machine with one GPU exercises NCCL itself.
    pub fn init_c10d(env: &DistEnv, backend: Backend, timeout: Duration) -> Result<Self> {
        if env.world_size == 0 || env.rank >= env.world_size {
            return Err(DistError::InvalidArgument(format!(
                "rank {} is outside world size {}",
                env.rank, env.world_size
            )));
        }
        let err = |message: String| DistError::Collective {
            op: "init",
            rank: env.rank,
            world_size: env.world_size,
            message,
        };
        let rank =
            i32::try_from(env.rank).map_err(|_| err("rank does not fit in a C int".to_owned()))?;
        let size = i32::try_from(env.world_size)
            .map_err(|_| err("world size does not fit in a C int".to_owned()))?;
        let timeout_ms = i64::try_from(timeout.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        let group = ffi::Group::create(
            backend.name(),
            &env.master_addr,
            env.master_port,
            rank,
            size,
            timeout_ms,
        )
        .map_err(err)?;
        let scalar_device = match backend {
            Backend::Gloo => Device::Cpu,
            Backend::Nccl => {
                Device::Cuda(env.local_device(tch::Cuda::device_count().max(0) as usize)?)
            }
        };
        Ok(ProcessGroup {
            inner: Inner::C10d(group),
            rank: env.rank,
            world_size: env.world_size,
            backend,
            scalar_device,
        })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        match &self.inner {
            Inner::Local => self.rank,
            Inner::C10d(group) => group.rank(),
        }
    }

    /// Number of processes in the group.
    pub fn world_size(&self) -> usize {
        match &self.inner {
            Inner::Local => self.world_size,
            Inner::C10d(group) => group.size(),
        }
    }

    /// The backend this group was created with.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn collective_err(&self, op: &'static str) -> impl Fn(String) -> DistError {
        let (rank, world_size) = (self.rank, self.world_size);
        move |message| DistError::Collective {
            op,
            rank,
            world_size,
            message,
        }
    }

    /// Overwrites every tensor with rank `root`'s values (coalesced into buckets of `bucket_bytes`).
    pub fn broadcast_tensors(
        &self,
        tensors: &[Tensor],
        root: usize,
        bucket_bytes: usize,
    ) -> Result<()> {
        if root >= self.world_size {
            return Err(DistError::InvalidArgument(format!(
                "broadcast root {root} is outside world size {}",
                self.world_size
            )));
        }
        match &self.inner {
            Inner::Local => Ok(()),
            Inner::C10d(group) => group
                .broadcast(tensors, root as i32, bucket_len(bucket_bytes))
                .map_err(self.collective_err("broadcast")),
        }
    }

    /// Broadcasts one tensor from `root`.
    pub fn broadcast(&self, tensor: &Tensor, root: usize) -> Result<()> {
        self.broadcast_tensors(std::slice::from_ref(tensor), root, DEFAULT_BUCKET_BYTES)
    }

    /// Gives every rank rank 0's parameters. The list must be in the same order on every rank.
    pub fn broadcast_parameters(&self, params: &[Tensor]) -> Result<()> {
        self.broadcast_tensors(params, 0, DEFAULT_BUCKET_BYTES)
    }

    /// Broadcasts every variable of `vs` (parameters and buffers) from rank 0, in name order so that the
    /// order does not depend on hash-map iteration.
    pub fn broadcast_var_store(&self, vs: &VarStore) -> Result<()> {
        let tensors: Vec<Tensor> = sorted_variables(vs).into_iter().map(|(_, t)| t).collect();
        self.broadcast_parameters(&tensors)
    }

    /// Reduces every tensor in place across ranks, one collective per bucket of at most `bucket_bytes`
    /// (tensors of one bucket share dtype and device; a larger tensor travels alone).
    pub fn allreduce_tensors(
        &self,
        tensors: &[Tensor],
        op: ReduceOp,
        bucket_bytes: usize,
    ) -> Result<()> {
        let average = op == ReduceOp::Avg;
        match &self.inner {
            Inner::Local => {
                if let Some(t) = tensors.iter().find(|t| average && !t.is_floating_point()) {
                    return Err(DistError::InvalidArgument(format!(
                        "averaging needs floating-point tensors, got {:?}",
                        t.kind()
                    )));
                }
                Ok(())
            }
            Inner::C10d(group) => group
                .allreduce(tensors, average, bucket_len(bucket_bytes))
                .map_err(self.collective_err("allreduce")),
        }
    }

    /// Reduces one tensor in place.
    pub fn allreduce(&self, tensor: &Tensor, op: ReduceOp) -> Result<()> {
        self.allreduce_tensors(std::slice::from_ref(tensor), op, DEFAULT_BUCKET_BYTES)
    }

    /// Sums (or averages) the gradients of `params` across ranks, in 25 MB buckets. Parameters that do not
    /// require grad are skipped; one that requires grad but has none is an error (see
    /// [`DistError::MissingGradient`]). The list must be in the same order on every rank.
    pub fn allreduce_gradients(&self, params: &[Tensor], average: bool) -> Result<()> {
        let named: Vec<(String, Tensor)> = params
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("#{i}"), p.shallow_clone()))
            .collect();
        self.allreduce_named_gradients(&named, average)
    }

    /// [`ProcessGroup::allreduce_gradients`] over the trainable variables of `vs`, in name order.
    pub fn allreduce_var_store_gradients(&self, vs: &VarStore, average: bool) -> Result<()> {
        self.allreduce_named_gradients(&sorted_variables(vs), average)
    }

    fn allreduce_named_gradients(&self, params: &[(String, Tensor)], average: bool) -> Result<()> {
        let mut grads = Vec::with_capacity(params.len());
        for (name, p) in params.iter().filter(|(_, p)| p.requires_grad()) {
            let grad = p.grad();
            if !grad.defined() {
                return Err(DistError::MissingGradient { name: name.clone() });
            }
            grads.push(grad);
        }
        let op = if average {
            ReduceOp::Avg
        } else {
            ReduceOp::Sum
        };
        self.allreduce_tensors(&grads, op, DEFAULT_BUCKET_BYTES)
    }

    /// Reduces a metric (loss, Dice, sample count) across ranks; every rank gets the result.
    pub fn allreduce_scalar(&self, value: f64, op: ReduceOp) -> Result<f64> {
        let reduced = self.allreduce_scalars(&[value], op)?;
        reduced
            .first()
            .copied()
            .ok_or_else(|| self.collective_err("allreduce")("no value came back".to_owned()))
    }

    /// Reduces several metrics element-wise in one collective (in f64, on the device the backend needs: the CPU
    /// for Gloo, this rank's GPU for NCCL); every rank gets the result.
    pub fn allreduce_scalars(&self, values: &[f64], op: ReduceOp) -> Result<Vec<f64>> {
        if matches!(self.inner, Inner::Local) || values.is_empty() {
            return Ok(values.to_vec());
        }
        let to_err = |e: tch::TchError| self.collective_err("allreduce")(e.to_string());
        let t = Tensor::f_from_slice(values)
            .and_then(|t| t.f_to_kind(Kind::Double))
            .and_then(|t| t.f_to_device(self.scalar_device))
            .map_err(to_err)?;
        self.allreduce(&t, op)?;
        t.f_to_device(Device::Cpu)
            .and_then(|t| Vec::<f64>::try_from(&t))
            .map_err(to_err)
    }

    /// Blocks until every rank has called `barrier` (or the timeout expires).
    pub fn barrier(&self) -> Result<()> {
        match &self.inner {
            Inner::Local => Ok(()),
            Inner::C10d(group) => group.barrier().map_err(self.collective_err("barrier")),
        }
    }
}

/// All variables of `vs` sorted by name: an order every rank agrees on.
fn sorted_variables(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

fn bucket_len(bytes: usize) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::Launcher;

    fn env(rank: usize, world_size: usize, port: u16) -> DistEnv {
        DistEnv {
            rank,
            world_size,
            local_rank: rank,
            master_addr: "127.0.0.1".to_owned(),
            master_port: port,
            launcher: Launcher::Torchrun,
        }
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
            .abs()
            .max()
            .double_value(&[])
    }

    /// Runs `body(rank, group)` on two threads joined in one real Gloo group (in-process, over 127.0.0.1).
    fn with_two_ranks<T: Send + 'static>(body: fn(usize, &ProcessGroup) -> T) -> Vec<T> {
        let port = crate::launch::free_local_port().unwrap();
        let handles: Vec<_> = (0..2)
            .map(|rank| {
                std::thread::spawn(move || {
                    let pg = ProcessGroup::init(
                        &env(rank, 2, port),
                        Backend::Gloo,
                        Duration::from_secs(20),
                    )
                    .unwrap();
                    assert_eq!((pg.rank(), pg.world_size()), (rank, 2));
                    body(rank, &pg)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn bucketed_allreduce_sums_mixed_dtypes_and_layouts() {
        let results = with_two_ranks(|rank, pg| {
            let r = rank as f64 + 1.0; // rank 0 contributes 1x, rank 1 contributes 2x
            let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0]) * r;
            let b = Tensor::from_slice(&[0.5f64, -1.0, 4.0, 8.0]).reshape([2, 2]) * r;
            // a transposed view: not contiguous, so it must go through the flatten/copy-back path
            let c = (Tensor::arange(6, (Kind::Float, tch::Device::Cpu)).reshape([2, 3]) * r).tr();
            let d = Tensor::from_slice(&[3i64, 5]) * (rank as i64 + 1);
            let big = Tensor::ones([40], (Kind::Float, tch::Device::Cpu)) * r;
            let list = [a, b, c, d, big];
            // 16-byte buckets: several buckets, dtype changes and an oversize tensor travelling alone.
            pg.allreduce_tensors(&list, ReduceOp::Sum, 16).unwrap();
            list.iter()
                .map(|t| t.to_kind(Kind::Double).contiguous())
                .collect::<Vec<_>>()
        });
        let expect = [
            Tensor::from_slice(&[3.0, 6.0, 9.0]),
            Tensor::from_slice(&[1.5, -3.0, 12.0, 24.0]).reshape([2, 2]),
            (Tensor::arange(6, (Kind::Double, tch::Device::Cpu)).reshape([2, 3]) * 3.0).tr(),
            Tensor::from_slice(&[9.0, 15.0]),
            Tensor::ones([40], (Kind::Double, tch::Device::Cpu)) * 3.0,
        ];
        for got in &results {
            for (g, e) in got.iter().zip(expect.iter()) {
                assert_eq!(g.size(), e.size());
                assert_eq!(max_diff(g, e), 0.0, "got {g} expected {e}");
            }
        }
    }

    #[test]
    fn broadcast_average_scalar_and_barrier() {
        let results = with_two_ranks(|rank, pg| {
            let p = Tensor::full(
                [3, 2],
                rank as f64 * 10.0 + 1.0,
                (Kind::Float, tch::Device::Cpu),
            );
            let q = Tensor::full(
                [5],
                rank as f64 * 10.0 - 7.0,
                (Kind::Double, tch::Device::Cpu),
            );
            pg.broadcast_tensors(&[p.shallow_clone(), q.shallow_clone()], 1, 8)
                .unwrap();
            let avg = Tensor::from_slice(&[rank as f32 * 4.0, 1.0]);
            pg.allreduce(&avg, ReduceOp::Avg).unwrap();
            let scalar = pg
                .allreduce_scalar(rank as f64 + 0.25, ReduceOp::Sum)
                .unwrap();
            let many = pg
                .allreduce_scalars(&[rank as f64, 1.0, f64::NAN * rank as f64], ReduceOp::Sum)
                .unwrap();
            assert_eq!(&many[..2], &[1.0, 2.0]);
            assert!(many[2].is_nan(), "NaN from one rank propagates: {many:?}");
            let ints = Tensor::from_slice(&[1i64]);
            let int_avg = pg.allreduce(&ints, ReduceOp::Avg).unwrap_err().to_string();
            pg.barrier().unwrap();
            (p, q, avg, scalar, int_avg)
        });
        for (p, q, avg, scalar, int_avg) in results {
            assert_eq!(
                max_diff(
                    &p,
                    &Tensor::full([3, 2], 11.0, (Kind::Double, tch::Device::Cpu))
                ),
                0.0
            );
            assert_eq!(
                max_diff(
                    &q,
                    &Tensor::full([5], 3.0, (Kind::Double, tch::Device::Cpu))
                ),
                0.0
            );
            assert_eq!(max_diff(&avg, &Tensor::from_slice(&[2.0f64, 1.0])), 0.0);
            assert_eq!(scalar, 1.5);
            assert!(int_avg.contains("floating-point"), "{int_avg}");
        }
    }

    #[test]
    fn gradients_of_a_var_store_are_averaged_and_unused_parameters_reported() {
        let results = with_two_ranks(|rank, pg| {
            let vs = VarStore::new(tch::Device::Cpu);
            let w = vs
                .root()
                .var("w", &[3], tch::nn::Init::Const(rank as f64 + 1.0));
            let unused = vs.root().var("unused", &[2], tch::nn::Init::Const(0.0));
            pg.broadcast_var_store(&vs).unwrap();
            // loss = sum(w^2 * (rank + 1)) -> grad = 2 w (rank + 1) with w = 1 after the broadcast
            (w.square() * (rank as f64 + 1.0))
                .sum(Kind::Float)
                .backward();
            let missing = pg
                .allreduce_var_store_gradients(&vs, true)
                .unwrap_err()
                .to_string();
            // all ranks fail before communicating, so the group stays usable
            pg.allreduce_gradients(&[w.shallow_clone()], true).unwrap();
            drop(unused);
            (w.grad(), missing)
        });
        for (grad, missing) in results {
            assert_eq!(
                max_diff(&grad, &Tensor::from_slice(&[3.0f64, 3.0, 3.0])),
                0.0
            );
            assert!(missing.contains("'unused'"), "{missing}");
        }
    }

    #[test]
    fn a_collective_times_out_when_a_live_peer_never_calls_it() {
        let port = crate::launch::free_local_port().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let idle = std::thread::spawn(move || {
            let pg = ProcessGroup::init(&env(1, 2, port), Backend::Gloo, Duration::from_secs(1))
                .unwrap();
            // stay connected but never enter the barrier until rank 0 has given up
            let _ = rx.recv_timeout(Duration::from_secs(30));
            drop(pg);
        });
        let pg =
            ProcessGroup::init(&env(0, 2, port), Backend::Gloo, Duration::from_secs(1)).unwrap();
        let start = std::time::Instant::now();
        let err = pg.barrier().unwrap_err().to_string();
        let took = start.elapsed();
        tx.send(()).unwrap();
        idle.join().unwrap();
        assert!(took < Duration::from_secs(10), "took {took:?}");
        assert!(
            err.contains("barrier failed on rank 0 of 2")
                && err.to_lowercase().contains("timed out"),
            "{err}"
        );
    }

    #[test]
    fn world_of_one_is_local_and_validates_like_the_real_group() {
        let pg =
            ProcessGroup::init(&DistEnv::single(), Backend::Gloo, Duration::from_secs(1)).unwrap();
        assert_eq!(
            (pg.rank(), pg.world_size(), pg.backend()),
            (0, 1, Backend::Gloo)
        );
        let t = Tensor::from_slice(&[1.0f32, 2.0]);
        pg.allreduce(&t, ReduceOp::Avg).unwrap();
        pg.broadcast(&t, 0).unwrap();
        assert_eq!(max_diff(&t, &Tensor::from_slice(&[1.0f64, 2.0])), 0.0);
        assert_eq!(pg.allreduce_scalar(2.5, ReduceOp::Sum).unwrap(), 2.5);
        assert!(pg.broadcast(&t, 1).is_err());
        assert!(pg
            .allreduce(&Tensor::from_slice(&[1i64]), ReduceOp::Avg)
            .is_err());
        pg.barrier().unwrap();
        let bad = DistEnv {
            rank: 2,
            ..env(0, 2, 1)
        };
        assert!(ProcessGroup::init(&bad, Backend::Gloo, Duration::from_secs(1)).is_err());
        assert_eq!("NCCL".parse::<Backend>().unwrap(), Backend::Nccl);
        assert!("mpi".parse::<Backend>().is_err());
    }
}
