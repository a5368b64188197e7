//! A few AdamW steps on a small UNETR-2D with a synthetic blob lower the DiceCE loss (gradients flow end to end).

use models::losses::{dice_ce_loss, DiceCeOptions};
use models::Unetr;
use spec::{OutputActivation, UnetrConfig, VitConfig};
use tch::nn::{OptimizerConfig, VarStore};
use tch::{Device, Kind, Tensor};

/// Two 32×32 images with a bright disc (label 1) at different places on a noisy background.
fn blobs() -> (Tensor, Tensor) {
    let ys = Tensor::arange(32, (Kind::Float, Device::Cpu)).view([1, 32, 1]);
    let xs = Tensor::arange(32, (Kind::Float, Device::Cpu)).view([1, 1, 32]);
    let cy = Tensor::from_slice(&[10.0f32, 20.0]).view([2, 1, 1]);
    let cx = Tensor::from_slice(&[12.0f32, 19.0]).view([2, 1, 1]);
    let d2 = (&ys - cy).square() + (&xs - cx).square();
    let label = d2.le(49.0).to_kind(Kind::Float).unsqueeze(1);
    let img = &label + Tensor::randn([2, 1, 32, 32], (Kind::Float, Device::Cpu)) * 0.3;
    (img, label)
}

#[test]
fn adamw_steps_reduce_dice_ce_on_a_blob() {
    // One intra-op thread: on a shared 2-core machine OpenMP's spinning threads make this test 30× slower.
    tch::set_num_threads(1);
    tch::manual_seed(0);
    let cfg = UnetrConfig {
        encoder: VitConfig::timm(1, vec![32, 32], vec![16, 16], 24, 3, 2)
            .with_mlp_ratio(2.0)
            .with_drop_path_rate(0.1),
        out_channels: 2,
        feature_size: 4,
        skip_layers: [0, 1, 2],
    };
    let vs = VarStore::new(Device::Cpu);
    let net = Unetr::new(&vs.root(), &cfg).unwrap();
    let mut opt = tch::nn::AdamW::default().build(&vs, 3e-3).unwrap();
    let (img, label) = blobs();
    let opts = DiceCeOptions::default();
    let mut losses = vec![];
    for _ in 0..12 {
        let logits = net.forward(&img, true).unwrap();
        let loss = dice_ce_loss(&logits, &label, OutputActivation::Softmax, &opts).unwrap();
        opt.backward_step(&loss);
        losses.push(loss.double_value(&[]));
    }
    let eval = tch::no_grad(|| {
        dice_ce_loss(
            &net.forward(&img, false).unwrap(),
            &label,
            OutputActivation::Softmax,
            &opts,
        )
        .unwrap()
    });
    let (first, last) = (losses[0], eval.double_value(&[]));
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(last < 0.8 * first, "loss {first} -> {last} ({losses:?})");
}
