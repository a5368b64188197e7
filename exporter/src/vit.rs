//! The ViT encoder shared by UNETR and MAE: patch embedding, cls token and position embedding (per style), pre-norm
//! transformer blocks, final LayerNorm.

use spec::weights::{block_names, encoder_prefix, patch_embed_name};
use spec::VitConfig;

use crate::error::Result;
use crate::graph::GraphBuilder;
use crate::layers::{add, add_pos_embed, attention, layer_norm, mlp, patch_embed, prepend_cls};

/// Where the position embedding sits relative to the cls token.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PosEmbed<'a> {
    /// `[1, 1+L, E]` added after the cls token is prepended (SelfMedMAE UNETR; MONAI when there is no cls token).
    AfterCls(&'a str),
    /// `[1, L, E]` added to the patch tokens only; the cls token gets a zero position embedding (SelfMedMAE MAE).
    PatchesOnly(&'a str),
}

/// Encoder outputs: value names of the final-normed sequence and of every block's output (both with the cls
/// token in front when the config has one).
pub(crate) struct EncoderOut {
    /// After the final LayerNorm.
    pub normed: String,
    /// Output of block i, before any norm.
    pub hidden: Vec<String>,
}

/// One pre-norm transformer block: `x + attn(norm1(x))`, then `x + mlp(norm2(x))`.
pub(crate) fn block(
    g: &mut GraphBuilder,
    x: &str,
    prefix: &str,
    v: &VitConfig,
    key_bias: Option<&str>,
) -> Result<String> {
    let names = block_names(v.style);
    let h = layer_norm(g, x, &format!("{prefix}.norm1"), v.layer_norm_eps)?;
    let h = attention(g, &h, prefix, v, key_bias)?;
    let x = add(g, x, &h, &format!("{prefix}/residual_attn"))?;
    let h = layer_norm(g, &x, &format!("{prefix}.norm2"), v.layer_norm_eps)?;
    let h = mlp(g, &h, prefix, &names)?;
    add(g, &x, &h, &format!("{prefix}/residual_mlp"))
}

/// `v.depth` blocks `{prefix}.blocks.{i}` then the final `{prefix}.norm`.
pub(crate) fn blocks(
    g: &mut GraphBuilder,
    x: &str,
    prefix: &str,
    v: &VitConfig,
    key_bias: Option<&str>,
) -> Result<EncoderOut> {
    let mut x = x.to_string();
    let mut hidden = Vec::with_capacity(v.depth);
    for i in 0..v.depth {
        x = block(g, &x, &format!("{prefix}.blocks.{i}"), v, key_bias)?;
        hidden.push(x.clone());
    }
    let normed = layer_norm(g, &x, &format!("{prefix}.norm"), v.layer_norm_eps)?;
    Ok(EncoderOut { normed, hidden })
}

/// The whole encoder on an image `[N, C, *img]`.
pub(crate) fn encoder(
    g: &mut GraphBuilder,
    input: &str,
    v: &VitConfig,
    pos: PosEmbed,
    key_bias: Option<&str>,
) -> Result<EncoderOut> {
    let prefix = encoder_prefix(v.style);
    let x = patch_embed(
        g,
        input,
        patch_embed_name(v.style),
        &v.patch_size,
        v.embed_dim,
    )?;
    let cls = format!("{prefix}.cls_token");
    let x = match (v.cls_token, pos) {
        (true, PosEmbed::AfterCls(pe)) => {
            let x = prepend_cls(g, &x, &cls, v.embed_dim)?;
            add_pos_embed(g, &x, pe)?
        }
        (true, PosEmbed::PatchesOnly(pe)) => {
            let x = add_pos_embed(g, &x, pe)?;
            prepend_cls(g, &x, &cls, v.embed_dim)?
        }
        (false, PosEmbed::AfterCls(pe) | PosEmbed::PatchesOnly(pe)) => add_pos_embed(g, &x, pe)?,
    };
    blocks(g, &x, prefix, v, key_bias)
}
