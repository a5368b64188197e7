//! Limits checked before compute: a response that would exceed `max_message_bytes` or `max_voxels` is refused from
//! the request's shape alone, with the limit named, in a fraction of one window's inference; refusals by the
//! transport are reported as RESOURCE_EXHAUSTED too; all of them are counted in `medmae_requests_total` under the
//! model that serves the request; each backend reports its own platform.

use std::time::{Duration, Instant};

use server::proto::inference::ModelMetadataRequest;
use server::proto::medmae_v1::segmentation_client::SegmentationClient;
use tonic::Code;

use crate::common::*;

/// The error a Segment call of these messages ends in (at the call or in the reply stream).
async fn segment_error(
    url: String,
    messages: Vec<server::proto::medmae_v1::SegmentRequest>,
) -> tonic::Status {
    let mut c = SegmentationClient::connect(url).await.unwrap();
    match c.segment(tokio_stream::iter(messages)).await {
        Ok(r) => collect_segment(r.into_inner())
            .await
            .expect_err("the request should have been refused"),
        Err(e) => e,
    }
}

/// `e` has `code` and its message names every one of `needles`.
fn assert_refused(e: &tonic::Status, code: Code, needles: &[&str]) {
    assert_eq!(e.code(), code, "{}", e.message());
    for n in needles {
        assert!(e.message().contains(n), "{:?} lacks {n:?}", e.message());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_outputs_are_refused_before_compute_with_the_limit_named_and_counted() {
    let srv = start_server(
        "slow_repo",
        &[
            "--backend",
            "ort",
            "--max-message-bytes",
            "1048576",
            "--max-voxels",
            "400000",
        ],
    );
    let url = srv.url();
    // One window's inference, for scale.
    let start = Instant::now();
    assert_eq!(
        slow_request(url.clone(), 1).await.unwrap(),
        vec![1, 2, 16, 16, 16]
    );
    let window = start.elapsed();

    // 40 windows: the input (640 KiB) fits the 1 MiB message limit, the output (2 classes, 1.25 MiB) does not.
    let start = Instant::now();
    let e = slow_request(url.clone(), 40).await.unwrap_err();
    let refused = start.elapsed();
    assert_refused(
        &e,
        Code::ResourceExhausted,
        &["max_message_bytes = 1048576", "[40, 2, 16, 16, 16]"],
    );
    // Before compute: the model ran once (the one-window request) and not for the refused one — a count, immune to
    // the machine's load — and the refusal took less than one window's inference (it includes the 640 KiB upload).
    let runs: f64 = srv
        .metrics_text()
        .lines()
        .filter(|l| l.starts_with(r#"medmae_inference_duration_seconds_count{model="slow","#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(runs, 1.0, "inference runs after the refusal");
    assert!(
        refused < window && refused < Duration::from_secs(1),
        "refusal took {refused:?}; one window takes {window:?}"
    );

    // A request message over the limit is refused by the transport: RESOURCE_EXHAUSTED, limit named, counted.
    let e = slow_request(url.clone(), 80).await.unwrap_err();
    assert_refused(
        &e,
        Code::ResourceExhausted,
        &["max_message_bytes = 1048576"],
    );

    // Segment with the default model: probabilities of 2 classes x 64³ voxels exceed max_voxels (the input fits).
    let start = Instant::now();
    let e = segment_error(url.clone(), raw_segment_messages("", [64, 64, 64], true)).await;
    let refused = start.elapsed();
    assert_refused(
        &e,
        Code::ResourceExhausted,
        &["probabilities", "max_voxels = 400000"],
    );
    assert!(refused < Duration::from_secs(2), "refusal took {refused:?}");

    let m = srv.metrics_text();
    let count = |labels: &str| sample(&m, &format!("medmae_requests_total{{{labels}}}"));
    assert_eq!(
        count(r#"service="kserve",method="ModelInfer",model="slow",status="resource_exhausted""#),
        1.0,
        "{m}"
    );
    assert_eq!(
        count(r#"service="kserve",method="ModelInfer",model="",status="resource_exhausted""#),
        1.0,
        "{m}"
    );
    assert_eq!(
        count(
            r#"service="segmentation",method="Segment",model="slow",status="resource_exhausted""#
        ),
        1.0,
        "{m}"
    );
    // Only the one-window request reached the engine.
    assert_eq!(
        sample(
            &m,
            r#"medmae_inference_duration_seconds_count{model="slow",backend="ort-cpu"}"#
        ),
        1.0,
        "{m}"
    );
    let logs = srv.logs();
    assert!(
        !logs.contains(r#"model="""#) && !logs.contains("model= "),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_backend_reports_its_own_platform() {
    for (backend, platform) in [("tract", "tract_onnx"), ("ort", "onnxruntime_onnx")] {
        let srv = start_server("repo", &["--backend", backend]);
        let mut k = kserve_client(&srv.url()).await;
        let meta = k
            .model_metadata(ModelMetadataRequest {
                name: "demo".into(),
                version: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(meta.platform, platform, "{backend}");
        let cfg = k
            .model_config(server::proto::inference::ModelConfigRequest {
                name: "demo".into(),
                version: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .config
            .unwrap();
        assert_eq!(cfg.platform, platform, "{backend}");
    }
}

/// A Segment request past its deadline stops computing before its next window batch, so its compute slot is freed
/// for the next request instead of finishing work nobody receives (125 windows of the slow model at 4 per batch:
/// 32 engine calls if it ran to the end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_segment_stops_computing_and_frees_its_slot() {
    let srv = start_server(
        "slow_repo",
        &[
            "--backend",
            "ort",
            "--max-concurrent",
            "1",
            "--request-timeout",
            "3",
        ],
    );
    let url = srv.url();
    let e = segment_error(url.clone(), raw_segment_messages("", [64, 64, 64], false)).await;
    assert_eq!(e.code(), Code::DeadlineExceeded, "{}", e.message());
    wait_in_flight(&srv, 0);
    let calls = sample(
        &srv.metrics_text(),
        r#"medmae_inference_duration_seconds_count{model="slow",backend="ort-cpu"}"#,
    );
    assert!(
        (1.0..16.0).contains(&calls),
        "{calls} engine calls for the abandoned request (32 if it ran to the end)"
    );
    // The freed slot serves the next request.
    assert_eq!(slow_request(url, 1).await.unwrap(), vec![1, 2, 16, 16, 16]);
}

/// Uploads are received before a request asks for a compute slot, so the bytes all open streams hold in memory have
/// their own bound: a declared upload that does not fit beside the others is refused at its header with
/// RESOURCE_EXHAUSTED (the limit named), the bytes held show in `medmae_upload_bytes`, and they are given back when
/// an upload has been decoded. KServe tensor requests count under the same bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_bytes_in_memory_are_bounded_across_streams() {
    use server::proto::medmae_v1::segment_request::Payload;
    let srv = start_server(
        "slow_repo",
        &[
            "--backend",
            "ort",
            "--max-message-bytes",
            "1048576",
            "--max-upload-bytes",
            "1048576",
            "--max-upload-memory-bytes",
            "1572864",
        ],
    );
    // A 64³ float32 volume: exactly 1 MiB, declared in the header.
    let messages = || {
        let mut m = raw_segment_messages("", [64, 64, 64], false);
        if let Some(Payload::Header(h)) = &mut m[0].payload {
            h.total_bytes = 1 << 20;
        }
        m
    };
    let held = |srv: &ServeProcess| sample(&srv.metrics_text(), "medmae_upload_bytes ");
    let wait_held = |srv: &ServeProcess, want: f64| {
        for _ in 0..400 {
            if held(srv) == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "medmae_upload_bytes never became {want} (now {})",
            held(srv)
        );
    };
    // Stream A: the header and one chunk, then it waits (as a slow client's upload would).
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut a_messages = messages().into_iter();
    tx.send(a_messages.next().unwrap()).await.unwrap();
    tx.send(a_messages.next().unwrap()).await.unwrap();
    let url = srv.url();
    let a = tokio::spawn(async move {
        let mut c = SegmentationClient::connect(url).await.unwrap();
        let replies = c
            .segment(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?;
        collect_segment(replies.into_inner()).await
    });
    wait_held(&srv, 1048576.0);

    // Stream B declares another MiB: 2 MiB would be held, over 1.5 MiB.
    let e = segment_error(srv.url(), messages()).await;
    assert_refused(
        &e,
        Code::ResourceExhausted,
        &["max_upload_memory_bytes", "1048576 of its 1572864 bytes"],
    );

    // A KServe request of 32 windows of 16³ float32 (512 KiB and its message framing) does not fit beside A's MiB
    // either; refused before the model runs, it holds nothing.
    let e = slow_request(srv.url(), 32).await.unwrap_err();
    assert_refused(
        &e,
        Code::ResourceExhausted,
        &["max_upload_memory_bytes", "1048576 of its 1572864 bytes"],
    );
    assert_eq!(held(&srv), 1048576.0);
    // One of 4 windows (64 KiB) fits and is served meanwhile.
    assert_eq!(
        slow_request(srv.url(), 4).await.unwrap(),
        vec![4, 2, 16, 16, 16]
    );
    assert_eq!(held(&srv), 1048576.0);

    // A finishes its upload and is served; its bytes are given back, and B's retry fits.
    for m in a_messages {
        tx.send(m).await.unwrap();
    }
    drop(tx);
    let (summary, mask) = a.await.unwrap().unwrap();
    assert_eq!(summary.shape, vec![64, 64, 64]);
    assert_eq!(mask.len() as u64, summary.mask_bytes);
    wait_held(&srv, 0.0);
    let mut c = SegmentationClient::connect(srv.url()).await.unwrap();
    let r = c.segment(tokio_stream::iter(messages())).await.unwrap();
    let (summary, _) = collect_segment(r.into_inner()).await.unwrap();
    assert_eq!(summary.shape, vec![64, 64, 64]);
    assert_eq!(held(&srv), 0.0);
    let m = srv.metrics_text();
    assert_eq!(
        sample(
            &m,
            r#"medmae_requests_total{service="kserve",method="ModelInfer",model="slow",status="resource_exhausted"}"#
        ),
        1.0,
        "{m}"
    );
}
