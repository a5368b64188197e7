//! Faults across real processes: a rank killed mid-run, a peer that never arrives, a crashing local worker.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ExitStatus};
use std::sync::mpsc;
use std::time::Duration;

use common::{check_command, spawn_rank};
use medmae_test_support::wait_within;

fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    text
}

/// Starts two ranks of a long run, waits until rank 0 has logged a few steps, SIGKILLs `victim`, and
/// returns the survivor's exit status, how long it took to exit, and its stderr.
fn kill_mid_run(victim: usize) -> (ExitStatus, Duration, String) {
    let port = distributed::launch::free_local_port().unwrap();
    // A 120 s collective timeout: exiting within seconds proves the death is detected, not timed out.
    let args = [
        "--steps",
        "100000",
        "--step-delay-ms",
        "20",
        "--timeout-secs",
        "120",
    ];
    let mut ranks: Vec<Child> = (0..2)
        .map(|rank| spawn_rank(rank, 2, port, &args))
        .collect();
    let (tx, rx) = mpsc::channel();
    let stdout = ranks[0].stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("step 5 ") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("rank 0 never reached step 5");
    ranks[victim].kill().unwrap();
    ranks[victim].wait().unwrap();
    let survivor = &mut ranks[1 - victim];
    let (status, took) = wait_within(survivor, Duration::from_secs(30), "surviving rank");
    (status, took, stderr_of(survivor))
}

#[test]
fn killing_a_rank_makes_the_other_fail_fast_with_a_clear_error() {
    for victim in [1, 0] {
        let survivor = 1 - victim;
        let (status, took, stderr) = kill_mid_run(victim);
        assert!(
            !status.success(),
            "rank {survivor} must exit non-zero: {stderr}"
        );
        assert!(took < Duration::from_secs(30), "took {took:?}");
        assert!(
            stderr.contains(&format!("failed on rank {survivor} of 2"))
                && stderr.contains("all-reduce"),
            "unclear error from rank {survivor}: {stderr}"
        );
    }
}

#[test]
fn a_missing_peer_times_out_naming_the_rank_and_address() {
    let port = distributed::launch::free_local_port().unwrap();
    let address = format!("127.0.0.1:{port}");
    // Rank 0 hosts the store but rank 1 never comes.
    let mut rank0 = spawn_rank(0, 2, port, &["--timeout-secs", "2"]);
    let (status, took) = wait_within(&mut rank0, Duration::from_secs(30), "rank 0 without peers");
    let stderr = stderr_of(&mut rank0);
    assert!(!status.success());
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(
        stderr.contains("rank(s) [1]") && stderr.contains(&address),
        "{stderr}"
    );
    assert!(stderr.contains("timed out"), "{stderr}");

    // Rank 1 finds no store at all.
    let port = distributed::launch::free_local_port().unwrap();
    let address = format!("127.0.0.1:{port}");
    let mut rank1 = spawn_rank(1, 2, port, &["--timeout-secs", "2"]);
    let (status, took) = wait_within(
        &mut rank1,
        Duration::from_secs(30),
        "rank 1 without a store",
    );
    let stderr = stderr_of(&mut rank1);
    assert!(!status.success());
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(
        stderr.contains("rank 1") && stderr.contains(&address),
        "{stderr}"
    );
}

#[test]
fn a_crashing_local_worker_stops_the_whole_launch() {
    let mut parent = check_command(&[
        "--nproc-per-node",
        "2",
        "--steps",
        "100000",
        "--step-delay-ms",
        "20",
        "--die-rank",
        "1",
        "--die-at-step",
        "3",
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let (status, _) = wait_within(&mut parent, Duration::from_secs(30), "launcher");
    let stderr = stderr_of(&mut parent);
    assert!(!status.success());
    assert!(stderr.contains("worker rank 1 of 2 failed"), "{stderr}");
}
