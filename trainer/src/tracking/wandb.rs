//! Optional Weights & Biases logging: an *offline* run directory written from `metrics.jsonl` by the Python wandb
//! client, only when that client is importable (never required; nothing is uploaded).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Result, TrainError};

/// The Python interpreter to try: `$MEDMAE_PYTHON`, else `python3`.
pub fn python() -> PathBuf {
    std::env::var_os("MEDMAE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// Whether `import wandb` works in `python`.
pub fn available(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import wandb"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

const SCRIPT: &str = r#"
import json, sys, wandb
run_dir, metrics, config, name = sys.argv[1:5]
run = wandb.init(mode="offline", dir=run_dir, project="medmae", name=name, config=json.load(open(config)))
for line in open(metrics):
    rec = json.loads(line)
    step = rec.get("step")
    vals = {k: v for k, v in rec.items() if k != "step" and isinstance(v, (int, float))}
    if vals:
        run.log(vals, step=step)
run.finish()
"#;

/// Write an offline wandb run under `run_dir/wandb/` from a metrics file and a JSON config file.
pub fn write_offline_run(
    python: &Path,
    run_dir: &Path,
    metrics: &Path,
    config_json: &Path,
    name: &str,
) -> Result<()> {
    let out = Command::new(python)
        .env("WANDB_MODE", "offline")
        .env("WANDB_SILENT", "true")
        .arg("-c")
        .arg(SCRIPT)
        .arg(run_dir)
        .arg(metrics)
        .arg(config_json)
        .arg(name)
        .output()
        .map_err(|e| TrainError::io(python, e))?;
    if !out.status.success() {
        return Err(TrainError::format(
            run_dir,
            format!(
                "wandb offline run failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(())
}
