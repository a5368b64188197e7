//! bench/train: time medmae training steps with tch — the step the trainer runs (zero_grad, forward, loss, loss read
//! back, backward, AdamW with the trainer's parameter groups) — for the models `train_step.py` builds in PyTorch:
//! - `--model unetr`: MONAI's `UNETR` (MONAI-style ViT: no cls token, qkv without bias, LayerNorm eps 1e-5, 12 blocks,
//!   conv/deconv residual decoder) with Dice + cross-entropy;
//! - `--model mae`: the masked autoencoder (SelfMedMAE MAE-3D / He et al. MAE-2D: timm blocks, cls token, sincos
//!   tables, 75 % masking by argsort of noise drawn on the host like the trainer, norm-pix MSE on removed patches).
//!
//! Run through `bench/train/run` (timing) or `bench/train/profile` (callgrind instruction counts); the arguments
//! mirror `train_step.py`. Prints one JSON line with every timed step's milliseconds. Around the timed steps it
//! issues callgrind's START/STOP_INSTRUMENTATION client requests (no-ops outside valgrind), so a profile run under
//! `valgrind --tool=callgrind --instr-atstart=no` counts exactly the timed steps.

use std::time::Instant;

use clap::{Parser, ValueEnum};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{nn::VarStore, Device, Kind, Tensor};
use trainer::config::OptimConfig;
use trainer::optim::AdamW;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Model {
    Unetr,
    Mae,
}

#[derive(Parser)]
struct Args {
    #[arg(long, value_enum, default_value = "unetr")]
    model: Model,
    /// Spatial dims of the input (UNETR: 3 only).
    #[arg(long, default_value_t = 3)]
    dims: usize,
    /// Image size on every axis.
    #[arg(long)]
    roi: usize,
    #[arg(long, default_value_t = 16)]
    patch: usize,
    #[arg(long)]
    hidden: usize,
    #[arg(long, default_value_t = 12)]
    depth: usize,
    #[arg(long)]
    heads: usize,
    /// UNETR decoder base width.
    #[arg(long, default_value_t = 16)]
    feature: usize,
    /// UNETR classes.
    #[arg(long, default_value_t = 2)]
    classes: usize,
    /// MAE decoder width, depth and heads.
    #[arg(long, default_value_t = 384)]
    dec_hidden: usize,
    #[arg(long, default_value_t = 8)]
    dec_depth: usize,
    #[arg(long, default_value_t = 12)]
    dec_heads: usize,
    #[arg(long)]
    batch: i64,
    #[arg(long, default_value_t = 2)]
    threads: i32,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// `cpu`, `cuda` or `cuda:N` (scripts/gpu-check).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// fp16 autocast with loss scaling as PyTorch AMP (CUDA only).
    #[arg(long)]
    amp: bool,
    /// Also print, on stderr, the median milliseconds of each phase of the timed steps (forward + loss, loss read
    /// back, backward, optimiser): where a step's time goes.
    #[arg(long)]
    phases: bool,
    /// Clear the gradients with `zero_grad` and accumulate into them (the trainer's step before it handed fresh
    /// gradients over: `AdamW::backward`), for A/B timings of the two.
    #[arg(long)]
    zero_grad: bool,
    /// Update the parameters one tensor operation at a time (AdamW before its one-pass CPU update), for A/B timings.
    #[arg(long)]
    unfused_adamw: bool,
}

/// The initial loss scale of PyTorch's GradScaler.
const LOSS_SCALE: f64 = 65536.0;

/// Callgrind client requests (valgrind/callgrind.h): the amd64 magic sequence, a no-op when not under valgrind.
#[cfg(target_arch = "x86_64")]
fn callgrind(request: u64) {
    let args: [u64; 6] = [request, 0, 0, 0, 0, 0];
    let mut result: u64 = 0;
    // SAFETY: the four rotations of rdi total 128 bits (rdi ends unchanged, declared clobbered anyway) and
    // `xchg rbx, rbx` is a no-op; valgrind recognises the sequence and reads the request from *rax.
    unsafe {
        std::arch::asm!(
            "rol rdi, 3", "rol rdi, 13", "rol rdi, 61", "rol rdi, 51", "xchg rbx, rbx",
            in("rax") args.as_ptr(),
            inout("rdx") result,
            out("rdi") _,
            options(nostack),
        );
    }
    let _ = result;
}
#[cfg(not(target_arch = "x86_64"))]
fn callgrind(_request: u64) {}

/// `VG_USERREQ_TOOL_BASE('C', 'T')` + 4 / + 5.
const CALLGRIND_START_INSTRUMENTATION: u64 = 0x4354_0000 + 4;
const CALLGRIND_STOP_INSTRUMENTATION: u64 = 0x4354_0000 + 5;

/// Minor page faults of this process so far (`/proc/self/stat` field 10): fresh pages the kernel maps and zeroes,
/// e.g. for every large tensor allocation served by `mmap` — work callgrind does not count.
fn minor_faults() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // The command name (field 2) is in parentheses and may hold spaces: count fields after the last ')'.
            let rest = &s[s.rfind(')')? + 1..];
            rest.split_whitespace().nth(7)?.parse().ok()
        })
        .unwrap_or(0)
}

/// A model and its loss on a fixed batch.
enum Net {
    Unetr {
        net: models::Unetr,
        x: Tensor,
        y: Tensor,
    },
    Mae {
        mae: models::Mae,
        cfg: spec::MaeConfig,
        x: Tensor,
        rng: ChaCha8Rng,
    },
}

impl Net {
    fn build(a: &Args, vs: &VarStore) -> anyhow::Result<(Self, usize)> {
        let device = vs.device();
        let img = vec![a.roi; a.dims];
        let patch = vec![a.patch; a.dims];
        let mut shape = vec![a.batch, 1];
        shape.extend(img.iter().map(|&s| s as i64));
        let x = Tensor::randn(&shape, (Kind::Float, device));
        Ok(match a.model {
            Model::Unetr => {
                anyhow::ensure!(a.dims == 3, "the UNETR bench is 3-D");
                let cfg: spec::UnetrConfig = serde_json::from_value(serde_json::json!({
                    "encoder": {"spatial_dims": 3, "in_channels": 1, "img_size": img, "patch_size": patch,
                                 "embed_dim": a.hidden, "depth": a.depth, "num_heads": a.heads, "qkv_bias": false,
                                 "layer_norm_eps": 1e-5, "cls_token": false, "style": "monai"},
                    "out_channels": a.classes, "feature_size": a.feature, "skip_layers": [3, 6, 9]
                }))?;
                let net = models::Unetr::new(&vs.root(), &cfg)?;
                let y = Tensor::randint(a.classes as i64, &shape, (Kind::Float, device));
                (Net::Unetr { net, x, y }, a.depth)
            }
            Model::Mae => {
                let cfg: spec::MaeConfig = serde_json::from_value(serde_json::json!({
                    "encoder": {"spatial_dims": a.dims, "in_channels": 1, "img_size": img, "patch_size": patch,
                                 "embed_dim": a.hidden, "depth": a.depth, "num_heads": a.heads},
                    "decoder_embed_dim": a.dec_hidden, "decoder_depth": a.dec_depth,
                    "decoder_num_heads": a.dec_heads, "mask_ratio": 0.75,
                    "loss": {"kind": "mse", "norm_pix_loss": true}
                }))?;
                let mae = models::Mae::new(&vs.root(), &cfg)?;
                let rng = ChaCha8Rng::seed_from_u64(0);
                (Net::Mae { mae, cfg, x, rng }, a.depth)
            }
        })
    }

    /// The training loss of the batch, as the trainer's tasks compute it.
    fn loss(&mut self) -> anyhow::Result<Tensor> {
        Ok(match self {
            Net::Unetr { net, x, y } => models::dice_ce_loss(
                &net.forward(x, true)?,
                y,
                spec::OutputActivation::Softmax,
                &models::DiceCeOptions::default(),
            )?,
            Net::Mae { mae, cfg, x, rng } => {
                let b = x.size()[0] as usize;
                let noise = trainer::pretrain::masking_noise(
                    rng,
                    b,
                    cfg.encoder.num_patches(),
                    x.device(),
                )?;
                mae.forward(x, Some(&noise), true)?.loss
            }
        })
    }
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    tch::set_num_threads(a.threads);
    tch::manual_seed(0);
    let device = trainer::device::parse_device(&a.device)
        .and_then(trainer::device::available)
        .map_err(anyhow::Error::msg)?;
    anyhow::ensure!(!a.amp || device.is_cuda(), "--amp needs a CUDA device");
    let vs = VarStore::new(device);
    let (mut net, depth) = Net::build(&a, &vs)?;
    let mut opt = AdamW::new(&vs, &OptimConfig::default(), depth);
    opt.set_fused(!a.unfused_adamw);
    let mut times = Vec::new();
    let mut phases: [Vec<f64>; 4] = Default::default();
    let mut faults = 0;
    for i in 0..a.warmup + a.steps {
        if i == a.warmup {
            callgrind(CALLGRIND_START_INSTRUMENTATION);
            faults = minor_faults();
        }
        let t0 = Instant::now();
        // The trainer's step (engine/step.rs) with one micro-batch and no clipping.
        if a.zero_grad {
            opt.zero_grad();
        }
        let backward = |opt: &mut AdamW, loss: &Tensor| -> anyhow::Result<()> {
            if a.zero_grad {
                Ok(loss.f_backward()?)
            } else {
                Ok(opt.backward(loss, false)?)
            }
        };
        let loss = tch::autocast(a.amp, || net.loss())?;
        let t_fwd = t0.elapsed();
        let value = loss.f_double_value(&[])?;
        let t_read = t0.elapsed();
        anyhow::ensure!(value.is_finite(), "loss {value} at step {i}");
        if a.amp {
            backward(&mut opt, &(loss * LOSS_SCALE))?;
            opt.scale_grads(1.0 / LOSS_SCALE);
            if opt.grads_finite() {
                opt.step(1e-4);
            }
        } else {
            backward(&mut opt, &loss)?;
            let t_back = t0.elapsed();
            opt.step(1e-4);
            if i >= a.warmup {
                let ms = |d: std::time::Duration| 1000.0 * d.as_secs_f64();
                let ends = [t_fwd, t_read, t_back, t0.elapsed()];
                let mut prev = 0.0;
                for (p, end) in phases.iter_mut().zip(ends) {
                    p.push(ms(end) - prev);
                    prev = ms(end);
                }
            }
        }
        if let Device::Cuda(index) = device {
            tch::Cuda::synchronize(index as i64);
        }
        if i >= a.warmup {
            times.push(1000.0 * t0.elapsed().as_secs_f64());
        }
    }
    callgrind(CALLGRIND_STOP_INSTRUMENTATION);
    if a.phases {
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
        };
        let names = ["forward+loss", "loss read", "backward", "optimiser"];
        let parts: Vec<String> = names
            .iter()
            .zip(phases.iter_mut())
            .map(|(n, v)| format!("{n} {:.1} ms", median(v)))
            .collect();
        eprintln!("phases (median): {}", parts.join(", "));
    }
    let faults_per_step = (minor_faults() - faults) / a.steps.max(1) as u64;
    let params: i64 = vs
        .trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum();
    println!(
        "{}",
        serde_json::json!({"impl": "medmae", "device": a.device, "amp": a.amp, "step_ms": times, "minor_faults_per_step": faults_per_step, "params": params, "threads": tch::get_num_threads()})
    );
    Ok(())
}
