//! Series completion: a sealed series is routed and becomes a job (one rename), or — when its job already exists —
//! is dropped as a duplicate re-send or held for review; unmatched series are kept or discarded per configuration.

use std::fs;
use std::path::Path;

use super::config::{DicomConfig, Unmatched};
use super::fsutil::{self, now_secs, rename_durable};
use super::metrics::DicomMetrics;
use super::queue::{self, io_at, JobRecord, JobState, Layout, QueueError, CLOSE_FILE};
use super::routing;
use super::spool::read_origin;

/// What became of a sealed series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completed {
    /// A new job.
    Queued {
        /// Job id.
        job: String,
        /// Instances.
        instances: usize,
    },
    /// Every instance was already in the series' job: nothing to do.
    Duplicate {
        /// The existing job.
        job: String,
    },
    /// New instances arrived after the job was created: kept under `held/`.
    Held {
        /// The existing job.
        job: String,
        /// Instances not in the job.
        new: usize,
    },
    /// No route; kept under `unmatched/`.
    UnmatchedKept,
    /// No route; deleted.
    UnmatchedDiscarded,
    /// The directory held no instance.
    Empty,
}

impl Completed {
    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Completed::Queued { .. } => "queued",
            Completed::Duplicate { .. } => "duplicate",
            Completed::Held { .. } => "held",
            Completed::UnmatchedKept => "unmatched_kept",
            Completed::UnmatchedDiscarded => "unmatched_discarded",
            Completed::Empty => "empty",
        }
    }
}

/// The series id from a sealed directory name `<series>.<nonce>`.
fn series_of(dir: &Path) -> String {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    name.split('.').next().unwrap_or_default().to_string()
}

/// Route one sealed series directory and turn it into a job (or drop, hold or keep it). Returns what happened and,
/// for a discarded series, the bytes freed.
pub fn complete(
    layout: &Layout,
    cfg: &DicomConfig,
    sealed: &Path,
) -> Result<(Completed, u64), QueueError> {
    let series = series_of(sealed);
    let files = fsutil::instance_files(sealed).map_err(io_at(sealed))?;
    let bytes: u64 = files
        .iter()
        .map(|f| fs::metadata(f).map_or(0, |m| m.len()))
        .sum();
    let name = sealed.file_name().map(|n| n.to_owned()).unwrap_or_default();
    if files.is_empty() {
        fs::remove_dir_all(sealed).map_err(io_at(sealed))?;
        return Ok((Completed::Empty, 0));
    }
    let _ = fs::remove_file(sealed.join(CLOSE_FILE));
    let origin = read_origin(sealed);
    let attrs =
        routing::read_attrs(&files[0], &origin.calling_ae).map_err(|msg| QueueError::Corrupt {
            path: files[0].clone(),
            msg,
        })?;
    let Some(route) = routing::select(&cfg.routes, &attrs) else {
        return match cfg.unmatched {
            Unmatched::Keep => {
                rename_durable(sealed, &layout.unmatched().join(&name)).map_err(io_at(sealed))?;
                Ok((Completed::UnmatchedKept, 0))
            }
            Unmatched::Discard => {
                fs::remove_dir_all(sealed).map_err(io_at(sealed))?;
                Ok((Completed::UnmatchedDiscarded, bytes))
            }
        };
    };
    let ids: Vec<String> = files
        .iter()
        .filter_map(|f| f.file_stem().and_then(|s| s.to_str()).map(str::to_string))
        .collect();
    let job = queue::job_id(&series, &route.model);
    if let Some((_, existing)) = queue::find_job(layout, &job) {
        let new = ids
            .iter()
            .filter(|i| !existing.instances.contains(i))
            .count();
        if new == 0 {
            fs::remove_dir_all(sealed).map_err(io_at(sealed))?;
            return Ok((Completed::Duplicate { job }, bytes));
        }
        rename_durable(sealed, &layout.held().join(&name)).map_err(io_at(sealed))?;
        return Ok((Completed::Held { job, new }, 0));
    }
    let now = now_secs();
    let mut rec = JobRecord {
        id: job.clone(),
        series,
        model: route.model.clone(),
        state: JobState::Queued,
        created: now,
        updated: now,
        instances: ids,
        bytes,
        calling_ae: origin.calling_ae,
        modality: attrs.modality,
        destinations: route.destinations.clone(),
        delivered: Vec::new(),
        attempts: 0,
        next_attempt: 0,
        error: None,
    };
    queue::write_job(sealed, &mut rec)?;
    rename_durable(sealed, &layout.jobs().join(&job)).map_err(io_at(sealed))?;
    Ok((
        Completed::Queued {
            job,
            instances: rec.instances.len(),
        },
        0,
    ))
}

/// Complete every directory under `sealed/` (new ones, and those a crash left); logs and counts each.
pub fn complete_all(layout: &Layout, cfg: &DicomConfig, metrics: &DicomMetrics) -> u64 {
    let mut freed = 0;
    for name in fsutil::subdirs(&layout.sealed()) {
        let dir = layout.sealed().join(&name);
        match complete(layout, cfg, &dir) {
            Ok((c, f)) => {
                freed += f;
                DicomMetrics::count(&metrics.series_completed, c.label());
                let series = series_of(&dir);
                match &c {
                    Completed::Queued { job, instances } => {
                        tracing::info!(series = %series, job = %job, instances, "series complete: job queued")
                    }
                    Completed::Duplicate { job } => tracing::info!(
                        series = %series, job = %job,
                        "series received again with no new instance: already queued or processed, discarded"
                    ),
                    Completed::Held { job, new } => tracing::warn!(
                        series = %series, job = %job, new,
                        "series received again with new instances after its job was created: held for review \
                         (`medmae-serve queue list`; `queue retry` re-routes it once the old job is purged)"
                    ),
                    Completed::UnmatchedKept => {
                        tracing::info!(series = %series, "series complete: no routing rule matched; kept under unmatched/")
                    }
                    Completed::UnmatchedDiscarded => {
                        tracing::info!(series = %series, "series complete: no routing rule matched; discarded")
                    }
                    Completed::Empty => {}
                }
            }
            Err(e) => {
                DicomMetrics::count(&metrics.series_completed, "error");
                let held = layout.held().join(&name);
                let moved = rename_durable(&dir, &held).is_ok();
                tracing::error!(error = %e, held = moved, "completing a series failed; moved to held/ for review");
            }
        }
    }
    freed
}
