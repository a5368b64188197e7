//! The DICOM node of `medmae-serve`: receive series from a PACS or scanner over DIMSE (C-ECHO and C-STORE SCP),
//! spool them durably, route each completed series to a model, segment it through the same path as the gRPC
//! Segmentation service and deliver the DICOM SEG by C-STORE SCU or STOW-RS — exactly once per (series, model)
//! across crashes.
//!
//! Layout: `config` and `rules` (the `[dicom]` section), `dimse` (command sets), `scp` (listener and associations), `store` (C-STORE SCP checks), `spool`
//! (durable reception), `complete` and `routing` (series → job), `queue` (the durable job queue), `worker` (segment
//! and deliver), `scu` (C-STORE SCU and STOW-RS), `tls`, `metrics`, `fsutil`, `cli` (`medmae-serve queue …`).

pub mod cli;
pub mod complete;
pub mod config;
pub mod dimse;
pub mod fsutil;
pub mod metrics;
pub mod queue;
pub mod routing;
pub mod rules;
pub mod scp;
pub mod scu;
pub mod spool;
pub mod store;
pub mod tls;
pub mod worker;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

pub use config::DicomConfig;

use crate::error::ServeError;
use crate::state::Shared;
use metrics::DicomMetrics;
use queue::Layout;
use spool::{Spool, SpoolLimits};

/// gRPC health service name that reports the DICOM node.
pub const HEALTH_NAME: &str = "medmae.DicomNode";

/// How often open series are checked for completion.
const TICK: Duration = Duration::from_millis(200);
/// How often the spool's size is measured again.
const RECOUNT: Duration = Duration::from_secs(30);

/// What the listener, the completion ticker and the worker share.
pub struct NodeCtx {
    /// Configuration.
    pub cfg: DicomConfig,
    /// The reception spool.
    pub spool: Spool,
    /// Metrics.
    pub metrics: DicomMetrics,
    /// The server's models, limits and compute slots.
    pub shared: Arc<Shared>,
    /// Instances stored since start (for `--dicom-fault-pause store:N`).
    pub stored: AtomicU64,
    /// Wakes the completion ticker (an association was released).
    pub wake: Notify,
    /// Wakes the worker (a job was queued).
    pub wake_worker: Notify,
}

/// Resolves once `stop` turns true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Stop here until the process is killed (crash tests: `--dicom-fault-pause`).
pub(crate) async fn pause(point: &str) {
    tracing::warn!(
        point,
        "fault pause reached (--dicom-fault-pause): waiting to be killed"
    );
    std::future::pending::<()>().await;
}

fn startup(what: &str, e: impl std::fmt::Display) -> ServeError {
    ServeError::Startup(format!("DICOM node: {what}: {e}"))
}

/// Check the configuration against the loaded models, open the spool, bind the listener and start the listener,
/// completion ticker and worker tasks; they stop when `stop` turns true. Returns the bound address.
pub async fn start(
    cfg: DicomConfig,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    health: HealthReporter,
) -> Result<SocketAddr, ServeError> {
    for r in &cfg.routes {
        shared
            .repo
            .segmentation_model(&r.model)
            .map_err(|e| startup("dicom.route", e))?;
    }
    if cfg.allowed_calling_aes.is_none() {
        tracing::warn!(
            "DICOM node: no dicom.allowed_calling_aes: any calling AE title is accepted (set the list of your PACS \
             and scanners)"
        );
    }
    if cfg.routes.is_empty() {
        tracing::warn!("DICOM node: no [[dicom.route]] rules: every series is unmatched");
    }
    let tls = cfg
        .tls
        .as_ref()
        .map(tls::server_config)
        .transpose()
        .map_err(|e| startup("TLS", e))?;
    let limits = SpoolLimits {
        max_instances: cfg.max_instances_per_series,
        max_series_bytes: cfg.max_series_bytes,
        quota_bytes: cfg.spool_quota_bytes,
    };
    let layout = Layout::new(&cfg.spool);
    let spool = tokio::task::spawn_blocking(move || -> Result<Spool, String> {
        let spool = Spool::open(layout, limits).map_err(|e| e.to_string())?;
        for e in queue::settle(spool.layout()) {
            tracing::error!(error = %e, "settling a job left by a crash failed");
        }
        Ok(spool)
    })
    .await
    .map_err(|e| startup("spool", e))?
    .map_err(|e| startup(&format!("spool {}", cfg.spool.display()), e))?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| startup("binding the DICOM address", format!("{}: {e}", cfg.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| startup("DICOM address", e))?;
    tracing::info!(
        dicom = %addr, ae_title = %cfg.ae_title, tls = tls.is_some(), routes = cfg.routes.len(),
        destinations = cfg.destinations.len(), open_series = spool.open_series(), spool_bytes = spool.used(),
        "DICOM node listening"
    );
    let ctx = Arc::new(NodeCtx {
        metrics: shared.metrics.dicom.clone(),
        cfg,
        spool,
        shared,
        stored: AtomicU64::new(0),
        wake: Notify::new(),
        wake_worker: Notify::new(),
    });
    ctx.metrics.up.set(1);
    tokio::spawn(scp::serve(listener, ctx.clone(), tls, stop.clone()));
    health
        .set_service_status(HEALTH_NAME, ServingStatus::Serving)
        .await;
    tokio::spawn(ticker(ctx.clone(), stop.clone(), health));
    tokio::spawn(worker::run(ctx, stop));
    Ok(addr)
}

/// Seal series that are due, turn sealed series into jobs, keep the gauges and the health status current (NOT_SERVING
/// while the listener is down or the spool is full).
async fn ticker(ctx: Arc<NodeCtx>, mut stop: watch::Receiver<bool>, health: HealthReporter) {
    let mut last_recount = Instant::now();
    let mut serving = true;
    loop {
        let ok = ctx.metrics.up.get() == 1 && ctx.spool.used() < ctx.cfg.spool_quota_bytes;
        if ok != serving && !*stop.borrow() {
            serving = ok;
            let status = if ok {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            tracing::warn!(
                serving = ok,
                spool_bytes = ctx.spool.used(),
                "DICOM node health changed"
            );
            health.set_service_status(HEALTH_NAME, status).await;
        }
        let c = ctx.clone();
        let recount = last_recount.elapsed() >= RECOUNT;
        if recount {
            last_recount = Instant::now();
        }
        let queued = tokio::task::spawn_blocking(move || tick(&c, recount))
            .await
            .unwrap_or(false);
        if queued {
            ctx.wake_worker.notify_one();
        }
        tokio::select! {
            _ = ctx.wake.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
            _ = stopped(&mut stop) => break,
        }
    }
}

/// One completion pass; true if a job may have been queued.
fn tick(ctx: &NodeCtx, recount: bool) -> bool {
    if recount {
        ctx.spool.recount();
    }
    let mut sealed = false;
    for series in ctx.spool.due(ctx.cfg.series_idle) {
        match ctx.spool.seal(&series) {
            Ok(Some(_)) => sealed = true,
            Ok(None) => {}
            Err(e) => {
                tracing::error!(series = %series, error = %e, "sealing a series failed; will retry")
            }
        }
    }
    let layout = ctx.spool.layout();
    let pending = !fsutil::subdirs(&layout.sealed()).is_empty();
    if pending {
        let freed = complete::complete_all(layout, &ctx.cfg, &ctx.metrics);
        ctx.spool.freed(freed);
    }
    ctx.metrics.spool_bytes.set(ctx.spool.used() as i64);
    sealed || pending
}
