//! Run tracking: `metrics.jsonl`, TensorBoard event files, PNG grids, progress output and an optional offline wandb
//! run.

pub mod crc32c;
pub mod images;
pub mod jsonl;
pub mod progress;
pub mod tfevents;
pub mod wandb;
