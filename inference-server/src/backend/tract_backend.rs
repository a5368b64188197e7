//! tract backend (pure Rust). The ONNX graph has a symbolic batch axis; a plan is optimised per concrete batch size
//! (an unconcretised plan is very slow) and cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ndarray::ArrayD;
use tract_onnx::prelude::*;

use super::{check_output, Backend};
use crate::error::ServeError;
use crate::model::ModelInfo;

type Plan = Arc<TypedRunnableModel>;

/// A model in tract with one optimised plan per batch size seen.
pub struct TractBackend {
    model: InferenceModel,
    plans: Mutex<HashMap<usize, Plan>>,
    info: ModelInfo,
}

fn err(msg: impl std::fmt::Display) -> ServeError {
    ServeError::Backend {
        backend: "tract",
        msg: msg.to_string(),
    }
}

impl TractBackend {
    /// Parse `info.path`.
    pub fn load(info: &ModelInfo) -> Result<Self, ServeError> {
        let model = tract_onnx::onnx()
            .model_for_path(&info.path)
            .map_err(|e| err(format!("{}: {e:#}", info.path.display())))?;
        Ok(Self {
            model,
            plans: Mutex::new(HashMap::new()),
            info: info.clone(),
        })
    }

    /// The optimised plan for batch size `n` (built on first use).
    fn plan(&self, n: usize) -> Result<Plan, ServeError> {
        if let Some(p) = self
            .plans
            .lock()
            .map_err(|_| err("plan cache lock poisoned"))?
            .get(&n)
        {
            return Ok(p.clone());
        }
        let shape = self.info.input_shape(n);
        let plan = self
            .model
            .clone()
            .with_input_fact(0, f32::fact(&shape).into())
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| err(format!("optimising for input {shape:?}: {e:#}")))?;
        self.plans
            .lock()
            .map_err(|_| err("plan cache lock poisoned"))?
            .insert(n, plan.clone());
        Ok(plan)
    }
}

impl Backend for TractBackend {
    fn name(&self) -> &'static str {
        "tract"
    }

    fn run(&self, input: ArrayD<f32>) -> Result<ArrayD<f32>, ServeError> {
        let shape = input.shape().to_vec();
        let n = shape.first().copied().unwrap_or(0);
        let plan = self.plan(n)?;
        let data = input.as_standard_layout();
        let slice = data
            .as_slice()
            .ok_or_else(|| err("input is not contiguous"))?;
        let t = Tensor::from_shape(&shape, slice).map_err(err)?;
        let out = plan
            .run(tvec!(t.into()))
            .map_err(|e| err(format!("{e:#}")))?;
        let first = out
            .first()
            .ok_or_else(|| err("the plan returned no output"))?;
        let view = first.to_plain_array_view::<f32>().map_err(err)?;
        let oshape = view.shape().to_vec();
        check_output("tract", &self.info, n, &oshape)?;
        ArrayD::from_shape_vec(oshape, view.iter().copied().collect()).map_err(err)
    }
}
