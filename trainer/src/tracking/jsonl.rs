//! `metrics.jsonl`: one JSON object per line (step, epoch, loss, lr, time, validation Dice…).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Result, TrainError};

/// Append-only metrics log.
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Open `path` for appending. When resuming from optimiser step `resume_step`, records with a larger `step`
    /// (written after that checkpoint by the interrupted run) are dropped first, so the log reads as one run.
    pub fn open(path: &Path, resume_step: Option<u64>) -> Result<Self> {
        if let Some(at) = resume_step {
            if path.exists() {
                let kept: Vec<Value> = read_metrics(path)?
                    .into_iter()
                    .filter(|r| {
                        r.get("step")
                            .and_then(Value::as_u64)
                            .is_none_or(|s| s <= at)
                    })
                    .collect();
                let tmp = path.with_extension("jsonl.tmp");
                let mut text = String::new();
                for r in kept {
                    text.push_str(&r.to_string());
                    text.push('\n');
                }
                std::fs::write(&tmp, text).map_err(|e| TrainError::io(&tmp, e))?;
                std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))?;
            }
        } else if path.exists() {
            std::fs::remove_file(path).map_err(|e| TrainError::io(path, e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| TrainError::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Append one record and flush it.
    pub fn append(&mut self, record: &Value) -> Result<()> {
        writeln!(self.file, "{record}")
            .and_then(|_| self.file.flush())
            .map_err(|e| TrainError::io(&self.path, e))
    }
}

/// Read every record of a metrics file.
pub fn read_metrics(path: &Path) -> Result<Vec<Value>> {
    let file = File::open(path).map_err(|e| TrainError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| TrainError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line)
                .map_err(|e| TrainError::format(path, format!("line {}: {e}", i + 1)))?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resume_drops_records_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        let mut log = MetricsLog::open(&p, None).unwrap();
        for s in 1..=5u64 {
            log.append(&json!({"step": s, "loss": s as f64})).unwrap();
        }
        log.append(&json!({"event": "start"})).unwrap();
        drop(log);
        let mut log = MetricsLog::open(&p, Some(3)).unwrap();
        log.append(&json!({"step": 4, "loss": 40.0})).unwrap();
        let recs = read_metrics(&p).unwrap();
        let steps: Vec<_> = recs.iter().filter_map(|r| r["step"].as_u64()).collect();
        assert_eq!(steps, vec![1, 2, 3, 4]);
        assert_eq!(recs.last().unwrap()["loss"], 40.0);
        drop(log);
        MetricsLog::open(&p, None).unwrap();
        assert!(read_metrics(&p).unwrap().is_empty());
    }
}
