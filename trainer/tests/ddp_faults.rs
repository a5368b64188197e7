//! Faults of a data-parallel `medmae-train`: a rank killed mid-run makes its peer (and the `--nproc-per-node`
//! launcher) exit non-zero within seconds with an error naming the rank; a peer that never comes makes rank 0 time
//! out naming the missing rank and the store address; the checkpoint left behind is complete.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{config, tiny, tiny_unetr, train_command};
use medmae_test_support::wait_within;

/// A long tiny fine-tuning run (logs every step) in `d/<run>`.
fn long_run(d: &Path, run: &str) -> Vec<String> {
    let mut s = tiny(d, run, 10_000);
    s.extend(tiny_unetr());
    s.push("data.batch_size=1".into());
    s.push("validation.every_epochs=10000".into());
    s.push("logging.png_every_epochs=10000".into());
    s.push("logging.save_every_steps=2".into());
    s
}

fn spawn_rank(rank: usize, port: u16, sets: &[String], timeout: &str) -> Child {
    let cfg = config("demo_unetr3d.yaml");
    let mut cmd = train_command(
        &[
            "finetune",
            "--config",
            cfg.to_str().unwrap(),
            "--dist-timeout",
            timeout,
        ],
        sets,
    );
    distributed::launch::set_local_rank_env(&mut cmd, rank, 2, port)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn medmae-train")
}

/// Forwards `child`'s stderr into a string and signals once a line contains `marker`.
fn watch_stderr(
    child: &mut Child,
    marker: &'static str,
) -> (mpsc::Receiver<()>, std::thread::JoinHandle<String>) {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(marker) {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    (rx, handle)
}

/// Starts two ranks of a long run, SIGKILLs `victim` once rank 0 has logged step 4, and checks that the survivor
/// exits non-zero within 30 s with an error naming its rank and the failed all-reduce. Returns the run directory.
fn kill_mid_run(victim: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let sets = long_run(dir.path(), "run");
    let port = distributed::launch::free_local_port().unwrap();
    // A 300 s collective timeout: exiting within seconds proves the death is detected, not timed out.
    let mut ranks = [
        spawn_rank(0, port, &sets, "300"),
        spawn_rank(1, port, &sets, "300"),
    ];
    let (progress, log0) = watch_stderr(&mut ranks[0], "step 4/");
    let (_, log1) = watch_stderr(&mut ranks[1], "never");
    progress
        .recv_timeout(Duration::from_secs(120))
        .expect("rank 0 never reached step 4");
    ranks[victim].kill().unwrap();
    ranks[victim].wait().unwrap();
    let survivor = 1 - victim;
    let (status, took) = wait_within(
        &mut ranks[survivor],
        Duration::from_secs(30),
        "the surviving rank",
    );
    let log = if survivor == 0 { log0 } else { log1 };
    let stderr = log.join().unwrap();
    assert!(!status.success(), "rank {survivor} must fail: {stderr}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(
        stderr.contains(&format!("Error (rank {survivor} of 2)"))
            && stderr.contains("all-reduce")
            && stderr.contains("peer"),
        "unclear error from rank {survivor}: {stderr}"
    );
    dir
}

#[test]
fn killing_a_rank_makes_its_peer_exit_non_zero_within_seconds() {
    let dir = kill_mid_run(1);
    // The last step checkpoint rank 0 wrote is complete and loadable.
    let last = dir.path().join("run/checkpoints/last");
    common::tensors(&last.join("model.safetensors"));
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(last.join("train_state.json")).unwrap()).unwrap();
    assert!(state["step"].as_u64().unwrap() >= 2, "{state}");
    // Rank 0 hosts the store: its death is detected just as fast.
    kill_mid_run(0);
}

/// The pid of the child of `parent` whose environment says `RANK=<rank>` (Linux `/proc`).
fn child_with_rank(parent: u32, rank: usize) -> Option<u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).ok()?;
    let wanted = format!("RANK={rank}");
    children
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .find(|pid| {
            let mut env = Vec::new();
            std::fs::File::open(format!("/proc/{pid}/environ"))
                .and_then(|mut f| f.read_to_end(&mut env))
                .is_ok()
                && env.split(|&b| b == 0).any(|v| v == wanted.as_bytes())
        })
}

#[test]
fn killing_a_local_worker_fails_the_nproc_per_node_launch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = config("demo_unetr3d.yaml");
    let mut launcher = train_command(
        &[
            "finetune",
            "--config",
            cfg.to_str().unwrap(),
            "--nproc-per-node",
            "2",
        ],
        &long_run(d, "run"),
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let (progress, log) = watch_stderr(&mut launcher, "step 3/");
    progress
        .recv_timeout(Duration::from_secs(120))
        .expect("rank 0 never reached step 3");
    let victim =
        child_with_rank(launcher.id(), 1).expect("worker rank 1 is a child of the launcher");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let (status, took) = wait_within(&mut launcher, Duration::from_secs(30), "launcher");
    let stderr = log.join().unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(stderr.contains("worker rank 1 of 2 failed"), "{stderr}");
    // Rank 0 did not linger: the launcher stops the others.
    assert!(child_with_rank(launcher.id(), 0).is_none());
}

#[test]
fn a_missing_peer_times_out_naming_the_rank_and_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let port = distributed::launch::free_local_port().unwrap();
    let mut rank0 = spawn_rank(0, port, &long_run(dir.path(), "run"), "3");
    let (_, log) = watch_stderr(&mut rank0, "never");
    let (status, took) = wait_within(
        &mut rank0,
        Duration::from_secs(60),
        "rank 0 without its peer",
    );
    let stderr = log.join().unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(took < Duration::from_secs(45), "took {took:?}");
    assert!(
        stderr.contains("rank(s) [1]")
            && stderr.contains(&format!("127.0.0.1:{port}"))
            && stderr.contains("timed out"),
        "{stderr}"
    );
}
