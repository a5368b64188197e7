//! Parameter groups: which tensors get weight decay, and the layer-wise lr scale of each tensor (BEiT/SelfMedMAE).

/// The optimiser settings of one parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupKey {
    /// Layer id: 0 = embeddings, i+1 = encoder block i, depth+1 = everything after the encoder blocks.
    pub layer: usize,
    /// Whether weight decay applies.
    pub decay: bool,
}

/// True for tensors that must not be weight-decayed: biases, 1-D tensors (norm weights), position embeddings,
/// cls and mask tokens.
pub fn no_weight_decay(name: &str, shape: &[i64]) -> bool {
    shape.len() <= 1
        || name.ends_with(".bias")
        || name.contains("pos_embed")
        || name.contains("position_embeddings")
        || name.ends_with("cls_token")
        || name.ends_with("mask_token")
}

/// Layer id of a parameter for layer-wise lr decay, for an encoder of `depth` blocks.
///
/// Like BEiT/MAE's `get_layer_id_for_vit`: cls token, position embedding and patch embedding are layer 0, block i is
/// layer i+1, and everything else (final norm, decoders, heads) is layer depth+1 (scale 1).
pub fn layer_id(name: &str, depth: usize) -> usize {
    let body = ["encoder.", "vit."]
        .iter()
        .find_map(|p| name.strip_prefix(p));
    let Some(body) = body else {
        return if name.contains("pos_embed") {
            0
        } else {
            depth + 1
        };
    };
    if body.starts_with("cls_token")
        || body.starts_with("pos_embed")
        || body.starts_with("patch_embed")
    {
        return 0;
    }
    if let Some(rest) = body.strip_prefix("blocks.") {
        if let Some(i) = rest.split('.').next().and_then(|s| s.parse::<usize>().ok()) {
            return (i + 1).min(depth + 1);
        }
    }
    depth + 1
}

/// Lr multiplier of a layer id: `decay^(depth + 1 − layer)`.
pub fn layer_scale(layer: usize, depth: usize, decay: f64) -> f64 {
    decay.powi((depth + 1).saturating_sub(layer) as i32)
}

/// The group of a parameter.
pub fn group_key(name: &str, shape: &[i64], depth: usize) -> GroupKey {
    GroupKey {
        layer: layer_id(name, depth),
        decay: !no_weight_decay(name, shape),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_ids_follow_beit() {
        assert_eq!(layer_id("encoder.cls_token", 12), 0);
        assert_eq!(layer_id("encoder.pos_embed", 12), 0);
        assert_eq!(layer_id("encoder.patch_embed.proj.weight", 12), 0);
        assert_eq!(layer_id("vit.patch_embedding.position_embeddings", 12), 0);
        assert_eq!(layer_id("encoder.blocks.0.attn.qkv.weight", 12), 1);
        assert_eq!(layer_id("vit.blocks.11.mlp.linear1.weight", 12), 12);
        assert_eq!(layer_id("encoder.norm.weight", 12), 13);
        assert_eq!(layer_id("decoder5.conv_block.conv1.conv.weight", 12), 13);
        assert_eq!(layer_scale(0, 2, 0.5), 0.125);
        assert_eq!(layer_scale(3, 2, 0.5), 1.0);
    }
}
