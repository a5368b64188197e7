//! Wiring: load the repository, build the gRPC services (KServe v2, segmentation, health, reflection) with TLS,
//! auth and message limits, serve `/metrics`, start the optional DICOM node, and drain gracefully on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Status};
use tonic_health::ServingStatus;

use crate::config::ServerConfig;
use crate::error::ServeError;
use crate::kserve::KServe;
use crate::model::Repository;
use crate::ops::{metrics, BearerAuth, Metrics};
use crate::proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use crate::proto::medmae_v1::segmentation_server::SegmentationServer;
use crate::segment::SegmentService;
use crate::state::Shared;

/// Addresses actually bound (the configured port may be 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// gRPC.
    pub grpc: SocketAddr,
    /// `/metrics` HTTP, if enabled.
    pub metrics: Option<SocketAddr>,
    /// DICOM listener, if enabled.
    pub dicom: Option<SocketAddr>,
}

fn startup(what: &str, e: impl std::fmt::Display) -> ServeError {
    ServeError::Startup(format!("{what}: {e}"))
}

fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>, ServeError> {
    std::fs::read(path).map_err(|e| startup(what, format!("{}: {e}", path.display())))
}

fn tls(cfg: &ServerConfig) -> Result<Option<ServerTlsConfig>, ServeError> {
    let Some(t) = &cfg.tls else { return Ok(None) };
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(
        read(&t.cert, "TLS certificate")?,
        read(&t.key, "TLS key")?,
    ));
    if let Some(ca) = &t.client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca, "TLS client CA")?));
    }
    Ok(Some(tls))
}

/// Load models and serve until `shutdown` resolves, then stop accepting and let in-flight requests finish within the
/// drain timeout. `on_bound` is called once both listeners are bound.
pub async fn run(
    cfg: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_bound: impl FnOnce(Bound),
) -> Result<(), ServeError> {
    let (dir, opts) = (cfg.model_repository.clone(), cfg.backend.clone());
    let repo = tokio::task::spawn_blocking(move || Repository::load(&dir, &opts))
        .await
        .map_err(|e| startup("loading models", e))??;
    let repo = Arc::new(repo);
    let auth = cfg
        .auth_tokens
        .as_deref()
        .map(BearerAuth::from_file)
        .transpose()?;
    let metrics = Arc::new(Metrics::new());
    let shared = Arc::new(Shared::new(
        repo.clone(),
        metrics.clone(),
        cfg.limits.clone(),
    ));

    let (health, health_service) = tonic_health::server::health_reporter();
    let mut health_names: Vec<String> = vec![
        "inference.GRPCInferenceService".into(),
        "medmae.v1.Segmentation".into(),
    ];
    health_names.extend(repo.models().map(|m| m.info.name.clone()));
    for n in &health_names {
        health.set_service_status(n, ServingStatus::Serving).await;
    }
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| startup("reflection", e))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| startup("reflection", e))?;

    let max = cfg.limits.max_message_bytes;
    let kserve = GrpcInferenceServiceServer::new(KServe::new(shared.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let segment = SegmentationServer::new(SegmentService::new(shared.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);

    let auth_metrics = metrics.clone();
    let check = move |req: Request<()>| -> Result<Request<()>, Status> {
        match &auth {
            None => Ok(req),
            Some(a) => a.check(&req).map(|()| req).inspect_err(|_| {
                auth_metrics.auth_failures.inc();
            }),
        }
    };

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| startup("binding the gRPC address", format!("{}: {e}", cfg.listen)))?;
    let grpc_addr = listener
        .local_addr()
        .map_err(|e| startup("gRPC address", e))?;
    let metrics_listener = match cfg.metrics_listen {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .map_err(|e| startup("binding the metrics address", format!("{a}: {e}")))?,
        ),
        None => None,
    };
    let metrics_addr = metrics_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()
        .map_err(|e| startup("metrics address", e))?;

    // One shutdown signal fans out to: readiness/health, the gRPC server, the metrics server and the drain timer.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let dicom_addr = match cfg.dicom.clone() {
        Some(d) => {
            let addr = crate::dicom_node::start(d, shared.clone(), stop_rx.clone(), health.clone())
                .await?;
            health_names.push(crate::dicom_node::HEALTH_NAME.into());
            Some(addr)
        }
        None => None,
    };
    {
        let shared = shared.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!(
                "shutdown requested: refusing new connections, draining in-flight requests"
            );
            shared.draining.store(true, Ordering::SeqCst);
            for n in &health_names {
                health
                    .set_service_status(n, ServingStatus::NotServing)
                    .await;
            }
            let _ = stop_tx.send(true);
        });
    }
    if let Some(l) = metrics_listener {
        let (m, s) = (metrics.clone(), stopped(stop_rx.clone()));
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(l, m, s).await {
                tracing::error!(error = %e, "metrics server failed");
            }
        });
    }

    let mut builder = Server::builder();
    if let Some(t) = tls(&cfg)? {
        builder = builder.tls_config(t).map_err(|e| startup("TLS", e))?;
    }
    let router = builder
        .layer(tonic::service::InterceptorLayer::new(check))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(kserve)
        .add_service(segment);
    tracing::info!(grpc = %grpc_addr, metrics = ?metrics_addr, models = %repo.names(), tls = cfg.tls.is_some(), mtls = cfg.tls.as_ref().is_some_and(|t| t.client_ca.is_some()), auth = cfg.auth_tokens.is_some(), "serving");
    on_bound(Bound {
        grpc: grpc_addr,
        metrics: metrics_addr,
        dicom: dicom_addr,
    });

    let serve =
        router.serve_with_incoming_shutdown(TcpIncoming::from(listener), stopped(stop_rx.clone()));
    let drain_limit = cfg.drain_timeout;
    let drain_timer = async move {
        stopped(stop_rx).await;
        tokio::time::sleep(drain_limit).await;
    };
    tokio::select! {
        r = serve => r.map_err(|e| startup("gRPC server", e))?,
        _ = drain_timer => {
            return Err(ServeError::Startup(format!("drain timeout: requests still running after {:.1} s were abandoned", drain_limit.as_secs_f64())));
        }
    }
    tracing::info!("drained; exiting");
    Ok(())
}
