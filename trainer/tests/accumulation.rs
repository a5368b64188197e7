//! Gradient accumulation: two micro-batches of 1 with `accum_steps: 2` take the same optimiser steps as one batch
//! of 2 (the MAE loss is a mean over equally many masked tokens per sample, the loader order and the masking noise
//! are the same), up to float rounding.

mod common;

use common::{config, losses, tiny, tiny_mae, train};

#[test]
fn two_micro_batches_equal_one_batch_of_two() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = config("demo_mae3d.yaml");
    let run = |name: &str, batch: usize, accum: usize| {
        let mut s = tiny(d, name, 2);
        s.extend(tiny_mae());
        s.push(format!("data.batch_size={batch}"));
        s.push(format!("optim.accum_steps={accum}"));
        s.push(format!("data.cache_dir={}", d.join("cache").display()));
        train(&["pretrain", "--config", cfg.to_str().unwrap()], &s);
    };
    run("whole", 2, 1);
    run("accum", 1, 2);
    let (a, b) = (
        losses(&d.join("whole/metrics.jsonl")),
        losses(&d.join("accum/metrics.jsonl")),
    );
    assert_eq!(a.len(), 4);
    assert_eq!(
        a.iter().map(|p| p.0).collect::<Vec<_>>(),
        b.iter().map(|p| p.0).collect::<Vec<_>>()
    );
    for ((_, x), (_, y)) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-5, "losses {x} vs {y}");
    }
    let load = |name: &str| {
        let mut t =
            tch::Tensor::read_safetensors(d.join(name).join("checkpoints/last/model.safetensors"))
                .unwrap();
        t.sort_by(|a, b| a.0.cmp(&b.0));
        t
    };
    for ((n1, t1), (n2, t2)) in load("whole").iter().zip(&load("accum")) {
        assert_eq!(n1, n2);
        let diff = (t1 - t2).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "{n1}: max |Δ| = {diff}");
    }
    // A different accumulation changes the trajectory (the comparison above is not vacuous).
    run("single", 1, 1);
    assert_ne!(losses(&d.join("single/metrics.jsonl")).len(), a.len());
}
