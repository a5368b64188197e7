//! Schedule values at hand-computed steps, parameter-group assignment (no decay on norms, biases, position
//! embeddings, cls/mask tokens; layer-wise lr decay), and AdamW / clipping against hand-computed updates.

use std::collections::BTreeMap;

use tch::{nn::VarStore, Device, Kind, Tensor};
use trainer::config::OptimConfig;
use trainer::optim::AdamW;
use trainer::schedule::LrSchedule;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 + 1e-9 * b.abs()
}

#[test]
fn warmup_then_cosine_at_hand_computed_steps() {
    // 10 epochs × 5 steps, 2 warmup epochs → 10 warmup steps of 50.
    let s = LrSchedule::from_epochs(1e-3, 1e-5, 2.0, 10, 5);
    assert_eq!((s.warmup_steps, s.total_steps), (10, 50));
    assert_eq!(s.lr_at(0), 0.0);
    assert!(close(s.lr_at(5), 5e-4));
    assert!(close(s.lr_at(10), 1e-3));
    // step 20: t = 10/40 = 0.25 → 1e-5 + 0.99e-3 · ½ (1 + cos π/4) = 8.550178…e-4
    assert!(close(
        s.lr_at(20),
        1e-5 + 0.99e-3 * 0.5 * (1.0 + std::f64::consts::FRAC_1_SQRT_2)
    ));
    assert!(
        close(s.lr_at(20), 8.550_178_562_229_3e-4),
        "{}",
        s.lr_at(20)
    );
    // step 30: halfway through the cosine → the midpoint.
    assert!(close(s.lr_at(30), 5.05e-4));
    assert!(close(s.lr_at(50), 1e-5));
    assert!(close(s.lr_at(99), 1e-5), "clamped after the end");
    // Fractional warmup rounds to steps: 0.5 epoch × 5 = 2.5 → 3.
    assert_eq!(LrSchedule::from_epochs(1.0, 0.0, 0.5, 4, 5).warmup_steps, 3);
    // No warmup: the first step already uses the peak.
    assert!(close(
        LrSchedule::from_epochs(2.0, 0.0, 0.0, 1, 4).lr_at(0),
        2.0
    ));
}

fn tiny_unetr(vs: &VarStore) -> spec::UnetrConfig {
    let cfg: spec::UnetrConfig = serde_json::from_value(serde_json::json!({
        "encoder": {"spatial_dims": 2, "in_channels": 1, "img_size": [32, 32], "patch_size": [16, 16],
                     "embed_dim": 16, "depth": 3, "num_heads": 2},
        "out_channels": 2, "feature_size": 4, "skip_layers": [0, 1, 2]
    }))
    .unwrap();
    models::Unetr::new(&vs.root(), &cfg).unwrap();
    cfg
}

#[test]
fn param_groups_exclude_norms_biases_pos_embed_and_tokens() {
    let vs = VarStore::new(Device::Cpu);
    tiny_unetr(&vs);
    let cfg = OptimConfig {
        weight_decay: 0.05,
        layer_decay: Some(0.5),
        ..OptimConfig::default()
    };
    let opt = AdamW::new(&vs, &cfg, 3);
    let mut by_name: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for g in opt.groups() {
        for n in &g.names {
            by_name.insert(n.clone(), (g.weight_decay, g.lr_scale));
        }
    }
    let trainable = vs.trainable_variables().len();
    assert_eq!(
        by_name.len(),
        trainable,
        "every trainable tensor is in exactly one group"
    );
    let vars = vs.variables();
    for (name, (wd, _)) in &by_name {
        let dims = vars[name].dim();
        let exempt = dims <= 1
            || name.ends_with(".bias")
            || name.contains("pos_embed")
            || name.ends_with("cls_token");
        assert_eq!(
            *wd == 0.0,
            exempt,
            "{name} (dims {dims}) has weight decay {wd}"
        );
    }
    // Spot checks with depth 3, decay 0.5: embeddings 0.5^4, block i 0.5^(3−i), the rest 1.
    assert_eq!(by_name["encoder.pos_embed"], (0.0, 0.0625));
    assert_eq!(by_name["encoder.cls_token"], (0.0, 0.0625));
    assert_eq!(by_name["encoder.patch_embed.proj.weight"], (0.05, 0.0625));
    assert_eq!(by_name["encoder.patch_embed.proj.bias"], (0.0, 0.0625));
    assert_eq!(by_name["encoder.blocks.0.attn.qkv.weight"], (0.05, 0.125));
    assert_eq!(by_name["encoder.blocks.0.norm1.weight"], (0.0, 0.125));
    assert_eq!(by_name["encoder.blocks.2.mlp.fc2.weight"], (0.05, 0.5));
    assert_eq!(by_name["encoder.norm.weight"], (0.0, 1.0));
    assert_eq!(by_name["out.conv.conv.bias"], (0.0, 1.0));
    assert_eq!(
        by_name["decoder2.conv_block.conv1.conv.weight"],
        (0.05, 1.0)
    );
    // Without layer decay every scale is 1.
    let flat = AdamW::new(&vs, &OptimConfig::default(), 3);
    assert!(flat.groups().iter().all(|g| g.lr_scale == 1.0));
    assert_eq!(flat.groups().len(), 2, "decay and no-decay");
}

#[test]
fn mae_tokens_and_fixed_tables_are_handled() {
    let vs = VarStore::new(Device::Cpu);
    let cfg: spec::MaeConfig = serde_json::from_value(serde_json::json!({
        "encoder": {"spatial_dims": 3, "in_channels": 1, "img_size": [16, 16, 16], "patch_size": [8, 8, 8],
                     "embed_dim": 24, "depth": 2, "num_heads": 2},
        "decoder_embed_dim": 12, "decoder_depth": 1, "decoder_num_heads": 2
    }))
    .unwrap();
    models::Mae::new(&vs.root(), &cfg).unwrap();
    let opt = AdamW::new(&vs, &OptimConfig::default(), 2);
    let names: Vec<(String, f64)> = opt
        .groups()
        .iter()
        .flat_map(|g| g.names.iter().map(move |n| (n.clone(), g.weight_decay)))
        .collect();
    assert!(
        !names
            .iter()
            .any(|(n, _)| n == "encoder_pos_embed" || n == "decoder_pos_embed"),
        "fixed sincos tables are not optimised"
    );
    assert!(names.contains(&("mask_token".to_string(), 0.0)));
    assert!(names.contains(&("encoder.cls_token".to_string(), 0.0)));
    assert!(names.contains(&("decoder.head.weight".to_string(), 0.05)));
}

#[test]
fn adamw_step_matches_hand_computation() {
    let vs = VarStore::new(Device::Cpu);
    let p = vs.root().var("w", &[1], tch::nn::Init::Const(1.0));
    let cfg = OptimConfig {
        betas: [0.9, 0.999],
        eps: 1e-8,
        weight_decay: 0.1,
        ..OptimConfig::default()
    };
    let mut opt = AdamW::new(&vs, &cfg, 0);
    assert_eq!(
        opt.groups()[0].weight_decay,
        0.0,
        "a 1-D tensor is not decayed"
    );
    // Use a 2-D parameter for the decayed case.
    let vs2 = VarStore::new(Device::Cpu);
    let q = vs2.root().var("w", &[1, 1], tch::nn::Init::Const(1.0));
    let mut opt2 = AdamW::new(&vs2, &cfg, 0);
    for (param, o) in [(&p, &mut opt), (&q, &mut opt2)] {
        o.zero_grad();
        (param.sum(Kind::Float) * 0.5).backward();
        o.step(0.1);
    }
    // Step 1, g = 0.5: m̂ = 0.5, v̂ = 0.25 → update 0.1 · 0.5 / (0.5 + 1e-8).
    let upd = 0.1 * 0.5 / (0.5 + 1e-8);
    assert!((p.double_value(&[0]) - (1.0 - upd)).abs() < 1e-6);
    assert!((q.double_value(&[0, 0]) - (1.0 * (1.0 - 0.1 * 0.1) - upd)).abs() < 1e-6);
    // Step 2 with g = 0.5 again: m = 0.095, v = 0.0004998… → m̂ = 0.5, v̂ = 0.25: the same update.
    opt.zero_grad();
    (p.sum(Kind::Float) * 0.5).backward();
    opt.step(0.1);
    assert!((p.double_value(&[0]) - (1.0 - 2.0 * upd)).abs() < 1e-6);
    assert_eq!(opt.steps(), 2);
}

#[test]
fn clipping_scales_to_the_global_norm_and_state_roundtrips() {
    let vs = VarStore::new(Device::Cpu);
    let a = vs.root().var("a", &[1], tch::nn::Init::Const(0.0));
    let b = vs.root().var("b", &[1], tch::nn::Init::Const(0.0));
    let mut opt = AdamW::new(&vs, &OptimConfig::default(), 0);
    opt.zero_grad();
    (&a * 3.0 + &b * 4.0).sum(Kind::Float).backward();
    assert!((opt.grad_norm() - 5.0).abs() < 1e-9);
    let before = opt.clip_grad_norm(1.0);
    assert!((before - 5.0).abs() < 1e-9);
    assert!((a.grad().double_value(&[0]) - 0.6).abs() < 1e-6);
    assert!((b.grad().double_value(&[0]) - 0.8).abs() < 1e-6);
    assert!(
        (opt.clip_grad_norm(10.0) - 1.0).abs() < 1e-6,
        "below the limit nothing changes"
    );
    opt.step(0.01);
    let state = opt.state_tensors();
    assert_eq!(state.len(), 4);
    let mut fresh = AdamW::new(&vs, &OptimConfig::default(), 0);
    fresh.load_state(&state, opt.steps()).unwrap();
    for ((n1, t1), (n2, t2)) in fresh.state_tensors().iter().zip(&state) {
        assert_eq!(n1, n2);
        assert!(t1.equal(t2));
    }
    let e = fresh.load_state(&state[..3], 1).unwrap_err().to_string();
    assert!(e.contains("exp_avg_sq.b"), "{e}");
    let bad = vec![(
        "exp_avg.a".to_string(),
        Tensor::zeros([2], (Kind::Float, Device::Cpu)),
    )];
    assert!(fresh
        .load_state(&bad, 1)
        .unwrap_err()
        .to_string()
        .contains("shape"));
}

/// AdamW on several tensors (decayed and not) over several steps against the formula evaluated in f64 on the host:
/// `p ← p(1 − lr·wd)`, `m ← β1 m + (1−β1) g`, `v ← β2 v + (1−β2) g²`, `p ← p − lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + ε)`.
#[test]
fn adamw_multi_step_matches_the_reference_formula() {
    let vs = VarStore::new(Device::Cpu);
    let w0 = [0.3f64, -1.2, 0.7, 2.0, -0.4, 0.05];
    let b0 = [0.1f64, -0.2];
    let w = vs.root().var_copy(
        "w",
        &Tensor::from_slice(&w0.map(|x| x as f32)).reshape([3, 2]),
    );
    let b = vs
        .root()
        .sub("lin")
        .var_copy("bias", &Tensor::from_slice(&b0.map(|x| x as f32)));
    let cfg = OptimConfig {
        betas: [0.9, 0.95],
        eps: 1e-8,
        weight_decay: 0.05,
        ..OptimConfig::default()
    };
    let mut opt = AdamW::new(&vs, &cfg, 0);
    let (mut pw, mut pb) = (w0.to_vec(), b0.to_vec());
    let (mut mw, mut vw, mut mb, mut vb) = (vec![0.0; 6], vec![0.0; 6], vec![0.0; 2], vec![0.0; 2]);
    let lrs = [0.01, 0.02, 0.005];
    for (t, lr) in lrs.iter().enumerate() {
        // loss = Σ w³/3 + Σ (k+1)·b → g_w = w², g_b = k+1
        opt.zero_grad();
        ((&w * &w * &w).sum(Kind::Float) / 3.0
            + (&b * Tensor::from_slice(&[1.0f32, 2.0])).sum(Kind::Float))
        .backward();
        opt.step(*lr);
        let t = (t + 1) as i32;
        let (b1, b2) = (0.9f64, 0.95f64);
        let update =
            |p: &mut Vec<f64>, m: &mut Vec<f64>, v: &mut Vec<f64>, g: Vec<f64>, wd: f64| {
                for i in 0..p.len() {
                    p[i] *= 1.0 - lr * wd;
                    m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                    v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                    let denom = v[i].sqrt() / (1.0 - b2.powi(t)).sqrt() + 1e-8;
                    p[i] -= lr / (1.0 - b1.powi(t)) * m[i] / denom;
                }
            };
        let gw: Vec<f64> = pw
            .iter()
            .map(|x| ((*x as f32) * (*x as f32)) as f64)
            .collect();
        update(&mut pw, &mut mw, &mut vw, gw, 0.05);
        update(&mut pb, &mut mb, &mut vb, vec![1.0, 2.0], 0.0);
        let got_w = Vec::<f64>::try_from(w.to_kind(Kind::Double).flatten(0, -1)).unwrap();
        let got_b = Vec::<f64>::try_from(b.to_kind(Kind::Double)).unwrap();
        for (got, want) in got_w.iter().zip(&pw).chain(got_b.iter().zip(&pb)) {
            assert!((got - want).abs() < 1e-6, "step {t}: {got} vs {want}");
        }
        // keep the reference on the f32 values the optimiser actually holds
        pw = got_w;
        pb = got_b;
    }
    assert_eq!(opt.steps(), 3);
}

#[test]
fn grad_checks_cover_every_parameter() {
    let vs = VarStore::new(Device::Cpu);
    let a = vs.root().var("a", &[2], tch::nn::Init::Const(1.0));
    let b = vs.root().var("b", &[2, 2], tch::nn::Init::Const(1.0));
    let _unused = vs.root().var("c", &[3], tch::nn::Init::Const(1.0));
    let mut opt = AdamW::new(&vs, &OptimConfig::default(), 0);
    assert!(
        opt.grads_finite() && opt.grad_norm() == 0.0,
        "no gradients yet"
    );
    opt.zero_grad();
    (&a * 2.0 + 0.0).sum(Kind::Float).backward();
    (&b * 0.5).sum(Kind::Float).backward();
    // |g|² = 2·2² + 4·0.5² = 9 (each parameter's norm in f32, as PyTorch's clip_grad_norm_, summed in f64)
    assert!((opt.grad_norm() - 3.0).abs() < 1e-6);
    assert!(opt.grads_finite());
    tch::no_grad(|| {
        let _ = b.grad().get(1).get(0).fill_(f64::NAN);
    });
    assert!(!opt.grads_finite(), "a NaN in the last parameter is seen");
    tch::no_grad(|| {
        let _ = b.grad().fill_(1.0);
        let _ = a.grad().get(0).fill_(f64::INFINITY);
    });
    assert!(!opt.grads_finite(), "an inf in the first parameter is seen");
}

/// `AdamW::backward` gives the gradients of `zero_grad` + `backward` (first micro-batch: replaced, no stale values;
/// later ones: summed), none for a parameter the loss never reaches and zero for one it stops reaching, and the
/// same gradient tensor a caller already holds sees the new values (the storage is handed over, not the tensor).
#[test]
fn backward_replaces_then_accumulates_like_zero_grad_and_backward() {
    let vs = VarStore::new(Device::Cpu);
    let a = vs.root().var("a", &[2, 3], tch::nn::Init::Const(1.0));
    let b = vs.root().var("b", &[3], tch::nn::Init::Const(2.0));
    let unused = vs.root().var("unused", &[4], tch::nn::Init::Const(0.0));
    let mut opt = AdamW::new(&vs, &OptimConfig::default(), 0);
    // loss = Σ (x · a + b)² for a fixed x; d/da and d/db by hand below.
    let x = Tensor::from_slice(&[1.0f32, -2.0]).reshape([1, 2]);
    let loss = |scale: f64| (x.matmul(&a) + &b).square().sum(Kind::Float) * scale;
    // Per column j: y_j = a[0][j] − 2·a[1][j] + b_j; dL/dy_j = 2·y_j·scale; dL/da[0][j] = dL/dy_j,
    // dL/da[1][j] = −2·dL/dy_j, dL/db_j = dL/dy_j — from the parameters' current values (they move every step).
    let expect = |scale: f64| {
        let av = Vec::<f64>::try_from(a.to_kind(Kind::Double).flatten(0, -1)).unwrap();
        let bv = Vec::<f64>::try_from(b.to_kind(Kind::Double)).unwrap();
        let dy: Vec<f64> = (0..3)
            .map(|j| 2.0 * (av[j] - 2.0 * av[3 + j] + bv[j]) * scale)
            .collect();
        let ga: Vec<f64> = dy
            .iter()
            .copied()
            .chain(dy.iter().map(|d| -2.0 * d))
            .collect();
        (ga, dy)
    };
    let close = |got: Vec<f32>, want: Vec<f64>, what: &str| {
        assert_eq!(got.len(), want.len(), "{what}");
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (f64::from(*g) - w).abs() < 1e-5 * w.abs().max(1.0),
                "{what}: {got:?} vs {want:?}"
            );
        }
    };
    let values = |t: &Tensor| Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
    for step in 0..3 {
        // Every step starts from stale gradients of the step before; micro-batch scales 1 then 0.5.
        let held = a.grad();
        opt.backward(&loss(1.0), false).unwrap();
        opt.backward(&loss(0.5), true).unwrap();
        let (ga, gb) = expect(1.5);
        close(values(&a.grad()), ga.clone(), &format!("a, step {step}"));
        if step > 0 {
            assert_eq!(
                values(&held),
                values(&a.grad()),
                "a handle taken before sees the new gradient (step {step})"
            );
        }
        close(values(&b.grad()), gb, &format!("b, step {step}"));
        assert!(
            !unused.grad().defined(),
            "a parameter never reached keeps no gradient (step {step})"
        );
        opt.step(0.01);
    }
    // b stops being reached: its gradient is zeroed (as zero_grad + backward), a's is replaced.
    opt.backward(&x.matmul(&a).square().sum(Kind::Float), false)
        .unwrap();
    assert_eq!(values(&b.grad()), vec![0.0; 3]);
    assert!(values(&a.grad()).iter().all(|v| *v != 0.0));
    // A replaced gradient is a gradient of its own: scaling it does not touch anything the loss graph kept.
    opt.backward(&loss(2.0), false).unwrap();
    close(values(&b.grad()), expect(2.0).1, "b, scale 2");
    opt.scale_grads(0.5);
    let (ga, gb) = expect(1.0);
    close(values(&b.grad()), gb.clone(), "b, scaled by 0.5");
    let norm = ga.iter().chain(&gb).map(|g| g * g).sum::<f64>().sqrt();
    assert!(
        (opt.grad_norm() - norm).abs() < 1e-5 * norm,
        "{} vs {norm}",
        opt.grad_norm()
    );
}

/// Autograd can return one buffer as the gradient of several parameters (here `a + b`: the same tensor for both;
/// and a row of `p` for `q` when `q` is concatenated in front of one batch row): `AdamW::backward` must not let them
/// share it, or in-place work on one (scaling, averaging over ranks) would change the other twice.
#[test]
fn backward_never_shares_one_buffer_between_parameters() {
    let vs = VarStore::new(Device::Cpu);
    let a = vs.root().var("a", &[3], tch::nn::Init::Const(1.0));
    let b = vs.root().var("b", &[3], tch::nn::Init::Const(2.0));
    let q = vs.root().var("q", &[1, 1, 4], tch::nn::Init::Const(0.5));
    let p = vs.root().var("p", &[1, 3, 4], tch::nn::Init::Const(0.0));
    let tok = Tensor::ones([1, 2, 4], (Kind::Float, Device::Cpu));
    let mut opt = AdamW::new(&vs, &OptimConfig::default(), 0);
    let w = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
    let c = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]);
    let loss = || {
        let t = Tensor::cat(&[q.expand([1, -1, -1], false), tok.shallow_clone()], 1) + &p;
        ((&a + &b) * &w).sum(Kind::Float) + (t * &c).sum(Kind::Float)
    };
    let values = |t: &Tensor| Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
    for _ in 0..2 {
        opt.backward(&loss(), false).unwrap();
        opt.scale_grads(0.5);
        assert_eq!(values(&a.grad()), vec![0.5, 1.0, 1.5]);
        assert_eq!(values(&b.grad()), vec![0.5, 1.0, 1.5]);
        assert_eq!(values(&q.grad()), vec![0.5, 1.0, 1.5, 2.0]);
        assert_eq!(values(&p.grad()), [0.5, 1.0, 1.5, 2.0].repeat(3));
        opt.step(0.0);
    }
}

/// The one-pass CPU update and the tensor-operation update compute the same AdamW: over several steps, on a
/// decayed parameter large enough to be split over threads and an undecayed one, they agree to float rounding.
#[test]
fn one_pass_update_matches_tensor_operations() {
    let cfg = OptimConfig {
        betas: [0.9, 0.95],
        eps: 1e-8,
        weight_decay: 0.05,
        ..OptimConfig::default()
    };
    // Deterministic values without the global generator (other tests run beside this one).
    let values = |n: i64, phase: f64| {
        (Tensor::arange(n, (Kind::Float, Device::Cpu)) * 0.37 + phase).sin() * 2.0
    };
    let run = |fused: bool| {
        let vs = VarStore::new(Device::Cpu);
        let w = vs
            .root()
            .var_copy("w", &values(600 * 700, 0.1).reshape([600, 700]));
        let b = vs.root().sub("lin").var_copy("bias", &values(700, 1.3));
        let mut opt = AdamW::new(&vs, &cfg, 0);
        opt.set_fused(fused);
        for lr in [0.01, 0.02, 0.005] {
            opt.zero_grad();
            ((&w * &w * &w).sum(Kind::Float) / 3.0 + (&b * &b).sum(Kind::Float)).backward();
            opt.step(lr);
        }
        (w.detach().copy(), b.detach().copy())
    };
    let (fw, fb) = run(true);
    let (tw, tb) = run(false);
    for (f, t) in [(fw, tw), (fb, tb)] {
        let err = (&f - &t).abs().max().double_value(&[]);
        let scale = t.abs().max().double_value(&[]);
        assert!(
            err <= 1e-6 * scale.max(1.0),
            "max |one pass − tensor ops| = {err}"
        );
        assert!(!f.equal(&t.zeros_like()), "the parameters were updated");
    }
}
