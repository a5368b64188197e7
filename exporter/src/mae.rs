//! MAE graphs: the encoder as a feature extractor (`input` → `features`, no masking) and the masked reconstructor
//! (`input` + `mask` → `pred`).
//!
//! The reconstructor takes `mask` `[N, L]` float (1 = patch removed, 0 = visible; values > 0.5 count as removed),
//! the convention of the trainer's masking, rather than `ids_keep`: any number of patches per sample may be masked.
//! Instead of gathering the visible patches, every encoder attention adds a large negative bias to the removed keys,
//! so each visible token (and the cls token) attends to exactly the visible set: their outputs equal SelfMedMAE's
//! gather-based encoder up to float rounding, at the cost of running the encoder on all L tokens. Removed positions
//! are then replaced by `mask_token`, the decoder position embedding is added to the patch tokens (the cls token
//! gets none), and the decoder runs in natural token order (attention is permutation-equivariant), so `pred`
//! `[N, L, head_dim]` is already unshuffled.

use spec::MaeConfig;

use crate::error::Result;
use crate::graph::{attr_int, Dim, GraphBuilder};
use crate::layers::{add_pos_embed, linear, strip_cls, take_cls};
use crate::vit::{blocks, encoder, PosEmbed};

/// Bias added to attention scores of removed keys: far below any score, finite so `0·bias` stays 0.
const MASKED_KEY_BIAS: f32 = -1e9;

fn image_input(g: &mut GraphBuilder, m: &MaeConfig) -> Result<String> {
    let v = &m.encoder;
    let mut dims = vec![Dim::Batch, Dim::Fixed(v.in_channels)];
    dims.extend(v.img_size.iter().map(|&s| Dim::Fixed(s)));
    g.input("input", &dims)
}

/// Encoder graph: `input` `[N, C, *img]` → `features` `[N, L, E]` (final-normed patch tokens, cls dropped) and,
/// with `hidden_states`, `hidden_state_{i}` `[N, L, E]` (block i's patch tokens, before any norm).
pub(crate) fn build_encoder(
    g: &mut GraphBuilder,
    m: &MaeConfig,
    hidden_states: bool,
) -> Result<()> {
    let v = &m.encoder;
    let tokens = [
        Dim::Batch,
        Dim::Fixed(v.num_patches()),
        Dim::Fixed(v.embed_dim),
    ];
    let input = image_input(g, m)?;
    let enc = encoder(
        g,
        &input,
        v,
        PosEmbed::PatchesOnly("encoder_pos_embed"),
        None,
    )?;
    let features = strip_cls(g, &enc.normed, "encoder.norm")?;
    g.output(&features, "features", &tokens)?;
    if hidden_states {
        for (i, h) in enc.hidden.iter().enumerate() {
            let h = strip_cls(g, h, &format!("encoder.blocks.{i}"))?;
            g.output(&h, &format!("hidden_state_{i}"), &tokens)?;
        }
    }
    Ok(())
}

/// Reconstructor graph: `input` `[N, C, *img]` + `mask` `[N, L]` → `pred` `[N, L, head_dim]` (see module docs).
pub(crate) fn build_reconstructor(g: &mut GraphBuilder, m: &MaeConfig) -> Result<()> {
    let v = &m.encoder;
    let l = v.num_patches();
    let input = image_input(g, m)?;
    let mask = g.input("mask", &[Dim::Batch, Dim::Fixed(l)])?;

    let half = g.scalar("half", 0.5)?;
    let removed = g.op("Greater", "mask/removed", &[&mask, &half], vec![])?;
    let neg = g.scalar("masked_key_bias", MASKED_KEY_BIAS)?;
    let zero = g.scalar("zero", 0.0)?;
    let bias = g.op(
        "Where",
        "mask/key_bias_tokens",
        &[&removed, &neg, &zero],
        vec![],
    )?;
    // The cls key (position 0) is always visible: pad one zero column in front → [N, 1+L].
    let pads = g.const_i64("pads.cls_column", &[0, 1, 0, 0])?;
    let bias = g.op("Pad", "mask/key_bias", &[&bias, &pads], vec![])?;
    let axes = g.const_i64("axes.heads_queries", &[1, 2])?;
    let bias = g.op("Unsqueeze", "mask/key_bias_4d", &[&bias, &axes], vec![])?;

    let enc = encoder(
        g,
        &input,
        v,
        PosEmbed::PatchesOnly("encoder_pos_embed"),
        Some(&bias),
    )?;
    let y = linear(g, &enc.normed, "encoder_to_decoder", true)?;
    let cls = take_cls(g, &y, "encoder_to_decoder")?;
    let tokens = strip_cls(g, &y, "encoder_to_decoder")?;
    let axis2 = g.const_i64("axes.last3", &[2])?;
    let removed3 = g.op("Unsqueeze", "mask/removed_3d", &[&removed, &axis2], vec![])?;
    let mask_token = g.weight("mask_token")?;
    let tokens = g.op(
        "Where",
        "mask_token/fill",
        &[&removed3, &mask_token, &tokens],
        vec![],
    )?;
    let tokens = add_pos_embed(g, &tokens, "decoder_pos_embed")?;
    let x = g.op(
        "Concat",
        "decoder/concat_cls",
        &[&cls, &tokens],
        vec![attr_int("axis", 1)],
    )?;

    let dv = m.decoder_vit();
    let dec = blocks(g, &x, "decoder", &dv, None)?;
    let pred = linear(g, &dec.normed, "decoder.head", true)?;
    let pred = strip_cls(g, &pred, "decoder.head")?;
    g.output(
        &pred,
        "pred",
        &[Dim::Batch, Dim::Fixed(l), Dim::Fixed(m.head_dim())],
    )?;
    Ok(())
}
