//! Per-family import: read the architecture off the tensor shapes, build the medmae config, and map every tensor of
//! `spec::expected_weights` to its source tensor (renamed, and where the layouts differ, rearranged).
//!
//! | medmae | MONAI UNETR | SelfMedMAE MAE3D | He et al. MAE |
//! |---|---|---|---|
//! | patch embedding conv `[E, C, p…]` | same name (conv) or `…patch_embeddings.1` Linear `[E, p…·C]` (perceptron) | same | `patch_embed.proj` |
//! | `encoder.cls_token` | — | same | `cls_token` + `pos_embed` row 0 |
//! | position table `[1, N, E]` | same | `encoder_pos_embed` | `pos_embed` without row 0 |
//! | encoder blocks / norm | same | same | `blocks.*`, `norm` |
//! | `encoder_to_decoder` | — | same | `decoder_embed` |
//! | `decoder_pos_embed` | — | same | `decoder_pos_embed` without row 0 |
//! | decoder blocks / norm / head | same (CNN decoder) | same | `decoder_blocks.*`, `decoder_norm`, `decoder_pred` |

use std::collections::BTreeMap;
use std::path::Path;

use spec::{MaeConfig, ModelConfig, PixVariance, ReconLoss, UnetrConfig, VitStyle};

use super::source::{
    heads, mlp_ratio, note_table, opt_err, patch_grid, required, Encoder, Op, Plan, Source,
};
use super::{Family, ImportOptions, Imported, StateDict};
use crate::error::{ModelError, Result};

fn monai_unetr(
    src: &mut Source,
    opts: &ImportOptions,
    notes: &mut Vec<String>,
) -> Result<(ModelConfig, Plan)> {
    if src.has("vit.cls_token") {
        return Err(src.key_err(
            "vit.cls_token",
            "a MONAI ViT with a classification token is not a UNETR encoder",
        ));
    }
    let conv1 = src.shape(
        "encoder1.layer.conv1.conv.weight",
        &[4, 5],
        "a 2-D or 3-D conv kernel",
    )?;
    let (sd, feature, in_ch) = (conv1.len() - 2, conv1[0], conv1[1]);
    let pos = src.shape(
        "vit.patch_embedding.position_embeddings",
        &[3],
        "a position table [1, N, E]",
    )?;
    let (n, e) = (pos[1], pos[2]);
    let patch = vec![16; sd];
    let conv_name = "vit.patch_embedding.patch_embeddings.weight";
    let lin_name = "vit.patch_embedding.patch_embeddings.1.weight";
    let (embed_src, embed_op) = if src.has(conv_name) {
        (conv_name, Op::Copy)
    } else if src.has(lin_name) {
        notes.push(format!(
            "perceptron patch embedding `{lin_name}` [E, 16^{sd}·C] rearranged into the equivalent conv kernel [E, C, 16…]"
        ));
        (lin_name, Op::PerceptronToConv)
    } else {
        return Err(src.key_err(
            conv_name,
            "missing (nor is there a perceptron `patch_embeddings.1.weight`)",
        ));
    };
    let depth = src.depth("vit.blocks")?;
    let ratio = mlp_ratio(src, "vit.blocks.0.mlp.linear1.weight", e)?;
    let out = src.shape(
        "out.conv.conv.weight",
        &[sd + 2],
        "the output 1×1 conv kernel",
    )?;
    let img = required(
        &opts.img_size,
        "img_size",
        format!("needed: MONAI's learned position table ({n} tokens of 16^{sd}) does not tell the input size"),
    )?;
    patch_grid(
        src,
        Some(&img),
        &patch,
        "vit.patch_embedding.position_embeddings",
        0,
        notes,
    )?;
    let encoder = Encoder {
        spatial_dims: sd,
        in_channels: in_ch,
        img_size: img,
        patch_size: patch,
        embed_dim: e,
        depth,
        mlp_ratio: ratio,
        qkv_bias: src.has("vit.blocks.0.attn.qkv.bias"),
    }
    .config(
        heads(opts, e)?,
        opts.layer_norm_eps.unwrap_or(1e-5),
        VitStyle::Monai,
    );
    let cfg = ModelConfig::Unetr(UnetrConfig {
        encoder,
        out_channels: out[0],
        feature_size: feature,
        skip_layers: [3, 6, 9],
    });
    let names = spec::expected_weights(&cfg)
        .into_iter()
        .map(|t| {
            if t.name == "vit.patch_embedding.patch_embeddings.weight" {
                (t.name, embed_src.to_string(), embed_op)
            } else if t.name == "vit.patch_embedding.patch_embeddings.bias"
                && embed_op == Op::PerceptronToConv
            {
                (
                    t.name,
                    "vit.patch_embedding.patch_embeddings.1.bias".to_string(),
                    Op::Copy,
                )
            } else {
                (t.name.clone(), t.name, Op::Copy)
            }
        })
        .collect();
    Ok((cfg, names))
}

/// Shapes of an MAE checkpoint under the given names.
struct MaeNames {
    patch: &'static str,
    enc_blocks: &'static str,
    enc_table: &'static str,
    dec_in: &'static str,
    dec_blocks: &'static str,
    dec_table: &'static str,
    head: &'static str,
    table_skip: i64,
}

const SELFMEDMAE: MaeNames = MaeNames {
    patch: "encoder.patch_embed.proj.weight",
    enc_blocks: "encoder.blocks",
    enc_table: "encoder_pos_embed",
    dec_in: "encoder_to_decoder.weight",
    dec_blocks: "decoder.blocks",
    dec_table: "decoder_pos_embed",
    head: "decoder.head.weight",
    table_skip: 0,
};

const HE: MaeNames = MaeNames {
    patch: "patch_embed.proj.weight",
    enc_blocks: "blocks",
    enc_table: "pos_embed",
    dec_in: "decoder_embed.weight",
    dec_blocks: "decoder_blocks",
    dec_table: "decoder_pos_embed",
    head: "decoder_pred.weight",
    table_skip: 1,
};

fn mae(
    src: &mut Source,
    opts: &ImportOptions,
    notes: &mut Vec<String>,
    k: &MaeNames,
    sd: usize,
) -> Result<ModelConfig> {
    let pe = src.shape(k.patch, &[4, 5], "a patch-embedding conv kernel [E, C, p…]")?;
    if pe.len() != sd + 2 {
        return Err(src.key_err(
            k.patch,
            format!(
                "a {}-D kernel, but a {} checkpoint is {sd}-D (found {pe:?})",
                pe.len() - 2,
                src.family
            ),
        ));
    }
    if !src.has(k.dec_in) {
        return Err(src.key_err(
            k.dec_in,
            "missing: an encoder-only checkpoint (a fine-tuned ViT or an encoder release); medmae imports whole MAEs",
        ));
    }
    let (e, c, patch) = (pe[0], pe[1], pe[2..].to_vec());
    let dec = src.shape(k.dec_in, &[2], "a Linear weight [decoder width, E]")?;
    let ed = dec[0];
    let grid = patch_grid(
        src,
        opts.img_size.as_deref(),
        &patch,
        k.dec_table,
        k.table_skip,
        notes,
    )?;
    note_table(src, k.enc_table, k.table_skip, &grid, notes)?;
    let img = grid.iter().zip(&patch).map(|(g, p)| g * p).collect();
    let head = src.shape(
        k.head,
        &[2],
        "a Linear weight [values per token, decoder width]",
    )?;
    let pv: usize = patch.iter().product();
    if head[0] != pv * c {
        return Err(src.key_err(
            k.head,
            format!("expected [{} (= patch volume {pv} × {c} channels), {ed}] for a pixel-regression head, found {head:?}", pv * c),
        ));
    }
    let encoder = Encoder {
        spatial_dims: sd,
        in_channels: c,
        img_size: img,
        patch_size: patch,
        embed_dim: e,
        depth: src.depth(k.enc_blocks)?,
        mlp_ratio: mlp_ratio(src, &format!("{}.0.mlp.fc1.weight", k.enc_blocks), e)?,
        qkv_bias: src.has(&format!("{}.0.attn.qkv.bias", k.enc_blocks)),
    }
    .config(
        heads(opts, e)?,
        opts.layer_norm_eps.unwrap_or(1e-6),
        VitStyle::Timm,
    );
    let dheads = required(
        &opts.decoder_num_heads,
        "decoder_num_heads",
        format!("needed: attention heads do not show in the weights (decoder width {ed})"),
    )?;
    if dheads == 0 || ed % dheads != 0 {
        return Err(opt_err(
            "decoder_num_heads",
            format!("{dheads} does not divide the decoder width {ed}"),
        ));
    }
    let variance = match src.family {
        Family::HeMae2d => PixVariance::Unbiased,
        _ => PixVariance::Biased,
    };
    Ok(ModelConfig::Mae(MaeConfig {
        encoder,
        decoder_embed_dim: ed,
        decoder_depth: src.depth(k.dec_blocks)?,
        decoder_num_heads: dheads,
        mask_ratio: opts.mask_ratio.unwrap_or(0.75),
        loss: ReconLoss::Mse {
            norm_pix_loss: opts.norm_pix_loss.unwrap_or(true),
            norm_pix_variance: Some(variance),
            fft_weight: 0.0,
        },
    }))
}

/// He et al.'s name for a medmae MAE tensor, and how it is made.
fn he_source(dst: &str) -> (String, Op) {
    let renames = [
        ("encoder.patch_embed.", "patch_embed."),
        ("encoder.blocks.", "blocks."),
        ("encoder.norm.", "norm."),
        ("encoder_to_decoder.", "decoder_embed."),
        ("decoder.blocks.", "decoder_blocks."),
        ("decoder.norm.", "decoder_norm."),
        ("decoder.head.", "decoder_pred."),
    ];
    match dst {
        "encoder.cls_token" => ("cls_token".into(), Op::AddPosRow0),
        "encoder_pos_embed" => ("pos_embed".into(), Op::DropFirstRow),
        "decoder_pos_embed" => ("decoder_pos_embed".into(), Op::DropFirstRow),
        _ => renames
            .iter()
            .find_map(|(m, h)| {
                dst.strip_prefix(m)
                    .map(|rest| (format!("{h}{rest}"), Op::Copy))
            })
            .unwrap_or((dst.to_string(), Op::Copy)),
    }
}

/// Import a state dict of `opts.family` (or the recognised family).
pub(super) fn import(path: &Path, sd: StateDict, opts: &ImportOptions) -> Result<Imported> {
    let names: Vec<String> = sd
        .tensors
        .iter()
        .map(|(k, _)| k.strip_prefix("module.").unwrap_or(k).to_string())
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let family = match opts.family.or_else(|| Family::detect(&refs)) {
        Some(f) => f,
        None => {
            let sample: Vec<&str> = refs.iter().take(8).copied().collect();
            return Err(ModelError::CheckpointFile {
                path: path.to_path_buf(),
                msg: format!(
                    "not a recognised checkpoint family (tensors {sample:?}…); name it with --from ({})",
                    Family::ALL.map(Family::name).join(", ")
                ),
            });
        }
    };
    let mut notes = Vec::new();
    if !sd.location.is_empty() {
        notes.push(format!(
            "state dict read from entry `{}` of the saved object",
            sd.location
        ));
    }
    if !sd.skipped.is_empty() {
        notes.push(format!("skipped non-tensor entries {:?}", sd.skipped));
    }
    let mut src = Source::new(path, family, sd);
    let (config, plan): (ModelConfig, Plan) = match family {
        Family::MonaiUnetr => monai_unetr(&mut src, opts, &mut notes)?,
        Family::SelfMedMaeMae3d => {
            let cfg = mae(&mut src, opts, &mut notes, &SELFMEDMAE, 3)?;
            let plan = spec::expected_weights(&cfg)
                .into_iter()
                .map(|t| (t.name.clone(), t.name, Op::Copy))
                .collect();
            (cfg, plan)
        }
        Family::HeMae2d => {
            let cfg = mae(&mut src, opts, &mut notes, &HE, 2)?;
            let row0 = src
                .get("decoder_pos_embed")?
                .f_narrow(1, 0, 1)?
                .f_abs()?
                .f_max()?
                .double_value(&[]);
            if row0 > 1e-6 {
                return Err(src.key_err(
                    "decoder_pos_embed",
                    format!("row 0 (the cls slot) is not zero (max |value| {row0}); medmae's decoder adds no position embedding to the cls token"),
                ));
            }
            let row0 = src
                .get("pos_embed")?
                .f_narrow(1, 0, 1)?
                .f_abs()?
                .f_max()?
                .double_value(&[]);
            if row0 > 0.0 {
                notes.push(
                    "`pos_embed` row 0 added to `cls_token` (He et al. add it in every forward)"
                        .into(),
                );
            }
            let plan = spec::expected_weights(&cfg)
                .into_iter()
                .map(|t| {
                    let (s, op) = he_source(&t.name);
                    (t.name, s, op)
                })
                .collect();
            (cfg, plan)
        }
    };
    config.validate()?;
    let shapes: BTreeMap<String, Vec<usize>> = spec::expected_weights(&config)
        .into_iter()
        .map(|t| (t.name, t.shape))
        .collect();
    let mut tensors = Vec::with_capacity(plan.len());
    for (dst, s, op) in plan {
        let t = src.produce(&s, op, &shapes[&dst], &dst)?;
        tensors.push((dst, t));
    }
    let mut ignored = Vec::new();
    let mut unused = Vec::new();
    for k in src.map.keys().filter(|k| !src.used.contains(*k)) {
        if family == Family::MonaiUnetr
            && (k.contains(".norm_cross_attn.") || k.contains(".cross_attn."))
        {
            ignored.push(k.clone());
        } else {
            unused.push(k.clone());
        }
    }
    if let Some(first) = unused.first() {
        return Err(src.key_err(
            first,
            format!(
                "has no place in the imported {family} model ({} unused tensors: {unused:?})",
                unused.len()
            ),
        ));
    }
    if !ignored.is_empty() {
        notes.push(format!(
            "ignored {} unused MONAI cross-attention tensors",
            ignored.len()
        ));
    }
    Ok(Imported {
        family,
        config,
        tensors,
        ignored,
        notes,
    })
}
