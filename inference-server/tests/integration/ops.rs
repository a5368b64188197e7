//! Operations: bearer tokens on every RPC, mutual TLS, queue limits, deadlines (the drain on SIGTERM: `drain.rs`).

use client::{Client, ClientOptions};
use server::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use server::proto::inference::ServerLiveRequest;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request};
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

use crate::common::*;

const TOKEN: &str = "s3cret-token-0123456789";

fn with<T>(token: Option<&str>, body: T) -> Request<T> {
    let mut r = Request::new(body);
    if let Some(t) = token {
        r.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(format!("Bearer {t}")).unwrap(),
        );
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_guards_every_rpc() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("# serving tokens\n{TOKEN}\n")).unwrap();
    let srv = start_server(
        "repo",
        &[
            "--backend",
            "tract",
            "--auth-tokens",
            tokens.to_str().unwrap(),
        ],
    );
    let ch = tonic::transport::Channel::from_shared(srv.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(ch.clone());
    let mut kserve = GrpcInferenceServiceClient::new(ch.clone());
    let e = health
        .check(with(
            None,
            HealthCheckRequest {
                service: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(
        e.message().contains("missing bearer token"),
        "{}",
        e.message()
    );
    let e = kserve
        .server_live(with(Some("wrong-token-0000000000"), ServerLiveRequest {}))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::Unauthenticated, "invalid bearer token")
    );
    let ok = health
        .check(with(
            Some(TOKEN),
            HealthCheckRequest {
                service: "demo".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.status, 1, "SERVING");
    assert!(
        kserve
            .server_live(with(Some(TOKEN), ServerLiveRequest {}))
            .await
            .unwrap()
            .into_inner()
            .live
    );
    // The library client sends the token itself.
    let c = Client::connect(&ClientOptions {
        server: srv.url(),
        token: Some(TOKEN.into()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(c.list_models().await.unwrap()[0].name, "demo");
    let metrics = srv.metrics_text_as(Some(TOKEN));
    assert!(
        metrics.contains("medmae_auth_failures_total 2"),
        "{metrics}"
    );
    // Refused by the interceptor, before any handler: still counted with their status.
    for (service, method) in [("health", "Check"), ("kserve", "ServerLive")] {
        let line = format!(
            r#"medmae_requests_total{{service="{service}",method="{method}",model="",status="unauthenticated"}} 1"#
        );
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }
    // /metrics takes the same tokens.
    for bad in [None, Some("wrong-token-0000000000")] {
        let refused = srv.metrics_text_as(bad);
        assert!(
            refused.starts_with("HTTP/1.1 401") && !refused.contains("medmae_requests_total"),
            "{refused}"
        );
    }
    assert!(srv
        .metrics_text_as(Some(TOKEN))
        .contains("medmae_auth_failures_total 4"));
    assert!(!srv.logs().contains(TOKEN), "token leaked into logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_unknown_client_certs() {
    let pki = Pki::new();
    let srv = start_server(
        "repo",
        &[
            "--backend",
            "tract",
            "--tls-cert",
            &pki.path("server.pem"),
            "--tls-key",
            &pki.path("server.key"),
            "--tls-client-ca",
            &pki.path("ca.pem"),
        ],
    );
    let url = format!("https://localhost:{}", srv.grpc.port());
    let opts = |cert: Option<&str>| ClientOptions {
        server: url.clone(),
        ca_cert: Some(pki.path("ca.pem").into()),
        client_cert: cert.map(|c| pki.path(&format!("{c}.pem")).into()),
        client_key: cert.map(|c| pki.path(&format!("{c}.key")).into()),
        ..Default::default()
    };
    let good = Client::connect(&opts(Some("client"))).await.unwrap();
    assert_eq!(good.health("").await.unwrap(), "SERVING");
    for bad in [None, Some("rogue")] {
        // The handshake (or the first call on it) must fail without a certificate from the trusted CA.
        let r = match Client::connect(&opts(bad)).await {
            Ok(c) => c.health("").await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        assert!(r.is_err(), "client cert {bad:?} was accepted");
    }
    let plain = Client::connect(&ClientOptions {
        server: format!("http://{}", srv.grpc),
        ..Default::default()
    })
    .await;
    let plain_ok = match plain {
        Ok(c) => c.health("").await.is_ok(),
        Err(_) => false,
    };
    assert!(!plain_ok, "plaintext call to a TLS server succeeded");
    assert_eq!(good.health("demo").await.unwrap(), "SERVING");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_is_resource_exhausted_and_deadline_is_enforced() {
    let srv = start_server(
        "slow_repo",
        &[
            "--backend",
            "ort",
            "--max-concurrent",
            "1",
            "--max-queue",
            "0",
        ],
    );
    let first = tokio::spawn(slow_request(srv.url(), 2));
    wait_in_flight(&srv, 1);
    let e = slow_request(srv.url(), 2).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().contains("server busy"), "{}", e.message());
    assert_eq!(first.await.unwrap().unwrap(), vec![2, 2, 16, 16, 16]);
    drop(srv);

    let srv = start_server(
        "slow_repo",
        &["--backend", "ort", "--request-timeout", "0.05"],
    );
    let e = slow_request(srv.url(), 2).await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{}", e.message());
    assert!(
        e.message().contains("deadline of 0.05 s"),
        "{}",
        e.message()
    );
}
