//! The durable job queue in the spool directory. Every state change is one atomic file write or one directory
//! rename, so a kill at any point leaves a state the node resumes from:
//!
//! ```text
//! series/<series>/          instances being received (<instance>.dcm) and origin.json
//! sealed/<series>.<n>/      a completed series waiting to be routed
//! jobs/<series>.<model>/    a job: job.json, the instances, seg.dcm once segmented
//! done/<series>.<model>/    delivered jobs (job.json only): the exactly-once ledger
//! failed/<series>.<model>/  jobs that failed (instances kept for `queue retry`)
//! unmatched/<series>.<n>/   series no route selected (with `unmatched = "keep"`)
//! held/<series>.<n>/        series received again with new instances after their job was created
//! ```
//!
//! Names are hashes of UIDs ([`super::fsutil::series_id`]); no UID or patient attribute is in a path or a log.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fsutil::{self, now_secs, rename_durable, write_atomic};

/// The job file in a job directory.
pub const JOB_FILE: &str = "job.json";
/// The encoded SEG in a job directory.
pub const SEG_FILE: &str = "seg.dcm";
/// The origin file in a series directory.
pub const ORIGIN_FILE: &str = "origin.json";
/// Marker asking the node to complete an open series now (`medmae-serve queue close`).
pub const CLOSE_FILE: &str = "close";

/// Where each kind of entry lives in the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Spool root.
    pub root: PathBuf,
}

impl Layout {
    /// The layout under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    /// Open series.
    pub fn series(&self) -> PathBuf {
        self.root.join("series")
    }
    /// Completed series waiting to be routed.
    pub fn sealed(&self) -> PathBuf {
        self.root.join("sealed")
    }
    /// Active jobs.
    pub fn jobs(&self) -> PathBuf {
        self.root.join("jobs")
    }
    /// Delivered jobs.
    pub fn done(&self) -> PathBuf {
        self.root.join("done")
    }
    /// Failed jobs.
    pub fn failed(&self) -> PathBuf {
        self.root.join("failed")
    }
    /// Unmatched series kept.
    pub fn unmatched(&self) -> PathBuf {
        self.root.join("unmatched")
    }
    /// Series held for review.
    pub fn held(&self) -> PathBuf {
        self.root.join("held")
    }
    /// Create every directory.
    pub fn create(&self) -> io::Result<()> {
        fsutil::create_dir_durable(&self.root)?;
        for d in [
            self.series(),
            self.sealed(),
            self.jobs(),
            self.done(),
            self.failed(),
            self.unmatched(),
            self.held(),
        ] {
            fsutil::create_dir_durable(&d)?;
        }
        Ok(())
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for inference.
    Queued,
    /// Being segmented (re-run after a crash).
    Processing,
    /// SEG written; delivering to the destinations not yet in `delivered`.
    Sending,
    /// Delivered everywhere.
    Done,
    /// Gave up (see `error`).
    Failed,
}

impl JobState {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Processing => "processing",
            JobState::Sending => "sending",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }
}

/// A job: one series segmented by one model and delivered to its destinations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// `<series>.<model>`.
    pub id: String,
    /// Series id (hash of the SeriesInstanceUID).
    pub series: String,
    /// Model name.
    pub model: String,
    /// State.
    pub state: JobState,
    /// Creation time (Unix seconds).
    pub created: u64,
    /// Last change (Unix seconds).
    pub updated: u64,
    /// Instance ids of the series (the manifest that detects re-sent series).
    pub instances: Vec<String>,
    /// Bytes of the instances.
    pub bytes: u64,
    /// Calling AE title of the sender.
    pub calling_ae: String,
    /// Modality of the series.
    pub modality: String,
    /// Destination names.
    pub destinations: Vec<String>,
    /// Destinations that acknowledged the SEG.
    pub delivered: Vec<String>,
    /// Failed tries so far.
    pub attempts: u32,
    /// Not before this time (Unix seconds) for the next try.
    pub next_attempt: u64,
    /// Why the last try failed (no patient data: file positions and hashes only).
    pub error: Option<String>,
}

/// A queue operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// An unreadable job file.
    #[error("{path}: unreadable job file: {msg}")]
    Corrupt {
        /// Path.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// No such entry.
    #[error("no job or series `{0}` in the spool (see `medmae-serve queue list`)")]
    NotFound(String),
    /// The entry cannot be retried.
    #[error("`{id}` is {state}; only failed jobs and unmatched or held series can be retried")]
    NotRetryable {
        /// Entry.
        id: String,
        /// Its state.
        state: String,
    },
}

/// Attach the path to an I/O error.
pub fn io_at(path: &Path) -> impl FnOnce(io::Error) -> QueueError + '_ {
    move |source| QueueError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The id of the job of `series` by `model`.
pub fn job_id(series: &str, model: &str) -> String {
    format!("{series}.{model}")
}

/// Read `dir/job.json`.
pub fn read_job(dir: &Path) -> Result<JobRecord, QueueError> {
    let path = dir.join(JOB_FILE);
    let text = fs::read_to_string(&path).map_err(io_at(&path))?;
    serde_json::from_str(&text).map_err(|e| QueueError::Corrupt {
        path,
        msg: e.to_string(),
    })
}

/// Write `dir/job.json` atomically, stamping `updated`.
pub fn write_job(dir: &Path, rec: &mut JobRecord) -> Result<(), QueueError> {
    rec.updated = now_secs();
    let path = dir.join(JOB_FILE);
    let text = serde_json::to_vec_pretty(rec).map_err(|e| QueueError::Corrupt {
        path: path.clone(),
        msg: e.to_string(),
    })?;
    write_atomic(&path, &text).map_err(io_at(&path))
}

/// The job `id` wherever it is (active, done or failed).
pub fn find_job(layout: &Layout, id: &str) -> Option<(PathBuf, JobRecord)> {
    [layout.jobs(), layout.done(), layout.failed()]
        .into_iter()
        .map(|d| d.join(id))
        .find(|d| d.join(JOB_FILE).is_file())
        .and_then(|d| read_job(&d).ok().map(|r| (d, r)))
}

/// Active jobs (under `jobs/`), oldest first; unreadable ones are reported in the second list.
pub fn active_jobs(layout: &Layout) -> (Vec<(PathBuf, JobRecord)>, Vec<QueueError>) {
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    for name in fsutil::subdirs(&layout.jobs()) {
        let dir = layout.jobs().join(&name);
        match read_job(&dir) {
            Ok(r) => ok.push((dir, r)),
            Err(e) => bad.push(e),
        }
    }
    ok.sort_by(|a, b| (a.1.created, &a.1.id).cmp(&(b.1.created, &b.1.id)));
    (ok, bad)
}

/// Remove the instances and the SEG of a job directory; returns the bytes freed.
pub fn remove_payload(dir: &Path) -> u64 {
    let mut freed = 0;
    let files = fsutil::instance_files(dir).unwrap_or_default();
    for p in files.iter().chain(std::iter::once(&dir.join(SEG_FILE))) {
        let len = fs::metadata(p).map_or(0, |m| m.len());
        if fs::remove_file(p).is_ok() {
            freed += len;
        }
    }
    freed
}

/// Mark a job done, drop its payload and move it to `done/`; returns the bytes freed.
pub fn finish(layout: &Layout, dir: &Path, rec: &mut JobRecord) -> Result<u64, QueueError> {
    rec.state = JobState::Done;
    rec.error = None;
    write_job(dir, rec)?;
    let freed = remove_payload(dir);
    let to = layout.done().join(&rec.id);
    rename_durable(dir, &to).map_err(io_at(dir))?;
    Ok(freed)
}

/// Mark a job failed with `error` and move it to `failed/`.
pub fn fail(
    layout: &Layout,
    dir: &Path,
    rec: &mut JobRecord,
    error: String,
) -> Result<(), QueueError> {
    rec.state = JobState::Failed;
    rec.error = Some(error);
    write_job(dir, rec)?;
    let to = layout.failed().join(&rec.id);
    rename_durable(dir, &to).map_err(io_at(dir))
}

/// Settle jobs a crash left between a state write and its rename (done or failed but still under `jobs/`).
pub fn settle(layout: &Layout) -> Vec<QueueError> {
    let (jobs, mut errors) = active_jobs(layout);
    for (dir, mut rec) in jobs {
        let r = match rec.state {
            JobState::Done => finish(layout, &dir, &mut rec).map(drop),
            JobState::Failed => {
                let e = rec.error.clone().unwrap_or_default();
                fail(layout, &dir, &mut rec, e)
            }
            _ => Ok(()),
        };
        if let Err(e) = r {
            errors.push(e);
        }
    }
    errors
}

/// Retry `id`: a failed job goes back to the queue (keeping its SEG and deliveries); an unmatched or held series
/// goes back to routing. Returns what was done.
pub fn retry(layout: &Layout, id: &str) -> Result<String, QueueError> {
    let failed = layout.failed().join(id);
    if failed.join(JOB_FILE).is_file() {
        let mut rec = read_job(&failed)?;
        rec.state = if failed.join(SEG_FILE).is_file() {
            JobState::Sending
        } else {
            JobState::Queued
        };
        rec.attempts = 0;
        rec.next_attempt = 0;
        rec.error = None;
        write_job(&failed, &mut rec)?;
        let to = layout.jobs().join(id);
        rename_durable(&failed, &to).map_err(io_at(&failed))?;
        return Ok(format!("job {id} queued again ({})", rec.state.name()));
    }
    for dir in [layout.unmatched(), layout.held()] {
        let from = dir.join(id);
        if from.is_dir() {
            let to = layout.sealed().join(id);
            rename_durable(&from, &to).map_err(io_at(&from))?;
            return Ok(format!("series {id} sent back to routing"));
        }
    }
    match find_job(layout, id) {
        Some((_, r)) => Err(QueueError::NotRetryable {
            id: id.into(),
            state: r.state.name().into(),
        }),
        None => Err(QueueError::NotFound(id.into())),
    }
}

/// Delete an entry of `done/`, `failed/`, `unmatched/` or `held/`; returns where it was.
pub fn purge(layout: &Layout, id: &str) -> Result<&'static str, QueueError> {
    if id.is_empty() || id.contains(['/', '\\']) || id.starts_with('.') {
        return Err(QueueError::NotFound(id.into()));
    }
    for (dir, what) in [
        (layout.done(), "done"),
        (layout.failed(), "failed"),
        (layout.unmatched(), "unmatched"),
        (layout.held(), "held"),
    ] {
        let p = dir.join(id);
        if p.is_dir() {
            fs::remove_dir_all(&p).map_err(io_at(&p))?;
            fsutil::sync_dir(&dir).map_err(io_at(&dir))?;
            return Ok(what);
        }
    }
    if layout.jobs().join(id).is_dir() {
        return Err(QueueError::NotRetryable {
            id: id.into(),
            state: "active (stop the server or wait for it to finish)".into(),
        });
    }
    Err(QueueError::NotFound(id.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(layout: &Layout, id: &str) -> PathBuf {
        let dir = layout.jobs().join(id);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("a.dcm"), b"x").unwrap();
        let mut rec = JobRecord {
            id: id.into(),
            series: "s".into(),
            model: "m".into(),
            state: JobState::Queued,
            created: 1,
            updated: 1,
            instances: vec!["a".into()],
            bytes: 1,
            calling_ae: "PACS".into(),
            modality: "CT".into(),
            destinations: vec!["d".into()],
            delivered: vec![],
            attempts: 3,
            next_attempt: 99,
            error: None,
        };
        write_job(&dir, &mut rec).unwrap();
        dir
    }

    #[test]
    fn jobs_move_through_done_failed_and_retry() {
        let d = tempfile::tempdir().unwrap();
        let l = Layout::new(d.path());
        l.create().unwrap();
        let dir = job(&l, "s.m");
        let (mut jobs, bad) = active_jobs(&l);
        assert!(bad.is_empty());
        let mut rec = jobs.remove(0).1;
        fail(&l, &dir, &mut rec, "boom".into()).unwrap();
        assert_eq!(find_job(&l, "s.m").unwrap().1.state, JobState::Failed);
        assert!(retry(&l, "s.m").unwrap().contains("queued"));
        let (dir, mut rec) = find_job(&l, "s.m").unwrap();
        assert_eq!(
            (rec.state, rec.attempts, rec.next_attempt),
            (JobState::Queued, 0, 0)
        );
        assert_eq!(finish(&l, &dir, &mut rec).unwrap(), 1);
        let (dir, rec) = find_job(&l, "s.m").unwrap();
        assert_eq!(rec.state, JobState::Done);
        assert!(!dir.join("a.dcm").exists());
        assert!(matches!(
            retry(&l, "s.m"),
            Err(QueueError::NotRetryable { .. })
        ));
        assert!(matches!(retry(&l, "nope"), Err(QueueError::NotFound(_))));
        assert_eq!(purge(&l, "s.m").unwrap(), "done");
        assert!(find_job(&l, "s.m").is_none());
        assert!(matches!(purge(&l, "../x"), Err(QueueError::NotFound(_))));
    }

    #[test]
    fn settle_finishes_interrupted_transitions() {
        let d = tempfile::tempdir().unwrap();
        let l = Layout::new(d.path());
        l.create().unwrap();
        let dir = job(&l, "s.m");
        let mut rec = read_job(&dir).unwrap();
        rec.state = JobState::Done;
        write_job(&dir, &mut rec).unwrap();
        fs::create_dir_all(l.held().join("s.1")).unwrap();
        assert!(settle(&l).is_empty());
        assert!(l.done().join("s.m").join(JOB_FILE).is_file());
        assert!(retry(&l, "s.1").unwrap().contains("routing"));
        assert!(l.sealed().join("s.1").is_dir());
    }
}
