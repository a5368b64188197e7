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
                let kept: Vec<Value> = read_records(path, true)?
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

    /// Append one record (one `write` of the whole line, newline last) and flush it.
    pub fn append(&mut self, record: &Value) -> Result<()> {
        let mut line = record.to_string();
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.flush())
            .map_err(|e| TrainError::io(&self.path, e))
    }
}

/// Read every record of a metrics file. Any line that is not valid JSON is an error naming the file and line.
pub fn read_metrics(path: &Path) -> Result<Vec<Value>> {
    read_records(path, false)
}

/// Read the records; with `tolerate_torn_tail`, a last line without its newline that does not parse (a run killed
/// in the middle of an append) is dropped with a warning instead of failing. A bad line anywhere else is an error.
fn read_records(path: &Path, tolerate_torn_tail: bool) -> Result<Vec<Value>> {
    let file = File::open(path).map_err(|e| TrainError::io(path, e))?;
    let mut reader = BufReader::new(file);
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut number = 0usize;
    loop {
        buf.clear();
        let n = reader
            .read_line(&mut buf)
            .map_err(|e| TrainError::io(path, e))?;
        if n == 0 {
            break;
        }
        number += 1;
        let complete = buf.ends_with('\n');
        let line = buf.trim();
        if line.is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(v) => out.push(v),
            Err(e) if tolerate_torn_tail && !complete => {
                tracing::warn!(
                    "{}: dropping an incomplete last line {number} ({e}); the previous run stopped mid-write",
                    path.display()
                );
            }
            Err(e) => return Err(TrainError::format(path, format!("line {number}: {e}"))),
        }
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

    #[test]
    fn resume_drops_a_torn_last_line_but_not_a_corrupt_middle_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        std::fs::write(&p, "{\"step\":1}\n{\"step\":2}\n{\"step\":3,\"lo").unwrap();
        // A plain read names the file and line.
        let err = read_metrics(&p).unwrap_err().to_string();
        assert!(
            err.contains("metrics.jsonl") && err.contains("line 3"),
            "{err}"
        );
        // Resuming keeps the complete records and appends cleanly after them.
        let mut log = MetricsLog::open(&p, Some(2)).unwrap();
        log.append(&json!({"step": 3})).unwrap();
        let steps: Vec<_> = read_metrics(&p)
            .unwrap()
            .iter()
            .filter_map(|r| r["step"].as_u64())
            .collect();
        assert_eq!(steps, vec![1, 2, 3]);
        // A corrupt line that was completed (newline present) is not a torn write: resume refuses it.
        std::fs::write(&p, "{\"step\":1}\n{oops}\n{\"step\":2}\n").unwrap();
        let err = MetricsLog::open(&p, Some(2))
            .err()
            .expect("corrupt middle line")
            .to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
