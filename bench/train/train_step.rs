//! bench/train: time medmae UNETR training steps (forward + DiceCE + backward + AdamW) with tch, the same network
//! as MONAI's `UNETR` (MONAI-style ViT: no cls token, qkv without bias, LayerNorm eps 1e-5, 12 blocks).
//!
//! Run through `bench/train/run`; arguments mirror `train_step.py`. Prints one JSON line.

use std::time::Instant;

use clap::Parser;
use tch::{nn::VarStore, Device, Kind, Tensor};
use trainer::config::OptimConfig;
use trainer::optim::AdamW;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    roi: usize,
    #[arg(long)]
    hidden: usize,
    #[arg(long)]
    heads: usize,
    #[arg(long)]
    feature: usize,
    #[arg(long)]
    batch: i64,
    #[arg(long)]
    classes: usize,
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
}

/// The initial loss scale of PyTorch's GradScaler.
const LOSS_SCALE: f64 = 65536.0;

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    tch::set_num_threads(a.threads);
    tch::manual_seed(0);
    let cfg: spec::UnetrConfig = serde_json::from_value(serde_json::json!({
        "encoder": {"spatial_dims": 3, "in_channels": 1, "img_size": [a.roi, a.roi, a.roi], "patch_size": [16, 16, 16],
                     "embed_dim": a.hidden, "depth": 12, "num_heads": a.heads, "qkv_bias": false, "layer_norm_eps": 1e-5,
                     "cls_token": false, "style": "monai"},
        "out_channels": a.classes, "feature_size": a.feature, "skip_layers": [3, 6, 9]
    }))?;
    let device = trainer::device::parse_device(&a.device)
        .and_then(trainer::device::available)
        .map_err(anyhow::Error::msg)?;
    anyhow::ensure!(!a.amp || device.is_cuda(), "--amp needs a CUDA device");
    let vs = VarStore::new(device);
    let net = models::Unetr::new(&vs.root(), &cfg)?;
    let mut opt = AdamW::new(&vs, &OptimConfig::default(), 12);
    let r = a.roi as i64;
    let x = Tensor::randn([a.batch, 1, r, r, r], (Kind::Float, device));
    let y = Tensor::randint(
        a.classes as i64,
        [a.batch, 1, r, r, r],
        (Kind::Float, device),
    );
    let opts = models::DiceCeOptions::default();
    let mut times = Vec::new();
    for i in 0..a.warmup + a.steps {
        let t0 = Instant::now();
        opt.zero_grad();
        let loss = tch::autocast(a.amp, || {
            models::dice_ce_loss(
                &net.forward(&x, true)?,
                &y,
                spec::OutputActivation::Softmax,
                &opts,
            )
        })?;
        if a.amp {
            (loss * LOSS_SCALE).backward();
            opt.scale_grads(1.0 / LOSS_SCALE);
            if opt.grads_finite() {
                opt.step(1e-4);
            }
        } else {
            loss.backward();
            opt.step(1e-4);
        }
        if let Device::Cuda(index) = device {
            tch::Cuda::synchronize(index as i64);
        }
        if i >= a.warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    let params: i64 = vs
        .trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum();
    println!(
        "{}",
        serde_json::json!({"impl": "medmae", "device": a.device, "amp": a.amp, "ms_per_step": 1000.0 * times.iter().sum::<f64>() / times.len() as f64, "params": params})
    );
    Ok(())
}
