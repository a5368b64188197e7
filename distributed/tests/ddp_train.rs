//! Two Gloo processes on 127.0.0.1 train the helper's tiny conv+MLP with broadcast initial parameters,
//! averaged gradient all-reduce and identical AdamW steps; the result must match one process trained on
//! the concatenated batch.

mod common;

use std::path::Path;

use common::{check_command, spawn_rank};
use medmae_test_support::assert_success;

const STEPS: &str = "6";
const BATCH: &str = "8";

/// Reads a safetensors file written by `VarStore::save` into (name, tensor) pairs sorted by name.
pub fn read_params(path: &Path) -> Vec<(String, tch::Tensor)> {
    let mut params =
        tch::Tensor::read_safetensors(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    params.sort_by(|a, b| a.0.cmp(&b.0));
    params
}

fn losses(path: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

fn max_abs_diff(a: &tch::Tensor, b: &tch::Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// Runs the two-rank job (extra flags appended) into `dir` and checks it against `reference`.
fn two_ranks_match_reference(dir: &Path, reference: &Path, extra: &[&str]) {
    let port = distributed::launch::free_local_port().unwrap();
    let out = dir.to_str().unwrap();
    let mut args = vec![
        "--steps",
        STEPS,
        "--global-batch",
        BATCH,
        "--out",
        out,
        "--timeout-secs",
        "30",
    ];
    args.extend_from_slice(extra);
    let children: Vec<_> = (0..2)
        .map(|rank| spawn_rank(rank, 2, port, &args))
        .collect();
    for (rank, child) in children.into_iter().enumerate() {
        let output = child.wait_with_output().unwrap();
        assert_success(&output, &format!("rank {rank}"));
    }
    let rank0 = read_params(&dir.join("rank0.safetensors"));
    let rank1 = read_params(&dir.join("rank1.safetensors"));
    let single = read_params(&reference.join("rank0.safetensors"));
    assert_eq!(rank0.len(), 8, "conv, fc1, fc2, head: weight + bias each");
    for ((n0, p0), ((n1, p1), (ns, ps))) in rank0.iter().zip(rank1.iter().zip(single.iter())) {
        assert_eq!((n0, n1), (ns, ns));
        assert_eq!(max_abs_diff(p0, p1), 0.0, "{n0}: ranks disagree");
        let diff = max_abs_diff(p0, ps);
        assert!(diff < 1e-5, "{n0}: DDP vs single process differ by {diff}");
    }
    let (l0, l1, ls) = (
        losses(&dir.join("rank0.json")),
        losses(&dir.join("rank1.json")),
        losses(&reference.join("rank0.json")),
    );
    assert_eq!(l0, l1, "every rank sees the same reduced loss");
    assert_eq!(l0.len(), ls.len());
    for (a, b) in l0.iter().zip(&ls) {
        assert!(
            (a - b).abs() < 1e-5,
            "global loss {a} vs single-process loss {b}"
        );
    }
    assert!(
        ls.last().unwrap() < ls.first().unwrap(),
        "the model trains: {ls:?}"
    );
}

#[test]
fn two_gloo_ranks_equal_one_process_on_the_concatenated_batch() {
    let reference = tempfile::tempdir().unwrap();
    let status = check_command(&[
        "--steps",
        STEPS,
        "--global-batch",
        BATCH,
        "--out",
        reference.path().to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert_success(&status, "reference run");

    // Default 25 MB buckets via allreduce_var_store_gradients (all gradients in one bucket) ...
    let dir = tempfile::tempdir().unwrap();
    two_ranks_match_reference(dir.path(), reference.path(), &[]);
    // ... and 600-byte buckets via allreduce_tensors (many buckets, oversize tensors alone).
    let dir = tempfile::tempdir().unwrap();
    two_ranks_match_reference(dir.path(), reference.path(), &["--bucket-bytes", "600"]);
}

#[test]
fn nproc_per_node_spawns_and_waits_for_local_workers() {
    let dir = tempfile::tempdir().unwrap();
    let output = check_command(&[
        "--nproc-per-node",
        "2",
        "--steps",
        "3",
        "--out",
        dir.path().to_str().unwrap(),
    ])
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_success(&output, "medmae-ddp-check --nproc-per-node 2");
    // only rank 0 logs
    assert_eq!(stdout.matches("step 2 loss").count(), 1, "{stdout}");
    let (p0, p1) = (
        read_params(&dir.path().join("rank0.safetensors")),
        read_params(&dir.path().join("rank1.safetensors")),
    );
    for ((n, a), (_, b)) in p0.iter().zip(&p1) {
        assert_eq!(max_abs_diff(a, b), 0.0, "{n}");
    }
}

#[test]
fn one_rank_through_c10d_equals_the_local_path() {
    // The local shortcut (world size 1, no sockets) ...
    let local = tempfile::tempdir().unwrap();
    let out = check_command(&["--steps", "3", "--out", local.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_success(&out, "medmae-ddp-check");
    // ... and a real TCPStore + Gloo group of one (what scripts/gpu-check does with NCCL on one GPU).
    let c10d = tempfile::tempdir().unwrap();
    let port = distributed::launch::free_local_port().unwrap();
    let args = [
        "--always-c10d",
        "--steps",
        "3",
        "--out",
        c10d.path().to_str().unwrap(),
    ];
    let out = spawn_rank(0, 1, port, &args).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (a, b) = (
        read_params(&local.path().join("rank0.safetensors")),
        read_params(&c10d.path().join("rank0.safetensors")),
    );
    assert_eq!(a.len(), b.len());
    for ((n, x), (_, y)) in a.iter().zip(&b) {
        assert_eq!(max_abs_diff(x, y), 0.0, "{n}");
    }
    assert_eq!(
        losses(&local.path().join("rank0.json")),
        losses(&c10d.path().join("rank0.json"))
    );
}
