//! tract backend (pure Rust).
//!
//! The ONNX graph has a symbolic batch axis. tract's optimiser turns a 3-D convolution into a fused, lazily
//! gathered matrix product only when the batch axis is 1; with a batch of 2 it falls back to an explicit `Im2col`
//! that costs ~100× more on a 64³ UNETR window (measured 0.31 s vs 37 s, `examples/tract_profile.rs`). So one plan
//! is optimised for batch 1 at load time, and a batch of windows runs window by window, spread over up to
//! `threads` worker threads (each window is independent, so the result is identical to a batched run).

use std::sync::Arc;

use ndarray::{ArrayD, Axis};
use tract_onnx::prelude::*;

use super::{check_output, tract_ops, Backend};
use crate::error::ServeError;
use crate::model::ModelInfo;

type Plan = Arc<TypedRunnableModel>;

/// Window outputs of one worker, with their index in the batch.
type Indexed = Vec<(usize, ArrayD<f32>)>;

/// A model in tract: one optimised batch-1 plan and the number of windows run concurrently.
pub struct TractBackend {
    plan: Plan,
    workers: usize,
    info: ModelInfo,
}

fn err(msg: impl std::fmt::Display) -> ServeError {
    ServeError::Backend {
        backend: "tract",
        msg: msg.to_string(),
    }
}

/// Fix the input to `shape`, optimise, swap in the server's faster kernels ([`tract_ops`]) and make a plan.
pub fn optimised_plan(model: InferenceModel, shape: &[usize]) -> TractResult<Plan> {
    let mut typed = model
        .with_input_fact(0, f32::fact(shape).into())?
        .into_optimized()?;
    tract_ops::use_fast_pad(&mut typed);
    typed.into_runnable()
}

impl TractBackend {
    /// Parse `info.path` and optimise it for one `[1, C, roi...]` window. `threads` = windows run at once
    /// (0 = the machine's available parallelism).
    pub fn load(info: &ModelInfo, threads: usize) -> Result<Self, ServeError> {
        let shape = info.input_shape(1);
        let model = tract_ops::onnx()
            .model_for_path(&info.path)
            .map_err(|e| err(format!("{}: {e:#}", info.path.display())))?;
        let plan = optimised_plan(model, &shape).map_err(|e| {
            err(format!(
                "{}: optimising for input {shape:?}: {e:#}",
                info.path.display()
            ))
        })?;
        let workers = if threads > 0 {
            threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        };
        Ok(Self {
            plan,
            workers,
            info: info.clone(),
        })
    }

    /// Run one window `[1, C, roi...]` → `[1, K, roi...]`.
    fn run_one(&self, window: ndarray::ArrayViewD<'_, f32>) -> Result<ArrayD<f32>, ServeError> {
        let shape = window.shape().to_vec();
        let data = window.as_standard_layout();
        let slice = data
            .as_slice()
            .ok_or_else(|| err("input is not contiguous"))?;
        let t = Tensor::from_shape(&shape, slice).map_err(err)?;
        let out = self
            .plan
            .run(tvec!(t.into()))
            .map_err(|e| err(format!("{e:#}")))?;
        let first = out
            .first()
            .ok_or_else(|| err("the plan returned no output"))?;
        let view = first.to_plain_array_view::<f32>().map_err(err)?;
        let oshape = view.shape().to_vec();
        let values = view
            .as_slice()
            .map_or_else(|| view.iter().copied().collect(), <[f32]>::to_vec);
        ArrayD::from_shape_vec(oshape, values).map_err(err)
    }
}

impl Backend for TractBackend {
    fn name(&self) -> &'static str {
        "tract"
    }

    fn platform(&self) -> &'static str {
        "tract_onnx"
    }

    fn run(&self, input: ArrayD<f32>) -> Result<ArrayD<f32>, ServeError> {
        let n = input.shape().first().copied().unwrap_or(0);
        if n == 0 {
            return Err(err("empty batch"));
        }
        let windows: Vec<_> = input.axis_chunks_iter(Axis(0), 1).collect();
        let workers = self.workers.clamp(1, n);
        // Worker `t` runs windows t, t + workers, ...; each returns its (window index, output) pairs.
        let run_share = |t: usize| -> Result<Indexed, ServeError> {
            windows
                .iter()
                .enumerate()
                .skip(t)
                .step_by(workers)
                .map(|(i, w)| Ok((i, self.run_one(w.view())?)))
                .collect()
        };
        let shares: Vec<Result<Indexed, ServeError>> = if workers == 1 {
            vec![run_share(0)]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..workers)
                    .map(|t| s.spawn(move || run_share(t)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err(err("a tract worker panicked")))
                    })
                    .collect()
            })
        };
        let mut outs: Vec<Option<ArrayD<f32>>> = vec![None; n];
        for (i, out) in shares
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
        {
            if let Some(slot) = outs.get_mut(i) {
                *slot = Some(out);
            }
        }
        let outs: Vec<ArrayD<f32>> = outs
            .into_iter()
            .map(|o| o.ok_or_else(|| err("a window was not run")))
            .collect::<Result<_, _>>()?;
        let views: Vec<_> = outs.iter().map(|o| o.view()).collect();
        let out = ndarray::concatenate(Axis(0), &views).map_err(err)?;
        check_output("tract", &self.info, n, out.shape())?;
        Ok(out)
    }
}
