//! Bit-identical resumption on CPU: N optimiser steps in one go equal k steps, a stop, and a resume to N — same
//! per-step losses and the same final weights and optimiser state, byte for byte. k is chosen mid-epoch, so the
//! resume starts from a step checkpoint inside an epoch.

mod common;

use std::path::Path;

use common::{config, losses, tiny, tiny_mae, tiny_unetr, train};

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn check_resume(cfg_name: &str, cmd: &str, extra: Vec<String>, epochs: usize, stop_at: u64) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = config(cfg_name);
    let cfg = cfg.to_str().unwrap();
    let sets = |run: &str| {
        let mut s = tiny(d, run, epochs);
        s.extend(extra.clone());
        // Share one cache so both runs read identical preprocessed volumes.
        s.push(format!("data.cache_dir={}", d.join("cache").display()));
        s
    };
    train(&[cmd, "--config", cfg], &sets("full"));
    let stop = stop_at.to_string();
    train(
        &[cmd, "--config", cfg, "--max-steps", &stop],
        &sets("split"),
    );
    let state: serde_json::Value =
        serde_json::from_slice(&bytes(&d.join("split/checkpoints/last/train_state.json"))).unwrap();
    assert_eq!(state["step"].as_u64(), Some(stop_at));
    assert!(
        state["batch_in_epoch"].as_u64().unwrap() > 0,
        "the stop is inside an epoch: {state}"
    );
    train(&[cmd, "--config", cfg, "--resume"], &sets("split"));

    let (a, b) = (
        losses(&d.join("full/metrics.jsonl")),
        losses(&d.join("split/metrics.jsonl")),
    );
    assert_eq!(a.len() as u64, (epochs * 2) as u64);
    assert_eq!(a, b, "per-step losses differ after resuming");
    for f in ["model.safetensors", "train_state.safetensors"] {
        assert!(
            bytes(&d.join("full/checkpoints/last").join(f))
                == bytes(&d.join("split/checkpoints/last").join(f)),
            "{f} differs after resuming"
        );
    }
    let (sa, sb): (serde_json::Value, serde_json::Value) = (
        serde_json::from_slice(&bytes(&d.join("full/checkpoints/last/train_state.json"))).unwrap(),
        serde_json::from_slice(&bytes(&d.join("split/checkpoints/last/train_state.json"))).unwrap(),
    );
    assert_eq!(sa, sb, "RNG, data position and best score match");
}

#[test]
fn mae_pretraining_resumes_bit_identically() {
    check_resume("demo_mae3d.yaml", "pretrain", tiny_mae(), 2, 3);
}

#[test]
fn unetr_finetuning_resumes_bit_identically() {
    check_resume("demo_unetr3d.yaml", "finetune", tiny_unetr(), 2, 1);
}
