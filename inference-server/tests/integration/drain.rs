//! Shutdown as orchestrators see it: on SIGTERM every health service turns NOT_SERVING while the server keeps
//! accepting for the grace period, in-flight work finishes and the process exits 0; a drain timeout or a second
//! signal abandons running requests, logs them and exits with the documented status.

use std::time::{Duration, Instant};

use server::proto::inference::ServerReadyRequest;
use server::proto::medmae_v1::segmentation_client::SegmentationClient;
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

use crate::common::*;

/// Every health service of the slow fixture repository: the server, each gRPC service, the model.
const SERVICES: [&str; 4] = [
    "",
    "inference.GRPCInferenceService",
    "medmae.v1.Segmentation",
    "slow",
];

/// A health client on a new connection.
async fn health_client(url: &str) -> HealthClient<Channel> {
    let ch = Channel::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    HealthClient::new(ch)
}

/// A health check over a new connection (so a passing check also shows the listener still accepts).
async fn check_fresh(url: &str, service: &str) -> ServingStatus {
    let mut h = health_client(url).await;
    let s = h
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("health of {service:?}: {e}"))
        .into_inner()
        .status;
    ServingStatus::try_from(s).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_every_health_service_not_serving_during_the_grace_then_finishes_a_segment_and_exits_zero(
) {
    const GRACE: Duration = Duration::from_secs(3);
    let mut srv = start_server(
        "slow_repo",
        &[
            "--backend",
            "ort",
            "--drain-grace",
            "3",
            "--drain-timeout",
            "60",
        ],
    );
    let url = srv.url();
    for s in SERVICES {
        assert_eq!(check_fresh(&url, s).await, ServingStatus::Serving, "{s:?}");
    }
    // A health Watch stream, as gRPC clients with health checking keep open.
    let mut watch = health_client(&url)
        .await
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap().status;
    assert_eq!(
        ServingStatus::try_from(first).unwrap(),
        ServingStatus::Serving
    );

    // A Segment request (default model) that is computing when the signal arrives.
    let shape = [16u64, 16, 24];
    let segment = {
        let url = url.clone();
        tokio::spawn(async move {
            let mut c = SegmentationClient::connect(url).await.unwrap();
            let reply = c
                .segment(tokio_stream::iter(raw_segment_messages("", shape, false)))
                .await?;
            collect_segment(reply.into_inner()).await
        })
    };
    wait_in_flight(&srv, 1);
    srv.sigterm();
    let signalled = Instant::now();

    for s in SERVICES {
        let mut status = check_fresh(&url, s).await;
        while status == ServingStatus::Serving && signalled.elapsed() < GRACE {
            tokio::time::sleep(Duration::from_millis(20)).await;
            status = check_fresh(&url, s).await;
        }
        assert_eq!(status, ServingStatus::NotServing, "{s:?}");
    }
    let mut k = kserve_client(&url).await;
    let ready = k.server_ready(ServerReadyRequest {}).await.unwrap();
    assert!(!ready.into_inner().ready, "ServerReady during the drain");
    let seen = signalled.elapsed();
    assert!(
        seen < GRACE,
        "NOT_SERVING everywhere took {seen:?}, the grace is {GRACE:?}"
    );
    let next = watch.message().await.unwrap().unwrap().status;
    assert_eq!(
        ServingStatus::try_from(next).unwrap(),
        ServingStatus::NotServing
    );
    assert!(
        srv.alive(),
        "the server must keep serving through the grace period"
    );

    let (summary, mask) = segment
        .await
        .unwrap()
        .expect("the in-flight Segment request failed during the drain");
    assert_eq!(summary.model_name, "slow");
    assert_eq!(summary.shape, shape.to_vec());
    assert!(!mask.is_empty());
    let status = srv.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "logs:\n{}", srv.logs());
    assert!(
        signalled.elapsed() >= GRACE,
        "exited {:?} after SIGTERM, before the grace period ended",
        signalled.elapsed()
    );
    // The Watch stream ended (the server closed it) rather than holding the drain open.
    match watch.message().await {
        Ok(None) => {}
        Err(e) => assert!(
            matches!(
                e.code(),
                Code::Unavailable | Code::Unknown | Code::Cancelled
            ),
            "{e}"
        ),
        Ok(Some(m)) => panic!("unexpected Watch message after exit: {m:?}"),
    }
    let logs = srv.logs();
    assert!(logs.contains("drained"), "{logs}");
    assert!(!logs.contains("abandoned"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_timeout_abandons_the_running_request_with_status_3_and_a_second_signal_exits_at_once(
) {
    let mut srv = start_server(
        "slow_repo",
        &[
            "--backend",
            "ort",
            "--drain-grace",
            "0",
            "--drain-timeout",
            "0.3",
        ],
    );
    let pending = tokio::spawn(slow_request(srv.url(), 8));
    wait_in_flight(&srv, 1);
    srv.sigterm();
    let status = srv.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(3), "logs:\n{}", srv.logs());
    let logs = srv.logs();
    assert!(
        logs.contains("request abandoned")
            && logs.contains("method=ModelInfer")
            && logs.contains("model=slow")
            && logs.contains("drain timeout"),
        "{logs}"
    );
    assert!(!logs.contains("start-up"), "{logs}");
    assert!(
        pending.await.unwrap().is_err(),
        "an abandoned request cannot succeed"
    );

    let mut srv = start_server(
        "slow_repo",
        &[
            "--backend",
            "ort",
            "--drain-grace",
            "60",
            "--drain-timeout",
            "60",
        ],
    );
    let _pending = tokio::spawn(slow_request(srv.url(), 8));
    wait_in_flight(&srv, 1);
    srv.sigterm();
    std::thread::sleep(Duration::from_millis(300));
    assert!(srv.alive(), "the first signal must start a drain, not exit");
    let second = Instant::now();
    srv.sigterm();
    let status = srv.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(4), "logs:\n{}", srv.logs());
    assert!(
        second.elapsed() < Duration::from_secs(5),
        "{:?}",
        second.elapsed()
    );
    let logs = srv.logs();
    assert!(
        logs.contains("request abandoned") && logs.contains("second signal"),
        "{logs}"
    );
}
