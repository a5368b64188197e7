//! UNETR (Hatamizadeh et al.) in MONAI's layout: a ViT encoder (timm or MONAI style) whose hidden states at three
//! configurable blocks and final normed output feed MONAI's conv/deconv residual decoder; 2-D and 3-D.

use spec::UnetrConfig;
use tch::nn;
use tch::Tensor;

use crate::blocks::{PrUpBlock, ResBlock, UpBlock};
use crate::error::{shape_err, Result};
use crate::layers::{Conv, ConvSpec};
use crate::vit::{tokens_to_grid, Vit};

/// The UNETR segmentation network; parameters named as MONAI's `UNETR` (`encoder1`, …, `out.conv.conv`).
#[derive(Debug)]
pub struct Unetr {
    cfg: UnetrConfig,
    /// The ViT encoder.
    pub vit: Vit,
    encoder1: ResBlock,
    encoder2: PrUpBlock,
    encoder3: PrUpBlock,
    encoder4: PrUpBlock,
    decoder5: UpBlock,
    decoder4: UpBlock,
    decoder3: UpBlock,
    decoder2: UpBlock,
    out: Conv,
}

impl Unetr {
    /// Build on the model root `p`.
    pub fn new(p: &nn::Path, cfg: &UnetrConfig) -> Result<Self> {
        cfg.validate()?;
        let v = &cfg.encoder;
        let (sd, e, f) = (v.spatial_dims, v.embed_dim, cfg.feature_size);
        Ok(Self {
            vit: Vit::new(p, v)?,
            encoder1: ResBlock::new(&p.sub("encoder1").sub("layer"), sd, v.in_channels, f)?,
            encoder2: PrUpBlock::new(&p.sub("encoder2"), sd, e, 2 * f, 2)?,
            encoder3: PrUpBlock::new(&p.sub("encoder3"), sd, e, 4 * f, 1)?,
            encoder4: PrUpBlock::new(&p.sub("encoder4"), sd, e, 8 * f, 0)?,
            decoder5: UpBlock::new(&p.sub("decoder5"), sd, e, 8 * f)?,
            decoder4: UpBlock::new(&p.sub("decoder4"), sd, 8 * f, 4 * f)?,
            decoder3: UpBlock::new(&p.sub("decoder3"), sd, 4 * f, 2 * f)?,
            decoder2: UpBlock::new(&p.sub("decoder2"), sd, 2 * f, f)?,
            out: Conv::new(
                &p.sub("out").sub("conv").sub("conv"),
                ConvSpec {
                    spatial_dims: sd,
                    inp: f,
                    out: cfg.out_channels,
                    kernel: 1,
                    stride: 1,
                    padding: 0,
                    transposed: false,
                    bias: true,
                },
            )?,
            cfg: cfg.clone(),
        })
    }

    /// The config.
    pub fn config(&self) -> &UnetrConfig {
        &self.cfg
    }

    /// Logits `[B, out_channels, spatial…]` for an input `[B, in_channels, img_size…]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (last, hidden) = self.vit.forward(x, train)?;
        let grid = self.cfg.encoder.grid();
        let hs = |i: usize| -> Result<Tensor> {
            let h = hidden
                .get(i)
                .ok_or_else(|| shape_err("UNETR skip layer", format!("< {}", hidden.len()), i))?;
            tokens_to_grid(h, &grid)
        };
        let [s2, s3, s4] = self.cfg.skip_layers;
        let enc1 = self.encoder1.forward(x)?;
        let enc2 = self.encoder2.forward(&hs(s2)?)?;
        let enc3 = self.encoder3.forward(&hs(s3)?)?;
        let enc4 = self.encoder4.forward(&hs(s4)?)?;
        let dec3 = self
            .decoder5
            .forward(&tokens_to_grid(&last, &grid)?, &enc4)?;
        let dec2 = self.decoder4.forward(&dec3, &enc3)?;
        let dec1 = self.decoder3.forward(&dec2, &enc2)?;
        let out = self.decoder2.forward(&dec1, &enc1)?;
        self.out.forward(&out)
    }
}
