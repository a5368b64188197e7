//! medmae's training-experiment config, without libtorch: the typed YAML sections with their defaults
//! ([`ExperimentConfig`]), `--set a.b.c=value` overrides (list elements by index or by transform `name`), typed
//! parsing whose errors name the dotted key, and validation by section. `medmae-train` uses it to run, and
//! `fuzz/` to fuzz the same code without linking tch. Generic [`load`] reads other configs (e.g. `prepare`'s) the
//! same way.

pub mod device;
pub mod error;
pub mod experiment;
pub mod overrides;
pub mod validate;
pub mod yaml;

pub use device::DeviceSpec;
pub use error::{ConfigError, Result};
pub use experiment::{
    saved_config_for_checkpoint, DataConfig, ExperimentConfig, LoggingConfig, OptimConfig,
    ScheduleConfig, ValidationConfig, SAVED_CONFIG,
};
pub use overrides::apply_override;
pub use spec::{DatasetKind, DatasetSource};
pub use yaml::{load, parse_config_value, parse_text, read_tree, Value};
