//! Wiring: load the repository, build the gRPC services (KServe v2, segmentation, health, reflection) with TLS,
//! auth, message limits and edge accounting, serve `/metrics`, start the optional DICOM node, and hand the life cycle
//! to [`crate::ops::drain`].

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Status};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::config::ServerConfig;
use crate::error::ServeError;
use crate::kserve::KServe;
use crate::model::Repository;
use crate::ops::{accounting, metrics, Accounting, BearerAuth, Calls, Drain, Exit, Metrics};
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

const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

fn startup(what: &str, e: impl std::fmt::Display) -> ServeError {
    ServeError::Startup(format!("{what}: {e}"))
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, ServeError> {
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

/// Load the models and build the state every service shares.
async fn load(cfg: &ServerConfig) -> Result<Arc<Shared>, ServeError> {
    let (dir, opts) = (cfg.model_repository.clone(), cfg.backend.clone());
    let repo = tokio::task::spawn_blocking(move || Repository::load(&dir, &opts))
        .await
        .map_err(|e| startup("loading models", e))??;
    Ok(Arc::new(Shared::new(
        Arc::new(repo),
        Arc::new(Metrics::new()),
        cfg.limits.clone(),
    )))
}

/// Every health service name: the whole server `""`, each gRPC service, each model; all SERVING now.
async fn health_services(health: &HealthReporter, repo: &Repository) -> Vec<String> {
    let mut names: Vec<String> = vec![
        String::new(),
        <GrpcInferenceServiceServer<KServe> as NamedService>::NAME.into(),
        <SegmentationServer<SegmentService> as NamedService>::NAME.into(),
    ];
    names.extend(repo.models().map(|m| m.info.name.clone()));
    for n in &names {
        health.set_service_status(n, ServingStatus::Serving).await;
    }
    names
}

/// Metrics label of a gRPC service by its full name.
fn service_label(full: &str) -> Option<&'static str> {
    if full == <GrpcInferenceServiceServer<KServe> as NamedService>::NAME {
        Some(crate::kserve::SERVICE)
    } else if full == <SegmentationServer<SegmentService> as NamedService>::NAME {
        Some(crate::segment::SERVICE)
    } else if full == HEALTH_SERVICE {
        Some("health")
    } else if full.starts_with("grpc.reflection.") {
        Some("reflection")
    } else {
        None
    }
}

/// The encoded descriptor sets of every service served.
const DESCRIPTOR_SETS: [&[u8]; 4] = [
    crate::proto::FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
];

/// The gRPC services: health, reflection (v1 and v1alpha), KServe v2 and segmentation, with the message limit.
fn routes(
    shared: &Arc<Shared>,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
) -> Result<Routes, ServeError> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| startup("reflection", e))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| startup("reflection", e))?;
    let max = shared.limits.max_message_bytes;
    let kserve = GrpcInferenceServiceServer::new(KServe::new(shared.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let segment = SegmentationServer::new(SegmentService::new(shared.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    Ok(Routes::new(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(kserve)
        .add_service(segment))
}

/// The bearer-token check as a tonic interceptor (every call passes when no token file is configured).
fn auth_check(
    auth: Option<BearerAuth>,
    metrics: Arc<Metrics>,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req: Request<()>| match &auth {
        None => Ok(req),
        Some(a) => a.check(&req).map(|()| req).inspect_err(|_| {
            metrics.auth_failures.inc();
        }),
    }
}

/// Bind the gRPC and (if enabled) metrics listeners.
async fn bind(cfg: &ServerConfig) -> Result<(TcpListener, Option<TcpListener>, Bound), ServeError> {
    let grpc = TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| startup("binding the gRPC address", format!("{}: {e}", cfg.listen)))?;
    let metrics = match cfg.metrics_listen {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .map_err(|e| startup("binding the metrics address", format!("{a}: {e}")))?,
        ),
        None => None,
    };
    let bound = Bound {
        grpc: grpc.local_addr().map_err(|e| startup("gRPC address", e))?,
        metrics: metrics
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()
            .map_err(|e| startup("metrics address", e))?,
        dicom: None,
    };
    Ok((grpc, metrics, bound))
}

/// Load models and serve until the first message on `signals` (SIGTERM/SIGINT), then drain as described in
/// [`crate::ops::drain`]; a second message ends the drain at once. `on_bound` is called once both listeners are
/// bound. Returns how the drain ended (its [`Exit::code`] is the process exit status).
pub async fn run(
    cfg: ServerConfig,
    mut signals: mpsc::Receiver<()>,
    on_bound: impl FnOnce(Bound),
) -> Result<Exit, ServeError> {
    let shared = load(&cfg).await?;
    let metrics = shared.metrics.clone();
    let auth = cfg
        .auth_tokens
        .as_deref()
        .map(BearerAuth::from_file)
        .transpose()?;
    let (health, health_server) = tonic_health::server::health_reporter();
    let services = health_services(&health, &shared.repo).await;
    let calls = Arc::new(Calls::new());
    let accounting = Accounting::new(
        calls.clone(),
        metrics.clone(),
        accounting::Routes::from_descriptor_sets(&DESCRIPTOR_SETS, service_label)?,
        cfg.limits.max_message_bytes,
    );
    let mut builder = Server::builder();
    if let Some(t) = tls(&cfg)? {
        builder = builder.tls_config(t).map_err(|e| startup("TLS", e))?;
    }
    let router = builder
        .layer(accounting)
        .layer(tonic::service::InterceptorLayer::new(auth_check(
            auth.clone(),
            metrics.clone(),
        )))
        .add_routes(routes(&shared, health_server)?);

    let (grpc_listener, metrics_listener, bound) = bind(&cfg).await?;
    let (stop, stopped) = watch::channel(false);
    let mut services = services;
    let dicom = match cfg.dicom.clone() {
        Some(d) => {
            let addr = crate::dicom_node::start(d, shared.clone(), stopped.clone(), health.clone())
                .await?;
            services.push(crate::dicom_node::HEALTH_NAME.into());
            Some(addr)
        }
        None => None,
    };
    let bound = Bound { dicom, ..bound };
    let until = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // `/metrics` answers until the process ends (its task is dropped with the runtime).
    if let Some(l) = metrics_listener {
        let m = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(l, m, auth).await {
                tracing::error!(error = %e, "metrics server failed");
            }
        });
    }
    tracing::info!(grpc = %bound.grpc, metrics = ?bound.metrics, models = %shared.repo.names(), tls = cfg.tls.is_some(), mtls = cfg.tls.as_ref().is_some_and(|t| t.client_ca.is_some()), auth = cfg.auth_tokens.is_some(), "serving");
    on_bound(bound);

    let serve =
        router.serve_with_incoming_shutdown(TcpIncoming::from(grpc_listener), until(stopped));
    let drain = Drain {
        grace: cfg.drain_grace,
        timeout: cfg.drain_timeout,
        health,
        services,
        shared,
        calls,
        stop,
    };
    drain.run(serve, &mut signals).await
}
