//! Two tract kernels the server replaces with its own, for the memory-bound ops around UNETR's convolutions.
//!
//! Profiled on a ViT-B UNETR window (96³, one thread, `examples/tract_profile.rs`), tract spent ~1 s of 5.2 s outside
//! its matrix products in two places where ONNX Runtime spends ~0.2 s:
//! - **InstanceNormalization**: tract-onnx expands it into ~10 generic nodes (mean, subtract, square into a copy of the
//!   tensor, mean again, rsqrt, two broadcast multiplies and an add), each a full pass over a window-sized tensor.
//!   [`InstanceNorm`] computes each (batch, channel) plane's mean and variance in two reads and writes the result in
//!   place in one more pass.
//! - **Pad** before every padded convolution (tract's lazy im2col needs the padding materialised): tract fills the
//!   whole output with the constant, then copies the input through a dynamic-rank ndarray slice. [`FastPad`] writes
//!   each output row once: the constant borders and one `copy_from_slice` of the input row.
//!
//! Both compute the ONNX definitions; the normalisation statistics are summed in f32 lanes over blocks of 4096 values
//! and in f64 across blocks, so they are closer to the exact values than ONNX Runtime's (and tract's) running f32
//! sums: on a 64³ convolution + InstanceNormalization, ORT was 3e-4 off the f64 formula and this kernel 4e-6. Logits
//! therefore differ from ORT's by up to ~1e-4 (the parity tests allow 1e-4 of the logit scale), and an argmax near a
//! tie can differ (bench/serve: 0.9998 voxel agreement with the Python ORT baseline on its random-weight ViT-B).

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::array::{Pad, PadMode};
use tract_onnx::tract_hir::internal::*;

/// The ONNX front end with [`InstanceNorm`] registered for `InstanceNormalization`.
pub fn onnx() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    onnx.op_register
        .insert("InstanceNormalization", instance_normalization);
    onnx
}

/// Swap every constant-mode `Pad` of an optimised model for [`FastPad`] (same attributes, same result).
pub fn use_fast_pad(model: &mut TypedModel) -> usize {
    let mut swapped = 0;
    for node in model.nodes.iter_mut() {
        let Some(pad) = node.op_as::<Pad>() else {
            continue;
        };
        if matches!(pad.mode, PadMode::Constant(_)) {
            node.op = Box::new(FastPad(pad.clone()));
            swapped += 1;
        }
    }
    swapped
}

fn instance_normalization(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let epsilon = node.get_attr_opt("epsilon")?.unwrap_or(1e-5);
    Ok((expand(InstanceNormExpansion { epsilon }), vec![]))
}

/// Parse-time form: shape rules of ONNX InstanceNormalization, wired as one [`InstanceNorm`] node.
#[derive(Debug, Clone)]
struct InstanceNormExpansion {
    epsilon: f32,
}

impl Expansion for InstanceNormExpansion {
    fn name(&self) -> StaticName {
        "InstanceNormalization".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 3)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        s.equals(&inputs[0].datum_type, &inputs[1].datum_type)?;
        s.equals(&inputs[0].datum_type, &inputs[2].datum_type)?;
        s.equals(&inputs[1].shape, &inputs[2].shape)?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        s.equals(&inputs[1].shape[0], &inputs[0].shape[1])?;
        Ok(())
    }

    fn wire(
        &self,
        name: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(
            name,
            InstanceNorm {
                epsilon: self.epsilon.to_bits(),
            },
            inputs,
        )
    }
}

/// `y = scale[c] · (x − mean) / sqrt(var + ε) + bias[c]` over the spatial axes of each (batch, channel) plane of an
/// f32 `[N, C, ...]` tensor, written in place when the input is not shared.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstanceNorm {
    /// ε as f32 bits (keeps the op `Eq`/`Hash`).
    epsilon: u32,
}

impl Op for InstanceNorm {
    fn name(&self) -> StaticName {
        "medmae.InstanceNorm".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("epsilon: {}", f32::from_bits(self.epsilon))])
    }
    op_as_typed_op!();
}

impl EvalOp for InstanceNorm {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x, scale, bias) = args_3!(inputs);
        ensure!(
            x.datum_type() == f32::datum_type(),
            "InstanceNormalization: input is {:?}, only f32 is supported",
            x.datum_type()
        );
        ensure!(
            x.rank() >= 2,
            "InstanceNormalization: input of rank {} (expected [N, C, ...])",
            x.rank()
        );
        let scale = scale.cast_to::<f32>()?;
        let bias = bias.cast_to::<f32>()?;
        let scale = scale.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        let bias = bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        let channels = x.shape()[1];
        ensure!(
            scale.len() == channels && bias.len() == channels,
            "InstanceNormalization: {channels} channels but {} scales and {} biases",
            scale.len(),
            bias.len()
        );
        let plane: usize = x.shape()[2..].iter().product();
        let mut t = x.into_tensor();
        if plane > 0 {
            let mut view = t.try_as_plain_ram_mut()?;
            let data = view.as_slice_mut::<f32>()?;
            for (i, p) in data.chunks_exact_mut(plane).enumerate() {
                let c = i % channels;
                normalise_plane(p, scale[c], bias[c], f32::from_bits(self.epsilon));
            }
        }
        Ok(tvec!(t.into_tvalue()))
    }
}

impl TypedOp for InstanceNorm {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(inputs[0].datum_type.fact(inputs[0].shape.clone())))
    }
    as_op!();
}

/// Σ f(x) over `v`: eight f32 lanes per block of 4096 values (vectorisable), blocks summed in f64.
fn blocked_sum(v: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut total = 0f64;
    for block in v.chunks(4096) {
        let mut lanes = [0f32; 8];
        let mut chunks = block.chunks_exact(8);
        for ch in &mut chunks {
            for (l, &x) in lanes.iter_mut().zip(ch) {
                *l += f(x);
            }
        }
        total += lanes.iter().map(|&l| f64::from(l)).sum::<f64>();
        total += chunks
            .remainder()
            .iter()
            .map(|&x| f64::from(f(x)))
            .sum::<f64>();
    }
    total
}

fn normalise_plane(p: &mut [f32], scale: f32, bias: f32, epsilon: f32) {
    let n = p.len() as f64;
    let mean = blocked_sum(p, |x| x) / n;
    let m = mean as f32;
    let var = blocked_sum(p, |x| (x - m) * (x - m)) / n;
    // (x − mean)·a + bias, not x·a + (bias − mean·a): with a small variance `a` is large and the folded form
    // cancels catastrophically in f32 (a constant plane would not come out as exactly `bias`).
    let a = (f64::from(scale) / (var + f64::from(epsilon)).sqrt()) as f32;
    for x in p.iter_mut() {
        *x = (*x - m) * a + bias;
    }
}

/// tract's `Pad` with a faster evaluation for f32 constant padding (other types and modes use tract's own).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FastPad(pub Pad);

impl Op for FastPad {
    fn name(&self) -> StaticName {
        "medmae.Pad".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("pads: {:?}", self.0.pads)])
    }
    op_as_typed_op!();
}

impl EvalOp for FastPad {
    op_out_of_plan!();

    fn eval(&self, ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let PadMode::Constant(value) = &self.0.mode else {
            return self.0.eval(ctx, inputs);
        };
        if inputs.len() != 1 || inputs[0].datum_type() != f32::datum_type() {
            return self.0.eval(ctx, inputs);
        }
        let value = value.cast_to_scalar::<f32>()?;
        let input = args_1!(inputs);
        ensure!(
            self.0.pads.len() == input.rank(),
            "Pad: {} pads for an input of rank {}",
            self.0.pads.len(),
            input.rank()
        );
        let ishape = input.shape().to_vec();
        let oshape: Vec<usize> = ishape
            .iter()
            .zip(&self.0.pads)
            .map(|(&d, &(a, b))| d + a + b)
            .collect();
        let mut out = unsafe { Tensor::uninitialized::<f32>(&oshape)? };
        {
            let src_view = input.try_as_plain_ram()?;
            let src = src_view.as_slice::<f32>()?;
            let mut dst_view = out.try_as_plain_ram_mut()?;
            let dst = dst_view.as_slice_mut::<f32>()?;
            pad_constant(src, &ishape, &self.0.pads, value, dst);
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for FastPad {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.0.output_facts(inputs)
    }
    as_op!();
}

/// Row-major constant padding of `src` (shape `ishape`) into `dst` (every element written once).
fn pad_constant(
    src: &[f32],
    ishape: &[usize],
    pads: &[(usize, usize)],
    value: f32,
    dst: &mut [f32],
) {
    let Some((&width, outer)) = ishape.split_last() else {
        // Rank 0: nothing to pad.
        dst.copy_from_slice(src);
        return;
    };
    let (before, after) = pads[outer.len()];
    let orow = before + width + after;
    let oouter: Vec<usize> = outer
        .iter()
        .zip(pads)
        .map(|(&d, &(a, b))| d + a + b)
        .collect();
    // Odometer over the output's leading axes; `inside` tracks whether every coordinate falls in the input.
    let mut idx = vec![0usize; outer.len()];
    let mut next_src_row = 0usize;
    for row in dst.chunks_exact_mut(orow) {
        let inside = idx
            .iter()
            .zip(outer.iter().zip(pads))
            .all(|(&i, (&d, &(a, _)))| i >= a && i < a + d);
        if inside {
            let s = &src[next_src_row * width..(next_src_row + 1) * width];
            row[..before].fill(value);
            row[before..before + width].copy_from_slice(s);
            row[before + width..].fill(value);
            next_src_row += 1;
        } else {
            row.fill(value);
        }
        for ax in (0..idx.len()).rev() {
            idx[ax] += 1;
            if idx[ax] < oouter[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: u64, n: usize) -> Vec<f32> {
        medmae_test_support::uniform_values(n, seed, -1.5, 2.5)
    }

    #[test]
    fn fast_pad_equals_tracts_pad() {
        let cases: Vec<(Vec<usize>, Vec<(usize, usize)>)> = vec![
            (vec![7], vec![(2, 3)]),
            (vec![2, 3], vec![(0, 1), (1, 0)]),
            (
                vec![1, 3, 4, 5, 6],
                vec![(0, 0), (0, 0), (1, 1), (1, 1), (1, 1)],
            ),
            (
                vec![2, 2, 3, 1, 4],
                vec![(1, 0), (0, 2), (2, 1), (0, 3), (2, 2)],
            ),
            (vec![1, 2, 0, 3], vec![(0, 0), (1, 1), (1, 1), (0, 1)]),
        ];
        for (shape, pads) in cases {
            let n = shape.iter().product();
            let x = Tensor::from_shape(&shape, &lcg(n as u64 + 1, n)).unwrap();
            for value in [0.0f32, -2.5] {
                let pad = Pad::new(pads.clone(), PadMode::Constant(Arc::new(value.into())));
                let want = pad
                    .eval_out_of_plan(tvec!(x.clone().into_tvalue()))
                    .unwrap()
                    .unwrap();
                let got = FastPad(pad)
                    .eval_out_of_plan(tvec!(x.clone().into_tvalue()))
                    .unwrap()
                    .unwrap();
                assert_eq!(got[0].shape(), want[0].shape(), "{shape:?} {pads:?}");
                let (g, w) = (
                    got[0]
                        .try_as_plain_ram()
                        .unwrap()
                        .as_slice::<f32>()
                        .unwrap()
                        .to_vec(),
                    want[0]
                        .try_as_plain_ram()
                        .unwrap()
                        .as_slice::<f32>()
                        .unwrap()
                        .to_vec(),
                );
                assert_eq!(g, w, "{shape:?} {pads:?} value {value}");
            }
        }
    }

    #[test]
    fn fast_pad_hand_case() {
        // [2, 2] padded by one row above and one column either side with 9.
        let pad = Pad::new(
            vec![(1, 0), (1, 1)],
            PadMode::Constant(Arc::new(9f32.into())),
        );
        let x = Tensor::from_shape(&[2, 2], &[1f32, 2., 3., 4.]).unwrap();
        let y = FastPad(pad)
            .eval_out_of_plan(tvec!(x.into_tvalue()))
            .unwrap()
            .unwrap();
        assert_eq!(y[0].shape(), &[3, 4]);
        assert_eq!(
            y[0].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap(),
            &[9., 9., 9., 9., 9., 1., 2., 9., 9., 3., 4., 9.]
        );
    }

    /// Run [`InstanceNorm`] (ε 1e-5) on `x` of `shape` with per-channel `scale` and `bias`.
    fn run_norm(shape: &[usize], x: &[f32], scale: &[f32], bias: &[f32]) -> TractResult<Vec<f32>> {
        let op = InstanceNorm {
            epsilon: 1e-5f32.to_bits(),
        };
        let c = [scale.len()];
        let y = op
            .eval_out_of_plan(tvec!(
                Tensor::from_shape(shape, x)?.into_tvalue(),
                Tensor::from_shape(&c, scale)?.into_tvalue(),
                Tensor::from_shape(&c, bias)?.into_tvalue()
            ))?
            .ok_or_else(|| format_err!("no output"))?;
        assert_eq!(y[0].shape(), shape);
        Ok(y[0].try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
    }

    /// The ONNX formula in f64, the straightforward way.
    fn reference(
        x: &[f32],
        n: usize,
        c: usize,
        plane: usize,
        scale: &[f32],
        bias: &[f32],
        eps: f64,
    ) -> Vec<f64> {
        let mut y = vec![0f64; x.len()];
        for b in 0..n {
            for ch in 0..c {
                let o = (b * c + ch) * plane;
                let p = &x[o..o + plane];
                let mean = p.iter().map(|&v| f64::from(v)).sum::<f64>() / plane as f64;
                let var = p
                    .iter()
                    .map(|&v| (f64::from(v) - mean).powi(2))
                    .sum::<f64>()
                    / plane as f64;
                for i in 0..plane {
                    y[o + i] = f64::from(scale[ch]) * (f64::from(p[i]) - mean) / (var + eps).sqrt()
                        + f64::from(bias[ch]);
                }
            }
        }
        y
    }

    #[test]
    fn instance_norm_matches_the_onnx_formula() {
        for (n, c, spatial) in [
            (1usize, 3usize, vec![5usize, 4, 3]),
            (2, 2, vec![17, 33]),
            (1, 1, vec![9000]),
        ] {
            let plane: usize = spatial.iter().product();
            let mut shape = vec![n, c];
            shape.extend(&spatial);
            // An offset and spread per plane, so that the mean matters.
            let mut x = lcg(7, n * c * plane);
            for (i, v) in x.iter_mut().enumerate() {
                *v = *v * (1.0 + (i / plane) as f32) + 100.0 * (i / plane) as f32;
            }
            let scale: Vec<f32> = (0..c).map(|i| 0.5 + i as f32).collect();
            let bias: Vec<f32> = (0..c).map(|i| i as f32 - 1.0).collect();
            let got = run_norm(&shape, &x, &scale, &bias).unwrap();
            let want = reference(&x, n, c, plane, &scale, &bias, 1e-5);
            let worst = got
                .iter()
                .zip(&want)
                .map(|(&g, &w)| (f64::from(g) - w).abs())
                .fold(0f64, f64::max);
            assert!(
                worst < 2e-5 * (c as f64 + 1.0),
                "{shape:?}: max |error| {worst}"
            );
        }
    }

    #[test]
    fn instance_norm_stays_accurate_on_a_window_sized_plane() {
        // A 64³ plane, offset up to 100 standard deviations: f32 running sums lose ~1e-4 here (ONNX Runtime's
        // kernel was 3e-4 off the f64 formula on a conv + instance norm of this size); the blocked f64 sums stay
        // within a few ulp of the input's own rounding.
        let plane = 64 * 64 * 64;
        for (offset, spread) in [(0.0f32, 1.0f32), (10.0, 1.0), (100.0, 1.0), (0.0, 0.01)] {
            let x: Vec<f32> = lcg(3, plane).iter().map(|v| offset + spread * v).collect();
            let got = run_norm(&[1, 1, plane], &x, &[1.0], &[0.0]).unwrap();
            let want = reference(&x, 1, 1, plane, &[1.0], &[0.0], 1e-5);
            let worst = got
                .iter()
                .zip(&want)
                .map(|(&g, &w)| (f64::from(g) - w).abs())
                .fold(0f64, f64::max);
            // An f32 input at `offset` is itself rounded by ~offset · 6e-8, which normalising divides by `spread`.
            let bound = 4e-7 + f64::from(offset) * 6e-8 / f64::from(spread);
            assert!(
                worst < bound,
                "offset {offset}, spread {spread}: max |error| {worst:.3e} (bound {bound:.1e})"
            );
        }
    }

    #[test]
    fn instance_norm_of_a_constant_plane_is_the_bias() {
        assert_eq!(
            run_norm(&[1, 2, 4], &[3f32; 8], &[2.0, 2.0], &[0.25, -1.0]).unwrap(),
            [0.25, 0.25, 0.25, 0.25, -1., -1., -1., -1.]
        );
    }

    #[test]
    fn instance_norm_refuses_a_channel_count_mismatch() {
        let e = run_norm(&[1, 3, 2], &[0f32; 6], &[1.0, 1.0], &[0.0, 0.0]).unwrap_err();
        assert!(format!("{e}").contains("3 channels but 2 scales"), "{e}");
    }
}
