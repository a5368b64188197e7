//! `medmae-serve queue list|retry|purge|close`: the operator's view of the spool. It works on the spool directory
//! directly (with or without a running server); every change is one atomic rename or file write that a running
//! node picks up on its next pass.

use std::path::Path;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::fsutil::{self, now_secs};
use super::queue::{self, Layout, QueueError, CLOSE_FILE};
use super::spool::read_origin;

/// `medmae-serve queue …`.
#[derive(Debug, Clone, Args)]
pub struct QueueArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: QueueAction,
}

/// Queue actions.
#[derive(Debug, Clone, Subcommand)]
pub enum QueueAction {
    /// List open series, jobs (active, done, failed) and kept series (unmatched, held).
    List {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Re-queue failed jobs, or send unmatched/held series back to routing.
    Retry {
        /// Job or series ids from `queue list`.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Delete done or failed jobs and unmatched or held series (a purged done job no longer blocks a re-sent
    /// series from being processed again).
    Purge {
        /// Ids from `queue list`.
        ids: Vec<String>,
        /// Every done job.
        #[arg(long)]
        done: bool,
        /// Every failed job.
        #[arg(long)]
        failed: bool,
    },
    /// Complete open series now instead of waiting for the idle time.
    Close {
        /// Series ids from `queue list`.
        #[arg(required = true)]
        series: Vec<String>,
    },
}

/// One line of `queue list`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    /// open, sealed, job, done, failed, unmatched or held.
    pub kind: &'static str,
    /// Series or job id.
    pub id: String,
    /// Job state, or "receiving"/"routing"/"kept".
    pub state: String,
    /// Model (jobs).
    pub model: String,
    /// Instances.
    pub instances: usize,
    /// Failed tries (jobs).
    pub attempts: u32,
    /// Delivered / destinations (jobs).
    pub delivered: String,
    /// Seconds since creation or first reception.
    pub age_s: u64,
    /// Last error (jobs).
    pub error: String,
}

fn series_entries(dir: &Path, kind: &'static str, state: &str) -> Vec<Entry> {
    let now = now_secs();
    fsutil::subdirs(dir)
        .into_iter()
        .map(|id| {
            let d = dir.join(&id);
            let origin = read_origin(&d);
            Entry {
                kind,
                state: if kind == "open" && d.join(CLOSE_FILE).exists() {
                    "closing".into()
                } else {
                    state.into()
                },
                id,
                model: String::new(),
                instances: fsutil::instance_files(&d).map_or(0, |f| f.len()),
                attempts: 0,
                delivered: String::new(),
                age_s: now.saturating_sub(origin.received),
                error: String::new(),
            }
        })
        .collect()
}

/// Everything in the spool.
pub fn list(layout: &Layout) -> Vec<Entry> {
    let now = now_secs();
    let mut out = series_entries(&layout.series(), "open", "receiving");
    out.extend(series_entries(&layout.sealed(), "sealed", "routing"));
    for (dir, kind) in [
        (layout.jobs(), "job"),
        (layout.failed(), "failed"),
        (layout.done(), "done"),
    ] {
        for id in fsutil::subdirs(&dir) {
            let e = match queue::read_job(&dir.join(&id)) {
                Ok(r) => Entry {
                    kind,
                    id,
                    state: r.state.name().into(),
                    model: r.model,
                    instances: r.instances.len(),
                    attempts: r.attempts,
                    delivered: format!("{}/{}", r.delivered.len(), r.destinations.len()),
                    age_s: now.saturating_sub(r.created),
                    error: r.error.unwrap_or_default(),
                },
                Err(e) => Entry {
                    kind,
                    id,
                    state: "unreadable".into(),
                    model: String::new(),
                    instances: 0,
                    attempts: 0,
                    delivered: String::new(),
                    age_s: 0,
                    error: e.to_string(),
                },
            };
            out.push(e);
        }
    }
    out.extend(series_entries(&layout.unmatched(), "unmatched", "kept"));
    out.extend(series_entries(&layout.held(), "held", "kept"));
    out
}

fn table(entries: &[Entry]) -> String {
    let mut s = format!(
        "{:<9} {:<40} {:<10} {:<12} {:>9} {:>8} {:>9} {:>8}  ERROR\n",
        "KIND", "ID", "STATE", "MODEL", "INSTANCES", "ATTEMPTS", "DELIVERED", "AGE_S"
    );
    for e in entries {
        s.push_str(&format!(
            "{:<9} {:<40} {:<10} {:<12} {:>9} {:>8} {:>9} {:>8}  {}\n",
            e.kind, e.id, e.state, e.model, e.instances, e.attempts, e.delivered, e.age_s, e.error
        ));
    }
    s
}

/// Run a queue action on the spool at `spool`; returns the text to print.
pub fn run(spool: &Path, action: &QueueAction) -> Result<String, QueueError> {
    if !spool.is_dir() {
        return Err(QueueError::Io {
            path: spool.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "spool directory not found"),
        });
    }
    let layout = Layout::new(spool);
    let mut out = String::new();
    match action {
        QueueAction::List { json } => {
            let entries = list(&layout);
            if *json {
                out = serde_json::to_string_pretty(&entries).unwrap_or_default();
                out.push('\n');
            } else {
                out = table(&entries);
            }
        }
        QueueAction::Retry { ids } => {
            for id in ids {
                out.push_str(&queue::retry(&layout, id)?);
                out.push('\n');
            }
        }
        QueueAction::Purge { ids, done, failed } => {
            let mut all = ids.clone();
            if *done {
                all.extend(fsutil::subdirs(&layout.done()));
            }
            if *failed {
                all.extend(fsutil::subdirs(&layout.failed()));
            }
            for id in all {
                let from = queue::purge(&layout, &id)?;
                out.push_str(&format!("purged {from} {id}\n"));
            }
        }
        QueueAction::Close { series } => {
            for id in series {
                let dir = layout.series().join(id);
                if id.contains(['/', '\\']) || id.starts_with('.') || !dir.is_dir() {
                    return Err(QueueError::NotFound(id.clone()));
                }
                let path = dir.join(CLOSE_FILE);
                fsutil::write_atomic(&path, b"").map_err(queue::io_at(&path))?;
                out.push_str(&format!(
                    "series {id} will be completed at the node's next pass\n"
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::spool::{Spool, SpoolLimits};
    use super::*;

    #[test]
    fn list_close_and_purge() {
        let d = tempfile::tempdir().unwrap();
        let limits = SpoolLimits {
            max_instances: 9,
            max_series_bytes: 1 << 20,
            quota_bytes: 1 << 20,
        };
        let s = Spool::open(Layout::new(d.path()), limits).unwrap();
        let st = s.store("1.2.3", "1.2.3.4", "PACS", b"data").unwrap();
        let text = run(d.path(), &QueueAction::List { json: false }).unwrap();
        assert!(
            text.contains("open") && text.contains(&st.series) && text.contains("receiving"),
            "{text}"
        );
        let out = run(
            d.path(),
            &QueueAction::Close {
                series: vec![st.series.clone()],
            },
        )
        .unwrap();
        assert!(out.contains("next pass"));
        let e = list(&Layout::new(d.path()));
        assert_eq!((e[0].state.as_str(), e[0].instances), ("closing", 1));
        assert!(run(
            d.path(),
            &QueueAction::Close {
                series: vec!["../x".into()]
            }
        )
        .is_err());
        std::fs::create_dir_all(d.path().join("held/abc.1")).unwrap();
        let j = run(d.path(), &QueueAction::List { json: true }).unwrap();
        assert!(j.contains("\"kind\": \"held\""), "{j}");
        let out = run(
            d.path(),
            &QueueAction::Purge {
                ids: vec!["abc.1".into()],
                done: false,
                failed: false,
            },
        )
        .unwrap();
        assert_eq!(out, "purged held abc.1\n");
        assert!(run(
            &d.path().join("missing"),
            &QueueAction::List { json: false }
        )
        .is_err());
    }
}
