//! Load, admission and deadlines against a real `medmae-serve` on 127.0.0.1:
//! - steady load: 16 concurrent clients (8 KServe `ModelInfer`, 8 `Segment` uploads), a bounded number of requests
//!   each, with the queue sized for them: zero errors; p50/p99 latency per protocol and peak RSS (from /proc) are
//!   printed as one `LOAD {json}` line (`bench/reliability/run` scales the counts up through `RELIAB_LOAD_PER_CLIENT`);
//! - overflow: with one compute slot busy and a queue of 2, a burst from 16 clients over both protocols gets exactly
//!   RESOURCE_EXHAUSTED beyond the queue and nothing else;
//! - deadlines: requests whose client deadline passes while queued are cancelled and leave the queue at once; a
//!   request over the server deadline is answered DEADLINE_EXCEEDED and its compute slot is freed when the backend
//!   call returns; the server then serves normally.

mod support_reliab;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use medmae_tests::ServeProcess;
use server::proto::medmae_v1::VolumeFormat;
use support_reliab::{
    fixtures, infer_request, kserve, percentile, segment, segmentation, serve, upload,
};
use tonic::Code;

/// A repository with both fixture models: `demo` (fast) and `slow` (a deep conv stack, ~1 s per window batch).
fn both_models(dir: &Path) -> String {
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::os::unix::fs::symlink(fixtures().join("repo/demo"), repo.join("demo")).unwrap();
    std::os::unix::fs::symlink(fixtures().join("slow_repo/slow"), repo.join("slow")).unwrap();
    repo.to_string_lossy().into_owned()
}

/// Windows per request of the slow model that keep the single compute slot busy for seconds.
const SLOW_BATCH: i64 = 32;

/// Sample the server's VmRSS every 50 ms until stopped; returns the largest value seen (KiB).
fn rss_sampler(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let rss = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0);
            peak = peak.max(rss);
            std::thread::sleep(Duration::from_millis(50));
        }
        peak
    })
}

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_clients_both_protocols_no_errors_then_overflow_and_deadlines() {
    let dir = tempfile::tempdir().unwrap();
    let repo = both_models(dir.path());
    let per_client = env_usize("RELIAB_LOAD_PER_CLIENT", 6);
    let clients = 16;
    let volume = Arc::new(std::fs::read(fixtures().join("volume.nii.gz")).unwrap());

    // --- steady load: queue big enough for every client (2 computing + 16 waiting >= 16 outstanding).
    let mut server = serve(
        &[
            "--model-repository",
            &repo,
            "--threads",
            "1",
            "--max-concurrent",
            "2",
            "--max-queue",
            "16",
        ],
        &[],
    );
    let url = server.url();
    let (rss_start, _) = server.rss_kib();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = rss_sampler(server.pid(), stop.clone());
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (url, volume, errors) = (url.clone(), volume.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut k = kserve(&url).await;
            let mut s = segmentation(&url).await;
            for _ in 0..per_client {
                let t = Instant::now();
                let r = if c % 2 == 0 {
                    k.model_infer(infer_request("demo", 1))
                        .await
                        .map(|r| assert_eq!(r.into_inner().outputs.len(), 1))
                } else {
                    segment(&mut s, upload("demo", VolumeFormat::NiftiGz, &volume), None)
                        .await
                        .map(|m| assert!(m.len() >= 2))
                };
                match r {
                    Ok(()) => lat.push(t.elapsed().as_secs_f64() * 1e3),
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("client {c}: unexpected {:?}: {}", e.code(), e.message());
                    }
                }
            }
            (c % 2 == 0, lat)
        }));
    }
    let (mut infer_ms, mut segment_ms) = (Vec::new(), Vec::new());
    for t in tasks {
        let (is_infer, lat) = t.await.unwrap();
        if is_infer {
            infer_ms.extend(lat)
        } else {
            segment_ms.extend(lat)
        }
    }
    let wall = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let peak_sampled = sampler.join().unwrap();
    let (rss_end, hwm) = server.rss_kib();
    assert_eq!(
        errors.load(Ordering::Relaxed),
        0,
        "unexpected errors under load; log:\n{}",
        server.logs()
    );
    assert_eq!(infer_ms.len() + segment_ms.len(), clients * per_client);
    for v in [&mut infer_ms, &mut segment_ms] {
        v.sort_by(f64::total_cmp);
    }
    let peak = hwm.max(peak_sampled);
    println!(
        "LOAD {{\"clients\": {clients}, \"requests\": {}, \"wall_s\": {wall:.2}, \"infer_p50_ms\": {:.1}, \"infer_p99_ms\": {:.1}, \"segment_p50_ms\": {:.1}, \"segment_p99_ms\": {:.1}, \"rss_start_mib\": {:.1}, \"rss_end_mib\": {:.1}, \"peak_rss_mib\": {:.1}}}",
        clients * per_client,
        percentile(&infer_ms, 50.0),
        percentile(&infer_ms, 99.0),
        percentile(&segment_ms, 50.0),
        percentile(&segment_ms, 99.0),
        rss_start as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    assert!(
        peak < 2 << 20,
        "peak RSS {} MiB is not bounded for 16 clients on 16³ models",
        peak / 1024
    );
    assert_eq!(
        server.metric("medmae_in_flight"),
        Some(0.0),
        "compute slots are all free after the load"
    );
    assert_eq!(
        server.metric("medmae_queue_depth"),
        Some(0.0),
        "the queue is empty after the load"
    );
    assert!(
        server.stop().is_some_and(|s| s.success()),
        "clean shutdown after the load"
    );

    // --- overflow: one slot, queue of 2. A slow request occupies the slot, two more fill the queue; a burst from 16
    // clients over both protocols must then be refused with RESOURCE_EXHAUSTED and nothing else.
    let server = serve(
        &[
            "--model-repository",
            &repo,
            "--threads",
            "1",
            "--max-concurrent",
            "1",
            "--max-queue",
            "2",
        ],
        &[],
    );
    let url = server.url();
    let mut holders = Vec::new();
    for _ in 0..3 {
        let url = url.clone();
        holders.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = kserve(&url)
                .await
                .model_infer(infer_request("slow", SLOW_BATCH))
                .await
                .map(|_| ());
            (r, t.elapsed())
        }));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for(&server, "medmae_queue_depth", 2.0).await;
    let mut burst = Vec::new();
    for c in 0..clients {
        let (url, volume) = (url.clone(), volume.clone());
        burst.push(tokio::spawn(async move {
            let r = if c % 2 == 0 {
                kserve(&url)
                    .await
                    .model_infer(infer_request("demo", 1))
                    .await
                    .map(|_| ())
            } else {
                segment(
                    &mut segmentation(&url).await,
                    upload("demo", VolumeFormat::NiftiGz, &volume),
                    None,
                )
                .await
                .map(|_| ())
            };
            (c % 2 == 0, r)
        }));
    }
    let mut exhausted = [0usize; 2];
    for b in burst {
        let (is_infer, r) = b.await.unwrap();
        let e = r.expect_err(&format!("a request beyond the queue (infer: {is_infer}) was admitted while the slot and queue were full"));
        assert_eq!(e.code(), Code::ResourceExhausted, "beyond the queue: {e:?}");
        assert!(e.message().contains("busy"), "{e:?}");
        exhausted[usize::from(is_infer)] += 1;
    }
    assert_eq!(exhausted, [8, 8], "RESOURCE_EXHAUSTED for both protocols");
    // The slot and the queue were still taken when the burst ended (else the burst raced a free slot).
    let (busy, queued) = (
        server.metric("medmae_in_flight"),
        server.metric("medmae_queue_depth"),
    );
    for h in holders {
        let (r, took) = h.await.unwrap();
        r.expect("the running and queued requests complete");
        eprintln!("holder took {took:?}");
    }
    assert_eq!(
        (busy, queued),
        (Some(1.0), Some(2.0)),
        "slot/queue after the burst"
    );
    println!(
        "OVERFLOW {{\"burst\": {clients}, \"resource_exhausted\": {}, \"admitted_before\": 3}}",
        exhausted[0] + exhausted[1]
    );
    drop(server);

    // --- deadlines: server deadline 2 s, one slot, queue of 4.
    let server = serve(
        &[
            "--model-repository",
            &repo,
            "--threads",
            "1",
            "--max-concurrent",
            "1",
            "--max-queue",
            "4",
            "--request-timeout",
            "2",
        ],
        &[],
    );
    let url = server.url();
    let long = {
        let url = url.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let r = kserve(&url)
                .await
                .model_infer(infer_request("slow", 4 * SLOW_BATCH))
                .await
                .map(|_| ());
            (r, t.elapsed())
        })
    };
    wait_for(&server, "medmae_in_flight", 1.0).await;
    let mut short = Vec::new();
    for _ in 0..4 {
        let url = url.clone();
        short.push(tokio::spawn(async move {
            let mut req = tonic::Request::new(infer_request("demo", 1));
            req.set_timeout(Duration::from_millis(300));
            kserve(&url).await.model_infer(req).await.map(|_| ())
        }));
    }
    for s in short {
        let e = s
            .await
            .unwrap()
            .expect_err("a queued request past its client deadline");
        // tonic's server answers an expired `grpc-timeout` with CANCELLED "Timeout expired" and drops the handler.
        assert!(
            matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled),
            "{e:?}"
        );
    }
    // Cancelled waiters leave the queue at once, while the long request still holds the slot.
    wait_for(&server, "medmae_queue_depth", 0.0).await;
    let (r, took) = long.await.unwrap();
    let e = r.expect_err("a request over the server deadline");
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(
        took < Duration::from_secs(5),
        "the deadline answer came after {took:?}"
    );
    // Its backend call cannot be interrupted; the slot is released when it returns.
    wait_for(&server, "medmae_in_flight", 0.0).await;
    kserve(&url)
        .await
        .model_infer(infer_request("demo", 1))
        .await
        .expect("a good request after the deadlines");
    assert_eq!(server.metric("medmae_queue_depth"), Some(0.0));
}

/// Poll a gauge until it equals `want` (60 s at most).
async fn wait_for(server: &ServeProcess, gauge: &str, want: f64) {
    let start = Instant::now();
    loop {
        let v = server.metric(gauge);
        if v == Some(want) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{gauge} stayed {v:?}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
