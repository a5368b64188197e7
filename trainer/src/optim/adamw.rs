//! AdamW (PyTorch's formulation) over a `VarStore`'s trainable tensors, with per-group lr scale and weight decay.
//!
//! Every per-parameter operation is queued on the parameter's device; nothing is read back to the host per
//! parameter. On the CPU, contiguous float32 parameters are updated in one pass over their memory instead
//! (`super::fused`), the same formula with the same order of operations. The update itself never synchronises, and the gradient norm and the finiteness check reduce all
//! parameters on the device first and read back one number per step.

use std::collections::BTreeMap;

use tch::{nn::VarStore, Kind, Tensor};

use super::fused;
use super::groups::{group_key, layer_scale, GroupKey};
use crate::config::OptimConfig;
use crate::error::{Result, TrainError};

/// One parameter group.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamGroup {
    /// Multiplier of the scheduled learning rate.
    pub lr_scale: f64,
    /// Decoupled weight decay of this group.
    pub weight_decay: f64,
    /// Parameter names in the group (sorted).
    pub names: Vec<String>,
}

struct Slot {
    name: String,
    param: Tensor,
    group: usize,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

/// For each tensor, whether its memory overlaps another's (undefined tensors overlap nothing).
fn overlapping(tensors: &[Tensor]) -> Vec<bool> {
    // Byte range [start, end) each tensor can touch: data pointer + (Σ (size−1)·stride + 1) elements.
    let mut spans: Vec<(usize, usize, usize)> = tensors
        .iter()
        .enumerate()
        .filter(|(_, t)| t.defined() && t.numel() > 0)
        .map(|(i, t)| {
            let last: i64 = t
                .size()
                .iter()
                .zip(t.stride())
                .map(|(&n, st)| (n - 1) * st.max(0))
                .sum();
            let start = t.data_ptr() as usize;
            let bytes = (last as usize + 1) * t.kind().elt_size_in_bytes();
            (start, start + bytes, i)
        })
        .collect();
    spans.sort_unstable();
    let mut out = vec![false; tensors.len()];
    // Sorted by start: a span overlaps an earlier one iff it starts before the furthest end seen so far.
    let mut reach: Option<(usize, usize)> = None; // (furthest end, index of the span that reaches it)
    for &(start, end, i) in &spans {
        if let Some((far, j)) = reach {
            if start < far {
                out[i] = true;
                out[j] = true;
            }
        }
        if reach.is_none_or(|(far, _)| end > far) {
            reach = Some((end, i));
        }
    }
    out
}

/// AdamW: `p ← p(1 − lr·wd)`, `m ← β1 m + (1−β1) g`, `v ← β2 v + (1−β2) g²`,
/// `p ← p − lr/(1−β1ᵗ) · m / (√v / √(1−β2ᵗ) + ε)`.
pub struct AdamW {
    betas: [f64; 2],
    eps: f64,
    slots: Vec<Slot>,
    groups: Vec<ParamGroup>,
    steps: u64,
    /// Update contiguous float32 CPU parameters in one pass over memory (see `fused`).
    fused: bool,
}

impl AdamW {
    /// Group the trainable tensors of `vs` (sorted by name): no decay on norms/biases/position embeddings/tokens,
    /// and, with `layer_decay`, lr scale `decay^(depth+1−layer)` for an encoder of `depth` blocks.
    pub fn new(vs: &VarStore, cfg: &OptimConfig, depth: usize) -> Self {
        let vars: BTreeMap<String, Tensor> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        let mut groups: Vec<ParamGroup> = Vec::new();
        let mut slots = Vec::with_capacity(vars.len());
        for (name, param) in vars {
            let GroupKey { layer, decay } = group_key(&name, &param.size(), depth);
            let lr_scale = cfg
                .layer_decay
                .map_or(1.0, |d| layer_scale(layer, depth, d));
            let weight_decay = if decay { cfg.weight_decay } else { 0.0 };
            let group = match groups
                .iter()
                .position(|g| g.lr_scale == lr_scale && g.weight_decay == weight_decay)
            {
                Some(g) => g,
                None => {
                    groups.push(ParamGroup {
                        lr_scale,
                        weight_decay,
                        names: Vec::new(),
                    });
                    groups.len() - 1
                }
            };
            groups[group].names.push(name.clone());
            let exp_avg = param.zeros_like().detach();
            let exp_avg_sq = param.zeros_like().detach();
            slots.push(Slot {
                name,
                param,
                group,
                exp_avg,
                exp_avg_sq,
            });
        }
        Self {
            betas: cfg.betas,
            eps: cfg.eps,
            slots,
            groups,
            steps: 0,
            fused: true,
        }
    }

    /// The parameter groups.
    pub fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }

    /// Optimiser steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Back-propagate `loss` into the parameters' gradients. With `accumulate == false` (the first micro-batch of
    /// a step) each parameter's gradient *becomes* the one just computed: autograd hands the fresh tensors back
    /// (`run_backward`) and each `.grad` takes over its storage without a copy — as PyTorch's
    /// `zero_grad(set_to_none=True)` + backward, which skips the memset of every gradient and the read-add-write
    /// pass of accumulating into zeros. With `accumulate == true` the new gradients are added to the current ones
    /// (later micro-batches). A parameter the loss does not reach keeps no gradient if it never had one (AdamW skips
    /// it, data-parallel averaging reports it) and gets a zero one otherwise — what `zero_grad` + backward gave.
    pub fn backward(&mut self, loss: &Tensor, accumulate: bool) -> Result<()> {
        if self.slots.is_empty() {
            return Ok(loss.f_backward()?);
        }
        let params: Vec<&Tensor> = self.slots.iter().map(|s| &s.param).collect();
        let grads = Tensor::f_run_backward(&[loss], &params, false, false)?;
        // A parameter reached for the first time has no gradient tensor to hand the storage to: let autograd
        // define a zero one (once per parameter).
        for (s, g) in self.slots.iter().zip(&grads) {
            if g.defined() && !s.param.grad().defined() {
                s.param
                    .f_sum(s.param.kind())?
                    .f_mul_scalar(0.0)?
                    .f_backward()?;
            }
        }
        // Autograd may return one buffer for several parameters (the gradient of `a + b` for both, a row of a
        // position table and the token it is added to): such gradients are copied, never shared, so that in-place
        // work on one (data-parallel averaging, clipping, unscaling) never changes another.
        let shared = overlapping(&grads);
        let _guard = tch::no_grad_guard();
        for ((s, g), shared) in self.slots.iter().zip(grads).zip(shared) {
            let mut current = s.param.grad();
            if !g.defined() {
                if !accumulate && current.defined() {
                    let _ = current.f_detach_()?.f_zero_()?;
                }
            } else if accumulate {
                let _ = current.f_add_(&g)?;
            } else if !shared
                && g.is_contiguous()
                && g.size() == s.param.size()
                && g.kind() == current.kind()
            {
                // Share g's storage: the gradient tensor itself (and every handle to it) now holds the new values.
                let _ = current.f_detach_()?.f_set_source_tensor_(&g)?;
            } else {
                let _ = current.f_detach_()?.f_copy_(&g)?;
            }
        }
        Ok(())
    }

    /// Zero every gradient (before the first micro-batch of a step).
    pub fn zero_grad(&mut self) {
        for s in &mut self.slots {
            let mut g = s.param.grad();
            if g.defined() {
                let _ = g.detach_();
                let _ = g.zero_();
            }
        }
    }

    /// The defined gradients.
    fn grads(&self) -> impl Iterator<Item = Tensor> + '_ {
        self.slots
            .iter()
            .map(|s| s.param.grad())
            .filter(Tensor::defined)
    }

    /// Global L2 norm of all gradients (f64 accumulation; one host read-back for all parameters).
    pub fn grad_norm(&self) -> f64 {
        let _guard = tch::no_grad_guard();
        // Each gradient's norm in its own type (the CPU reduction accumulates in double; no double copy of the
        // gradients), then the sum of their squares in double.
        let squares: Vec<Tensor> = self
            .grads()
            .map(|g| g.norm().to_kind(Kind::Double).square())
            .collect();
        if squares.is_empty() {
            return 0.0;
        }
        Tensor::stack(&squares, 0)
            .sum(Kind::Double)
            .sqrt()
            .double_value(&[])
    }

    /// Scale all gradients so their global norm is at most `max_norm` (PyTorch: coefficient max/(norm+1e-6), ≤ 1).
    /// Returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        let norm = self.grad_norm();
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            let _guard = tch::no_grad_guard();
            for mut g in self.grads() {
                let _ = g.g_mul_scalar_(coef);
            }
        }
        norm
    }

    /// Multiply all gradients by `factor` (gradient accumulation averaging, loss-scale removal).
    pub fn scale_grads(&mut self, factor: f64) {
        let _guard = tch::no_grad_guard();
        for mut g in self.grads() {
            let _ = g.g_mul_scalar_(factor);
        }
    }

    /// True when every gradient is finite (one host read-back for all parameters).
    pub fn grads_finite(&self) -> bool {
        let _guard = tch::no_grad_guard();
        let flags: Vec<Tensor> = self.grads().map(|g| g.isfinite().all()).collect();
        flags.is_empty() || Tensor::stack(&flags, 0).all().int64_value(&[]) == 1
    }

    /// One AdamW update with scheduled learning rate `lr` (times each group's lr scale). Parameters without a
    /// gradient are skipped, like PyTorch. Only device operations with host scalars: no synchronisation.
    pub fn step(&mut self, lr: f64) {
        let _guard = tch::no_grad_guard();
        self.steps += 1;
        let [b1, b2] = self.betas;
        let t = self.steps as i32;
        let bias1 = 1.0 - b1.powi(t);
        let bias2_sqrt = (1.0 - b2.powi(t)).sqrt();
        // Contiguous float32 CPU parameters: one pass over memory per parameter (`fused`), all of them after the loop.
        let mut one_pass = Vec::new();
        for s in &mut self.slots {
            let g = s.param.grad();
            if !g.defined() {
                continue;
            }
            let group = &self.groups[s.group];
            let lr = lr * group.lr_scale;
            if self.fused {
                let c = fused::Coefficients {
                    decay: if group.weight_decay > 0.0 {
                        (1.0 - lr * group.weight_decay) as f32
                    } else {
                        1.0
                    },
                    one_minus_b1: (1.0 - b1) as f32,
                    b2: b2 as f32,
                    one_minus_b2: (1.0 - b2) as f32,
                    bias2_sqrt: bias2_sqrt as f32,
                    eps: self.eps as f32,
                    step_size: (lr / bias1) as f32,
                };
                if let Some(b) = fused::Buffers::of(&s.param, &g, &s.exp_avg, &s.exp_avg_sq, c) {
                    one_pass.push(b);
                    continue;
                }
            }
            if group.weight_decay > 0.0 {
                let _ = s.param.g_mul_scalar_(1.0 - lr * group.weight_decay);
            }
            let _ = s.exp_avg.lerp_(&g, 1.0 - b1);
            let _ = s.exp_avg_sq.g_mul_scalar_(b2);
            let _ = s.exp_avg_sq.addcmul_(&g, &(&g * (1.0 - b2)));
            let denom = s.exp_avg_sq.sqrt() / bias2_sqrt + self.eps;
            let _ = s.param.addcdiv_(&s.exp_avg, &(denom / (-lr / bias1)));
        }
        if !one_pass.is_empty() {
            fused::run(&one_pass, tch::get_num_threads().max(1) as usize);
        }
    }

    /// Whether contiguous float32 CPU parameters are updated in one pass over memory (the default) instead of one
    /// tensor operation at a time; both compute the same formula (`bench/train` compares their speed).
    pub fn set_fused(&mut self, on: bool) {
        self.fused = on;
    }

    /// The moments as named tensors (`exp_avg.<param>`, `exp_avg_sq.<param>`) for `train_state.safetensors`.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.slots.len());
        for s in &self.slots {
            out.push((format!("exp_avg.{}", s.name), s.exp_avg.shallow_clone()));
            out.push((
                format!("exp_avg_sq.{}", s.name),
                s.exp_avg_sq.shallow_clone(),
            ));
        }
        out
    }

    /// Restore the moments and the step count; every parameter's moments must be present with its shape.
    pub fn load_state(&mut self, tensors: &[(String, Tensor)], steps: u64) -> Result<()> {
        let map: BTreeMap<&str, &Tensor> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let _guard = tch::no_grad_guard();
        for s in &mut self.slots {
            for (prefix, dst) in [
                ("exp_avg", &mut s.exp_avg),
                ("exp_avg_sq", &mut s.exp_avg_sq),
            ] {
                let key = format!("{prefix}.{}", s.name);
                let src = map.get(key.as_str()).ok_or_else(|| {
                    TrainError::Data(format!("optimizer state: missing tensor `{key}`"))
                })?;
                if src.size() != dst.size() {
                    return Err(TrainError::Data(format!(
                        "optimizer state: `{key}` has shape {:?}, the parameter has {:?}",
                        src.size(),
                        dst.size()
                    )));
                }
                dst.f_copy_(src)?;
            }
        }
        let known = 2 * self.slots.len();
        if map.len() != known {
            return Err(TrainError::Data(format!(
                "optimizer state: {} tensors for {} parameters (expected {known})",
                map.len(),
                self.slots.len()
            )));
        }
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_finds_shared_memory_only() {
        let buf = Tensor::arange(12, (Kind::Float, tch::Device::Cpu));
        let other = Tensor::zeros([4], (Kind::Float, tch::Device::Cpu));
        let ts = [
            buf.narrow(0, 0, 6),           // 0: overlaps 2
            buf.narrow(0, 6, 6),           // 1: touches 0's end only: no overlap
            buf.narrow(0, 4, 1),           // 2: inside 0
            other.shallow_clone(),         // 3: its own memory
            Tensor::new(),                 // 4: undefined
            other.shallow_clone(),         // 5: the same memory as 3
            buf.view([3, 4]).select(1, 3), // 6: strided, elements 3, 7, 11: spans 3..=11, overlaps 0, 1, 2
        ];
        assert_eq!(
            overlapping(&ts),
            [true, true, true, true, false, true, true]
        );
        assert_eq!(
            overlapping(&ts[..2]),
            [false, false],
            "adjacent ranges do not overlap"
        );
        assert_eq!(
            overlapping(&[buf.narrow(0, 0, 6), other.shallow_clone()]),
            [false, false]
        );
    }
}
