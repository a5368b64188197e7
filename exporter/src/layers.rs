//! One function per layer kind, each emitting the ONNX nodes of that layer with names derived from the
//! checkpoint module path (`encoder.blocks.3.attn/scores`, ...). Only ops that ONNX Runtime and tract both run.
//!
//! Tensors are channel-first volumes `[N, C, *spatial]` or token sequences `[N, L, E]`. Linear weights keep their
//! checkpoint layout `[out, in]` and are transposed by a node on the initializer (folded at load time by both
//! runtimes), so every initializer is byte-identical to the checkpoint tensor of the same name.

use spec::weights::{block_names, BlockNames};
use spec::VitConfig;

use crate::error::Result;
use crate::graph::{attr_float, attr_int, attr_ints, i64s, GraphBuilder};

/// `x·Wᵀ (+ b)` over the last axis with `{prefix}.weight` `[out, in]` and `{prefix}.bias`.
pub(crate) fn linear(g: &mut GraphBuilder, x: &str, prefix: &str, bias: bool) -> Result<String> {
    let w = g.weight(&format!("{prefix}.weight"))?;
    let wt = g.op(
        "Transpose",
        &format!("{prefix}/weight_t"),
        &[&w],
        vec![attr_ints("perm", &[1, 0])],
    )?;
    let y = g.op("MatMul", &format!("{prefix}/matmul"), &[x, &wt], vec![])?;
    if !bias {
        return Ok(y);
    }
    let b = g.weight(&format!("{prefix}.bias"))?;
    g.op("Add", &format!("{prefix}/bias"), &[&y, &b], vec![])
}

/// LayerNorm over the last axis with `{prefix}.weight`, `{prefix}.bias` and the config's epsilon.
pub(crate) fn layer_norm(g: &mut GraphBuilder, x: &str, prefix: &str, eps: f64) -> Result<String> {
    let w = g.weight(&format!("{prefix}.weight"))?;
    let b = g.weight(&format!("{prefix}.bias"))?;
    g.op(
        "LayerNormalization",
        prefix,
        &[x, &w, &b],
        vec![attr_int("axis", -1), attr_float("epsilon", eps as f32)],
    )
}

/// Exact GELU, `0.5·x·(1 + erf(x/√2))` (opset 17 has no Gelu op).
pub(crate) fn gelu(g: &mut GraphBuilder, x: &str, scope: &str) -> Result<String> {
    let inv_sqrt2 = g.scalar("inv_sqrt2", std::f32::consts::FRAC_1_SQRT_2)?;
    let one = g.scalar("one", 1.0)?;
    let half = g.scalar("half", 0.5)?;
    let t = g.op(
        "Mul",
        &format!("{scope}/gelu_scale"),
        &[x, &inv_sqrt2],
        vec![],
    )?;
    let e = g.op("Erf", &format!("{scope}/gelu_erf"), &[&t], vec![])?;
    let e1 = g.op("Add", &format!("{scope}/gelu_erf1"), &[&e, &one], vec![])?;
    let xe = g.op("Mul", &format!("{scope}/gelu_mul"), &[x, &e1], vec![])?;
    g.op("Mul", &format!("{scope}/gelu"), &[&xe, &half], vec![])
}

/// Transformer MLP: Linear → GELU → Linear, with the style's sub-layer names under `block`.
pub(crate) fn mlp(
    g: &mut GraphBuilder,
    x: &str,
    block: &str,
    names: &BlockNames,
) -> Result<String> {
    let fc1 = format!("{block}.{}", names.fc1);
    let h = linear(g, x, &fc1, true)?;
    let h = gelu(g, &h, &fc1)?;
    linear(g, &h, &format!("{block}.{}", names.fc2), true)
}

/// Multi-head self-attention with a fused qkv Linear whose output rows are ordered (qkv, head, head_dim):
/// `softmax(q·kᵀ·hd^-½ + key_bias)·v`, heads concatenated back in order, then the output projection.
/// `key_bias` (`[N, 1, 1, L]`, 0 or a large negative number) removes keys from every query's softmax.
/// Widths, heads, qkv bias and the output projection's name come from the block's config `cfg`.
pub(crate) fn attention(
    g: &mut GraphBuilder,
    x: &str,
    block: &str,
    cfg: &VitConfig,
    key_bias: Option<&str>,
) -> Result<String> {
    let scope = format!("{block}.attn");
    let (heads, embed) = (cfg.num_heads, cfg.embed_dim);
    let hd = embed / heads;
    let qkv = linear(g, x, &format!("{scope}.qkv"), cfg.qkv_bias)?;
    let split_shape = g.const_i64(
        &format!("shape.qkv_{heads}x{hd}"),
        &[0, 0, 3, heads as i64, hd as i64],
    )?;
    let qkv = g.op(
        "Reshape",
        &format!("{scope}/qkv_split"),
        &[&qkv, &split_shape],
        vec![],
    )?;
    // [N, L, 3, H, hd] → [3, N, H, L, hd]
    let qkv = g.op(
        "Transpose",
        &format!("{scope}/qkv_heads"),
        &[&qkv],
        vec![attr_ints("perm", &[2, 0, 3, 1, 4])],
    )?;
    let mut qkv_parts = Vec::with_capacity(3);
    for (i, part) in ["q", "k", "v"].iter().enumerate() {
        let idx = g.scalar_i64(&format!("index{i}"), i as i64)?;
        qkv_parts.push(g.op(
            "Gather",
            &format!("{scope}/{part}"),
            &[&qkv, &idx],
            vec![attr_int("axis", 0)],
        )?);
    }
    let (q, k, v) = (&qkv_parts[0], &qkv_parts[1], &qkv_parts[2]);
    let kt = g.op(
        "Transpose",
        &format!("{scope}/k_t"),
        &[k],
        vec![attr_ints("perm", &[0, 1, 3, 2])],
    )?;
    let scores = g.op("MatMul", &format!("{scope}/scores"), &[q, &kt], vec![])?;
    let scale = g.scalar(&format!("attn_scale_{hd}"), (hd as f64).powf(-0.5) as f32)?;
    let mut scores = g.op(
        "Mul",
        &format!("{scope}/scores_scaled"),
        &[&scores, &scale],
        vec![],
    )?;
    if let Some(bias) = key_bias {
        scores = g.op(
            "Add",
            &format!("{scope}/scores_masked"),
            &[&scores, bias],
            vec![],
        )?;
    }
    let probs = g.op(
        "Softmax",
        &format!("{scope}/softmax"),
        &[&scores],
        vec![attr_int("axis", -1)],
    )?;
    let ctx = g.op("MatMul", &format!("{scope}/context"), &[&probs, v], vec![])?;
    let ctx = g.op(
        "Transpose",
        &format!("{scope}/context_t"),
        &[&ctx],
        vec![attr_ints("perm", &[0, 2, 1, 3])],
    )?;
    let merge_shape = g.const_i64(&format!("shape.tokens_{embed}"), &[0, 0, embed as i64])?;
    let ctx = g.op(
        "Reshape",
        &format!("{scope}/merge_heads"),
        &[&ctx, &merge_shape],
        vec![],
    )?;
    let proj = block_names(cfg.style).attn_proj;
    linear(g, &ctx, &format!("{block}.{proj}"), true)
}

/// Conv patch embedding (`kernel = stride = patch`, with bias), then flatten the grid row-major and transpose:
/// `[N, C, *img] → [N, L, E]`, token `n = (ih·gw + iw)·gd + id`.
pub(crate) fn patch_embed(
    g: &mut GraphBuilder,
    x: &str,
    prefix: &str,
    patch: &[usize],
    embed: usize,
) -> Result<String> {
    let w = g.weight(&format!("{prefix}.weight"))?;
    let b = g.weight(&format!("{prefix}.bias"))?;
    let p = i64s(patch);
    let y = g.op(
        "Conv",
        &format!("{prefix}/conv"),
        &[x, &w, &b],
        vec![attr_ints("kernel_shape", &p), attr_ints("strides", &p)],
    )?;
    let flat = g.const_i64(&format!("shape.flatten_{embed}"), &[0, embed as i64, -1])?;
    let y = g.op(
        "Reshape",
        &format!("{prefix}/flatten"),
        &[&y, &flat],
        vec![],
    )?;
    g.op(
        "Transpose",
        &format!("{prefix}/tokens"),
        &[&y],
        vec![attr_ints("perm", &[0, 2, 1])],
    )
}

/// Add a position-embedding tensor `[1, L, E]` (broadcast over the batch).
pub(crate) fn add_pos_embed(g: &mut GraphBuilder, x: &str, name: &str) -> Result<String> {
    let pe = g.weight(name)?;
    g.op("Add", &format!("{name}/add"), &[x, &pe], vec![])
}

/// Prepend the learned `[1, 1, E]` cls token to every sequence of the batch.
pub(crate) fn prepend_cls(
    g: &mut GraphBuilder,
    x: &str,
    cls_name: &str,
    embed: usize,
) -> Result<String> {
    let cls = g.weight(cls_name)?;
    let n = g.batch_size()?;
    let tail = g.const_i64(&format!("shape.one_by_{embed}"), &[1, embed as i64])?;
    let shape = g.op(
        "Concat",
        &format!("{cls_name}/shape"),
        &[&n, &tail],
        vec![attr_int("axis", 0)],
    )?;
    let cls = g.op(
        "Expand",
        &format!("{cls_name}/expand"),
        &[&cls, &shape],
        vec![],
    )?;
    g.op(
        "Concat",
        &format!("{cls_name}/concat"),
        &[&cls, x],
        vec![attr_int("axis", 1)],
    )
}

/// Drop token 0 (the cls token): `[N, 1+L, E] → [N, L, E]`.
pub(crate) fn strip_cls(g: &mut GraphBuilder, x: &str, scope: &str) -> Result<String> {
    let starts = g.const_i64("one", &[1])?;
    let ends = g.const_i64("int64_max", &[i64::MAX])?;
    g.op(
        "Slice",
        &format!("{scope}/strip_cls"),
        &[x, &starts, &ends, &starts],
        vec![],
    )
}

/// Keep only token 0 (the cls token): `[N, 1+L, E] → [N, 1, E]`.
pub(crate) fn take_cls(g: &mut GraphBuilder, x: &str, scope: &str) -> Result<String> {
    let zero = g.const_i64("zero", &[0])?;
    let one = g.const_i64("one", &[1])?;
    g.op(
        "Slice",
        &format!("{scope}/take_cls"),
        &[x, &zero, &one, &one],
        vec![],
    )
}

/// Tokens back to a feature volume in grid order: `[N, L, E] → [N, E, *grid]`.
pub(crate) fn tokens_to_volume(
    g: &mut GraphBuilder,
    x: &str,
    grid: &[usize],
    embed: usize,
    scope: &str,
) -> Result<String> {
    let t = g.op(
        "Transpose",
        &format!("{scope}/to_channels"),
        &[x],
        vec![attr_ints("perm", &[0, 2, 1])],
    )?;
    let mut shape = vec![0, embed as i64];
    shape.extend(i64s(grid));
    let dims: Vec<String> = grid.iter().map(|d| d.to_string()).collect();
    let shape = g.const_i64(&format!("shape.volume_{embed}x{}", dims.join("x")), &shape)?;
    g.op(
        "Reshape",
        &format!("{scope}/to_volume"),
        &[&t, &shape],
        vec![],
    )
}

/// ConvNd, stride 1, `kernel` on every axis with symmetric padding `pad`; bias `{prefix}.bias` when `bias`.
pub(crate) fn conv(
    g: &mut GraphBuilder,
    x: &str,
    prefix: &str,
    kernel: usize,
    pad: usize,
    sd: usize,
    bias: bool,
) -> Result<String> {
    let mut inputs = vec![x.to_string(), g.weight(&format!("{prefix}.weight"))?];
    if bias {
        inputs.push(g.weight(&format!("{prefix}.bias"))?);
    }
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let attrs = vec![
        attr_ints("kernel_shape", &vec![kernel as i64; sd]),
        attr_ints("pads", &vec![pad as i64; 2 * sd]),
        attr_ints("strides", &vec![1; sd]),
    ];
    g.op("Conv", prefix, &refs, attrs)
}

/// ConvTransposeNd, kernel 2 stride 2, no bias, weight `[in, out, 2…]`: doubles every spatial axis.
pub(crate) fn conv_transpose(
    g: &mut GraphBuilder,
    x: &str,
    prefix: &str,
    sd: usize,
) -> Result<String> {
    let w = g.weight(&format!("{prefix}.weight"))?;
    g.op(
        "ConvTranspose",
        prefix,
        &[x, &w],
        vec![
            attr_ints("kernel_shape", &vec![2; sd]),
            attr_ints("strides", &vec![2; sd]),
        ],
    )
}

/// InstanceNorm without affine parameters (MONAI `instance`: eps 1e-5, biased variance over spatial axes).
pub(crate) fn instance_norm(
    g: &mut GraphBuilder,
    x: &str,
    channels: usize,
    scope: &str,
) -> Result<String> {
    let scale = g.const_f32(
        &format!("ones_{channels}"),
        &[channels],
        &vec![1.0; channels],
    )?;
    let bias = g.const_f32(
        &format!("zeros_{channels}"),
        &[channels],
        &vec![0.0; channels],
    )?;
    g.op(
        "InstanceNormalization",
        scope,
        &[x, &scale, &bias],
        vec![attr_float("epsilon", 1e-5)],
    )
}

/// LeakyReLU with MONAI's slope 0.01.
pub(crate) fn leaky_relu(g: &mut GraphBuilder, x: &str, scope: &str) -> Result<String> {
    g.op("LeakyRelu", scope, &[x], vec![attr_float("alpha", 0.01)])
}

/// Channel concatenation of a decoder skip, in MONAI's order (upsampled, skip).
pub(crate) fn concat_skip(
    g: &mut GraphBuilder,
    up: &str,
    skip: &str,
    scope: &str,
) -> Result<String> {
    g.op(
        "Concat",
        &format!("{scope}/concat_skip"),
        &[up, skip],
        vec![attr_int("axis", 1)],
    )
}

/// Elementwise sum (residual connections).
pub(crate) fn add(g: &mut GraphBuilder, a: &str, b: &str, name: &str) -> Result<String> {
    g.op("Add", name, &[a, b], vec![])
}

#[cfg(test)]
#[path = "layers_tests.rs"]
mod tests;
