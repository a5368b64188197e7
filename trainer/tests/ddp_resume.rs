//! Distributed `--resume`: a 2-process run stopped mid-epoch and resumed (again with 2 processes) ends with the
//! same weights, optimiser state, data position and losses as an uninterrupted 2-process run, byte for byte; and a
//! resume with another global batch is refused with a message naming the key.

mod common;

use std::path::Path;

use common::{config, losses, tiny, tiny_unetr, train_clean, train_command};

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn a_resumed_two_process_run_equals_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = config("demo_unetr3d.yaml");
    let cfg = cfg.to_str().unwrap();
    let sets = |run: &str| {
        let mut s = tiny(d, run, 2);
        s.extend(tiny_unetr());
        s.push("data.batch_size=1".into());
        s.push(format!("data.cache_dir={}", d.join("cache").display()));
        s
    };
    let ddp = ["--nproc-per-node", "2"];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        let mut a = vec!["finetune", "--config", cfg];
        a.extend(ddp);
        a.extend(extra);
        a
    };
    train_clean(&with(&[]), &sets("full"));
    // Step 1 of 2 in epoch 0: the resume starts inside an epoch, from rank 0's step checkpoint.
    train_clean(&with(&["--max-steps", "1"]), &sets("split"));
    let state: serde_json::Value =
        serde_json::from_slice(&bytes(&d.join("split/checkpoints/last/train_state.json"))).unwrap();
    assert_eq!(
        (
            state["step"].as_u64(),
            state["batch_in_epoch"].as_u64(),
            state["global_batch"].as_u64()
        ),
        (Some(1), Some(1), Some(2)),
        "{state}"
    );
    train_clean(&with(&["--resume"]), &sets("split"));

    let (a, b) = (
        losses(&d.join("full/metrics.jsonl")),
        losses(&d.join("split/metrics.jsonl")),
    );
    assert_eq!(a.len(), 4);
    assert_eq!(a, b, "per-step losses differ after resuming");
    for f in ["model.safetensors", "train_state.safetensors"] {
        assert!(
            bytes(&d.join("full/checkpoints/last").join(f))
                == bytes(&d.join("split/checkpoints/last").join(f)),
            "{f} differs after resuming"
        );
    }
    let read = |run: &str| -> serde_json::Value {
        serde_json::from_slice(&bytes(
            &d.join(run).join("checkpoints/last/train_state.json"),
        ))
        .unwrap()
    };
    assert_eq!(read("full"), read("split"));

    // Another global batch (2 processes × batch 2) cannot continue this data position.
    let mut other = sets("split");
    other.push("data.batch_size=2".into());
    let out = train_command(&with(&["--resume"]), &other)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("data.batch_size") && err.contains("written with 2"),
        "{err}"
    );
}
