//! Primitive layers shared by every network (linear, layer norm, N-d convolution, stochastic depth), with
//! PyTorch-compatible parameter names (`weight`, `bias`) and fallible forwards.

use tch::nn::{self, Init};
use tch::{Kind, Tensor};

use crate::error::{shape_err, Result};

/// The sub-path of `p` named by a dotted string (`"encoder.patch_embed.proj"`): tch paths take one component at a time.
pub fn sub<'a>(p: &nn::Path<'a>, dotted: &str) -> nn::Path<'a> {
    dotted
        .split('.')
        .filter(|c| !c.is_empty())
        .fold(p.clone(), |acc, c| acc.sub(c))
}

/// PyTorch's default weight/bias bound for layers it initialises with `kaiming_uniform_(a=√5)`: `1/√fan_in`.
fn default_bound(fan_in: usize) -> f64 {
    1.0 / (fan_in.max(1) as f64).sqrt()
}

/// `y = x Wᵀ + b`, weight `[out, in]`.
#[derive(Debug)]
pub struct Linear {
    /// `[out, in]`.
    pub weight: Tensor,
    /// `[out]`, if the layer has a bias.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// A linear layer under `p` (`p.weight`, `p.bias`), Xavier-uniform weight and zero bias (timm / SelfMedMAE init).
    pub fn new(p: &nn::Path, inp: usize, out: usize, bias: bool) -> Result<Self> {
        let bound = (6.0 / (inp + out) as f64).sqrt();
        let weight = p.f_var(
            "weight",
            &[out as i64, inp as i64],
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        let bias = if bias {
            Some(p.f_var("bias", &[out as i64], Init::Const(0.0))?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    /// Apply to the last axis of `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_linear(&self.weight, self.bias.as_ref())?)
    }
}

/// LayerNorm over the last axis with an affine weight and bias.
#[derive(Debug)]
pub struct LayerNorm {
    /// `[dim]`, initialised to ones.
    pub weight: Tensor,
    /// `[dim]`, initialised to zeros.
    pub bias: Tensor,
    /// Epsilon inside the square root.
    pub eps: f64,
    dim: i64,
}

impl LayerNorm {
    /// A LayerNorm under `p` (`p.weight`, `p.bias`).
    pub fn new(p: &nn::Path, dim: usize, eps: f64) -> Result<Self> {
        let weight = p.f_var("weight", &[dim as i64], Init::Const(1.0))?;
        let bias = p.f_var("bias", &[dim as i64], Init::Const(0.0))?;
        Ok(Self {
            weight,
            bias,
            eps,
            dim: dim as i64,
        })
    }

    /// Normalise the last axis (biased variance, `eps` inside the square root).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_layer_norm(
            [self.dim],
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
            false,
        )?)
    }
}

/// An N-d convolution (N = 2 or 3) or transposed convolution with a cubic kernel.
///
/// Weight layout: `[out, in, k…]` for a convolution, `[in, out, k…]` for a transposed one (PyTorch's layouts).
#[derive(Debug)]
pub struct Conv {
    /// The kernel.
    pub weight: Tensor,
    /// Per-output-channel bias, if any.
    pub bias: Option<Tensor>,
    stride: Vec<i64>,
    padding: Vec<i64>,
    transposed: bool,
}

/// Shape and behaviour of a [`Conv`].
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec {
    /// Spatial dims (2 or 3).
    pub spatial_dims: usize,
    /// Input channels.
    pub inp: usize,
    /// Output channels.
    pub out: usize,
    /// Kernel size on every axis.
    pub kernel: usize,
    /// Stride on every axis.
    pub stride: usize,
    /// Zero padding on every axis.
    pub padding: usize,
    /// Transposed convolution.
    pub transposed: bool,
    /// Learn a bias.
    pub bias: bool,
}

impl Conv {
    /// A convolution under `p` with PyTorch's default init (uniform ±1/√fan_in, fan_in taken from weight dim 1).
    pub fn new(p: &nn::Path, s: ConvSpec) -> Result<Self> {
        let (a, b) = if s.transposed {
            (s.inp, s.out)
        } else {
            (s.out, s.inp)
        };
        let mut shape = vec![a as i64, b as i64];
        shape.extend(std::iter::repeat_n(s.kernel as i64, s.spatial_dims));
        let bound = default_bound(b * s.kernel.pow(s.spatial_dims as u32));
        let weight = p.f_var(
            "weight",
            &shape,
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        let bias = if s.bias {
            Some(p.f_var(
                "bias",
                &[s.out as i64],
                Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            )?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            stride: vec![s.stride as i64; s.spatial_dims],
            padding: vec![s.padding as i64; s.spatial_dims],
            transposed: s.transposed,
        })
    }

    /// Apply to `[B, C, spatial…]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let nd = self.stride.len();
        Ok(x.f_convolution(
            &self.weight,
            self.bias.as_ref(),
            &self.stride,
            &self.padding,
            vec![1i64; nd],
            self.transposed,
            vec![0i64; nd],
            1,
        )?)
    }
}

/// Stochastic depth: while training, zero the residual branch of whole samples with probability `rate` and scale
/// the kept ones by `1/(1−rate)` (timm's `drop_path`); the identity otherwise.
pub fn drop_path(x: &Tensor, rate: f64, train: bool) -> Result<Tensor> {
    if !train || rate <= 0.0 {
        return Ok(x.shallow_clone());
    }
    let keep = 1.0 - rate;
    let size = x.size();
    let mut shape = vec![size.first().copied().unwrap_or(1)];
    shape.extend(std::iter::repeat_n(1i64, size.len().saturating_sub(1)));
    let mut mask = Tensor::f_empty(&shape, (x.kind(), x.device()))?;
    let mask = mask.f_bernoulli_float_(keep)?;
    Ok(x.f_mul(&mask)?.f_div_scalar(keep)?)
}

/// Check that `x` is a float tensor `[B, channels, spatial…]` with the given channels and spatial size.
pub fn check_image(what: &str, x: &Tensor, channels: usize, spatial: &[usize]) -> Result<()> {
    let size = x.size();
    let mut expected = vec!["B".to_string(), channels.to_string()];
    expected.extend(spatial.iter().map(|s| s.to_string()));
    let ok = size.len() == 2 + spatial.len()
        && size[1] == channels as i64
        && size[2..].iter().zip(spatial).all(|(&a, &b)| a == b as i64);
    if !ok {
        return Err(shape_err(what, format!("[{}]", expected.join(", ")), size));
    }
    if x.kind() != Kind::Float {
        return Err(shape_err(&format!("{what} dtype"), Kind::Float, x.kind()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device};

    #[test]
    fn names_and_shapes_follow_pytorch() {
        let vs = VarStore::new(Device::Cpu);
        let p = sub(&vs.root(), "a.b");
        Linear::new(&p.sub("fc"), 3, 5, true).unwrap();
        let spec = ConvSpec {
            spatial_dims: 3,
            inp: 4,
            out: 2,
            kernel: 2,
            stride: 2,
            padding: 0,
            transposed: true,
            bias: false,
        };
        Conv::new(&p.sub("up"), spec).unwrap();
        let v = vs.variables();
        assert_eq!(v["a.b.fc.weight"].size(), vec![5, 3]);
        assert_eq!(v["a.b.fc.bias"].size(), vec![5]);
        assert_eq!(v["a.b.up.weight"].size(), vec![4, 2, 2, 2, 2]);
        assert!(!v.contains_key("a.b.up.bias"));
    }

    #[test]
    fn layer_norm_matches_hand_computation() {
        let vs = VarStore::new(Device::Cpu);
        let ln = LayerNorm::new(&vs.root(), 4, 1e-6).unwrap();
        let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 6.0]);
        let y = Vec::<f32>::try_from(ln.forward(&x).unwrap()).unwrap();
        // mean 3, biased variance (4+1+0+9)/4 = 3.5
        let s = (3.5f64 + 1e-6).sqrt();
        for (a, b) in y.iter().zip([-2.0, -1.0, 0.0, 3.0]) {
            assert!((*a as f64 - b / s).abs() < 1e-6);
        }
    }

    #[test]
    fn transposed_conv_doubles_size_and_drop_path_is_identity_in_eval() {
        let vs = VarStore::new(Device::Cpu);
        let spec = ConvSpec {
            spatial_dims: 2,
            inp: 3,
            out: 2,
            kernel: 2,
            stride: 2,
            padding: 0,
            transposed: true,
            bias: true,
        };
        let c = Conv::new(&vs.root(), spec).unwrap();
        let x = Tensor::ones([1, 3, 4, 5], (Kind::Float, Device::Cpu));
        assert_eq!(c.forward(&x).unwrap().size(), vec![1, 2, 8, 10]);
        let d = drop_path(&x, 0.5, false).unwrap();
        assert_eq!(d.max().double_value(&[]), 1.0);
        let t = drop_path(
            &Tensor::ones([64, 2, 2], (Kind::Float, Device::Cpu)),
            0.5,
            true,
        )
        .unwrap();
        let per_sample = t.sum_dim_intlist([1i64, 2].as_slice(), false, Kind::Float);
        // each sample is either dropped (0) or scaled by 2 (sum 8)
        for v in Vec::<f32>::try_from(per_sample).unwrap() {
            assert!(v == 0.0 || v == 8.0, "{v}");
        }
    }

    #[test]
    fn check_image_names_expected_and_got() {
        let x = Tensor::zeros([2, 1, 8, 8], (Kind::Float, Device::Cpu));
        check_image("x", &x, 1, &[8, 8]).unwrap();
        let e = check_image("input", &x, 2, &[8, 8])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("input") && e.contains("[B, 2, 8, 8]") && e.contains("[2, 1, 8, 8]"),
            "{e}"
        );
    }
}
