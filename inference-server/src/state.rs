//! The state every service shares, and the one path by which requests reach a backend: admission, a blocking
//! worker thread and the request deadline.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::config::Limits;
use crate::error::{code_label, ServeError};
use crate::model::Repository;
use crate::ops::{accounting, Admission, Metrics, UploadBudget};

/// Set when the request a compute job serves is abandoned (its deadline passed, the client went away): a job's
/// window predictor then stops before its next batch, so the compute slot is freed instead of finishing work nobody
/// will receive.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// Whether the request was abandoned.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Mark the request abandoned.
    pub fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Sets its [`Cancel`] when dropped: held by the future that awaits a compute job.
struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.set();
    }
}

/// Shared by the gRPC services.
pub struct Shared {
    /// Loaded models.
    pub repo: Arc<Repository>,
    /// Concurrency gate.
    pub admission: Admission,
    /// Bound on the upload bytes all requests hold in memory.
    pub uploads: Arc<UploadBudget>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Limits.
    pub limits: Limits,
    /// Set once shutdown starts (ServerReady turns false).
    pub draining: AtomicBool,
}

impl Shared {
    /// Bundle the parts.
    pub fn new(repo: Arc<Repository>, metrics: Arc<Metrics>, limits: Limits) -> Self {
        let admission = Admission::new(limits.max_concurrent, limits.max_queue, metrics.clone());
        let uploads =
            UploadBudget::new(limits.max_upload_memory_bytes, metrics.upload_bytes.clone());
        Self {
            repo,
            admission,
            uploads,
            metrics,
            limits,
            draining: AtomicBool::new(false),
        }
    }

    /// True until shutdown starts.
    pub fn ready(&self) -> bool {
        !self.draining.load(Ordering::SeqCst)
    }

    /// Shutdown has started: ServerReady and ModelReady answer false from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Metrics label for a model name (the resolved one where the request left it to the server): itself if known,
    /// "" if none, "_unknown" otherwise (so arbitrary client strings cannot grow the label set).
    pub fn model_label(&self, name: &str) -> String {
        if name.is_empty() {
            String::new()
        } else if self.repo.get(name, "").is_ok() {
            name.to_string()
        } else {
            "_unknown".to_string()
        }
    }

    /// Run blocking work `f` in a compute slot on a worker thread. `f` gets a [`Cancel`] that is set when this
    /// future is dropped before the job ends (the request deadline, a client that went away).
    pub async fn compute<T, F>(&self, f: F) -> Result<T, ServeError>
    where
        T: Send + 'static,
        F: FnOnce(Cancel) -> Result<T, ServeError> + Send + 'static,
    {
        let cancel = Cancel::default();
        let _guard = CancelOnDrop(cancel.clone());
        let permit = self.admission.acquire().await?;
        let handle = tokio::task::spawn_blocking(move || {
            let _slot = permit;
            f(cancel)
        });
        handle
            .await
            .map_err(|e| ServeError::Internal(format!("worker thread failed: {e}")))?
    }

    /// Apply the request deadline to `fut`, log and record the outcome (and tell the edge accounting this call is
    /// recorded). `model` is the resolved model name.
    pub async fn instrument<T>(
        &self,
        service: &str,
        method: &str,
        model: &str,
        fut: impl Future<Output = Result<T, ServeError>>,
    ) -> Result<T, tonic::Status> {
        let start = Instant::now();
        let label = self.model_label(model);
        accounting::label_model(&label);
        let timeout = self.limits.request_timeout;
        let result = match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(ServeError::Deadline(timeout.as_secs_f64())),
        };
        let secs = start.elapsed().as_secs_f64();
        accounting::handled(&label);
        match &result {
            Ok(_) => {
                self.metrics.record(service, method, &label, "ok", secs);
                tracing::info!(service, method, model = %label, status = "ok", seconds = secs, "request finished");
            }
            Err(e) => {
                self.metrics
                    .record(service, method, &label, e.metric_label(), secs);
                tracing::warn!(service, method, model = %label, status = code_label(e.code()), seconds = secs, error = %e.log_text(), "request failed");
            }
        }
        result.map_err(tonic::Status::from)
    }
}
