//! Reception side of the spool: each instance is written and fsynced under `series/<series>/` before the C-STORE
//! is answered, within the per-series and spool-wide limits; series with no new instance for the idle time (or
//! released, or closed by the queue CLI) are sealed by one rename into `sealed/` for routing.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::fsutil::{self, instance_id, series_id, write_atomic, INSTANCE_EXT};
use super::queue::{Layout, CLOSE_FILE, ORIGIN_FILE};

/// Limits checked before an instance is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolLimits {
    /// Most instances in one series.
    pub max_instances: usize,
    /// Most bytes in one series.
    pub max_series_bytes: u64,
    /// Most bytes in the whole spool.
    pub quota_bytes: u64,
}

/// Who sent a series (kept beside its instances for routing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// Calling AE title of the association that delivered the first instance.
    pub calling_ae: String,
    /// First reception (Unix seconds).
    pub received: u64,
}

/// Why an instance was not stored (answered with status A700, out of resources).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The series already holds the most instances allowed.
    #[error("series {series} already holds {max} instances (dicom.max_instances_per_series)")]
    Instances {
        /// Series id.
        series: String,
        /// Limit.
        max: usize,
    },
    /// The series would exceed its byte limit.
    #[error("series {series} would exceed {max} bytes (dicom.max_series_bytes)")]
    SeriesBytes {
        /// Series id.
        series: String,
        /// Limit.
        max: u64,
    },
    /// The spool would exceed its quota.
    #[error(
        "the spool would exceed its quota of {quota} bytes ({used} used; dicom.spool_quota_bytes)"
    )]
    Quota {
        /// Limit.
        quota: u64,
        /// In use.
        used: u64,
    },
    /// The instance could not be written.
    #[error("spool write failed: {0}")]
    Io(#[from] io::Error),
}

/// What happened to a stored instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Series id.
    pub series: String,
    /// The instance was already spooled (rewritten; not counted again).
    pub duplicate: bool,
}

#[derive(Debug)]
struct Open {
    instances: HashSet<String>,
    bytes: u64,
    last: Instant,
    writing: usize,
    close: bool,
}

impl Open {
    fn new() -> Self {
        Self {
            instances: HashSet::new(),
            bytes: 0,
            last: Instant::now(),
            writing: 0,
            close: false,
        }
    }
}

/// The open series and the spool's byte count.
pub struct Spool {
    layout: Layout,
    limits: SpoolLimits,
    open: Mutex<HashMap<String, Open>>,
    used: AtomicU64,
}

impl Spool {
    /// Create the layout and recover open series (their idle clocks restart now, so senders have the idle time to
    /// resend what a crash interrupted).
    pub fn open(layout: Layout, limits: SpoolLimits) -> io::Result<Self> {
        layout.create()?;
        let mut open = HashMap::new();
        for sid in fsutil::subdirs(&layout.series()) {
            let dir = layout.series().join(&sid);
            let mut o = Open::new();
            for f in fsutil::instance_files(&dir)? {
                o.bytes += fs::metadata(&f)?.len();
                if let Some(stem) = f.file_stem().and_then(|s| s.to_str()) {
                    o.instances.insert(stem.to_string());
                }
            }
            o.close = dir.join(CLOSE_FILE).exists();
            open.insert(sid, o);
        }
        let spool = Self {
            layout,
            limits,
            open: Mutex::new(open),
            used: AtomicU64::new(0),
        };
        spool.recount();
        Ok(spool)
    }

    /// The layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Open>> {
        // A panic while holding the lock leaves consistent data (counters only): keep going.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes the spool holds (as last measured plus what arrived since).
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::SeqCst)
    }

    /// Measure the spool again (other processes, e.g. `queue purge`, may have freed space).
    pub fn recount(&self) {
        self.used
            .store(fsutil::tree_bytes(&self.layout.root), Ordering::SeqCst);
    }

    /// Account for bytes removed by the node itself.
    pub fn freed(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                Some(u.saturating_sub(bytes))
            });
    }

    /// Number of open series.
    pub fn open_series(&self) -> usize {
        self.lock().len()
    }

    /// Write one instance (a Part 10 file) durably; an error means nothing was acknowledged.
    pub fn store(
        &self,
        series_uid: &str,
        sop_instance_uid: &str,
        calling_ae: &str,
        file: &[u8],
    ) -> Result<Stored, Refusal> {
        let (sid, iid) = (series_id(series_uid), instance_id(sop_instance_uid));
        let len = file.len() as u64;
        let duplicate = {
            let mut open = self.lock();
            let o = open.entry(sid.clone()).or_insert_with(Open::new);
            let duplicate = o.instances.contains(&iid);
            if !duplicate {
                if o.instances.len() >= self.limits.max_instances {
                    return Err(Refusal::Instances {
                        series: sid,
                        max: self.limits.max_instances,
                    });
                }
                if o.bytes + len > self.limits.max_series_bytes {
                    return Err(Refusal::SeriesBytes {
                        series: sid,
                        max: self.limits.max_series_bytes,
                    });
                }
                let used = self.used();
                if used + len > self.limits.quota_bytes {
                    return Err(Refusal::Quota {
                        quota: self.limits.quota_bytes,
                        used,
                    });
                }
                o.instances.insert(iid.clone());
                o.bytes += len;
                self.used.fetch_add(len, Ordering::SeqCst);
            }
            o.writing += 1;
            o.last = Instant::now();
            duplicate
        };
        let result = self.write_instance(&sid, &iid, calling_ae, file);
        let mut open = self.lock();
        if let Some(o) = open.get_mut(&sid) {
            o.writing -= 1;
            o.last = Instant::now();
            if result.is_err() && !duplicate {
                o.instances.remove(&iid);
                o.bytes -= len;
                self.freed(len);
            }
        }
        drop(open);
        result?;
        Ok(Stored {
            series: sid,
            duplicate,
        })
    }

    fn write_instance(
        &self,
        sid: &str,
        iid: &str,
        calling_ae: &str,
        file: &[u8],
    ) -> io::Result<()> {
        let dir = self.layout.series().join(sid);
        let origin = dir.join(ORIGIN_FILE);
        if !origin.is_file() {
            fsutil::create_dir_durable(&dir)?;
            let o = Origin {
                calling_ae: calling_ae.to_string(),
                received: fsutil::now_secs(),
            };
            write_atomic(&origin, &serde_json::to_vec(&o).map_err(io::Error::other)?)?;
        }
        write_atomic(&dir.join(format!("{iid}.{INSTANCE_EXT}")), file)
    }

    /// Ask for `series` to be completed at the next check (association released, or `queue close`).
    pub fn request_close(&self, series: &str) {
        if let Some(o) = self.lock().get_mut(series) {
            o.close = true;
        }
    }

    /// Series ready to seal: no write in progress, and idle for `idle` or asked to close (also by a `close` file).
    pub fn due(&self, idle: Duration) -> Vec<String> {
        let mut open = self.lock();
        for (sid, o) in open.iter_mut() {
            if !o.close && self.layout.series().join(sid).join(CLOSE_FILE).exists() {
                o.close = true;
            }
        }
        let mut due: Vec<String> = open
            .iter()
            .filter(|(_, o)| o.writing == 0 && (o.close || o.last.elapsed() >= idle))
            .map(|(s, _)| s.clone())
            .collect();
        due.sort();
        due
    }

    /// Seal `series`: move its directory into `sealed/` (one rename, under the lock so no write can race it).
    /// Returns the sealed directory, or None if the series is busy or unknown.
    pub fn seal(&self, series: &str) -> io::Result<Option<PathBuf>> {
        let mut open = self.lock();
        match open.get(series) {
            Some(o) if o.writing == 0 => {}
            _ => return Ok(None),
        }
        open.remove(series);
        let from = self.layout.series().join(series);
        if !from.is_dir() {
            return Ok(None);
        }
        let to = self
            .layout
            .sealed()
            .join(format!("{series}.{}", fsutil::nonce()));
        fsutil::rename_durable(&from, &to)?;
        Ok(Some(to))
    }
}

/// Read a series directory's origin (a missing or unreadable file gives an empty calling AE).
pub fn read_origin(dir: &Path) -> Origin {
    fs::read(dir.join(ORIGIN_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Origin {
            calling_ae: String::new(),
            received: 0,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool(dir: &Path, max_instances: usize, quota: u64) -> Spool {
        Spool::open(
            Layout::new(dir),
            SpoolLimits {
                max_instances,
                max_series_bytes: 100,
                quota_bytes: quota,
            },
        )
        .unwrap()
    }

    #[test]
    fn stores_durably_and_enforces_limits() {
        let d = tempfile::tempdir().unwrap();
        let s = spool(d.path(), 2, 1000);
        let a = s.store("1.2.3", "1.2.3.1", "PACS", &[1; 40]).unwrap();
        assert!(!a.duplicate);
        assert!(
            s.store("1.2.3", "1.2.3.1", "PACS", &[1; 40])
                .unwrap()
                .duplicate
        );
        assert!(matches!(
            s.store("1.2.3", "1.2.3.2", "PACS", &[1; 70]),
            Err(Refusal::SeriesBytes { .. })
        ));
        s.store("1.2.3", "1.2.3.2", "PACS", &[2; 50]).unwrap();
        let e = s.store("1.2.3", "1.2.3.3", "PACS", &[3; 5]).unwrap_err();
        assert!(e.to_string().contains("2 instances"), "{e}");
        let dir = d.path().join("series").join(&a.series);
        assert_eq!(fsutil::instance_files(&dir).unwrap().len(), 2);
        assert_eq!(read_origin(&dir).calling_ae, "PACS");
        let q = spool(tempfile::tempdir().unwrap().path(), 9, 60);
        q.store("9", "9.1", "X", &[0; 40]).unwrap();
        assert!(matches!(
            q.store("9", "9.2", "X", &[0; 40]),
            Err(Refusal::Quota { .. })
        ));
    }

    #[test]
    fn idle_series_are_sealed_and_recovered_series_restart_their_clock() {
        let d = tempfile::tempdir().unwrap();
        let s = spool(d.path(), 10, 10_000);
        let a = s.store("1.2.3", "1.2.3.1", "PACS", &[1; 10]).unwrap();
        s.store("4.5.6", "4.5.6.1", "PACS", &[1; 10]).unwrap();
        assert!(s.due(Duration::from_secs(60)).is_empty());
        s.request_close(&a.series);
        assert_eq!(s.due(Duration::from_secs(60)), vec![a.series.clone()]);
        let sealed = s.seal(&a.series).unwrap().unwrap();
        assert!(sealed.starts_with(d.path().join("sealed")));
        assert_eq!(fsutil::instance_files(&sealed).unwrap().len(), 1);
        assert_eq!(s.open_series(), 1);
        drop(s);
        // After a restart the other series is open again, with a fresh idle clock.
        let s = spool(d.path(), 10, 10_000);
        assert_eq!(s.open_series(), 1);
        assert!(s.due(Duration::from_secs(60)).is_empty());
        assert_eq!(s.due(Duration::ZERO).len(), 1);
        assert!(s.used() >= 20);
        // A close file (from `queue close`) also completes a series.
        let b = series_id("4.5.6");
        fs::write(d.path().join("series").join(&b).join(CLOSE_FILE), b"").unwrap();
        assert_eq!(s.due(Duration::from_secs(60)), vec![b]);
    }
}
