//! The job worker: segments a queued series through the same path as the gRPC Segmentation service
//! ([`crate::dicom::segment_series`] then [`crate::dicom::seg_bytes`]), writes the SEG into the job before sending
//! it, and delivers it to each destination not yet recorded, with retries and exponential backoff.
//!
//! Exactly once per (series, model): the job id is `<series>.<model>` (created once, see `complete`); the SEG is
//! encoded once and its bytes (SOP Instance UID included) are what every retry sends, so a kill between a
//! destination's acknowledgement and its record re-sends the identical instance, which a PACS stores once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::config::FaultPause;
use super::fsutil::{now_secs, write_atomic};
use super::metrics::DicomMetrics;
use super::queue::{self, JobRecord, JobState, QueueError, SEG_FILE};
use super::scu;
use super::{stopped, NodeCtx};
use crate::dicom::{self, DicomUpload};
use crate::error::ServeError;
use crate::pipeline::SegmentOptions;

/// How often the queue directory is looked at when nothing wakes the worker (picks up `queue retry`).
const POLL: Duration = Duration::from_secs(1);

/// Why a step stopped.
enum Stop {
    /// Try again after the backoff (counts an attempt).
    Retry(String),
    /// Give up now.
    Fail(String),
    /// A file-system error on the job itself (retried without counting, logged).
    Queue(QueueError),
}

impl From<QueueError> for Stop {
    fn from(e: QueueError) -> Self {
        Stop::Queue(e)
    }
}

/// Process jobs until `stop` turns true.
pub async fn run(ctx: Arc<NodeCtx>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            break;
        }
        let c = ctx.clone();
        let next = tokio::task::spawn_blocking(move || next_job(&c))
            .await
            .ok()
            .flatten();
        match next {
            Some((dir, rec)) => run_job(&ctx, dir, rec).await,
            None => {
                tokio::select! {
                    _ = ctx.wake_worker.notified() => {}
                    _ = tokio::time::sleep(POLL) => {}
                    _ = stopped(&mut stop) => break,
                }
            }
        }
    }
}

/// The oldest active job whose backoff has passed; updates the queued-jobs gauge.
fn next_job(ctx: &NodeCtx) -> Option<(PathBuf, JobRecord)> {
    let (jobs, bad) = queue::active_jobs(ctx.spool.layout());
    for e in bad {
        tracing::error!(error = %e, "unreadable job file skipped");
    }
    ctx.metrics.jobs_queued.set(jobs.len() as i64);
    let now = now_secs();
    jobs.into_iter().find(|(_, r)| r.next_attempt <= now)
}

async fn run_job(ctx: &Arc<NodeCtx>, dir: PathBuf, mut rec: JobRecord) {
    let result = match rec.state {
        JobState::Queued | JobState::Processing => match infer(ctx, &dir, &mut rec).await {
            Ok(()) => deliver(ctx, &dir, &mut rec).await,
            Err(e) => Err(e),
        },
        JobState::Sending => deliver(ctx, &dir, &mut rec).await,
        JobState::Done | JobState::Failed => {
            for e in queue::settle(ctx.spool.layout()) {
                tracing::error!(error = %e, "settling a finished job failed");
            }
            return;
        }
    };
    let outcome = match result {
        Ok(()) => finish(ctx, &dir, &mut rec),
        Err(Stop::Queue(e)) => Err(e),
        Err(Stop::Fail(msg)) => fail(ctx, &dir, &mut rec, msg),
        Err(Stop::Retry(msg)) => {
            rec.attempts += 1;
            if rec.attempts >= ctx.cfg.retry.attempts {
                fail(ctx, &dir, &mut rec, msg)
            } else {
                let wait = ctx.cfg.retry.backoff(rec.attempts);
                tracing::warn!(job = %rec.id, attempt = rec.attempts, of = ctx.cfg.retry.attempts, retry_in_s = wait.as_secs_f64(), "job step failed; will retry");
                rec.next_attempt = now_secs() + wait.as_secs().max(1);
                rec.error = Some(msg);
                queue::write_job(&dir, &mut rec)
            }
        }
    };
    if let Err(e) = outcome {
        tracing::error!(job = %rec.id, error = %e, "job bookkeeping failed; retrying shortly");
        tokio::time::sleep(POLL).await;
    }
}

fn finish(ctx: &NodeCtx, dir: &Path, rec: &mut JobRecord) -> Result<(), QueueError> {
    let freed = queue::finish(ctx.spool.layout(), dir, rec)?;
    ctx.spool.freed(freed);
    ctx.metrics.jobs_done.inc();
    tracing::info!(job = %rec.id, destinations = rec.delivered.len(), "job done");
    Ok(())
}

fn fail(ctx: &NodeCtx, dir: &Path, rec: &mut JobRecord, msg: String) -> Result<(), QueueError> {
    queue::fail(ctx.spool.layout(), dir, rec, msg)?;
    ctx.metrics.jobs_failed.inc();
    tracing::error!(job = %rec.id, attempts = rec.attempts, "job failed (reason in its job.json; `medmae-serve queue list` shows it, `queue retry` re-queues it)");
    Ok(())
}

/// Errors that a retry cannot fix (the series or the model is unusable).
fn permanent(e: &ServeError) -> bool {
    matches!(
        e,
        ServeError::InvalidArgument(_)
            | ServeError::TooLarge(_)
            | ServeError::ModelNotFound { .. }
            | ServeError::VersionNotFound { .. }
            | ServeError::Model { .. }
    )
}

/// Segment the job's series and write its SEG into the job directory.
async fn infer(ctx: &Arc<NodeCtx>, dir: &Path, rec: &mut JobRecord) -> Result<(), Stop> {
    rec.state = JobState::Processing;
    queue::write_job(dir, rec)?;
    tracing::info!(job = %rec.id, instances = rec.instances.len(), "job started: segmenting");
    let d = dir.to_path_buf();
    let files = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<Vec<u8>>> {
        super::fsutil::instance_files(&d)?
            .iter()
            .map(std::fs::read)
            .collect()
    })
    .await
    .map_err(|e| Stop::Retry(format!("worker thread: {e}")))?
    .map_err(|e| Stop::Retry(format!("reading the spooled instances: {e}")))?;
    let model = ctx
        .shared
        .repo
        .segmentation_model(&rec.model)
        .map_err(|e| Stop::Fail(e.to_string()))?;
    let mut limits = ctx.shared.limits.clone();
    limits.max_dicom_files = ctx.cfg.max_instances_per_series;
    limits.max_upload_bytes = ctx.cfg.max_series_bytes;
    let metrics = ctx.shared.metrics.clone();
    let seg = ctx
        .shared
        .compute(move |cancel| {
            let r = dicom::segment_series(
                &model,
                DicomUpload::Files(files),
                "",
                &limits,
                &SegmentOptions::default(),
                Some(&metrics),
                Some(&cancel),
            )?;
            dicom::seg_bytes(&model, &r.seg.mask, &r.source, false)
        })
        .await;
    let seg = match seg {
        Ok(s) => s,
        Err(e) if permanent(&e) => {
            tracing::warn!(job = %rec.id, kind = e.metric_label(), "segmentation refused the series");
            return Err(Stop::Fail(e.to_string()));
        }
        Err(e) => {
            tracing::warn!(job = %rec.id, kind = e.metric_label(), "segmentation failed");
            return Err(Stop::Retry(e.to_string()));
        }
    };
    if ctx.cfg.fault_pause == Some(FaultPause::Inference) {
        super::pause("inference").await;
    }
    let path = dir.join(SEG_FILE);
    write_atomic(&path, &seg).map_err(queue::io_at(&path))?;
    rec.state = JobState::Sending;
    rec.error = None;
    queue::write_job(dir, rec)?;
    Ok(())
}

/// Send the job's SEG to every destination not yet recorded as delivered.
async fn deliver(ctx: &Arc<NodeCtx>, dir: &Path, rec: &mut JobRecord) -> Result<(), Stop> {
    let path = dir.join(SEG_FILE);
    let seg = match tokio::fs::read(&path).await {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Sending without a SEG can only follow a manual edit: segment again.
            rec.state = JobState::Queued;
            queue::write_job(dir, rec)?;
            return Err(Stop::Retry("the SEG was missing; segmenting again".into()));
        }
        Err(e) => return Err(Stop::Queue(queue::io_at(&path)(e))),
    };
    for name in rec.destinations.clone() {
        if rec.delivered.contains(&name) {
            continue;
        }
        let Some(dest) = ctx.cfg.destinations.iter().find(|d| d.name == name) else {
            return Err(Stop::Fail(format!(
                "destination {name:?} is no longer configured"
            )));
        };
        match scu::deliver(dest, &ctx.cfg.ae_title, &seg, ctx.cfg.association_timeout).await {
            Ok(()) => {
                DicomMetrics::destination(&ctx.metrics.segs_sent, &name).inc();
                tracing::info!(job = %rec.id, destination = %name, "SEG delivered");
                if ctx.cfg.fault_pause == Some(FaultPause::Sent) {
                    super::pause("sent").await;
                }
                rec.delivered.push(name);
                rec.attempts = 0;
                queue::write_job(dir, rec)?;
            }
            Err(msg) => {
                DicomMetrics::destination(&ctx.metrics.send_failures, &name).inc();
                tracing::warn!(job = %rec.id, destination = %name, error = %msg, "SEG delivery failed");
                return Err(Stop::Retry(format!("destination {name}: {msg}")));
            }
        }
    }
    Ok(())
}
