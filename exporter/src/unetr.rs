//! UNETR segmentation graph: ViT encoder with skips from three hidden states and the final normed output, MONAI's
//! residual conv decoder (UnetrBasicBlock / UnetrPrUpBlock / UnetrUpBlock / UnetOutBlock), `input` → `logits`.

use spec::weights::pos_embed_name;
use spec::UnetrConfig;

use crate::error::{ExportError, Result};
use crate::graph::{Dim, GraphBuilder};
use crate::layers::{
    add, concat_skip, conv, conv_transpose, instance_norm, leaky_relu, strip_cls, tokens_to_volume,
};
use crate::vit::{encoder, PosEmbed};

/// MONAI `UnetResBlock`: conv3 → IN → LeakyReLU → conv3 → IN, plus the input (through a 1×1 conv + IN when the
/// channel count changes), then LeakyReLU.
fn res_block(
    g: &mut GraphBuilder,
    x: &str,
    prefix: &str,
    inp: usize,
    out: usize,
    sd: usize,
) -> Result<String> {
    let h = conv(g, x, &format!("{prefix}.conv1.conv"), 3, 1, sd, false)?;
    let h = instance_norm(g, &h, out, &format!("{prefix}.norm1"))?;
    let h = leaky_relu(g, &h, &format!("{prefix}.lrelu1"))?;
    let h = conv(g, &h, &format!("{prefix}.conv2.conv"), 3, 1, sd, false)?;
    let h = instance_norm(g, &h, out, &format!("{prefix}.norm2"))?;
    let residual = if inp != out {
        let r = conv(g, x, &format!("{prefix}.conv3.conv"), 1, 0, sd, false)?;
        instance_norm(g, &r, out, &format!("{prefix}.norm3"))?
    } else {
        x.to_string()
    };
    let s = add(g, &h, &residual, &format!("{prefix}/residual"))?;
    leaky_relu(g, &s, &format!("{prefix}.lrelu"))
}

/// MONAI `UnetrPrUpBlock` with conv blocks: transposed conv, then `layers` × (transposed conv, residual block).
fn pr_up_block(
    g: &mut GraphBuilder,
    x: &str,
    name: &str,
    out: usize,
    layers: usize,
    sd: usize,
) -> Result<String> {
    let mut x = conv_transpose(g, x, &format!("{name}.transp_conv_init.conv"), sd)?;
    for i in 0..layers {
        x = conv_transpose(g, &x, &format!("{name}.blocks.{i}.0.conv"), sd)?;
        x = res_block(g, &x, &format!("{name}.blocks.{i}.1"), out, out, sd)?;
    }
    Ok(x)
}

/// MONAI `UnetrUpBlock`: transposed conv, concatenate (upsampled, skip), residual block on 2·out channels.
fn up_block(
    g: &mut GraphBuilder,
    x: &str,
    skip: &str,
    name: &str,
    out: usize,
    sd: usize,
) -> Result<String> {
    let up = conv_transpose(g, x, &format!("{name}.transp_conv.conv"), sd)?;
    let cat = concat_skip(g, &up, skip, name)?;
    res_block(g, &cat, &format!("{name}.conv_block"), 2 * out, out, sd)
}

/// Patch tokens of an encoder state as a feature volume `[N, E, *grid]`; the cls token (SelfMedMAE) is dropped first.
fn skip_volume(
    g: &mut GraphBuilder,
    x: &str,
    u: &UnetrConfig,
    grid: &[usize],
    scope: &str,
) -> Result<String> {
    let x = if u.encoder.cls_token {
        strip_cls(g, x, scope)?
    } else {
        x.to_string()
    };
    tokens_to_volume(g, &x, grid, u.encoder.embed_dim, scope)
}

/// Emit the whole UNETR graph: `input` `[N, C, *roi]` → `logits` `[N, K, *roi]`.
pub(crate) fn build(g: &mut GraphBuilder, u: &UnetrConfig) -> Result<()> {
    let v = &u.encoder;
    let (sd, f) = (v.spatial_dims, u.feature_size);
    let grid = v.grid();
    let mut in_dims = vec![Dim::Batch, Dim::Fixed(v.in_channels)];
    in_dims.extend(v.img_size.iter().map(|&s| Dim::Fixed(s)));
    let input = g.input("input", &in_dims)?;

    let enc = encoder(
        g,
        &input,
        v,
        PosEmbed::AfterCls(pos_embed_name(v.style)),
        None,
    )?;
    let [s2, s3, s4] = u.skip_layers;
    let hidden = |i: usize| {
        enc.hidden.get(i).cloned().ok_or_else(|| {
            ExportError::Graph(format!("skip layer {i} beyond depth {}", enc.hidden.len()))
        })
    };
    let x2 = skip_volume(g, &hidden(s2)?, u, &grid, "encoder2.input")?;
    let x3 = skip_volume(g, &hidden(s3)?, u, &grid, "encoder3.input")?;
    let x4 = skip_volume(g, &hidden(s4)?, u, &grid, "encoder4.input")?;
    let dec4 = skip_volume(g, &enc.normed, u, &grid, "decoder5.input")?;

    let enc1 = res_block(g, &input, "encoder1.layer", v.in_channels, f, sd)?;
    let enc2 = pr_up_block(g, &x2, "encoder2", 2 * f, 2, sd)?;
    let enc3 = pr_up_block(g, &x3, "encoder3", 4 * f, 1, sd)?;
    let enc4 = pr_up_block(g, &x4, "encoder4", 8 * f, 0, sd)?;
    let dec3 = up_block(g, &dec4, &enc4, "decoder5", 8 * f, sd)?;
    let dec2 = up_block(g, &dec3, &enc3, "decoder4", 4 * f, sd)?;
    let dec1 = up_block(g, &dec2, &enc2, "decoder3", 2 * f, sd)?;
    let out = up_block(g, &dec1, &enc1, "decoder2", f, sd)?;
    let logits = conv(g, &out, "out.conv.conv", 1, 0, sd, true)?;

    let mut out_dims = vec![Dim::Batch, Dim::Fixed(u.out_channels)];
    out_dims.extend(v.img_size.iter().map(|&s| Dim::Fixed(s)));
    g.output(&logits, "logits", &out_dims)
}
