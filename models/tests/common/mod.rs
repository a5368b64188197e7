//! Helpers shared by the integration tests: golden fixture access and tensor comparison.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use spec::ModelConfig;
use tch::{Kind, Tensor};

/// The golden fixture directory.
pub fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("golden")
}

/// Use one intra-op thread (OpenMP spinning on a busy shared machine slows small tests a lot).
pub fn single_thread() {
    tch::set_num_threads(1);
}

/// All tensors of a fixture file, as f32 (integer tensors keep their kind).
pub fn read(name: &str) -> HashMap<String, Tensor> {
    single_thread();
    let path = golden_dir().join(name);
    let t = Tensor::read_safetensors(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (regenerate with gen_models.py)", path.display()));
    t.into_iter()
        .map(|(k, v)| {
            let v = if v.kind() == Kind::Half {
                v.to_kind(Kind::Float)
            } else {
                v
            };
            (k, v)
        })
        .collect()
}

/// The medmae config of a golden case.
pub fn config(case: &str) -> ModelConfig {
    let text = std::fs::read_to_string(golden_dir().join("cases.json")).unwrap();
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    serde_json::from_value(all[case].clone()).unwrap_or_else(|e| panic!("case {case}: {e}"))
}

/// Largest absolute difference; panics on a shape mismatch.
pub fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}
