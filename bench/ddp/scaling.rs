//! DDP scaling on CPU: step time of `medmae-ddp-check` with 1 process vs 2 Gloo processes at the same
//! global batch (1 intra-op thread per process), plus 1 process with 2 threads for comparison.
//!
//!   cargo bench -p medmae-distributed --bench ddp_scaling
//!   cargo test -p medmae-distributed --bench ddp_scaling   # same measurement, dev profile (the time is
//!                                                          # spent in libtorch, which is optimised anyway)
//!
//! Knobs (environment): DDP_BENCH_STEPS (default 12), DDP_BENCH_BATCH (1024), DDP_BENCH_HIDDEN (1024).
//! Wall efficiency = T(1 process) / (2 × T(2 processes)): 100 % means two processes halve the step time; it
//! needs two idle cores. CPU efficiency = CPU time per step of 1 process / CPU time per step of both ranks
//! together: the share of the work that is still training rather than DDP overhead, which stays meaningful
//! on a busy machine. The 1-minute load average is printed alongside.

use std::process::Command;

const CHECK: &str = env!("CARGO_BIN_EXE_medmae-ddp-check");

/// What `medmae-ddp-check --bench` reports (from rank 0).
struct Measured {
    step_ms: f64,
    comm_ms: f64,
    cpu_ms: f64,
}

fn knob(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

fn run(nproc: usize, threads: usize, steps: &str, batch: &str, hidden: &str) -> Measured {
    let (threads, nproc) = (threads.to_string(), nproc.to_string());
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
    .args(["--threads", &threads, "--nproc-per-node", &nproc]);
    distributed::launch::clear_launch_env(&mut cmd);
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
    let get = |key: &str| json[key].as_f64().unwrap_or(f64::NAN);
    Measured {
        step_ms: get("mean_step_ms"),
        comm_ms: get("mean_comm_ms"),
        cpu_ms: get("cpu_ms_per_step"),
    }
}

fn main() {
    let steps = knob("DDP_BENCH_STEPS", "12");
    let batch = knob("DDP_BENCH_BATCH", "1024");
    let hidden = knob("DDP_BENCH_HIDDEN", "1024");
    println!("medmae-distributed CPU scaling: global batch {batch}, hidden {hidden}, {steps} steps (2 warm-up)");
    println!("load average before: {}", load_average());
    let one = run(1, 1, &steps, &batch, &hidden);
    let two = run(2, 1, &steps, &batch, &hidden);
    let threads = run(1, 2, &steps, &batch, &hidden);
    for (label, m) in [
        ("1 process  x 1 thread ", &one),
        ("2 processes x 1 thread", &two),
        ("1 process  x 2 threads", &threads),
    ] {
        println!(
            "{label}: {:8.2} ms/step wall, {:8.2} ms/step CPU (all ranks), gradient all-reduce {:.2} ms",
            m.step_ms, m.cpu_ms, m.comm_ms
        );
    }
    println!(
        "1 -> 2 processes: speed-up {:.2}x, wall scaling efficiency {:.0} %, CPU efficiency {:.0} %",
        one.step_ms / two.step_ms,
        100.0 * one.step_ms / (2.0 * two.step_ms),
        100.0 * one.cpu_ms / two.cpu_ms
    );
    println!("load average after: {}", load_average());
}
