//! MONAI's UNETR decoder blocks (UnetResBlock, UnetrPrUpBlock, UnetrUpBlock), one code path for 2-D and 3-D: conv
//! k3 without bias + InstanceNorm (non-affine, eps 1e-5) + LeakyReLU(0.01) residual blocks and k2/s2 transposed convs.

use tch::nn;
use tch::Tensor;

use crate::error::Result;
use crate::layers::{Conv, ConvSpec};

/// InstanceNorm eps of MONAI's `instance` norm.
const INSTANCE_EPS: f64 = 1e-5;

fn instance_norm(x: &Tensor) -> Result<Tensor> {
    Ok(x.f_instance_norm::<Tensor>(None, None, None, None, true, 0.1, INSTANCE_EPS, false)?)
}

fn conv(p: &nn::Path, sd: usize, inp: usize, out: usize, kernel: usize) -> Result<Conv> {
    Conv::new(
        p,
        ConvSpec {
            spatial_dims: sd,
            inp,
            out,
            kernel,
            stride: 1,
            padding: kernel / 2,
            transposed: false,
            bias: false,
        },
    )
}

/// A ×2 upsampling transposed conv (k2, s2, no bias), weight `[in, out, 2…]`, named `p.conv.weight`.
pub fn up_conv(p: &nn::Path, sd: usize, inp: usize, out: usize) -> Result<Conv> {
    Conv::new(
        &p.sub("conv"),
        ConvSpec {
            spatial_dims: sd,
            inp,
            out,
            kernel: 2,
            stride: 2,
            padding: 0,
            transposed: true,
            bias: false,
        },
    )
}

/// MONAI `UnetResBlock` (stride 1): `lrelu(norm(conv2(lrelu(norm(conv1 x)))) + residual)`, where the residual
/// goes through a 1×1 `conv3` + norm when the channel count changes.
#[derive(Debug)]
pub struct ResBlock {
    conv1: Conv,
    conv2: Conv,
    conv3: Option<Conv>,
}

impl ResBlock {
    /// Parameters `p.conv1.conv.weight`, `p.conv2.conv.weight` and, if `inp != out`, `p.conv3.conv.weight`.
    pub fn new(p: &nn::Path, sd: usize, inp: usize, out: usize) -> Result<Self> {
        Ok(Self {
            conv1: conv(&p.sub("conv1").sub("conv"), sd, inp, out, 3)?,
            conv2: conv(&p.sub("conv2").sub("conv"), sd, out, out, 3)?,
            conv3: if inp != out {
                Some(conv(&p.sub("conv3").sub("conv"), sd, inp, out, 1)?)
            } else {
                None
            },
        })
    }

    /// Apply to `[B, inp, spatial…]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = instance_norm(&self.conv1.forward(x)?)?.f_leaky_relu()?;
        let y = instance_norm(&self.conv2.forward(&y)?)?;
        let r = match &self.conv3 {
            Some(c) => instance_norm(&c.forward(x)?)?,
            None => x.shallow_clone(),
        };
        Ok(y.f_add(&r)?.f_leaky_relu()?)
    }
}

/// MONAI `UnetrPrUpBlock` with conv and residual blocks: `transp_conv_init`, then `layers` × (up-conv, ResBlock).
#[derive(Debug)]
pub struct PrUpBlock {
    transp_conv_init: Conv,
    blocks: Vec<(Conv, ResBlock)>,
}

impl PrUpBlock {
    /// Parameters `p.transp_conv_init.conv.weight`, `p.blocks.{i}.0.conv.weight`, `p.blocks.{i}.1.*`.
    pub fn new(p: &nn::Path, sd: usize, inp: usize, out: usize, layers: usize) -> Result<Self> {
        let blocks = (0..layers)
            .map(|i| {
                let b = p.sub("blocks").sub(i);
                Ok((
                    up_conv(&b.sub("0"), sd, out, out)?,
                    ResBlock::new(&b.sub("1"), sd, out, out)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            transp_conv_init: up_conv(&p.sub("transp_conv_init"), sd, inp, out)?,
            blocks,
        })
    }

    /// Upsample `[B, inp, g…]` by `2^(1+layers)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = self.transp_conv_init.forward(x)?;
        for (up, res) in &self.blocks {
            x = res.forward(&up.forward(&x)?)?;
        }
        Ok(x)
    }
}

/// MONAI `UnetrUpBlock` with a residual block: upsample, concatenate the skip (after), ResBlock(2·out → out).
#[derive(Debug)]
pub struct UpBlock {
    transp_conv: Conv,
    conv_block: ResBlock,
}

impl UpBlock {
    /// Parameters `p.transp_conv.conv.weight`, `p.conv_block.*`.
    pub fn new(p: &nn::Path, sd: usize, inp: usize, out: usize) -> Result<Self> {
        Ok(Self {
            transp_conv: up_conv(&p.sub("transp_conv"), sd, inp, out)?,
            conv_block: ResBlock::new(&p.sub("conv_block"), sd, 2 * out, out)?,
        })
    }

    /// `conv_block(cat(up(x), skip))`.
    pub fn forward(&self, x: &Tensor, skip: &Tensor) -> Result<Tensor> {
        let up = self.transp_conv.forward(x)?;
        self.conv_block.forward(&Tensor::f_cat(&[&up, skip], 1)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device, Kind};

    #[test]
    fn res_block_with_zero_convs_is_lrelu_of_normed_residual() {
        let vs = VarStore::new(Device::Cpu);
        let mut b = ResBlock::new(&vs.root(), 2, 3, 3).unwrap();
        tch::no_grad(|| {
            let _ = b.conv1.weight.zero_();
            let _ = b.conv2.weight.zero_();
        });
        let x = Tensor::randn([1, 3, 5, 4], (Kind::Float, Device::Cpu));
        let y = b.forward(&x).unwrap();
        // conv outputs are 0, InstanceNorm of a constant is 0, so y = lrelu(x)
        assert!((y - x.leaky_relu()).abs().max().double_value(&[]) < 1e-6);
        assert!(b.conv3.is_none());
    }

    #[test]
    fn up_blocks_scale_spatial_size() {
        let vs = VarStore::new(Device::Cpu);
        let pr = PrUpBlock::new(&vs.root().sub("e"), 3, 6, 4, 2).unwrap();
        let x = Tensor::randn([2, 6, 1, 2, 1], (Kind::Float, Device::Cpu));
        assert_eq!(pr.forward(&x).unwrap().size(), vec![2, 4, 8, 16, 8]);
        let up = UpBlock::new(&vs.root().sub("d"), 3, 6, 4).unwrap();
        let skip = Tensor::randn([2, 4, 2, 4, 2], (Kind::Float, Device::Cpu));
        assert_eq!(up.forward(&x, &skip).unwrap().size(), vec![2, 4, 2, 4, 2]);
        let names: Vec<String> = vs.variables().into_keys().collect();
        assert!(names.contains(&"e.blocks.1.0.conv.weight".to_string()));
        assert!(names.contains(&"d.conv_block.conv3.conv.weight".to_string()));
    }
}
