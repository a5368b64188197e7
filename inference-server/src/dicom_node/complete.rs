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

#[cfg(test)]
mod tests {
    use super::super::config::{DicomConfig, DicomFlags, Route};
    use super::super::spool::{Spool, SpoolLimits};
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

    /// A minimal Part 10 file with the routing attributes (what the spool holds after the reception checks).
    fn instance(modality: &str, sop: &str) -> Vec<u8> {
        let mut obj = InMemDicomObject::new_empty();
        let s = |t, vr, v: &str| DataElement::new(t, vr, PrimitiveValue::from(v));
        obj.put(s(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.2"));
        obj.put(s(tags::SOP_INSTANCE_UID, VR::UI, sop));
        obj.put(s(tags::MODALITY, VR::CS, modality));
        obj.put(s(tags::BODY_PART_EXAMINED, VR::CS, "HEAD"));
        obj.put(s(tags::SERIES_DESCRIPTION, VR::LO, "axial"));
        let file = obj
            .with_meta(
                FileMetaTableBuilder::new()
                    .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.2")
                    .media_storage_sop_instance_uid(sop)
                    .transfer_syntax("1.2.840.10008.1.2.1"),
            )
            .unwrap();
        let mut out = Vec::new();
        file.write_all(&mut out).unwrap();
        out
    }

    fn config(dir: &Path, unmatched: &str) -> DicomConfig {
        let text = format!(
            "[dicom]\nlisten = \"127.0.0.1:0\"\nspool = {:?}\nunmatched = \"{unmatched}\"\n",
            dir
        );
        #[derive(serde::Deserialize)]
        struct Wrap {
            dicom: super::super::config::DicomFile,
        }
        let f = toml::from_str::<Wrap>(&text).unwrap().dicom;
        let mut c = DicomConfig::resolve(DicomFlags::default(), Some(f))
            .unwrap()
            .unwrap();
        c.routes = vec![Route {
            model: "demo".into(),
            modality: vec!["CT".into()],
            body_part: vec![],
            series_description: None,
            calling_ae: vec!["PACS".into()],
            destinations: vec![],
        }];
        c
    }

    fn seal(s: &Spool, series: &str, sops: &[&str], modality: &str) -> std::path::PathBuf {
        for sop in sops {
            s.store(series, sop, "PACS", &instance(modality, sop))
                .unwrap();
        }
        let id = fsutil::series_id(series);
        s.seal(&id).unwrap().unwrap()
    }

    #[test]
    fn routes_queue_once_and_drop_or_hold_resends() {
        let d = tempfile::tempdir().unwrap();
        let cfg = config(d.path(), "keep");
        let limits = SpoolLimits {
            max_instances: 10,
            max_series_bytes: 1 << 20,
            quota_bytes: 1 << 30,
        };
        let s = Spool::open(Layout::new(d.path()), limits).unwrap();
        let l = s.layout().clone();
        let (c, _) = complete(&l, &cfg, &seal(&s, "1.2.3", &["1.2.3.1", "1.2.3.2"], "CT")).unwrap();
        let job = queue::job_id(&fsutil::series_id("1.2.3"), "demo");
        assert_eq!(
            c,
            Completed::Queued {
                job: job.clone(),
                instances: 2
            }
        );
        let (_, rec) = queue::find_job(&l, &job).unwrap();
        assert_eq!(
            (rec.state, rec.calling_ae.as_str(), rec.modality.as_str()),
            (JobState::Queued, "PACS", "CT")
        );
        // The same instances again: a duplicate; one new instance: held.
        let (c, freed) = complete(&l, &cfg, &seal(&s, "1.2.3", &["1.2.3.2"], "CT")).unwrap();
        assert_eq!(c, Completed::Duplicate { job: job.clone() });
        assert!(freed > 0);
        let (c, _) = complete(&l, &cfg, &seal(&s, "1.2.3", &["1.2.3.2", "1.2.3.3"], "CT")).unwrap();
        assert_eq!(c, Completed::Held { job, new: 1 });
        assert_eq!(fsutil::subdirs(&l.held()).len(), 1);
        // No route for MR: kept (this config) or discarded.
        let (c, _) = complete(&l, &cfg, &seal(&s, "4.5.6", &["4.5.6.1"], "MR")).unwrap();
        assert_eq!(c, Completed::UnmatchedKept);
        let cfg = config(d.path(), "discard");
        let (c, _) = complete(&l, &cfg, &seal(&s, "7.8.9", &["7.8.9.1"], "MR")).unwrap();
        assert_eq!(c, Completed::UnmatchedDiscarded);
        assert!(fsutil::subdirs(&l.sealed()).is_empty());
        assert_eq!(fsutil::subdirs(&l.unmatched()).len(), 1);
    }
}
