//! DDP scaling on CPU: mean step time of `medmae-ddp-check` with 1 process vs 2 Gloo processes at the same
//! global batch (1 intra-op thread per process), plus 1 process with 2 threads for comparison.
//!
//!   cargo bench -p medmae-distributed --bench ddp_scaling
//!
//! Knobs (environment): DDP_BENCH_STEPS (default 30), DDP_BENCH_BATCH (256), DDP_BENCH_HIDDEN (512).
//! Efficiency = T(1 process) / (2 × T(2 processes)): 100 % means two processes halve the step time.

use std::process::Command;

const CHECK: &str = env!("CARGO_BIN_EXE_medmae-ddp-check");

fn knob(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// Runs one configuration and returns (mean step ms, mean gradient all-reduce ms).
fn run(nproc: usize, threads: usize, steps: &str, batch: &str, hidden: &str) -> (f64, f64) {
    let mut cmd = Command::new(CHECK);
    cmd.args([
        "--bench",
        "--steps",
        steps,
        "--global-batch",
        batch,
        "--hidden",
        hidden,
    ])
    .args([
        "--threads",
        &threads.to_string(),
        "--nproc-per-node",
        &nproc.to_string(),
    ]);
    for var in [
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
        "SLURM_PROCID",
        "SLURM_NTASKS",
    ] {
        cmd.env_remove(var);
    }
    let output = cmd.output().expect("running medmae-ddp-check");
    assert!(
        output.status.success(),
        "medmae-ddp-check failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("a JSON result line");
    let json: serde_json::Value = serde_json::from_str(line).expect("valid JSON");
    (
        json["mean_step_ms"].as_f64().unwrap_or(f64::NAN),
        json["mean_comm_ms"].as_f64().unwrap_or(f64::NAN),
    )
}

fn main() {
    let steps = knob("DDP_BENCH_STEPS", "30");
    let batch = knob("DDP_BENCH_BATCH", "256");
    let hidden = knob("DDP_BENCH_HIDDEN", "512");
    println!("medmae-distributed CPU scaling: global batch {batch}, hidden {hidden}, {steps} steps (2 warm-up)");
    let (t1, c1) = run(1, 1, &steps, &batch, &hidden);
    let (t2, c2) = run(2, 1, &steps, &batch, &hidden);
    let (t1x2, _) = run(1, 2, &steps, &batch, &hidden);
    println!("1 process  x 1 thread : {t1:8.2} ms/step (all-reduce {c1:.2} ms)");
    println!("2 processes x 1 thread: {t2:8.2} ms/step (all-reduce {c2:.2} ms)");
    println!("1 process  x 2 threads: {t1x2:8.2} ms/step");
    println!(
        "speed-up 1 -> 2 processes: {:.2}x, scaling efficiency {:.0} %",
        t1 / t2,
        100.0 * t1 / (2.0 * t2)
    );
    println!("2 processes vs 1 process with 2 threads: {:.2}x", t1x2 / t2);
}
