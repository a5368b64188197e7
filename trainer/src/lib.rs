//! medmae's training library behind `medmae-train`: experiment config, data, optimisation, schedules, the training
//! engine, checkpoints, run tracking, the start-of-training checks, and the plan / pretrain / finetune / evaluate /
//! predict / import commands.

pub mod checkpoint;
pub mod checks;
pub mod data;
pub mod device;
pub mod dist;
pub mod engine;
pub mod error;
pub mod evaluate;
pub mod finetune;
pub mod import;
pub mod infer;
pub mod optim;
pub mod plan;
pub mod pretrain;
pub mod schedule;
pub mod threads;
pub mod tracking;

/// The experiment config (the libtorch-free `medmae-config` crate).
pub use ::config;
pub use error::{Result, TrainError};
