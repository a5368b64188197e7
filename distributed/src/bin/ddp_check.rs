//! medmae-ddp-check: trains a tiny conv+MLP regression data-parallel for a few steps. It is the process the
//! integration tests and the scaling benchmark launch, and a smoke test of a cluster's DDP setup
//! (`srun medmae-ddp-check --backend nccl`): it exercises the store, parameter broadcast, bucketed
//! gradient all-reduce, metric reduction and barrier, and can write every rank's final parameters.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use distributed::{launch, Backend, DistEnv, ProcessGroup, ReduceOp};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// Command-line flags; the rank comes from the torchrun/SLURM environment or `--nproc-per-node`.
#[derive(Debug, Parser)]
#[command(
    name = "medmae-ddp-check",
    about = "Data-parallel smoke test and benchmark for medmae-distributed"
)]
struct Args {
    /// Spawn this many local workers (torchrun environment on 127.0.0.1) and wait for them.
    #[arg(long, default_value_t = 1)]
    nproc_per_node: usize,
    /// Communication backend: gloo (CPU) or nccl (GPU, needs the `nccl` feature).
    #[arg(long, default_value = "gloo")]
    backend: Backend,
    /// Rendezvous and collective timeout in seconds.
    #[arg(long, default_value_t = 60.0)]
    timeout_secs: f64,
    /// Optimizer steps.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Samples per step over all ranks (must divide evenly by the world size).
    #[arg(long, default_value_t = 8)]
    global_batch: i64,
    /// Width of the hidden layers.
    #[arg(long, default_value_t = 32)]
    hidden: i64,
    /// Gradient bucket size in bytes (default: 25 MB via `allreduce_var_store_gradients`).
    #[arg(long)]
    bucket_bytes: Option<usize>,
    /// Intra-op threads per process.
    #[arg(long, default_value_t = 1)]
    threads: i32,
    /// Directory for `rank{r}.safetensors` (final parameters) and `rank{r}.json` (global losses).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Sleep after every step (lets tests interrupt a run mid-way).
    #[arg(long, default_value_t = 0)]
    step_delay_ms: u64,
    /// Fault injection: this rank aborts at step `--die-at-step`.
    #[arg(long)]
    die_rank: Option<usize>,
    /// Step at which `--die-rank` aborts.
    #[arg(long, default_value_t = 0)]
    die_at_step: usize,
    /// Time the steps after 2 warm-up steps and print one JSON line on rank 0.
    #[arg(long)]
    bench: bool,
    /// Create the c10d store and backend even for a world of one process (NCCL smoke test on a single GPU).
    #[arg(long)]
    always_c10d: bool,
}

const IN_CHANNELS: i64 = 2;
const LENGTH: i64 = 16;
const CONV_CHANNELS: i64 = 8;
const OUTPUTS: i64 = 4;

fn model(vs: &nn::Path, hidden: i64) -> impl Module {
    let conv = nn::conv1d(
        vs / "conv",
        IN_CHANNELS,
        CONV_CHANNELS,
        3,
        nn::ConvConfig {
            padding: 1,
            ..Default::default()
        },
    );
    nn::seq()
        .add(conv)
        .add_fn(|x| x.relu().flatten(1, -1))
        .add(nn::linear(
            vs / "fc1",
            CONV_CHANNELS * LENGTH,
            hidden,
            Default::default(),
        ))
        .add_fn(|x| x.tanh())
        .add(nn::linear(vs / "fc2", hidden, hidden, Default::default()))
        .add_fn(|x| x.tanh())
        .add(nn::linear(vs / "head", hidden, OUTPUTS, Default::default()))
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("medmae-ddp-check: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    if launch::should_spawn(args.nproc_per_node) {
        let forwarded: Vec<OsString> = std::env::args_os().skip(1).collect();
        launch::spawn_local_workers(args.nproc_per_node, &forwarded)?;
        return Ok(());
    }
    let env = DistEnv::from_env()?;
    tch::set_num_threads(args.threads);
    let timeout = Duration::try_from_secs_f64(args.timeout_secs).context("--timeout-secs")?;
    let pg = if args.always_c10d {
        ProcessGroup::init_c10d(&env, args.backend, timeout)?
    } else {
        ProcessGroup::init(&env, args.backend, timeout)?
    };
    let (rank, world) = (env.rank, env.world_size as i64);
    let device = match args.backend {
        Backend::Gloo => Device::Cpu,
        Backend::Nccl => Device::Cuda(env.local_device(tch::Cuda::device_count().max(0) as usize)?),
    };
    if args.global_batch % world != 0 || args.global_batch < world {
        bail!(
            "--global-batch {} must be a positive multiple of the world size {world}",
            args.global_batch
        );
    }

    // The same data on every rank; each trains on its contiguous shard (a DistributedSampler without shuffle).
    tch::manual_seed(1234);
    let inputs = Tensor::randn(
        [args.global_batch, IN_CHANNELS, LENGTH],
        (Kind::Float, device),
    );
    let targets = Tensor::randn([args.global_batch, OUTPUTS], (Kind::Float, device));
    let per_rank = args.global_batch / world;
    let x = inputs.narrow(0, rank as i64 * per_rank, per_rank);
    let y = targets.narrow(0, rank as i64 * per_rank, per_rank);

    // Different initialisations per rank, so the broadcast from rank 0 is what makes them agree.
    tch::manual_seed(100 + rank as i64);
    let vs = nn::VarStore::new(device);
    let net = model(&vs.root(), args.hidden);
    pg.broadcast_var_store(&vs)?;
    let mut opt = nn::AdamW::default().build(&vs, 1e-2)?;

    let mut losses = Vec::with_capacity(args.steps);
    let (mut step_time, mut comm_time, mut timed) = (Duration::ZERO, Duration::ZERO, 0u32);
    let mut cpu_start = None;
    for step in 0..args.steps {
        if step == 2 {
            cpu_start = process_cpu_ms();
        }
        if args.die_rank == Some(rank) && step == args.die_at_step {
            eprintln!("medmae-ddp-check: rank {rank}: aborting at step {step} (--die-rank)");
            std::process::abort();
        }
        let start = Instant::now();
        opt.zero_grad();
        let loss = net.forward(&x).mse_loss(&y, tch::Reduction::Mean);
        loss.backward();
        let comm_start = Instant::now();
        match args.bucket_bytes {
            Some(bytes) => {
                let grads: Vec<Tensor> =
                    vs.trainable_variables().iter().map(Tensor::grad).collect();
                pg.allreduce_tensors(&grads, ReduceOp::Avg, bytes)
            }
            None => pg.allreduce_var_store_gradients(&vs, true),
        }
        .with_context(|| format!("rank {rank}: step {step}: gradient all-reduce"))?;
        let comm = comm_start.elapsed();
        opt.step();
        let global = pg
            .allreduce_scalar(loss.double_value(&[]), ReduceOp::Avg)
            .with_context(|| format!("rank {rank}: step {step}: loss all-reduce"))?;
        if step >= 2 {
            step_time += start.elapsed();
            comm_time += comm;
            timed += 1;
        }
        losses.push(global);
        if env.is_main() && !args.bench {
            println!("step {step} loss {global:.6}");
        }
        std::thread::sleep(Duration::from_millis(args.step_delay_ms));
    }
    let cpu_end = process_cpu_ms();
    pg.barrier()
        .with_context(|| format!("rank {rank}: final barrier"))?;

    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let params = dir.join(format!("rank{rank}.safetensors"));
        vs.save(&params)
            .with_context(|| format!("writing {}", params.display()))?;
        let json = dir.join(format!("rank{rank}.json"));
        let text = format!("{{\"rank\":{rank},\"world_size\":{world},\"losses\":{losses:?}}}\n");
        std::fs::write(&json, text).with_context(|| format!("writing {}", json.display()))?;
    }
    if args.bench {
        if timed == 0 {
            bail!("--bench needs more than 2 steps");
        }
        let timed = f64::from(timed);
        // CPU time of all ranks together: the cost of DDP independent of how busy the machine is.
        let cpu = match (cpu_start, cpu_end) {
            (Some(a), Some(b)) => (b - a) / timed,
            _ => -1.0,
        };
        let cpu_total = pg.allreduce_scalar(cpu, ReduceOp::Sum)?;
        if env.is_main() {
            println!(
                "{{\"world_size\":{world},\"threads\":{},\"global_batch\":{},\"hidden\":{},\"mean_step_ms\":{:.3},\"mean_comm_ms\":{:.3},\"cpu_ms_per_step\":{:.3}}}",
                args.threads,
                args.global_batch,
                args.hidden,
                step_time.as_secs_f64() * 1e3 / timed,
                comm_time.as_secs_f64() * 1e3 / timed,
                cpu_total,
            );
        }
    }
    Ok(())
}

/// User + system CPU time of this process (all threads) in ms, from `/proc/self/stat` (Linux; USER_HZ 100).
fn process_cpu_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name start at field 3; utime and stime are fields 14 and 15.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks * 10.0)
}
