//! Data-parallel training through the real CLI (`--nproc-per-node 2`, Gloo on 127.0.0.1): both ranks end with
//! identical weights, and those equal a single process trained on the concatenated batch.
//!
//! Tolerance and `optim.eps = 1e-2`: the 2-process run sums the same per-sample gradients in a different order
//! (two batch-1 backward passes averaged by all-reduce instead of one batch-2 pass), so gradients agree to float
//! rounding. With AdamW's default eps (1e-8), parameters whose gradient is pure cancellation noise (convolutions
//! followed by instance norm) get updates of ±lr whatever the noise, which makes even 1 vs 2 intra-op threads of a
//! *single* process differ by ~1e-4 after four steps. eps = 1e-2 keeps the optimiser sensitive to every real
//! gradient (a run on other samples or with a wrong learning rate moves the weights by ~lr = 1e-3) while rounding
//! noise stays far below the 1e-5 tolerance; the test also checks that training moved the weights by far more
//! than the tolerance.

mod common;

use std::path::Path;

use common::{config, losses, max_abs_diff, metrics, tiny, tiny_mae, tiny_unetr, train_clean};

const TOLERANCE: f64 = 1e-5;

fn sets(d: &Path, run: &str, extra: &[String], batch: usize) -> Vec<String> {
    let mut s = tiny(d, run, 2);
    s.extend(extra.iter().cloned());
    s.push(format!("data.batch_size={batch}"));
    s.push("optim.eps=1e-2".into());
    // One cache for all runs so every process reads identical preprocessed volumes.
    s.push(format!("data.cache_dir={}", d.join("cache").display()));
    s
}

/// Runs `cmd` once in one process with batch `2·b` and once as 2 processes with batch `b`; checks weights, rank
/// agreement, per-step losses and the recorded world size, and returns the run directory.
fn check_equivalence(cfg_name: &str, cmd: &str, extra: Vec<String>, b: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = config(cfg_name);
    let cfg = cfg.to_str().unwrap();
    train_clean(&[cmd, "--config", cfg], &sets(d, "single", &extra, 2 * b));
    let ranks = d.join("ranks");
    let ranks_arg = ranks.to_str().unwrap();
    train_clean(
        &[
            cmd,
            "--config",
            cfg,
            "--nproc-per-node",
            "2",
            "--rank-weights-dir",
            ranks_arg,
        ],
        &sets(d, "ddp", &extra, b),
    );

    // Both ranks hold bit-identical weights, which are what rank 0 checkpointed.
    let (rank_diff, name) = max_abs_diff(
        &ranks.join("rank0.safetensors"),
        &ranks.join("rank1.safetensors"),
    );
    assert_eq!(rank_diff, 0.0, "ranks 0 and 1 differ at {name}");
    let ddp_last = d.join("ddp/checkpoints/last/model.safetensors");
    assert_eq!(
        max_abs_diff(&ranks.join("rank0.safetensors"), &ddp_last).0,
        0.0
    );

    // The data-parallel weights equal the single-process ones.
    let single_last = d.join("single/checkpoints/last/model.safetensors");
    let (diff, name) = max_abs_diff(&single_last, &ddp_last);
    assert!(
        diff <= TOLERANCE,
        "{cmd}: 2 processes differ from 1 by {diff:e} at {name}"
    );

    // ... and the comparison is meaningful: training moved the weights far beyond the tolerance.
    let init = d.join("init");
    train_clean(
        &[
            cmd,
            "--config",
            cfg,
            "--max-steps",
            "0",
            "--rank-weights-dir",
            init.to_str().unwrap(),
        ],
        &sets(d, "init", &extra, 2 * b),
    );
    let (moved, _) = max_abs_diff(&init.join("rank0.safetensors"), &single_last);
    assert!(
        moved > 100.0 * TOLERANCE,
        "training moved the weights by only {moved:e}"
    );

    // Same number of steps and the same (rank-averaged) losses.
    let (a, c) = (
        losses(&d.join("single/metrics.jsonl")),
        losses(&d.join("ddp/metrics.jsonl")),
    );
    assert!(a.len() >= 2, "two epochs of at least one step: {a:?}");
    assert_eq!(a.len(), c.len());
    for ((sa, la), (sc, lc)) in a.iter().zip(&c) {
        assert_eq!(sa, sc);
        assert!(
            (la - lc).abs() <= 1e-5 * la.abs(),
            "step {sa}: loss {la} vs {lc}"
        );
    }
    let start = &metrics(&d.join("ddp/metrics.jsonl"))[0];
    assert_eq!(start["world_size"], 2, "{start}");
    assert_eq!(start["global_batch"], 2 * b, "{start}");
    let single_start = &metrics(&d.join("single/metrics.jsonl"))[0];
    assert_eq!(
        start["peak_lr"], single_start["peak_lr"],
        "the peak lr follows the global batch"
    );
    dir
}

#[test]
fn finetune_on_two_processes_equals_one_process_with_the_concatenated_batch() {
    let dir = check_equivalence("demo_unetr3d.yaml", "finetune", tiny_unetr(), 1);
    let d = dir.path();
    // Sharded validation (one case per rank) reports the single-process Dice table.
    let val = |run: &str| -> Vec<f64> {
        metrics(&d.join(run).join("metrics.jsonl"))
            .iter()
            .filter_map(|r| r.get("val/dice_mean")?.as_f64())
            .collect()
    };
    let (a, b) = (val("single"), val("ddp"));
    assert_eq!(a.len(), 2, "validation every epoch: {a:?}");
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-3, "val/dice_mean {x} vs {y}");
    }
    // Only rank 0 writes: one metrics file, the pictures and the checkpoints.
    assert!(d.join("ddp/images/overlay_epoch001.png").is_file());
    assert!(d.join("ddp/checkpoints/best/model.safetensors").is_file());
}

#[test]
fn pretrain_on_two_processes_equals_one_process_with_the_concatenated_batch() {
    // Per-rank batch 2: rank r's samples are rows r and r + 2 of the single process's batch of 4, and the MAE
    // masks follow those rows. Two steps, the first at warm-up lr 0: a larger base lr makes the second count.
    let mut extra = tiny_mae();
    extra.push("optim.base_lr=1.0".into());
    check_equivalence("demo_mae3d.yaml", "pretrain", extra, 2);
}
